"""Deterministic phantom brain-MRI dataset in the Kaggle "Brain Tumor MRI Dataset" layout.

Why a phantom: the study must run end to end without downloading patient data, and we want to
know the ground truth (lesion masks, healthy twins, the nuisance draws) so that explanations and
shortcut controls can be checked, not only accuracies.

Anatomy comes from the MNI152-2009 tissue templates that nilearn ships (no download). Each image
is one axial slice rendered as T1, T1c, T2 or FLAIR from BrainWeb-style relaxation intensities,
with a skull and scalp, a class-specific lesion, a pose, a bias field and Rician noise.

No shortcuts by default: every nuisance draw (slice level, sequence, pose, gain, noise, bias,
skull, image size) comes from one distribution shared by all classes and is drawn *before* any
lesion draw, so only the lesion tells the classes apart. ``shortcut="level"`` or ``"size"``
switches on a deliberate shortcut for teaching and for proving the shortcut tests can fail;
``"marker"`` burns a class-coded corner box into the Training images only, the shortcut of the
guided arm's test (lib.explain.shortcut). ``metadata="cbtrus"`` also writes ``metadata.csv``:
each image's age and sex, drawn per class from published epidemiology (lib.data.demographics),
as a hospital export might carry them; off by default, so the default files do not change.

Every image is regenerated on its own from ``np.random.default_rng([seed, split, class, index])``,
and the noise field comes from a seed drawn in the nuisance block, so a tumour image and its
healthy twin (same draws, no lesion) differ only around the lesion.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..config import from_group
from ..contracts import PHANTOM_GENERATOR
from ..splits import SOURCE_SPLITS, TESTING, TRAINING

CLASSES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")
SEQUENCES: tuple[str, ...] = ("T1", "T1c", "T2", "FLAIR")
SHORTCUTS: tuple[str, ...] = ("none", "level", "size", "marker")
# phantom.metadata: none, or age and sex per image from published epidemiology
# (lib.data.demographics) written to <out>/metadata.csv, as a hospital export might carry them
METADATA_KINDS: tuple[str, ...] = ("none", "cbtrus")
METADATA_CSV = "metadata.csv"
TUMOUR_CLASSES: tuple[str, ...] = ("glioma", "meningioma", "pituitary")

# Shared slice range (MNI z, mm): temporal lobes/suprasellar cistern up to the lateral ventricles,
# where gliomas (WM), meningiomas (surface) and a sellar/suprasellar mass are all plausible.
LEVEL_RANGE_MM: tuple[float, float] = (-20.0, 15.0)
LEVEL_SHORTCUT_SPLIT_MM = -8.0  # shortcut="level": pituitary below, the other classes above
SIZE_SHORTCUT_FACTOR = 1.5  # shortcut="size": notumor written this much larger (as in Kaggle)
# shortcut="marker": a burned-in annotation box in a corner that codes the class, on Training
# images only (Testing has none). Burned-in text and markers are how shortcuts leak in real
# imaging: hospital and portable-scanner tokens in chest radiographs (Zech et al. 2018, PLoS Med
# 15:e1002683), laterality markers and text in COVID-19 radiographs (DeGrave et al. 2021, Nat
# Mach Intell 3:610). The box is 1/16 of the side (8 px at 128 px: the height of burned-in text)
# at full white, 1/32 of the side from the edges; each class owns one corner.
MARKER_CORNERS: dict[str, tuple[int, int]] = {"glioma": (0, 0), "meningioma": (0, 1),
                                              "notumor": (1, 0), "pituitary": (1, 1)}
MARKER_SIDE_FRACTION = 1 / 16
MARKER_MARGIN_FRACTION = 1 / 32
FOV_MM = 240.0  # field of view of the output grid at scale 1
HEAD_CENTRE_MM: tuple[float, float] = (0.0, -17.0)  # MNI (x, y) mapped to the image centre
SCALE_RANGE: tuple[float, float] = (0.9, 1.1)
SHIFT_FRACTION = 0.04  # max translation, as a share of the image side
GAIN_RANGE: tuple[float, float] = (0.8, 1.2)
MANIFEST = "phantom.json"

# MNI152 2009 1 mm grid: voxel index = mm - origin.
_ORIGIN_MM = np.array([-98.0, -134.0, -72.0])
_SPLIT_IDS = {TRAINING: 0, TESTING: 1, "Sequence": 2}

# Relative signal per tissue, white matter = 1, in SEQUENCES order (T1, T1c, T2, FLAIR).
# Brain values follow BrainWeb-style relaxation (T1: GM .82, CSF .43; T2: GM 1.39, CSF 3.16;
# FLAIR: GM 1.13, CSF .13). Fat is bright on T1 and (fast spin echo) T2; cortical bone is void.
_TISSUE: dict[str, np.ndarray] = {
    "wm": np.array([1.00, 1.00, 1.00, 1.00]),
    "gm": np.array([0.82, 0.82, 1.39, 1.13]),
    "csf": np.array([0.43, 0.43, 3.16, 0.13]),
    "dura": np.array([0.50, 0.95, 1.00, 0.60]),  # enhances on T1c
    "bone": np.array([0.06, 0.06, 0.06, 0.06]),
    "fat": np.array([1.45, 1.45, 1.90, 1.30]),  # diploic marrow and scalp fat
    "muscle": np.array([0.60, 0.60, 0.80, 0.65]),  # galea/temporalis and skin
}
# Normal structures without a blood-brain barrier, which enhance on every real T1c scan
# (Smirniotopoulos et al., RadioGraphics 2007;27:525-551, "Patterns of contrast enhancement in
# the brain and meninges"; Radiology Assistant, "Enhancement patterns in CNS disease": dura,
# dural venous sinuses, choroid plexus, pituitary gland and stalk, vessels). Before contrast,
# venous sinuses are flow voids on spin-echo T1/T2/FLAIR, the choroid plexus is a little darker
# than grey matter on T1 and darker than the CSF around it on T2, and the stalk is iso to grey
# matter. On T1c they are the brightest intracranial tissue after fat (1.5-1.7 x white matter).
# A real tumour classifier must learn not to call these a tumour; the pretext task of the
# pretrain stage (T1 vs T1c) needs them too, as a slice without a lesion otherwise looks the same.
# Cortical arteries and veins in the superficial sulci: flow voids before contrast, bright on
# T1c (gadolinium in the blood pool); VESSEL_* place them (fixed pattern, not a draw).
VESSEL_SEED = 152
VESSEL_THRESHOLD = 1.0  # in sd of the smooth field: ~16 % of it, as strands of 1-3 mm
VESSEL_DEPTH_MM = 15.0  # sulcal CSF within this depth of the brain surface
_NORMAL_ENHANCING: dict[str, np.ndarray] = {
    "vessel": np.array([0.30, 1.50, 0.30, 0.30]),
    "sinus": np.array([0.35, 1.70, 0.30, 0.30]),  # superior sagittal and transverse sinuses
    "choroid": np.array([0.75, 1.60, 1.60, 0.80]),  # glomus in the atrium of each ventricle
    "stalk": np.array([0.82, 1.60, 1.30, 1.10]),  # infundibulum in the suprasellar cistern
}
# Lesion tissues before gadolinium; T1c adds `enhancement` on top (solid tumour only).
# T2/FLAIR: gliomas and their vasogenic edema have T2 ~1.5-2.5 x that of white matter (T2
# mapping of diffuse gliomas, Gu et al., QIMS 2022; edema ~200 ms vs WM ~80 ms), so at a
# clinical TE they are brighter than grey matter and darker than CSF on T2, and the brightest
# parenchyma on FLAIR, where real gliomas are most conspicuous.
_LESION: dict[str, np.ndarray] = {
    "glioma": np.array([0.72, 0.72, 2.10, 1.60]),  # solid tumour: T1 dark, T2/FLAIR bright
    # Non-enhancing (low-grade) glioma: long T1 and T2 from its high water content, so clearly
    # dark on T1/T1c and bright on T2/FLAIR. The public T1c sets' tumours were outlined on T1c
    # (Cheng et al. 2015), so every glioma in them is visible there: a non-enhancing one shows
    # as a hypointense mass, not as nothing.
    "glioma_lowgrade": np.array([0.62, 0.62, 2.20, 1.70]),
    "necrosis": np.array([0.45, 0.45, 2.80, 0.95]),  # T1 dark, T2 bright, no enhancement
    "edema": np.array([0.86, 0.86, 2.40, 1.70]),  # vasogenic: T2/FLAIR bright, T1 a bit dark
    "meningioma": np.array([0.86, 0.86, 1.65, 1.30]),  # ~iso to GM on T1, iso/hyper on T2
    "pituitary": np.array([0.82, 0.82, 1.45, 1.18]),
}
# Share of gliomas with an enhancing solid part. The public sets mix high- and low-grade
# gliomas about 3:1 (BraTS 2018: 210 HGG, 75 LGG); nearly all high-grade gliomas enhance and
# most low-grade ones do not, so ~80 % of glioma slices show enhancement.
GLIOMA_ENHANCING_SHARE = 0.8
# Enhancing tumour on T1c: solid tumour T1 (0.72) + this, i.e. ~1.3-1.7 x white matter, the
# range of the post/pre-contrast signal ratio of enhancing glioma (a clear, unmistakable
# enhancement; Smirniotopoulos 2007). Non-enhancing gliomas get none: hypointense on T1/T1c.
GLIOMA_ENHANCEMENT: tuple[float, float] = (0.6, 1.0)
# Heterogeneity inside the lesion: (amplitude, grain in mm). Glioblastoma enhances irregularly
# and heterogeneously in patches of several mm; meningioma and pituitary adenoma enhance avidly
# and homogeneously (Smirniotopoulos et al. 2007). A 2 mm grain vanished at the study's 64 px
# input (3.75 mm pixels), which left solid gliomas looking like meningiomas.
LESION_TEXTURE: dict[str, tuple[float, float]] = {
    "glioma": (0.15, 4.0), "meningioma": (0.04, 2.0), "pituitary": (0.04, 2.0)}
# Smallest lesion share of a non-enhancing glioma's slice. Diffuse low-grade gliomas grow slowly
# and steadily for years before symptoms (Mandonnet et al., Ann Neurol 2003;53:524-528), so they
# are usually several centimetres across when first imaged: a slice through one shows a mass of
# >= ~3 % of the brain, not a dot a reader could never find without enhancement.
LOWGRADE_MIN_FRACTION = 0.03
# Per-lesion variation of the relaxation contrast (scales the deviation from white matter):
# measured tumour T2/T1 vary by roughly +-15 % around their means (Gu et al. 2022), so a lesion
# keeps at least 3/4 of its tissue's contrast; lower draws made T2 gliomas vanish.
CONTRAST_RANGE: tuple[float, float] = (0.75, 1.0)
# 8-bit units per unit signal, so the brightest common tissue sits near 190 at gain 1
# (T2: CSF; FLAIR: edema, which must not clip at the highest gain).
_TO_8BIT = np.array([190 / 1.45, 190 / 1.45, 190 / 3.16, 190 / 1.60])
# The study's default sequence mix: the tumour slices of the public sets it stands for are
# contrast-enhanced T1 only (figshare set of Cheng et al., PLoS One 2015;10:e0140381, from which
# the Kaggle "Brain Tumor MRI Dataset" takes its tumour classes). Harder mixes are experiments.
DEFAULT_SEQUENCES: dict[str, float] = {"T1": 0.0, "T1c": 1.0, "T2": 0.0, "FLAIR": 0.0}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhantomConfig:
    """Every knob of the generator; mirrors the ``phantom:`` group of params.yaml."""

    seed: int = 20261123
    n_train_per_class: int = 400
    n_test_per_class: int = 100
    image_size: int = 128
    lesion_fraction: tuple[float, float] = (0.01, 0.10)
    noise: float = 0.04
    bias_field: float = 0.2
    max_rotation_deg: float = 12.0
    shortcut: str = "none"
    sequences: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SEQUENCES))
    metadata: str = "none"

    def __post_init__(self) -> None:
        for name in ("seed", "n_train_per_class", "n_test_per_class", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"phantom.{name} must be an integer, got {value!r}")
        if self.seed < 0:
            raise ValueError(f"phantom.seed must be >= 0, got {self.seed}")
        for name in ("n_train_per_class", "n_test_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"phantom.{name} must be >= 1, got {getattr(self, name)}")
        if not 32 <= self.image_size <= 2048:
            raise ValueError(f"phantom.image_size must be in [32, 2048], got {self.image_size}")
        lf = self.lesion_fraction
        if (
            isinstance(lf, str | bytes)
            or not isinstance(lf, Sequence)
            or len(lf) != 2
            or not all(_is_number(v) for v in lf)
        ):
            raise ValueError(
                f"phantom.lesion_fraction must be a list [lo, hi] of numbers, got {lf!r}"
            )
        lo, hi = float(lf[0]), float(lf[1])
        if not 0.0 < lo <= hi <= 0.5:
            raise ValueError(f"phantom.lesion_fraction needs 0 < lo <= hi <= 0.5, got [{lo}, {hi}]")
        object.__setattr__(self, "lesion_fraction", (lo, hi))
        for name, top in (("noise", 0.5), ("bias_field", 0.99), ("max_rotation_deg", 180.0)):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= float(value) <= top:
                raise ValueError(f"phantom.{name} must be a number in [0, {top}], got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"phantom.shortcut must be one of {list(SHORTCUTS)}, got {self.shortcut!r}"
            )
        object.__setattr__(self, "sequences", _check_sequences(self.sequences))
        if self.metadata not in METADATA_KINDS:
            raise ValueError(
                f"phantom.metadata must be one of {list(METADATA_KINDS)}, got {self.metadata!r}"
            )

    def recorded(self) -> dict[str, Any]:
        """The settings phantom.json records. ``metadata: none`` is left out, so the files of a
        phantom generated before the knob existed stay byte-identical (data.dvc)."""
        out = {**asdict(self), "lesion_fraction": list(self.lesion_fraction)}
        if self.metadata == "none":
            del out["metadata"]
        return out

    def sequence_weights(self) -> np.ndarray:
        """Probabilities of SEQUENCES, shared by every class (no sequence shortcut)."""
        w = np.array([self.sequences[s] for s in SEQUENCES], dtype=np.float64)
        return w / w.sum()

    def __hash__(self) -> int:  # the dict field is not hashable; its sorted items are
        return hash(tuple((f.name, repr(getattr(self, f.name))) for f in fields(self)))

    @classmethod
    def from_params(cls, group: dict[str, Any]) -> PhantomConfig:
        """From the ``phantom:`` group; unknown keys are errors (typos must not pass)."""
        return from_group(cls, group, "phantom")


def _check_sequences(value: Any) -> dict[str, float]:
    """{sequence: weight} over SEQUENCES (missing ones weigh 0); weights >= 0, not all 0."""
    if not isinstance(value, dict):
        raise ValueError(f"phantom.sequences must be a mapping like {DEFAULT_SEQUENCES}, "
                         f"got {value!r}")
    unknown = sorted(set(map(str, value)) - set(SEQUENCES))
    if unknown:
        raise ValueError(f"phantom.sequences has unknown sequence(s) {unknown}; "
                         f"known: {list(SEQUENCES)}")
    out = {}
    for seq in SEQUENCES:
        w = value.get(seq, 0.0)
        if not _is_number(w) or not math.isfinite(float(w)) or float(w) < 0:
            raise ValueError(f"phantom.sequences.{seq} must be a number >= 0, got {w!r}")
        out[seq] = float(w)
    if sum(out.values()) <= 0:
        raise ValueError("phantom.sequences needs at least one sequence with a weight > 0")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Anatomy: MNI152 slices, cached once per process
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Slice:
    """Tissue maps of one axial level on the 1 mm (x, y) grid of the template, shape (197, 233)."""

    gm: np.ndarray
    wm: np.ndarray
    sdf_brain: np.ndarray  # signed distance to the (hole-filled) brain outline, mm, < 0 inside
    sdf_hull: np.ndarray  # same for the smooth intracranial hull the skull is built around
    vessel: np.ndarray  # partial volume of cortical vessels in the superficial sulci (anatomy)


_SLICES: dict[int, _Slice] = {}
_GRID: tuple[np.ndarray, np.ndarray] | None = None


def _signed_distance(inside: np.ndarray) -> np.ndarray:
    d_out = ndi.distance_transform_edt(~inside)
    d_in = ndi.distance_transform_edt(inside)
    return np.where(inside, 0.5 - d_in, d_out - 0.5)


def _load_slices() -> dict[int, _Slice]:
    """Load the four nilearn templates once and keep only the levels we ever render."""
    if _SLICES:
        return _SLICES
    from nilearn import datasets  # local import: only the generator needs nilearn

    vols = [
        np.asarray(loader(resolution=1).get_fdata(), dtype=np.float64)
        for loader in (
            datasets.load_mni152_gm_template,
            datasets.load_mni152_wm_template,
            datasets.load_mni152_brain_mask,
        )
    ]
    gm_vol, wm_vol, mask_vol = vols
    lo = math.floor(LEVEL_RANGE_MM[0]) - 1
    hi = math.ceil(LEVEL_RANGE_MM[1]) + 1
    tree = _vessel_tree(gm_vol.shape[:2], hi - lo + 1)
    for z in range(lo, hi + 1):
        k = int(z - _ORIGIN_MM[2])
        brain = ndi.binary_fill_holes(mask_vol[:, :, k] > 0.5)  # cisterns count as brain
        sdf_brain = _signed_distance(brain)
        # Intracranial hull: morphological closing (12 mm) so the skull does not dip into notches.
        closed = _signed_distance(~(sdf_brain < 12.0)) > 12.0
        hull = ndi.binary_fill_holes(closed | brain)
        gm, wm = np.clip(gm_vol[:, :, k], 0, 1), np.clip(wm_vol[:, :, k], 0, 1)
        sulci = np.clip(1 - gm - wm, 0, 1) * brain * (sdf_brain > -VESSEL_DEPTH_MM)
        _SLICES[z] = _Slice(gm=gm, wm=wm, sdf_brain=sdf_brain, sdf_hull=_signed_distance(hull),
                            vessel=tree[:, :, z - lo] * np.clip(3 * sulci, 0, 1))
    return _SLICES


def _vessel_tree(shape: tuple[int, int], levels: int) -> np.ndarray:
    """A fixed 3-D pattern of vessel-like strands (1 mm grid), coherent from level to level.

    The same for every image (it is anatomy, like the template): a seeded smooth random field,
    kept where it is highest, so that a few per cent of the sulcal CSF holds 1-3 mm vessels.
    """
    field = np.random.default_rng(VESSEL_SEED).standard_normal((*shape, levels))
    field = ndi.gaussian_filter(field, (1.2, 1.2, 2.5), truncate=3.0)
    field /= max(float(field.std()), 1e-12)
    return np.clip((field - VESSEL_THRESHOLD) / 0.3, 0, 1)


def _grid_mm() -> tuple[np.ndarray, np.ndarray]:
    """MNI x and y (mm) of every pixel of the 1 mm slice grid."""
    global _GRID
    if _GRID is None:
        shape = next(iter(_load_slices().values())).gm.shape
        ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        _GRID = (ii + _ORIGIN_MM[0], jj + _ORIGIN_MM[1])
    return _GRID


def _slice_at(level_mm: float) -> _Slice:
    """Linear interpolation between the two nearest 1 mm levels (signed distances blend shapes)."""
    slices = _load_slices()
    z0 = math.floor(level_mm)
    t = level_mm - z0
    a, b = slices[z0], slices[z0 + 1]
    return _Slice(
        *((1 - t) * getattr(a, n) + t * getattr(b, n) for n in _Slice.__dataclass_fields__)
    )


# --------------------------------------------------------------------------------------------
# Draws
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lesion:
    """Geometry and look of one lesion; radius is solved so the lesion covers area_fraction."""

    kind: str
    centre_mm: tuple[float, float]  # MNI (x, y)
    area_fraction: float  # lesion area / brain area of the slice
    radius_mm: float  # base radius of the perturbed-radius blob (after clipping to the brain)
    aspect: float  # ellipse axis ratio (area preserving)
    angle_deg: float
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) of modes k = 2, 3, ...
    contrast: float  # scales the lesion's deviation from white matter (hard cases < 1)
    enhancement: float  # extra T1c signal of the solid tumour (WM units)
    core_fraction: float = 0.0  # glioma: necrotic core radius / tumour radius (0 = solid)
    core_harmonics: tuple[tuple[float, float], ...] = ()
    edema_scale: float = 0.0  # glioma: 1 + edema rim / min(R, 12 mm) (0 = none)
    edema_harmonics: tuple[tuple[float, float], ...] = ()
    texture: float = 0.0  # amplitude of smooth multiplicative heterogeneity inside the lesion
    texture_seed: int = 0
    texture_mm: float = 2.0  # grain (Gaussian sigma) of that heterogeneity


@dataclass(frozen=True)
class Draws:
    """Everything random about one image; all but `lesion` is drawn identically for every class."""

    split: str
    cls: str
    index: int
    level_mm: float
    sequence: str
    rotation_deg: float
    scale: float
    shift_px: tuple[float, float]  # (rows, cols) on the output grid
    gain: float
    noise_sigma: float  # Rician sigma as a share of the white-matter signal
    bias_coeffs: tuple[float, ...]  # x, y, x^2, y^2, xy on the unit output square
    bias_amp: float  # peak-to-peak of the multiplicative bias field over the image
    skull_mm: float  # bone thickness (inner table + diploe + outer table)
    scalp_mm: float
    csf_mm: float  # extra-cerebral CSF between brain and inner table
    noise_seed: int
    image_size: int
    lesion: Lesion | None

    def nuisance_vector(self) -> np.ndarray:
        """Numeric nuisance features (no lesion information) for the no-shortcut test."""
        onehot = [float(self.sequence == s) for s in SEQUENCES]
        return np.array(
            [
                self.level_mm,
                *onehot,
                self.rotation_deg,
                self.scale,
                *self.shift_px,
                self.gain,
                self.noise_sigma,
                self.bias_amp,
                *self.bias_coeffs,
                self.skull_mm,
                self.scalp_mm,
                self.csf_mm,
                float(self.image_size),
            ],
            dtype=np.float64,
        )


def _pick(weights: np.ndarray, u: float) -> int:
    """Index drawn from `weights` (summing to 1) by one uniform number (inverse CDF)."""
    return min(int(np.searchsorted(np.cumsum(weights), u, side="right")), len(weights) - 1)


def _level_range(cfg: PhantomConfig, cls: str) -> tuple[float, float]:
    lo, hi = LEVEL_RANGE_MM
    if cfg.shortcut == "level":
        return (
            (lo, LEVEL_SHORTCUT_SPLIT_MM) if cls == "pituitary" else (LEVEL_SHORTCUT_SPLIT_MM, hi)
        )
    return lo, hi


def _image_size(cfg: PhantomConfig, cls: str) -> int:
    if cfg.shortcut == "size" and cls == "notumor":
        return int(round(cfg.image_size * SIZE_SHORTCUT_FACTOR))
    return cfg.image_size


def draw_case(cfg: PhantomConfig, split: str, cls: str, index: int) -> Draws:
    """All draws of one image, from its own generator so it can be regenerated alone."""
    if split not in SOURCE_SPLITS:
        raise ValueError(f"split must be one of {list(SOURCE_SPLITS)}, got {split!r}")
    return _draw(cfg, split, cls, index)


def _draw(cfg: PhantomConfig, split: str, cls: str, index: int) -> Draws:
    if cls not in CLASSES:
        raise ValueError(f"cls must be one of {list(CLASSES)}, got {cls!r}")
    if int(index) < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], CLASSES.index(cls), int(index)])
    # Nuisance block: a fixed number of draws in a fixed order for every class.
    u = rng.random(12)
    bias = rng.standard_normal(5)
    noise_seed = int(rng.integers(0, 2**63 - 1))
    lo, hi = _level_range(cfg, cls)
    size = _image_size(cfg, cls)
    level = lo + (hi - lo) * u[0]
    draws = Draws(
        split=split,
        cls=cls,
        index=int(index),
        level_mm=float(level),
        sequence=SEQUENCES[_pick(cfg.sequence_weights(), float(u[1]))],
        rotation_deg=float(cfg.max_rotation_deg * (2 * u[2] - 1)),
        scale=float(SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * u[3]),
        shift_px=(
            float((2 * u[4] - 1) * SHIFT_FRACTION * size),
            float((2 * u[5] - 1) * SHIFT_FRACTION * size),
        ),
        gain=float(GAIN_RANGE[0] + (GAIN_RANGE[1] - GAIN_RANGE[0]) * u[6]),
        noise_sigma=float(cfg.noise * (0.5 + u[7])),
        bias_coeffs=tuple(float(b) for b in bias),
        bias_amp=float(cfg.bias_field * (0.5 + 0.5 * u[8])),
        skull_mm=float(4.0 + 5.0 * u[9]),
        scalp_mm=float(4.0 + 5.0 * u[10]),
        csf_mm=float(1.0 + 2.0 * u[11]),
        noise_seed=noise_seed,
        image_size=size,
        lesion=None,
    )
    if cls == "notumor":
        return draws
    return replace(draws, lesion=_draw_lesion(cfg, rng, cls, float(level)))


def _harmonics(
    rng: np.random.Generator, max_amp: float, n: int = 4
) -> tuple[tuple[float, float], ...]:
    """Random radial modes k = 2..n+1 with amplitudes falling off with k (smooth outlines)."""
    amps = rng.uniform(0, max_amp, n) / np.arange(1, n + 1) ** 0.7
    phases = rng.uniform(0, 2 * np.pi, n)
    return tuple((float(a), float(p)) for a, p in zip(amps, phases, strict=True))


def _draw_lesion(cfg: PhantomConfig, rng: np.random.Generator, cls: str, level: float) -> Lesion:
    """Class-specific lesion; centres are chosen so that they are valid at any drawn level."""
    sl = _slice_at(level)
    xs, ys = _grid_mm()
    brain = sl.sdf_brain < 0
    lo, hi = cfg.lesion_fraction
    t = float(rng.random())  # size quantile on a log scale
    enhancing = bool(rng.random() < GLIOMA_ENHANCING_SHARE) if cls == "glioma" else True
    if not enhancing:  # diagnosed low-grade gliomas are large (see LOWGRADE_MIN_FRACTION)
        lo = min(max(lo, LOWGRADE_MIN_FRACTION), hi)
    frac = float(math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo))))
    target = max(int(round(frac * brain.sum())), 1)
    r0 = math.sqrt(target / math.pi)
    contrast = float(rng.uniform(*CONTRAST_RANGE))
    angle = float(rng.uniform(0, 180))
    pick = float(rng.random())
    jitter = rng.uniform(-0.5, 0.5, 2)

    extra: dict[str, Any] = {}
    if cls == "glioma":
        # Intra-axial, centred in white matter, deep enough for most of the tumour.
        wm = (sl.wm > 0.5) & brain
        depth = -sl.sdf_brain[wm]
        need = min(0.8 * r0 + 3.0, 0.8 * float(depth.max()))
        cand = np.argwhere(wm & (-sl.sdf_brain >= need))
        aspect = float(rng.uniform(0.7, 1.0))
        harm = _harmonics(rng, 0.22)
        core = float(rng.uniform(0.0, 0.7))
        edema = float(rng.uniform(1.3, 2.3))
        e = float(rng.uniform(*GLIOMA_ENHANCEMENT))
        # High grade: enhancing solid tumour, necrotic core, vasogenic edema. Low grade (not
        # enhancing): a solid infiltrative mass, T1/T1c dark and T2/FLAIR bright, with little
        # edema and no necrosis (Smirniotopoulos 2007).
        extra = dict(
            core_fraction=core if enhancing and core >= 0.25 else 0.0,
            core_harmonics=_harmonics(rng, 0.25),
            edema_scale=edema if enhancing else 1.0 + 0.3 * (edema - 1.3),
            edema_harmonics=_harmonics(rng, 0.3),
        )
        enhancement = e if enhancing else 0.0
    elif cls == "meningioma":
        # Extra-axial, dural based: centre just inside the outline, pushed in along the normal.
        ring = brain & (sl.sdf_brain > -1.5)
        cand = np.argwhere(ring)
        aspect = float(rng.uniform(0.85, 1.0))
        harm = _harmonics(rng, 0.04)
        enhancement = float(rng.uniform(0.5, 0.8))
        inset = float(rng.uniform(0.15, 0.55))
    else:  # pituitary: midline sellar/suprasellar position, independent of the level
        # (the in-plane site is the same at every drawn level: suprasellar cistern inferiorly,
        # third ventricle/septal region superiorly, as a large adenoma extends upwards)
        cand = None
        aspect = float(rng.uniform(0.75, 1.0))
        harm = _harmonics(rng, 0.05)
        enhancement = float(rng.uniform(0.4, 0.7))
        centre = (
            float(np.clip(rng.normal(0.0, 1.0), -2.5, 2.5)),
            float(rng.uniform(-3.0, 9.0)),
        )

    if cand is not None:
        i, j = cand[min(int(pick * len(cand)), len(cand) - 1)]
        centre = (float(xs[i, j] + jitter[0]), float(ys[i, j] + jitter[1]))
        if cls == "meningioma":
            gx, gy = np.gradient(sl.sdf_brain)
            normal = -np.array([gx[i, j], gy[i, j]])
            normal /= max(float(np.hypot(*normal)), 1e-6)
            centre = (
                float(xs[i, j] + normal[0] * inset * r0),
                float(ys[i, j] + normal[1] * inset * r0),
            )

    texture, texture_mm = LESION_TEXTURE[cls]
    texture_seed = int(rng.integers(0, 2**63 - 1))
    geometry = Lesion(
        kind=cls,
        centre_mm=centre,
        area_fraction=frac,
        radius_mm=1.0,
        aspect=aspect,
        angle_deg=angle,
        harmonics=harm,
        contrast=contrast,
        enhancement=enhancement,
        texture=texture,
        texture_mm=texture_mm,
        texture_seed=texture_seed,
        **extra,
    )
    # Solve the radius so that blob ∩ brain has exactly `target` pixels on the 1 mm grid.
    reach = 2.5 * r0
    for window in (reach, None):  # a window first; the whole slice if the lesion outgrows it
        rho1 = _blob_rho(geometry.centre_mm, aspect, angle, harm, window)[brain]
        k = min(target, rho1.size) - 1
        radius = float(np.partition(rho1, k)[k])
        if radius <= reach:
            break
    return replace(geometry, radius_mm=radius)


def _blob_rho(
    centre: tuple[float, float],
    aspect: float,
    angle_deg: float,
    harmonics: tuple[tuple[float, float], ...],
    reach: float | None = None,
) -> np.ndarray:
    """Distance to the centre over the unit perturbed radius, on the 1 mm grid: blob R is rho <= R.

    The ellipse stretch preserves area, so area = pi R^2 (1 + sum a_k^2 / 2) before clipping.
    Only a window that surely holds rho <= reach is computed (speed); elsewhere rho = inf. Values
    are per pixel, so they do not depend on the window.
    """
    xs, ys = _grid_mm()
    rho = np.full(xs.shape, np.inf)
    win: tuple[slice, slice] = (slice(None), slice(None))
    if reach is not None:
        # Outside this extent, hypot(a, b) >= sqrt(aspect) * distance and unit <= 1 + sum(a_k).
        ext = reach * (1 + sum(a for a, _ in harmonics)) / math.sqrt(aspect) + 3.0
        win = tuple(
            slice(
                max(int(math.floor(centre[ax] - ext - _ORIGIN_MM[ax])), 0),
                max(int(math.ceil(centre[ax] + ext - _ORIGIN_MM[ax])) + 1, 0),
            )
            for ax in (0, 1)
        )
    th = math.radians(angle_deg)
    dx, dy = xs[win] - centre[0], ys[win] - centre[1]
    a = (dx * math.cos(th) + dy * math.sin(th)) / math.sqrt(aspect)
    b = (-dx * math.sin(th) + dy * math.cos(th)) * math.sqrt(aspect)
    phi = np.arctan2(b, a)
    unit = np.ones_like(phi)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        unit += amp * np.cos(k * phi + phase)
    rho[win] = np.hypot(a, b) / np.maximum(unit, 0.2)
    return rho


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def _step(x: np.ndarray, width: float = 0.8) -> np.ndarray:
    """Soft Heaviside (linear ramp), so tissue borders partial-volume instead of aliasing."""
    return np.clip(0.5 + x / width, 0.0, 1.0)


def _anatomy(d: Draws, sl: _Slice, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Healthy signal (WM = 1) on the 1 mm grid, and the soft brain fraction."""
    brain = _step(-sl.sdf_brain)
    gm = sl.gm * brain
    wm = np.minimum(sl.wm * brain, brain - gm)
    wm = np.clip(wm, 0, None)
    csf = np.clip(brain - gm - wm, 0, None)
    t = {k: v[seq] for k, v in _TISSUE.items()}
    img = gm * t["gm"] + wm * t["wm"] + csf * t["csf"]

    # Extra-cerebral layers by distance outside the intracranial hull.
    dist = sl.sdf_hull
    bone = d.skull_mm
    edges = np.cumsum(
        [d.csf_mm, 0.3 * bone, 0.4 * bone, 0.3 * bone, 1.5, max(d.scalp_mm - 2.5, 1.0), 1.0]
    )
    names = ("csf", "bone", "fat", "bone", "muscle", "fat", "muscle")
    outside = 1.0 - brain
    inner = np.zeros_like(dist)  # share of the pixel inside the previous layer's outer edge
    for name, edge in zip(names, edges, strict=True):
        within = 1.0 - _step(dist - edge)  # the first layer (CSF) also fills the hull's notches
        img += outside * np.clip(within - inner, 0, None) * t[name]
        inner = within
    # Dura: a thin layer on the inner table (enhances on T1c).
    dura = np.exp(-0.5 * ((dist - edges[0] + 0.5) / 0.5) ** 2) * outside
    img = img * (1 - dura) + dura * t["dura"]
    for name, weight in _normal_structures(sl, d.level_mm, csf).items():
        img = img * (1 - weight) + weight * _NORMAL_ENHANCING[name][seq]
    return img, brain


def _disk(centre: tuple[float, float], radius: float) -> np.ndarray:
    """Soft disk on the 1 mm grid (partial volume at the edge)."""
    xs, ys = _grid_mm()
    return _step(radius - np.hypot(xs - centre[0], ys - centre[1]))


def _normal_structures(sl: _Slice, level: float, csf: np.ndarray) -> dict[str, np.ndarray]:
    """Partial-volume maps (1 mm grid) of the normally enhancing structures at this level.

    Placed by anatomy, not drawn at random, so they are the same for every class and in a
    tumour image's healthy twin: superior sagittal sinus where the midline meets the inner table
    (front and back); transverse sinuses along the posterior inner table below the torcular
    (MNI z < -5 mm); the choroid plexus glomus in the atrium of each lateral ventricle (the
    posterior deep CSF of each hemisphere); the pituitary stalk in the midline suprasellar
    cistern (MNI z < -6 mm), where a pituitary macroadenoma also lies; cortical vessels in the
    superficial sulci (``_Slice.vessel``).
    """
    xs, ys = _grid_mm()
    hull = sl.sdf_hull
    midline = np.abs(xs[:, 0]).argmin()
    inside = np.flatnonzero(hull[midline] < 0)
    out: dict[str, np.ndarray] = {"vessel": sl.vessel}
    if inside.size:
        front, back = ys[midline, inside.max()], ys[midline, inside.min()]
        out["sinus"] = np.maximum(_disk((0.0, front), 2.0), _disk((0.0, back), 3.0))
        fade = float(np.clip((-5.0 - level) / 8.0, 0.0, 1.0))
        if fade > 0:
            band = _step(1.5 - np.abs(hull + 0.5)) * (ys < back + 35.0) * (np.abs(xs) > 8.0)
            out["sinus"] = np.maximum(out["sinus"], fade * band * (np.abs(xs) < 55.0))
    ventricle = (csf > 0.5) & (sl.sdf_brain < -10.0) & (ys < -15.0) & (np.abs(xs) > 6.0)
    plexus = np.zeros_like(csf)
    for side in (-1.0, 1.0):
        atrium = ventricle & (np.sign(xs) == side)
        if atrium.sum() >= 20:
            centre = (float(xs[atrium].mean()), float(ys[atrium].mean()))
            plexus = np.maximum(plexus, _disk(centre, 4.5) * np.clip(csf, 0, 1))
    if plexus.any():
        out["choroid"] = plexus
    fade = float(np.clip((-6.0 - level) / 6.0, 0.0, 1.0))
    if fade > 0:
        out["stalk"] = fade * _disk((0.0, 0.0), 2.0)
    return out


def _lesion_signal(
    d: Draws, sl: _Slice, img: np.ndarray, brain_soft: np.ndarray, seq: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paint the lesion (and its edema/dural tail) into `img`; return (img, 1 mm lesion mask)."""
    les = d.lesion
    assert les is not None
    xs, ys = _grid_mm()
    c = les.contrast

    def look(name: str) -> float:
        return 1.0 + c * (_LESION[name][seq] - 1.0)

    enh = c * les.enhancement if SEQUENCES[seq] == "T1c" else 0.0
    tex = 1.0
    if les.texture > 0:  # smooth heterogeneity, from the lesion's own seed
        field = np.random.default_rng(les.texture_seed).standard_normal(xs.shape)
        field = ndi.gaussian_filter(field, les.texture_mm, truncate=3.0)
        tex = 1.0 + les.texture * field / max(float(field.std()), 1e-12)
    r = les.radius_mm
    rho1 = _blob_rho(les.centre_mm, les.aspect, les.angle_deg, les.harmonics, r + 3.0)
    mask = (rho1 <= r) & (sl.sdf_brain < 0)
    alpha = np.clip(0.5 + (r - rho1) / 0.8, 0, 1) * brain_soft
    img = img.copy()

    if les.kind == "glioma":
        if les.edema_scale > 0:
            er = r + (les.edema_scale - 1.0) * min(r, 12.0)  # rim <= ~16 mm for big tumours
            rho_e = _blob_rho(les.centre_mm, les.aspect, les.angle_deg, les.edema_harmonics, er)
            tissue = np.clip(sl.wm + 0.4 * sl.gm, 0, 1)  # edema tracks white matter
            beta = np.clip((er - rho_e) / 3.0, 0, 1) * tissue * brain_soft
            img = img * (1 - beta) + beta * look("edema")
        tumour = (look("glioma" if les.enhancement > 0 else "glioma_lowgrade") + enh) * tex
        if les.core_fraction > 0:
            cr = les.core_fraction * r
            rho_c = _blob_rho(
                les.centre_mm, les.aspect, les.angle_deg, les.core_harmonics, cr + 1.0
            )
            core = np.clip(0.5 + (cr - rho_c) / 1.0, 0, 1)
            tumour = tumour * (1 - core) + core * look("necrosis") * tex
        img = img * (1 - alpha) + alpha * tumour
    else:
        if les.kind == "meningioma":
            # CSF cleft around the mass, and a dural tail on T1c.
            cleft = np.clip(1 - np.abs(rho1 - r - 1.0) / 1.0, 0, 1) * brain_soft * 0.5
            img = img * (1 - cleft) + cleft * _TISSUE["csf"][seq]
            if enh:
                dist_c = np.hypot(xs - les.centre_mm[0], ys - les.centre_mm[1])
                tail = np.clip(1 - dist_c / (1.9 * r), 0, 1)
                tail *= np.exp(-0.5 * ((sl.sdf_brain - 0.5) / 0.8) ** 2)
                img = img + 0.6 * enh * tail * (1 - alpha)
        img = img * (1 - alpha) + alpha * (look(les.kind) + enh) * tex
    return img, mask


def _output_transform(d: Draws) -> tuple[np.ndarray, np.ndarray, float]:
    """Matrix/offset from output (row, col) to template voxel (i, j), and the pixel size in mm.

    Anterior is at the top (row up = +y) and patient right on image left (radiological).
    """
    n = d.image_size
    pix = FOV_MM / n / d.scale  # template mm per output pixel
    th = math.radians(d.rotation_deg)
    rot = np.array([[math.cos(th), math.sin(th)], [-math.sin(th), math.cos(th)]])  # R(-theta)
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # (row, col) -> (u, v) = (col, row)
    matrix = -pix * rot @ swap
    h = np.full(2, (n - 1) / 2.0)
    centre_vox = np.array(HEAD_CENTRE_MM) - _ORIGIN_MM[:2]
    shift_uv = swap @ np.array(d.shift_px)
    offset = centre_vox - matrix @ h + pix * rot @ shift_uv
    return matrix, offset, pix


def _resample(field: np.ndarray, d: Draws, order: int) -> np.ndarray:
    matrix, offset, _ = _output_transform(d)
    n = d.image_size
    return ndi.affine_transform(
        field, matrix, offset=offset, output_shape=(n, n), order=order, mode="constant", cval=0.0
    )


def _bias_field(d: Draws) -> np.ndarray:
    """Smooth multiplicative field, quadratic on the unit square, peak-to-peak = bias_amp."""
    n = d.image_size
    v, u = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    c = d.bias_coeffs
    poly = c[0] * u + c[1] * v + c[2] * u**2 + c[3] * v**2 + c[4] * u * v
    span = float(poly.max() - poly.min())
    if span < 1e-12 or d.bias_amp == 0:
        return np.ones_like(poly)
    return 1.0 + d.bias_amp * ((poly - poly.min()) / span - 0.5)


def render(cfg: PhantomConfig, draws: Draws, lesion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image, bool lesion mask) for one set of draws; lesion=False gives the healthy twin.

    The intensity mapping is fixed (not min-max), so painting a lesion cannot change pixels far
    from it; the noise comes from draws.noise_seed, so the twin has the same noise realisation.
    """
    d = draws
    seq = SEQUENCES.index(d.sequence)
    sl = _slice_at(d.level_mm)
    img, brain_soft = _anatomy(d, sl, seq)
    mask1 = np.zeros(img.shape, dtype=bool)
    if lesion and d.lesion is not None:
        img, mask1 = _lesion_signal(d, sl, img, brain_soft, seq)
    _, _, pix = _output_transform(d)
    if pix > 1.0:  # anti-alias before sampling the 1 mm grid more coarsely
        img = ndi.gaussian_filter(img, sigma=0.42 * pix, truncate=3.0)
    signal = _resample(img, d, order=1) * _bias_field(d)
    unit = d.gain * _TO_8BIT[seq]
    signal *= unit
    sigma = d.noise_sigma * unit
    noise = np.random.default_rng(d.noise_seed).standard_normal((2, d.image_size, d.image_size))
    mag = np.hypot(signal + sigma * noise[0], sigma * noise[1])  # Rician magnitude
    image = np.clip(np.rint(mag), 0, 255).astype(np.uint8)
    mask = _resample(mask1.astype(np.float64), d, order=0) > 0.5
    return image, mask


def marker_box(size: int, cls: str) -> tuple[slice, slice]:
    """Rows and columns of the class's marker box in a size x size image."""
    side = max(2, round(size * MARKER_SIDE_FRACTION))
    margin = max(1, round(size * MARKER_MARGIN_FRACTION))
    r, c = MARKER_CORNERS[cls]
    top = margin if r == 0 else size - margin - side
    left = margin if c == 0 else size - margin - side
    return slice(top, top + side), slice(left, left + side)


def burn_marker(image: np.ndarray, cls: str) -> np.ndarray:
    """A copy of a uint8 image with the class's marker box burned in at full white."""
    out = np.array(image, copy=True)
    rows, cols = marker_box(out.shape[0], cls)
    out[rows, cols] = 255
    return out


def _shortcut_marker(cfg: PhantomConfig, split: str, cls: str, image: np.ndarray) -> np.ndarray:
    return burn_marker(image, cls) if cfg.shortcut == "marker" and split == TRAINING else image


def render_case(
    cfg: PhantomConfig, split: str, cls: str, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask of one case, regenerated from its own seed."""
    image, mask = render(cfg, draw_case(cfg, split, cls, index))
    return _shortcut_marker(cfg, split, cls, image), mask


def healthy_twin(cfg: PhantomConfig, split: str, cls: str, index: int) -> np.ndarray:
    """The same case without its lesion: same anatomy, pose, sequence, bias, noise (and
    marker)."""
    return _shortcut_marker(cfg, split, cls,
                            render(cfg, draw_case(cfg, split, cls, index), lesion=False)[0])


# --------------------------------------------------------------------------------------------
# Writing the dataset
# --------------------------------------------------------------------------------------------
_NAME = re.compile(r"^(glioma|meningioma|notumor|pituitary)_\d+(_mask)?\.png$")


def _looks_like_phantom(out_dir: Path) -> bool:
    """Only Training/Testing class folders of our PNG names (and the manifest) inside."""
    for entry in out_dir.iterdir():
        if entry.name in (MANIFEST, METADATA_CSV) and entry.is_file():
            continue
        if entry.name not in SOURCE_SPLITS or not entry.is_dir():
            return False
        for sub in entry.iterdir():
            if sub.name not in CLASSES or not sub.is_dir():
                return False
            for f in sub.iterdir():
                m = _NAME.match(f.name)
                if not f.is_file() or not m or m.group(1) != sub.name:
                    return False
    return True


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    # No pnginfo: Pillow then writes no text/time chunks, so the bytes are reproducible.
    assert array.dtype == np.uint8 and array.ndim == 2
    Image.fromarray(array).save(path, format="PNG", compress_level=6)  # uint8 2-D -> mode "L"


def _name_width(cfg: PhantomConfig) -> int:
    return max(4, len(str(max(cfg.n_train_per_class, cfg.n_test_per_class) - 1)))


def _jobs(cfg: PhantomConfig) -> list[tuple[str, str, int]]:
    counts = {TRAINING: cfg.n_train_per_class, TESTING: cfg.n_test_per_class}
    return [(s, c, i) for s in SOURCE_SPLITS for c in CLASSES for i in range(counts[s])]


def _write_case(args: tuple[PhantomConfig, Path, str, str, int]) -> None:
    cfg, out_dir, split, cls, index = args
    image, mask = render_case(cfg, split, cls, index)
    stem = f"{cls}_{index:0{_name_width(cfg)}d}"
    folder = out_dir / split / cls
    _write_png(folder / f"{stem}.png", image)
    _write_png(folder / f"{stem}_mask.png", mask.astype(np.uint8) * 255)


def generate(
    cfg: PhantomConfig,
    out_dir: Path,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
) -> dict[str, dict[str, int]]:
    """Write the Kaggle layout with masks and a manifest; returns {split: {class: n_images}}.

    An existing phantom output is replaced; any other non-empty folder is refused unless
    overwrite=True (then only its Training/, Testing/ and manifest are replaced). The bytes do not
    depend on `workers`, since every image is rendered from its own generator.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (overwrite or _looks_like_phantom(out_dir)):
            raise FileExistsError(
                f"{out_dir} is not empty and does not look like a phantom output "
                f"(only {list(SOURCE_SPLITS)}/<class>/<class>_NNNN[_mask].png and {MANIFEST}); "
                "pass overwrite=True (CLI: --overwrite) to replace its Training/ and Testing/."
            )
        for name in SOURCE_SPLITS:
            if (out_dir / name).is_dir():
                shutil.rmtree(out_dir / name)
        (out_dir / MANIFEST).unlink(missing_ok=True)
        (out_dir / METADATA_CSV).unlink(missing_ok=True)
    for split in SOURCE_SPLITS:
        for cls in CLASSES:
            (out_dir / split / cls).mkdir(parents=True, exist_ok=True)

    _load_slices()  # once, before any fork, so workers share it
    jobs = [(cfg, out_dir, s, c, i) for s, c, i in _jobs(cfg)]
    bar = tqdm(total=len(jobs), desc="phantom", unit="img", disable=not progress)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_case, jobs, chunksize=16):
                bar.update()
    else:
        for job in jobs:
            _write_case(job)
            bar.update()
    bar.close()

    counts = {
        s: {c: cfg.n_train_per_class if s == TRAINING else cfg.n_test_per_class for c in CLASSES}
        for s in SOURCE_SPLITS
    }
    manifest = {
        "generator": PHANTOM_GENERATOR,
        "config": cfg.recorded(),
        "counts": counts,
        "level_range_mm": list(LEVEL_RANGE_MM),
        "sequences": list(SEQUENCES),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if cfg.metadata != "none":
        write_metadata(cfg, out_dir)
    return counts


def image_metadata(cfg: PhantomConfig, split: str, cls: str, index: int) -> dict[str, Any]:
    """The clinical metadata of one phantom image (lib.data.demographics: age, sex)."""
    from .demographics import draw

    return draw(cfg.seed, split, cls, index)


def write_metadata(cfg: PhantomConfig, out_dir: Path) -> Path:
    """<out>/metadata.csv: path (relative to out), then age and sex, one row per image."""
    import csv
    import io

    from .demographics import COLUMNS

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", *COLUMNS])
    for split, cls, index in _jobs(cfg):
        row = image_metadata(cfg, split, cls, index)
        stem = f"{cls}_{index:0{_name_width(cfg)}d}"
        writer.writerow([f"{split}/{cls}/{stem}.png", *(row[c] for c in COLUMNS)])
    path = Path(out_dir) / METADATA_CSV
    path.write_text(buf.getvalue())
    return path


def generate_sequence_task(
    cfg: PhantomConfig, n_per_sequence: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """In-memory images and sequence labels (index into SEQUENCES) for backbone pretraining.

    Seeded separately from the classification set (own seed, own split id); classes are mixed
    so lesions appear, and the sequence is balanced and interleaved. No shortcut is applied.
    """
    if n_per_sequence < 1:
        raise ValueError(f"n_per_sequence must be >= 1, got {n_per_sequence}")
    task_cfg = replace(cfg, seed=int(seed), shortcut="none")
    rng = np.random.default_rng([int(seed), _SPLIT_IDS["Sequence"]])
    classes = rng.integers(0, len(CLASSES), n_per_sequence * len(SEQUENCES))
    n = cfg.image_size
    images = np.empty((len(classes), n, n), dtype=np.uint8)
    labels = np.empty(len(classes), dtype=np.int64)
    for k, c in enumerate(classes):
        s = k % len(SEQUENCES)
        draws = replace(_draw(task_cfg, "Sequence", CLASSES[int(c)], k), sequence=SEQUENCES[s])
        images[k] = render(task_cfg, draws)[0]
        labels[k] = s
    return images, labels


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _parse_set(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    """python -m lib.data.phantom --params params.yaml --out data/raw [--overwrite] [--set k=v]"""
    from ..config import load_params, section

    parser = argparse.ArgumentParser(
        prog="python -m lib.data.phantom", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--params", default=None, help="params.yaml (default: repository root)")
    parser.add_argument("--out", default=None, help="output folder (default: data.raw_dir)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-phantom folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one phantom: parameter (YAML value), repeatable",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes (output is identical)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        group = {**section(params, "phantom"), **_parse_set(args.set)}
        cfg = PhantomConfig.from_params(group)
        out = args.out or params.get("data", {}).get("raw_dir")
        if not out:
            raise ValueError("no --out given and params.yaml has no data.raw_dir")
        counts = generate(
            cfg,
            Path(out),
            progress=not args.quiet,
            overwrite=args.overwrite,
            workers=max(1, args.workers),
        )
    except (ValueError, KeyError, FileExistsError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(sum(c.values()) for c in counts.values())
    print(f"wrote {total} images (+ masks) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
