"""Statistics primitives shared by the stages: one home for each, so every number is made one way.

- ``otsu_threshold``: Otsu's threshold of an image or a saliency map (the EDA's head mask, the
  explain stage's IoU at Otsu's cut);
- ``bootstrap_ci``: percentile bootstrap CI of any statistic over resampled indices, seeded; the
  evaluation's metric CIs and ``mean_ci`` (the mean of per-image scores) are built on it;
- ``mean_sd``: mean and sample sd over seeds;
- ``seed_interval`` and ``welch_difference``: the seed-aware statistics. Seeds are the
  replicates: a configuration's score is the mean over its seeds with a t-interval, and two
  configurations differ when Welch's interval for the difference of their means excludes zero
  (``paired_difference`` when both are measured on the same seeds' models, e.g. two saliency
  methods on one model). With 3 seeds a t-interval is wide (t = 4.30 at 2 df), which is the
  honest width: a bootstrap over 3 seeds can only return 10 distinct means and under-covers;
- ``row_normalise``: a confusion matrix as shares of each true class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

CI_LEVEL = 0.95
EXACT = 1e-12  # differences and spreads below this are float rounding, not a difference


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut t that maximises the between-class variance of {<= t}, {> t}.

    Foreground is ``values > t``. Integer values (a uint8 image) get one bin per integer level,
    so t is a level plus 0.5; floats (a saliency map) get `bins` equal bins over [min, max] and t
    is a bin's upper edge. A constant input returns its value (nothing lies above it).
    """
    values = np.asarray(values).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    if np.issubdtype(values.dtype, np.integer):
        bins, lo, hi = int(hi - lo) + 1, lo - 0.5, hi + 0.5
    hist, edges = np.histogram(values.astype(np.float64), bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[1:][int(np.argmax(between[:-1]))])


def bootstrap_ci(statistic: Callable[[np.ndarray], np.ndarray], n: int, resamples: int = 1000,
                 seed: int = 42, level: float = CI_LEVEL) -> np.ndarray:
    """Percentile bootstrap interval, shape (2, ...): rows are the lower and upper bound.

    One seeded (resamples x n) matrix of indices into the n items is drawn
    (``default_rng(seed).integers(0, n, (resamples, n))``, the draw scipy.stats.bootstrap makes);
    `statistic` maps it to one value (or one array of values) per resample, shape (resamples,
    ...), and the interval is the (1 - level) / 2 and 1 - (1 - level) / 2 quantiles (linear).
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int | np.integer) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 1:
        raise ValueError("no items to bootstrap")
    idx = np.random.default_rng(seed).integers(0, n, size=(int(resamples), n))
    alpha = (1 - level) / 2
    return np.quantile(np.asarray(statistic(idx)), [alpha, 1 - alpha], axis=0)


def mean_ci(values: np.ndarray, resamples: int, seed: int, level: float = CI_LEVEL
            ) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-item values; constant values are their own."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no values to bootstrap")
    if len(values) < 2 or np.ptp(values) == 0:
        return float(values.mean()), float(values.mean())
    lo, hi = bootstrap_ci(lambda idx: values[idx].mean(axis=-1), len(values), int(resamples),
                          seed, level)
    return float(lo), float(hi)


def mean_sd(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean and sample sd (ddof=1) across seeds; sd is None for one seed (there is no spread)."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else None,
            "n": len(arr)}


def seed_interval(values: Sequence[float], level: float = CI_LEVEL) -> dict[str, Any]:
    """Mean, sd and the t-interval of the mean over seeds (interval None for one seed)."""
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    if len(arr) == 0:
        raise ValueError("no seeds to summarise")
    out: dict[str, Any] = {**mean_sd(arr), "interval": None}
    if len(arr) > 1:
        half = stats.t.ppf(1 - (1 - level) / 2, len(arr) - 1) * arr.std(ddof=1) / np.sqrt(len(arr))
        out["interval"] = [float(arr.mean() - half), float(arr.mean() + half)]
    return out


def _difference(estimate: float, se: float, df: float, level: float, test: str
                ) -> dict[str, Any]:
    from scipy import stats

    if se < EXACT:  # no spread at all (bar rounding): the difference is exact
        estimate = 0.0 if abs(estimate) < EXACT else estimate
        return {"estimate": estimate, "interval": [estimate, estimate],
                "p": 0.0 if estimate else 1.0, "df": df, "test": test}
    half = stats.t.ppf(1 - (1 - level) / 2, df) * se
    p = 2 * stats.t.sf(abs(estimate) / se, df)
    return {"estimate": estimate, "interval": [float(estimate - half), float(estimate + half)],
            "p": float(p),
            "df": float(df), "test": test}


def welch_difference(a: Sequence[float], b: Sequence[float], level: float = CI_LEVEL
                     ) -> dict[str, Any]:
    """mean(a) - mean(b) with Welch's t-interval and two-sided p, seeds as the replicates.

    Needs two seeds on each side (one seed has no spread to test against): otherwise the
    interval and p are None.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not len(x) or not len(y):
        raise ValueError("a difference needs at least one seed on each side")
    estimate = float(x.mean() - y.mean())
    test = f"Welch t-test over seeds ({len(x)} vs {len(y)})"
    if len(x) < 2 or len(y) < 2:
        return {"estimate": estimate, "interval": None, "p": None, "df": None, "test": test}
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = float(np.sqrt(vx + vy))
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)) if se else 1.0
    return _difference(estimate, se, float(df), level, test)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = CI_LEVEL
                      ) -> dict[str, Any]:
    """mean(a - b) over matched seeds with the paired t-interval (same models, two measures)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or not len(x):
        raise ValueError(f"paired values need the same seeds on both sides: {len(x)} vs {len(y)}")
    d = x - y
    test = f"paired t-test over seeds (n = {len(d)})"
    if len(d) < 2:
        return {"estimate": float(d.mean()), "interval": None, "p": None, "df": None,
                "test": test}
    return _difference(float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), len(d) - 1.0,
                       level, test)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def row_normalise(cm: np.ndarray) -> np.ndarray:
    """Each row as shares of its true class (recall on the diagonal); an empty row stays 0."""
    cm = np.asarray(cm, dtype=float)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


@contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed numpy's legacy global state for a library that draws from it, then restore it.

    tf-keras-vis draws SmoothGrad noise there, and seaborn its strip-plot jitter.
    """
    state = np.random.get_state()  # noqa: NPY002  (the library reads the legacy global state)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002
