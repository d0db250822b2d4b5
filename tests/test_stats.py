"""The statistics primitives every stage shares (lib.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from lib import stats


def _otsu_uint8_reference(image: np.ndarray) -> float:
    """The EDA's former uint8 Otsu (normalised histogram over 0..255), kept as the reference."""
    hist = np.bincount(image.ravel(), minlength=256).astype(float)
    prob = hist / hist.sum()
    omega = np.cumsum(prob)
    mu = np.cumsum(prob * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    return float(np.nanargmax(between))


def test_otsu_on_uint8_images_cuts_where_the_former_eda_version_did() -> None:
    rng = np.random.default_rng(0)
    for i in range(60):
        if i % 2:
            image = rng.integers(0, 256, (40, 50)).astype(np.uint8)
        else:
            image = np.zeros((64, 64), np.uint8)
            image[10:50, 12:48] = rng.integers(60, 255)
            image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
        t = stats.otsu_threshold(image)
        assert t % 1 == 0.5  # between two grey levels
        assert np.array_equal(image > t, image > _otsu_uint8_reference(image))


def test_otsu_on_maps_and_constant_input() -> None:
    values = np.r_[np.full(50, 0.1), np.full(50, 0.8)]
    assert 0.1 <= stats.otsu_threshold(values) < 0.8
    assert stats.otsu_threshold(np.full(10, 0.3)) == 0.3
    assert stats.otsu_threshold(np.full((4, 4), 7, np.uint8)) == 7.0  # nothing is above it


def test_bootstrap_ci_is_the_percentile_interval_of_seeded_index_resamples() -> None:
    values = np.random.default_rng(1).random(40)
    ci = stats.bootstrap_ci(lambda idx: values[idx].mean(axis=-1), 40, 500, seed=3, level=0.9)
    idx = np.random.default_rng(3).integers(0, 40, size=(500, 40))
    expected = np.quantile(values[idx].mean(axis=1), [0.05, 0.95])
    np.testing.assert_array_equal(ci, expected)
    # a statistic with several values per resample gets one interval per value (columns)
    def mean_and_max(idx: np.ndarray) -> np.ndarray:
        return np.column_stack([values[idx].mean(axis=1), values[idx].max(axis=1)])

    both = stats.bootstrap_ci(mean_and_max, 40, 500, seed=3, level=0.9)
    assert both.shape == (2, 2) and np.array_equal(both[:, 0], ci)
    with pytest.raises(ValueError, match="resamples"):
        stats.bootstrap_ci(np.mean, 5, resamples=0)
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci(np.mean, 5, level=95)


def test_mean_ci_matches_scipy_bootstrap() -> None:
    from scipy.stats import bootstrap

    values = np.r_[np.zeros(30), np.ones(70)]
    lo, hi = stats.mean_ci(values, 500, seed=3)
    res = bootstrap((values,), np.mean, n_resamples=500, method="percentile",
                    rng=np.random.default_rng(3), vectorized=True)
    assert (lo, hi) == pytest.approx(tuple(res.confidence_interval), abs=1e-12)
    assert stats.mean_ci(np.ones(5), 500, 0) == (1.0, 1.0)
    assert stats.mean_ci(np.array([0.4]), 500, 0) == (0.4, 0.4)
    with pytest.raises(ValueError, match="no values"):
        stats.mean_ci(np.array([]), 500, 0)


def test_mean_sd_and_row_normalise() -> None:
    assert stats.mean_sd([0.5, 0.7]) == {"mean": pytest.approx(0.6),
                                         "sd": pytest.approx(0.1414213562), "n": 2}
    assert stats.mean_sd([0.5]) == {"mean": 0.5, "sd": None, "n": 1}
    shares = stats.row_normalise(np.array([[1, 1, 0], [0, 2, 0], [0, 0, 0]]))
    assert shares.tolist() == [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
