"""The shortcut test of the guided arm (lib.explain.shortcut) and the phantom's marker shortcut
(lib.data.phantom, shortcut="marker"): the marker is in Training only, where its corner codes
the class. The stage itself runs in the tiny `dvc repro` of tests/test_pipeline.py, which checks
what it writes (test_the_shortcut_stage_scores_both_arms_with_and_without_the_marker)."""

from __future__ import annotations

import numpy as np

from lib.data import phantom as P


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
