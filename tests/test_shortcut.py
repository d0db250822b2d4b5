"""The shortcut test of the guided arm (lib.explain.shortcut) and the phantom's marker shortcut
(lib.data.phantom, shortcut="marker"): the marker is in Training only, where its corner codes
the class; the stage trains both arms on a tiny marked set, scores them with and without the
marker, and resumes into the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lib.data import phantom as P
from lib.explain import shortcut as S
from tests.conftest import REPO


def test_the_marker_codes_the_class_by_corner_in_training_images_only() -> None:
    cfg = P.PhantomConfig(image_size=64, shortcut="marker")
    boxes = {}
    for cls in P.MARKER_CORNERS:
        image, mask = P.render_case(cfg, "Training", cls, 0)
        plain, plain_mask = P.render_case(P.PhantomConfig(image_size=64), "Training", cls, 0)
        rows, cols = P.marker_box(64, cls)
        assert (image[rows, cols] == 255).all() and np.array_equal(mask, plain_mask)
        outside = np.ones(image.shape, bool)
        outside[rows, cols] = False
        assert np.array_equal(image[outside], plain[outside])  # nothing else changes
        twin = P.healthy_twin(cfg, "Training", cls, 0)
        assert (twin[rows, cols] == 255).all()  # the twin keeps the marker
        test, _ = P.render_case(cfg, "Testing", cls, 0)
        assert np.array_equal(test, P.render_case(P.PhantomConfig(image_size=64), "Testing",
                                                  cls, 0)[0])  # Testing has none
        boxes[cls] = (rows.start, cols.start)
    assert len(set(boxes.values())) == 4  # one corner per class
    assert P.marker_box(128, "glioma") == (slice(4, 12), slice(4, 12))  # 1/16 side, 1/32 margin


@pytest.mark.slow  # two tiny arms on a tiny marked set: about 20 s
def test_the_stage_scores_both_arms_with_and_without_the_marker_and_resumes(tmp_path: Path
                                                                           ) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["shortcut_test"] = {"n_train_per_class": 12, "n_test_per_class": 6,
                               "variant": "batchnorm"}
    params["train_seeds"] = [0, 1]
    params["train_scratch"].update(input_size=32, blocks=2, filters=8, epochs=2)
    params["guide"]["epochs"] = 1
    params["prepare"]["confounder_permutations"] = 10
    params["explain"]["min_grid"] = 8
    metrics, figures = tmp_path / "shortcut.json", tmp_path / "figures"
    first = S.run(params, tmp_path, metrics, figures)
    assert json.loads(metrics.read_text())["seeds"] == [0, 1]
    for arm in ("plain", "guided"):
        for seed in ("s0", "s1"):
            row = first[arm]["per_seed"][seed]
            assert row["drop"] == pytest.approx(row["f1_marked"] - row["f1_clean"], abs=2e-4)
            assert all(0 <= row[k] <= 1 for k in row if k != "drop")
        assert first[arm]["f1_clean"]["n"] == 2
    assert set(first["guided_minus_plain"]) == {"f1_clean", "drop", "gradcam_on_marker",
                                                "hirescam_on_marker"}
    assert first["n_images"]["test_tumour"] == 3 * 6
    assert "messages" in first["audit"] and isinstance(first["audit"]["flagged"], list)
    assert {p.name for p in figures.iterdir()} == {"shortcut_f1.png", "shortcut_maps.png"}
    raw = tmp_path / S.WORK / "raw"
    marked = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        next((raw / "Training" / "glioma").glob("glioma_*[0-9].png"))))
    rows, cols = P.marker_box(marked.shape[0], "glioma")
    assert (marked[rows, cols] == 255).all()  # the set on disk carries the marker
    again = S.run(params, tmp_path, metrics, figures)  # the models are reused, not retrained
    assert again == first
