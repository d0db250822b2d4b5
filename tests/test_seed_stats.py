"""The seed-aware statistics of lib.stats against scipy: seed_interval, welch_difference and
paired_difference (seeds are the replicates)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from lib import stats

SAMPLES = [
    [0.81, 0.86, 0.90],
    [0.5, 0.7],
    [0.912, 0.905, 0.931, 0.887, 0.920],
    list(np.random.default_rng(0).normal(0.8, 0.05, 8)),
]


# ------------------------------------------------------------------ seed_interval
@pytest.mark.parametrize("values", SAMPLES)
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_seed_interval_is_scipys_t_interval(values: list[float], level: float) -> None:
    arr = np.asarray(values)
    expected = sps.t.interval(level, len(arr) - 1, loc=arr.mean(), scale=sps.sem(arr))
    out = stats.seed_interval(values, level)
    assert out["interval"] == pytest.approx(list(expected), abs=1e-12)
    assert out["mean"] == pytest.approx(arr.mean())
    assert out["sd"] == pytest.approx(arr.std(ddof=1))
    assert out["n"] == len(arr)
    assert out["interval"][0] < out["mean"] < out["interval"][1]


def test_seed_interval_width_is_the_honest_t_width_at_three_seeds() -> None:
    # the docstring's figure: with 3 seeds the half-width is t(0.975, 2) = 4.30 standard errors
    out = stats.seed_interval([0.0, 1.0, 2.0])  # sd 1, se 1/sqrt(3)
    half = (out["interval"][1] - out["interval"][0]) / 2
    assert half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    narrower = stats.seed_interval([0.0, 1.0, 2.0], level=0.8)
    assert narrower["interval"][1] - narrower["interval"][0] < 2 * half


def test_seed_interval_of_one_seed_has_no_interval_and_empty_is_an_error() -> None:
    assert stats.seed_interval([0.87]) == {"mean": 0.87, "sd": None, "n": 1, "interval": None}
    with pytest.raises(ValueError, match="no seeds"):
        stats.seed_interval([])
    constant = stats.seed_interval([0.5, 0.5, 0.5])
    assert constant["sd"] == 0.0 and constant["interval"] == [0.5, 0.5]


# ------------------------------------------------------------------ welch_difference
PAIRS = [
    ([0.91, 0.93, 0.92], [0.85, 0.80, 0.88]),
    ([0.7, 0.9], [0.75, 0.78, 0.80, 0.74]),
    ([0.60, 0.95, 0.75], [0.70, 0.72, 0.71]),  # the interval straddles 0
    (list(np.random.default_rng(1).normal(0.9, 0.02, 5)),
     list(np.random.default_rng(2).normal(0.88, 0.04, 7))),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
@pytest.mark.parametrize("level", [0.95, 0.99])
def test_welch_difference_is_scipys_welch_test(a: list[float], b: list[float],
                                               level: float) -> None:
    ref = sps.ttest_ind(a, b, equal_var=False)
    out = stats.welch_difference(a, b, level)
    assert out["estimate"] == pytest.approx(np.mean(a) - np.mean(b))
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["df"] == pytest.approx(ref.df, rel=1e-9)
    ci = ref.confidence_interval(level)
    assert out["interval"] == pytest.approx([ci.low, ci.high], rel=1e-9, abs=1e-12)
    assert out["test"] == f"Welch t-test over seeds ({len(a)} vs {len(b)})"


def test_welch_interval_excludes_zero_exactly_when_p_is_below_alpha() -> None:
    for a, b in PAIRS:
        out = stats.welch_difference(a, b, level=0.95)
        lo, hi = out["interval"]
        assert (lo > 0 or hi < 0) == (out["p"] < 0.05)
    assert stats.welch_difference(*PAIRS[2])["interval"][0] < 0 < \
        stats.welch_difference(*PAIRS[2])["interval"][1]


def test_welch_is_antisymmetric() -> None:
    a, b = PAIRS[1]
    ab, ba = stats.welch_difference(a, b), stats.welch_difference(b, a)
    assert ab["estimate"] == pytest.approx(-ba["estimate"])
    assert ab["p"] == pytest.approx(ba["p"])
    assert ab["interval"] == pytest.approx([-ba["interval"][1], -ba["interval"][0]])


@pytest.mark.parametrize(("a", "b"), [([0.9], [0.8, 0.85]), ([0.9, 0.92], [0.8]), ([0.9], [0.8])])
def test_welch_with_one_seed_on_a_side_has_no_test(a: list[float], b: list[float]) -> None:
    out = stats.welch_difference(a, b)
    assert out["estimate"] == pytest.approx(np.mean(a) - np.mean(b))
    assert out["interval"] is None and out["p"] is None and out["df"] is None
    assert f"({len(a)} vs {len(b)})" in out["test"]


@pytest.mark.filterwarnings("ignore:Precision loss")
def test_welch_without_any_spread_is_exact() -> None:
    # exactly representable values, so the sd is exactly zero
    out = stats.welch_difference([0.75, 0.75, 0.75], [0.5, 0.5])
    assert out["estimate"] == 0.25 and out["interval"] == [0.25, 0.25] and out["p"] == 0.0
    ref = sps.ttest_ind([0.75, 0.75, 0.75], [0.5, 0.5], equal_var=False)
    assert ref.pvalue == 0.0  # scipy agrees where it defines the answer
    same = stats.welch_difference([0.5, 0.5], [0.5, 0.5, 0.5])
    assert same["estimate"] == 0.0 and same["interval"] == [0.0, 0.0] and same["p"] == 1.0


@pytest.mark.filterwarnings("ignore:Precision loss")
def test_welch_with_spread_on_one_side_only_matches_scipy() -> None:
    a, b = [0.8, 0.8, 0.8], [0.70, 0.74, 0.76]
    out = stats.welch_difference(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["df"] == pytest.approx(2.0)  # all variance from b: n_b - 1


# ------------------------------------------------------------------ paired_difference
@pytest.mark.parametrize(("a", "b"), [
    ([0.72, 0.70, 0.75], [0.28, 0.30, 0.25]),
    ([0.5, 0.6, 0.7, 0.65], [0.52, 0.55, 0.72, 0.60]),
    ([0.71, 0.69], [0.70, 0.72]),
])
def test_paired_difference_is_scipys_paired_test(a: list[float], b: list[float]) -> None:
    ref = sps.ttest_rel(a, b)
    out = stats.paired_difference(a, b)
    assert out["estimate"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["df"] == len(a) - 1
    ci = ref.confidence_interval(0.95)
    assert out["interval"] == pytest.approx([ci.low, ci.high], rel=1e-9, abs=1e-12)
    assert out["test"] == f"paired t-test over seeds (n = {len(a)})"


def test_pairing_is_what_makes_a_consistent_small_gain_significant() -> None:
    # the same models measured two ways: a steady +0.02 is clear when paired, lost in the
    # seed-to-seed spread when the two sets are treated as independent
    b = [0.60, 0.75, 0.90]
    a = [0.62, 0.77, 0.93]
    assert stats.paired_difference(a, b)["p"] < 0.05
    assert stats.welch_difference(a, b)["p"] > 0.5


def test_paired_difference_edge_cases() -> None:
    one = stats.paired_difference([0.7], [0.6])
    assert one["estimate"] == pytest.approx(0.1)
    assert one["interval"] is None and one["p"] is None and one["df"] is None
    constant = stats.paired_difference([0.75, 0.5], [0.5, 0.25])  # every difference 0.25
    assert constant["interval"] == [0.25, 0.25] and constant["p"] == 0.0
    none = stats.paired_difference([0.5, 0.25], [0.5, 0.25])
    assert none["estimate"] == 0.0 and none["p"] == 1.0


def test_rounding_noise_is_no_difference_and_bad_inputs_are_refused() -> None:
    noise = stats.welch_difference([0.3, 0.3], [0.1 + 0.2, 0.1 + 0.2])  # 5.6e-17 apart
    assert noise["estimate"] == 0.0 and noise["p"] == 1.0
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_difference([0.7, 0.8, 0.9], [0.5])
    with pytest.raises(ValueError, match="at least one seed"):
        stats.welch_difference([], [0.5, 0.6])
