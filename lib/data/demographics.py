"""Age and sex per class, drawn from published brain-tumour epidemiology (the phantom's metadata).

Real brain-MRI sets that carry clinical metadata carry its population: meningioma patients are
mostly older women, glioblastoma patients older men, pituitary adenomas are found in younger
adults. A model given age and sex can learn that population instead of the image, which is the
point of measuring it (lib.evaluate.fusion, the confounder audit of lib.data.metadata). The
values below make the phantom's metadata carry the *published* association, no stronger:

=============  =================  ===========  ============================================
class          age (years)        female share source
=============  =================  ===========  ============================================
meningioma     mean 66, sd 14     0.70         CBTRUS 2015-2019 (Ostrom et al. 2022, Neuro-
                                               Oncology 24(S5)): meningioma is more common in
                                               females (incidence ratio about 2.3:1), median
                                               age at diagnosis in the late 60s
glioma         mean 57, sd 16     0.43         CBTRUS 2015-2019: glioblastoma, half of the
                                               malignant tumours, median age in the mid 60s and
                                               about 1.6 males per female; lower-grade gliomas
                                               (the figshare set's grade II-III share) are
                                               diagnosed younger, so the mix is younger
pituitary      mean 50, sd 17     0.54         Gittleman et al. 2014 (J Neurosurg 121:527,
                                               CBTRUS 2004-2009): incidence 3.40 in women vs
                                               2.94 in men per 100,000 in 2009; diagnosed
                                               younger than the other two (prolactinomas in
                                               women of child-bearing age)
notumor        mean 50, sd 17     0.55         no published source: the public sets give no
                                               demographics of their lesion-free images; an
                                               adult outpatient population referred for a brain
                                               MRI (an assumption, stated as one)
=============  =================  ===========  ============================================

The standard deviations are assumptions: the registries publish age-group rates, not spreads.
Ages are clipped to [18, 90] (adult sets) and rounded to whole years.

Every image's draw comes from its own generator, ``default_rng([seed, 7, split, class, index])``
(7 keeps it apart from the image draws), so the metadata of an image never depends on which
other images exist, and adding it never changes a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGE_RANGE = (18, 90)
METADATA_STREAM = 7  # the generator key that separates metadata draws from image draws
SPLIT_IDS = {"Training": 0, "Testing": 1}
COLUMNS = ("age", "sex")


@dataclass(frozen=True)
class Demographics:
    """One class's age distribution (normal, clipped) and share of female patients."""

    age_mean: float
    age_sd: float
    female: float


# The table of the module docstring; every value's source is there.
BY_CLASS: dict[str, Demographics] = {
    "glioma": Demographics(57.0, 16.0, 0.43),
    "meningioma": Demographics(66.0, 14.0, 0.70),
    "notumor": Demographics(50.0, 17.0, 0.55),
    "pituitary": Demographics(50.0, 17.0, 0.54),
}
CLASS_ORDER = ("glioma", "meningioma", "notumor", "pituitary")


def draw(seed: int, split: str, cls: str, index: int) -> dict[str, object]:
    """The age (int) and sex ('F' or 'M') of one phantom image, from its own generator."""
    if cls not in BY_CLASS:
        raise ValueError(f"no demographics for class {cls!r}; known: {sorted(BY_CLASS)}")
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {list(SPLIT_IDS)}, got {split!r}")
    rng = np.random.default_rng([int(seed), METADATA_STREAM, SPLIT_IDS[split],
                                 CLASS_ORDER.index(cls), int(index)])
    d = BY_CLASS[cls]
    age = int(np.clip(round(rng.normal(d.age_mean, d.age_sd)), *AGE_RANGE))
    sex = "F" if rng.random() < d.female else "M"
    return {"age": age, "sex": sex}
