"""Tests written to kill the mutants that survived `make mutation` (mutmut over lib.stats,
lib.jsonio, lib.explain.scores and lib.splits): each pins a behaviour no other fast test checked.

The surviving mutants that cannot change behaviour (equivalent ones) are listed, with the reason,
in the README's "Mutation testing" section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib import jsonio, stats
from lib.explain import scores


# ---- lib.stats -----------------------------------------------------------------------------
def test_otsu_cuts_by_hand() -> None:
    # floats: 256 equal bins over [min, max]; every cut between two spikes ties, the first wins
    assert stats.otsu_threshold(np.r_[np.zeros(10), np.ones(10)]) == 1 / 256
    # integers: one bin per level from the lowest level present, not from 0
    assert stats.otsu_threshold(np.array([100, 200] * 5, np.uint8)) == 100.5
    # two levels (a mask as uint8): the one cut between them
    assert stats.otsu_threshold(np.array([[0, 1], [1, 1]], np.uint8)) == 0.5
    # a class of one value on either side: {5, 6, 6, 7} | {9} (between-class variance 36) beats
    # {5, 6, 6} | {7, 9} (32.7) and {5} | {6, 6, 7, 9} (16)
    assert stats.otsu_threshold(np.array([5, 6, 6, 7, 9], np.uint8)) == 7.5


def test_bootstrap_ci_defaults_bounds_and_messages() -> None:
    seen: list[np.ndarray] = []

    def mean(idx: np.ndarray) -> np.ndarray:
        seen.append(idx)
        return idx.mean(axis=1)

    stats.bootstrap_ci(mean, 7)  # the documented defaults: 1000 resamples, seed 42
    np.testing.assert_array_equal(seen[0], np.random.default_rng(42).integers(0, 7, (1000, 7)))
    # the smallest valid call: one item, one resample
    assert stats.bootstrap_ci(mean, 1, resamples=1).tolist() == [0.0, 0.0]
    for resamples in (True, 2.5, 0):
        with pytest.raises(ValueError, match="resamples"):
            stats.bootstrap_ci(mean, 5, resamples=resamples)
    for level in (0, 1, 1.5):
        with pytest.raises(ValueError, match="level"):
            stats.bootstrap_ci(mean, 5, level=level)
    with pytest.raises(ValueError, match="^no items to bootstrap$"):
        stats.bootstrap_ci(mean, 0)


def test_mean_ci_bootstraps_two_values_uses_level_and_takes_booleans() -> None:
    lo, hi = stats.mean_ci(np.array([0.0, 1.0]), 500, 0)
    assert lo < hi  # two different values are bootstrapped, not returned as their mean
    values = np.random.default_rng(0).random(30)
    half = stats.mean_ci(values, 500, 3, level=0.5)
    expected = stats.bootstrap_ci(lambda idx: values[idx].mean(axis=-1), 30, 500, 3, 0.5)
    assert half == tuple(expected) and half != stats.mean_ci(values, 500, 3)
    hits = np.array([True, False, True, True])
    assert stats.mean_ci(hits, 200, 0) == stats.mean_ci(hits.astype(float), 200, 0)
    with pytest.raises(ValueError, match="^no values to bootstrap$"):
        stats.mean_ci(np.array([]), 500, 0)


def test_mean_sd_is_computed_in_float64() -> None:
    x = np.array([0.1, 0.2, 0.4], np.float32)
    wide = x.astype(np.float64)
    assert stats.mean_sd(x) == {"mean": float(wide.mean()), "sd": float(wide.std(ddof=1)),
                                "n": 3}


def test_row_normalise_divides_each_row_by_its_own_total() -> None:
    assert stats.row_normalise(np.array([[3, 1], [0, 2]])).tolist() == [[0.75, 0.25], [0, 1]]
    assert stats.row_normalise(np.array([[1, 0], [0, 0]])).tolist() == [[1, 0], [0, 0]]
    assert stats.row_normalise(np.array([[0.125, 0.375]])).tolist() == [[0.25, 0.75]]  # total 0.5


# ---- lib.jsonio ----------------------------------------------------------------------------
def test_write_json_rounds_to_the_digits_given_and_makes_every_parent(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "c" / "m.json"
    jsonio.write_json(path, {"x": 1 / 3}, digits=4)
    assert path.read_text() == '{\n  "x": 0.3333\n}\n'


# ---- lib.explain.scores: localisation ------------------------------------------------------
def _square_mask_and_map() -> tuple[np.ndarray, np.ndarray]:
    """An 8x8 mask with a 2x2 square; a map peaking inside it (1.0) and once outside (0.5)."""
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:4, 2:4] = True
    sal = np.zeros((8, 8))
    sal[3, 3], sal[6, 6] = 1.0, 0.5
    return mask, sal


def test_tolerance_ignores_a_channel_axis() -> None:
    assert scores.tolerance_px((10, 20, 64)) == pytest.approx(15 / 224 * 20)


def test_pointing_game_tol_uses_the_distance_it_is_given() -> None:
    mask, sal = _square_mask_and_map()
    sal[3, 3] = 0.0  # the peak is now (6, 6), 3+ px from the mask: a miss at 1 px tolerance
    assert not scores.pointing_game_tol(sal, mask, tolerance=1)
    assert scores.pointing_game_tol(sal, mask, tolerance=1, distance=np.zeros((8, 8)))


def test_energy_of_a_faint_map_and_iou_counts_the_region_outside_the_mask() -> None:
    mask, sal = _square_mask_and_map()
    assert scores.energy_in_mask(sal / 4, mask) == pytest.approx(1 / 1.5)  # sum 0.375 < 1
    assert scores.iou(sal, mask, 0.4) == pytest.approx(1 / 5)  # union: 4 mask px + (6, 6)


def test_score_maps_by_hand() -> None:
    mask, sal = _square_mask_and_map()
    row = scores.score_maps(sal[None], [mask]).iloc[0]  # map at mask size: no resizing
    # Otsu cuts the map at 1/256 (62 zeros | 0.5, 1.0): region {(3, 3), (6, 6)}, IoU 1/5;
    # the fixed 0.5 threshold keeps (3, 3) only, IoU 1/4
    assert row.to_dict() == pytest.approx({"pointing_game": 1.0, "pointing_game_tol": 1.0,
                                           "energy_in_mask": 1 / 1.5, "iou_otsu": 0.2,
                                           "iou_fixed": 0.25})
    assert scores.score_maps(sal[None], [mask], iou_threshold=0.4).iloc[0]["iou_fixed"] == 0.2
    # a 0/1 uint8 mask (as read from a PNG) scores as the boolean mask
    pd.testing.assert_frame_equal(scores.score_maps(sal[None], [mask.astype(np.uint8)]),
                                  scores.score_maps(sal[None], [mask]))
    empty = scores.score_maps(np.zeros((0, 8, 8)), [])
    assert empty.empty and list(empty.columns) == list(scores.SCORES)


def test_score_maps_and_summarise_refuse_bad_input_with_messages() -> None:
    mask, sal = _square_mask_and_map()
    with pytest.raises(ValueError, match="^2 maps for 1 masks$"):
        scores.score_maps(np.stack([sal, sal]), [mask])
    for threshold in (0, 1):
        with pytest.raises(ValueError, match="iou_threshold"):
            scores.score_maps(sal[None], [mask], iou_threshold=threshold)
    with pytest.raises(ValueError,
                       match="^an empty mask cannot be scored: pass tumour images only$"):
        scores.score_maps(sal[None], [np.zeros((8, 8), bool)])
    table = pd.DataFrame({s: [0.0, 1.0, 1.0] for s in scores.SCORES})
    with pytest.raises(ValueError, match="^3 score rows for 2 class labels$"):
        scores.summarise(table, ["a", "b"], 100, 0)


def test_summarise_gives_each_score_its_seeded_ci() -> None:
    values = np.random.default_rng(0).random(40)
    table = pd.DataFrame({s: values for s in scores.SCORES})
    out = scores.summarise(table, ["a", "b"] * 20, 300, 5)
    for s in scores.SCORES:
        assert out[s]["ci"] == list(stats.mean_ci(values, 300, 5))


def test_summarise_lists_classes_in_sorted_order() -> None:
    table = pd.DataFrame({s: [0.0, 1.0, 1.0, 0.0] for s in scores.SCORES})
    out = scores.summarise(table, ["b", "a", "c", "a"], 100, 0)
    assert list(out["per_class"]) == ["a", "b", "c"]


# ---- lib.explain.scores: faithfulness and sanity -------------------------------------------
def test_curve_auc_in_float64_and_spearman_of_a_flat_map() -> None:
    curves = np.array([[0.1, 0.7, 0.3], [1.0, 0.35, 0.2]], np.float32)
    assert scores.curve_auc(curves).tolist() == \
        np.trapezoid(curves.astype(np.float64), [0, 0.5, 1], axis=1).tolist()
    a = np.random.default_rng(0).random((2, 5, 5))
    assert scores.map_spearman(np.zeros_like(a), a).tolist() == [0, 0]  # flat first map too
    with pytest.raises(ValueError, match=r"^map shapes differ: \(2, 5, 5\) vs \(2, 4, 4\)$"):
        scores.map_spearman(a, a[:, :4, :4])


def _linear_model(kernel: np.ndarray):
    """A Keras model with softmax(flatten(image) @ kernel) as its probabilities, no bias."""
    import keras

    size = int(np.sqrt(kernel.shape[0]))
    model = keras.Sequential([keras.Input((size, size, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(kernel.shape[1], use_bias=False,
                                                 activation="softmax")])
    model.layers[-1].set_weights([kernel.astype(np.float32)])
    return model


def _reference_curves(kernel, images, maps, targets, baseline, steps):
    """Deletion and insertion curves the slow way: per image and step, in float64."""
    n, size = images.shape[0], images.shape[1]
    pixels = size * size
    curves = np.zeros((2, n, steps + 1))
    for i in range(n):
        flat = maps[i].ravel()
        order = sorted(range(pixels), key=lambda p: -flat[p])  # Python's sort is stable
        for k in range(steps + 1):
            top = np.zeros(pixels, dtype=bool)
            top[order[:k * pixels // steps]] = True
            image, base = images[i].ravel().astype(np.float64), baseline[i].ravel()
            for row, mixed in enumerate((np.where(top, base, image), np.where(top, image, base))):
                logits = mixed @ kernel
                probs = np.exp(logits - logits.max())
                curves[row, i, k] = probs[targets[i]] / probs.sum()
    return curves[0], curves[1]


def test_deletion_insertion_against_a_per_step_reference() -> None:
    rng = np.random.default_rng(0)
    size, n, steps = 8, 2, 4  # n != size; 64 pixels, 16 more per step
    kernel = np.column_stack([np.zeros(size * size), rng.normal(0, 0.5, size * size)])
    model = _linear_model(kernel)
    images = rng.random((n, size, size, 1)).astype(np.float32)
    baseline = rng.random((n, size, size, 1)).astype(np.float32)
    maps = rng.integers(0, 3, (n, size, size)) / 2  # many ties: raster order breaks them
    targets = np.array([1, 0])
    deletion, insertion = scores.deletion_insertion(model, images, maps, targets, baseline, steps)
    expected = _reference_curves(kernel, images, maps, targets, baseline, steps)
    np.testing.assert_allclose(deletion, expected[0], atol=1e-6)
    np.testing.assert_allclose(insertion, expected[1], atol=1e-6)
    default = scores.deletion_insertion(model, images, maps, targets, baseline)
    assert default[0].shape == default[1].shape == (n, 21)  # 20 steps by default
    assert scores.deletion_insertion(model, images, maps, targets, baseline, 2)[0].shape == (n, 3)
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="faithfulness_steps must be an integer >= 2"):
            scores.deletion_insertion(model, images, maps, targets, baseline, bad)
    with pytest.raises(ValueError, match=r"^maps \(2, 4, 4\) do not match images \(2, 8, 8\)$"):
        scores.deletion_insertion(model, images, maps[:, :4, :4], targets, baseline, steps)


def test_sanity_by_hand() -> None:
    a = np.random.default_rng(0).random((3, 6, 6))
    same = scores.sanity(a, 5 * a + 2)  # a monotone rescaling keeps every rank
    assert same["spearman"] == pytest.approx(1.0) and not same["passed"] and same["n"] == 3
    flipped = scores.sanity(a, 1 - a)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["passed"]
    # passing needs a correlation strictly below the bound
    rho = scores.sanity(a, a[::-1])["spearman"]
    assert not scores.sanity(a, a[::-1], max_spearman=rho)["passed"]
    assert scores.sanity(a, a[::-1], max_spearman=rho + 1e-9)["passed"]
