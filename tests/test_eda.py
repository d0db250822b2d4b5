"""EDA statistics on inputs whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib import eda


def test_otsu_separates_two_intensity_populations() -> None:
    rng = np.random.default_rng(0)
    low = np.clip(rng.normal(40, 5, 5000), 0, 255).astype(np.uint8)
    high = np.clip(rng.normal(180, 5, 5000), 0, 255).astype(np.uint8)
    threshold = eda.otsu_threshold(np.concatenate([low, high]).reshape(100, 100))
    assert low.max() <= threshold < high.min()


def test_head_mask_is_the_largest_blob_with_holes_filled() -> None:
    img = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    head = (yy - 32) ** 2 + (xx - 32) ** 2 < 20**2
    img[head] = 200
    img[(yy - 32) ** 2 + (xx - 32) ** 2 < 5**2] = 0  # a dark hole inside (ventricle-like)
    img[2:4, 2:4] = 255  # a speck outside
    mask = eda.head_mask(img)
    assert mask[32, 32] and not mask[3, 3]
    assert abs(int(mask.sum()) - int(head.sum())) < 5


def test_kruskal_detects_a_shift_and_not_its_absence() -> None:
    rng = np.random.default_rng(1)
    same = pd.DataFrame({"class": np.repeat(["a", "b", "c"], 200), "mean": rng.normal(0, 1, 600)})
    shifted = same.assign(mean=same["mean"] + np.repeat([0.0, 0.0, 2.0], 200))
    null, effect = eda.kruskal_by_class(same, "mean"), eda.kruskal_by_class(shifted, "mean")
    assert null["p"] > 0.01 and abs(null["epsilon2"]) < 0.02
    assert effect["p"] < 1e-10 and effect["epsilon2"] > 0.3
    assert effect["n"] == 600 and effect["k"] == 3


def test_kruskal_with_one_class_is_reported_not_raised() -> None:
    one = pd.DataFrame({"class": ["a"] * 5, "mean": np.arange(5.0)})
    assert np.isnan(eda.kruskal_by_class(one, "mean")["H"])


def test_counts_table_orders_splits_and_totals() -> None:
    manifest = pd.DataFrame({"class": ["x", "x", "y", "y", "y"],
                             "split": ["test", "train", "train", "val", "train"]})
    table = eda.counts_table(manifest)
    assert list(table.columns) == ["train", "val", "test", "total"]
    assert table.loc["y"].tolist() == [2, 1, 0, 3]


@pytest.mark.parametrize("per_class", [1, 3])
def test_sample_records_is_seeded_and_capped(per_class: int) -> None:
    manifest = pd.DataFrame({"class": list("aaaabb"), "split": ["train"] * 6,
                             "path": [f"p{i}" for i in range(6)]})
    first = eda.sample_records(manifest, per_class, seed=3)
    assert first.equals(eda.sample_records(manifest, per_class, seed=3))
    assert first.groupby("class").size().to_dict() == {"a": per_class, "b": min(per_class, 2)}
