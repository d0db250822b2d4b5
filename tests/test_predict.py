"""Finding trained models and the predictions cache that evaluation and explanation read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.data.manifest import DataError
from lib.evaluate.predict import find_models, read_predictions, write_predictions


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_find_models_lists_every_seed_and_skips_the_pretrain_backbone(tmp_path: Path) -> None:
    for rel in ("transfer/seed42.keras", "scratch_none/seed43.keras", "scratch_none/seed42.keras",
                "pretrain/seed42.keras", "scratch_none/best.keras", "scratch_none/notes.txt"):
        touch(tmp_path / rel)
    found = find_models(tmp_path)
    assert [m.key for m in found] == ["scratch_none_s42", "scratch_none_s43", "transfer_s42"]
    assert found[0].path == tmp_path / "scratch_none" / "seed42.keras"


@pytest.mark.parametrize("make", [False, True])
def test_no_models_is_an_error_that_says_what_to_run(tmp_path: Path, make: bool) -> None:
    folder = tmp_path / "models"
    if make:
        touch(folder / "pretrain" / "backbone.weights.h5")
    with pytest.raises(DataError, match="dvc repro train_scratch"):
        find_models(folder)


def test_predictions_round_trip_keeps_rows_scores_and_class_order(tmp_path: Path) -> None:
    frame = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "split": ["val", "test", "test"],
                          "class": ["x", "y", "x"], "label": [0, 1, 0],
                          "mask": ["", "b_mask.png", ""]})
    scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    path = write_predictions(tmp_path / "m_s1.csv", frame, scores, ["x", "y"])
    rows, read, names = read_predictions(path, "test")
    assert names == ["x", "y"]
    assert rows["path"].tolist() == ["b.png", "c.png"]
    assert rows["mask"].tolist() == ["b_mask.png", ""]
    np.testing.assert_allclose(read, scores[1:])
    assert rows["predicted"].tolist() == [1, 1]
