"""Confounder audit on tiny phantoms: silent when clean, loud when a non-anatomical cue exists.

What the phantom knobs do (lib/data/phantom.py): shortcut="size" writes every notumor image
SIZE_SHORTCUT_FACTOR (1.5) times larger, so size separates notumor from the rest (best balanced
accuracy 0.5 with 4 classes: one class right, three at a third). shortcut="level" draws
pituitary slices below -8 mm and the rest above: an *anatomical* shortcut (which brain the
slice shows) that leaves size and format constant and moves the grey histogram only a little
(effect sizes ~0.5 sd on the bright bins), so the audit is not expected to flag it at this
size; an intensity cue is made here instead by brightening one class's files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.data.confounders import (
    CONSTANT,
    NO_CONFOUNDER,
    _ijg_table,
    confounder_audit,
    image_features,
    jpeg_quality,
    markdown,
)
from lib.data.phantom import CLASSES, PhantomConfig, generate

PER_CLASS = 8
FAST = {"permutations": 20, "folds": 4}  # min p = 1/21 = 0.048: enough to pass alpha 0.05


def _rows(root: Path) -> list[tuple[Path, str]]:
    return [(p, p.parent.name) for p in sorted((root / "Training").glob("*/*.png"))
            if not p.name.endswith("_mask.png")]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for shortcut in ("none", "size", "level"):
        root = tmp_path_factory.mktemp(f"phantom-{shortcut}")
        generate(PhantomConfig(seed=3, n_train_per_class=PER_CLASS, n_test_per_class=1,
                               image_size=64, shortcut=shortcut), root, progress=False)
        out[shortcut] = root
    return out


def test_image_features_families(tmp_path):
    arr = np.full((40, 60), 10, dtype=np.uint8)
    arr[10:30, 15:45] = 200
    Image.fromarray(arr).save(tmp_path / "a.png")
    f = image_features(tmp_path / "a.png")
    assert f["size"] == {"width": 60.0, "height": 40.0, "aspect": 1.5, "pixels": 2400.0}
    assert f["format"]["format"] == "PNG" and f["format"]["mode"] == "L"
    assert f["format"]["channels"] == 1.0 and f["format"]["jpeg_quality"] is None
    assert f["border"] == {"mean": 10.0, "sd": 0.0}  # the frame is all background
    assert len(f["histogram"]) == 16 and sum(f["histogram"].values()) == pytest.approx(1.0)
    assert f["histogram"]["bin00"] == pytest.approx(1 - 600 / 2400)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert image_features(tmp_path / "bad.png") is None
    assert image_features(tmp_path / "missing.png") is None


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_jpeg_quality_estimate(quality):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
        buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as img:
        assert jpeg_quality(img) == quality
    assert _ijg_table(50).tolist()[:3] == [16, 11, 10]


def test_clean_phantom_no_confounder(phantoms):
    r = confounder_audit(_rows(phantoms["none"]), seed=0, **FAST)
    assert r["verdict"] == NO_CONFOUNDER and r["findings"] == []
    assert r["families"]["size"]["status"] == "constant"
    assert r["families"]["size"]["message"] == CONSTANT
    assert r["chance"] == 0.25 and r["n_images"] == 4 * PER_CLASS
    json.dumps(r)  # JSON-ready
    assert "**Verdict: no confounder found**" in markdown(r)


def test_size_shortcut_fires_size_only(phantoms):
    r = confounder_audit(_rows(phantoms["size"]), seed=0, **FAST)
    size = r["families"]["size"]
    assert size["finding"] and size["balanced_accuracy"] == pytest.approx(0.5)
    assert size["p_value"] <= 0.05
    assert "size" in r["findings"] and r["verdict"] != NO_CONFOUNDER
    assert not r["families"]["border"]["finding"]  # the background did not change
    assert size["message"].startswith("image size alone predicts the class")
    assert size["features"] == ["width", "height", "pixels"]  # aspect is constant (1): dropped
    assert "| size | 3 | 0.50 | 0.25 | " in markdown(r)  # the row: 3 features, BA, chance


def test_level_shortcut_is_anatomy_not_size(phantoms):
    r = confounder_audit(_rows(phantoms["level"]), seed=0, families=("size", "border"), **FAST)
    assert r["families"]["size"]["status"] == "constant"
    assert not r["families"]["border"]["finding"]


def test_intensity_cue_fires_border_and_histogram(phantoms, tmp_path):
    # The clean phantom, with notumor exported with a lifted background (a different window).
    rows = []
    for path, cls in _rows(phantoms["none"]):
        arr = np.asarray(Image.open(path), dtype=np.int16)
        if cls == "notumor":
            arr = np.clip(arr + 40, 0, 255)
        out = tmp_path / cls / path.name
        out.parent.mkdir(exist_ok=True)
        Image.fromarray(arr.astype(np.uint8)).save(out)
        rows.append((str(out), cls))
    r = confounder_audit(rows, seed=0, families=("size", "border", "histogram"), **FAST)
    assert r["families"]["size"]["status"] == "constant"
    for family in ("border", "histogram"):
        assert r["families"][family]["finding"], r["families"][family]
        assert r["families"][family]["balanced_accuracy"] >= 0.4
    assert r["families"]["border"]["message"].startswith("the background intensity")


def test_kaggle_like_sizes(phantoms, tmp_path):
    """notumor saved at 236 px, the tumour classes at 512 px (as in the Kaggle set)."""
    rows = []
    for path, cls in _rows(phantoms["none"]):
        side = 236 if cls == "notumor" else 512
        out = tmp_path / f"{cls}_{path.name}"
        Image.open(path).resize((side, side)).save(out)
        rows.append((out.name, cls))
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["path", "class"])
    r = confounder_audit(frame, seed=1, root=tmp_path, families=("size",), **FAST)
    size = r["families"]["size"]
    assert size["finding"] and r["findings"] == ["size", "all"]
    assert size["message"] == (
        "image size alone predicts the class with balanced accuracy 0.50 (chance 0.25, "
        f"p = {size['p_value']:.3g}); models can learn this; resize every image to one size "
        "before saving, or compare with a size-matched subset")
    assert r["verdict"][0] == size["message"]
    md = markdown(r)
    assert md.startswith("## Confounders") and "**size**: image size alone" in md


def test_unreadable_and_too_few(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    r = confounder_audit([(tmp_path / "bad.png", "a"), (tmp_path / "ok.png", "b")], seed=0)
    assert r["unreadable"] == [str(tmp_path / "bad.png")]
    assert all(f["status"] == "skipped" for f in r["families"].values())
    assert r["verdict"] == NO_CONFOUNDER
    assert "unreadable" in markdown(r)
    with pytest.raises(ValueError, match="unknown"):
        confounder_audit([], seed=0, families=("colour",))
    assert set(CLASSES) == {"glioma", "meningioma", "notumor", "pituitary"}



def test_margin_is_a_parameter(phantoms):
    """Same size cue, stricter margin: significant but below the margin is weak, not a finding."""
    r = confounder_audit(_rows(phantoms["size"]), seed=0, chance_margin=0.3, families=("size",),
                         **FAST)
    size = r["families"]["size"]
    assert size["p_value"] <= 0.05 and not size["finding"]
    assert size["message"].startswith("weak, below the margin: balanced accuracy 0.50")
    assert r["verdict"] == NO_CONFOUNDER
