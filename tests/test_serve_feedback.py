"""The feedback store (lib.serve.feedback.store) on its own: no file is ever overwritten.

Names carry the second and the image's md5, so two posts collide only within one second; here the
clock is fixed instead, and the files a post would write are put there first.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from lib.data.images import png_bytes
from lib.serve import feedback as fb
from lib.serve.inference import BadInput, Upload

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SAID = {"model": "m", "key": "m_s0", "label": "glioma", "probs": {}, "model_md5": None,
        "revision": None}


class FixedClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch) -> None:
    monkeypatch.setattr(fb, "datetime", FixedClock)


def upload() -> Upload:
    pixels = np.arange(40 * 40, dtype=np.uint16).reshape(40, 40).astype(np.uint8)
    return Upload(png_bytes(pixels), pixels, 1, "PNG")


def stem() -> str:
    """The name store gives this upload at NOW when nothing is in the way."""
    return f"fb-20260102T030405-{hashlib.md5(png_bytes(upload().pixels)).hexdigest()[:10]}"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_first_name_is_the_stem(tmp_path) -> None:
    rec = fb.store(tmp_path, upload(), "glioma", CLASSES, None, SAID)
    assert rec["name"] == stem() and rec["time_utc"] == "2026-01-02T03:04:05+00:00"
    assert set(tree(tmp_path)) == {f"glioma/{stem()}.png", f"records/{stem()}.json"}


def test_a_taken_record_name_is_skipped_and_left_as_it_was(tmp_path) -> None:
    taken = tmp_path / "records" / f"{stem()}.json"
    taken.parent.mkdir()
    taken.write_bytes(b'{"someone": "else"}\n')
    rec = fb.store(tmp_path, upload(), "glioma", CLASSES, None, SAID)
    assert rec["name"] == f"{stem()}-1"
    assert taken.read_bytes() == b'{"someone": "else"}\n'
    assert json.loads((tmp_path / "records" / f"{stem()}-1.json").read_text()) == rec
    assert not (tmp_path / "glioma" / f"{stem()}.png").exists()


def test_a_taken_image_name_is_skipped_and_its_bytes_kept(tmp_path) -> None:
    image = tmp_path / "glioma" / f"{stem()}.png"
    image.parent.mkdir()
    image.write_bytes(b"an image already there")
    lesion = np.zeros((40, 40), bool)
    lesion[3:6, 3:6] = True
    rec = fb.store(tmp_path, upload(), "glioma", CLASSES, lesion, SAID)
    assert rec["name"] == f"{stem()}-1" and rec["lesion_pixels"] == 9
    assert image.read_bytes() == b"an image already there"
    assert set(tree(tmp_path)) == {f"glioma/{stem()}.png", f"glioma/{stem()}-1.png",
                                   f"glioma/{stem()}-1_mask.png", f"records/{stem()}-1.json"}
    # the record claimed for the taken name was given back, not left empty
    assert not (tmp_path / "records" / f"{stem()}.json").exists()


def test_the_same_image_under_two_labels_in_one_second(tmp_path) -> None:
    first = fb.store(tmp_path, upload(), "glioma", CLASSES, None, SAID)
    before = tree(tmp_path)
    second = fb.store(tmp_path, upload(), "meningioma", CLASSES, None, SAID)
    assert (first["name"], second["name"]) == (stem(), f"{stem()}-1")
    assert {k: v for k, v in tree(tmp_path).items() if k in before} == before


def test_every_name_taken_is_429_and_writes_nothing(tmp_path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    for k in range(1000):
        (records / (f"{stem()}.json" if k == 0 else f"{stem()}-{k}.json")).write_bytes(b"x")
    before = tree(tmp_path)
    with pytest.raises(BadInput, match="too many feedback items") as err:
        fb.store(tmp_path, upload(), "glioma", CLASSES, None, SAID)
    assert err.value.status == 429
    assert tree(tmp_path) == before
