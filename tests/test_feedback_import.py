"""The app's feedback becomes training signal (lib.data.ingest.import_feedback): a lesion drawn
through POST /feedback is imported into Training with its provenance, audited by prepare, and
reaches the guided arm's localisation loss; bad or foreign feedback is skipped with a reason."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.data.ingest import FEEDBACK_PROVENANCE, IngestError, import_feedback, main
from tests.serve_study import shared_served_study


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def posted(tmp_path_factory: pytest.TempPathFactory):
    """Four glioma images with drawn lesions and one healthy image, posted through the API."""
    from fastapi.testclient import TestClient

    from lib.serve.api import create_app
    from lib.serve.service import Service

    study = shared_served_study(tmp_path_factory)
    service = Service.open(study, tmp_path_factory.mktemp("feedback"))
    records = []
    with TestClient(create_app(service, ui=False)) as client:
        sources = sorted(p for p in (study / "raw").glob("*/glioma/*.png")
                         if not p.name.endswith("_mask.png"))
        for i, source in enumerate(sources[:4]):
            pixels = np.fliplr(np.asarray(Image.open(source).convert("L"))).copy()
            lesion = np.zeros_like(pixels)
            lesion[10 + 5 * i:22 + 5 * i, 12:30] = 255
            r = client.post("/feedback", data={"label": "glioma", "user": "dr who"},
                            files={"file": ("x.png", png(pixels)),
                                   "mask": ("m.png", png(lesion))})
            assert r.status_code == 201, r.text
            records.append((r.json(), lesion > 0))
        healthy = np.asarray(Image.open(study / "raw" / "Testing" / "notumor" /
                                        "notumor_0000.png").convert("L"))
        r = client.post("/feedback", data={"label": "notumor"},
                        files={"file": ("h.png", png(np.fliplr(healthy).copy()))})
        assert r.status_code == 201, r.text
    return study, service.feedback_dir, records


def test_a_lesion_drawn_in_the_app_reaches_the_guided_loss(posted, tmp_path) -> None:
    from lib.data.prepare import PrepareConfig, prepare
    from lib.train import fit, guided

    study, fb, records = posted
    raw = tmp_path / "raw"
    shutil.copytree(study / "raw", raw)
    fb_before, raw_before = tree(fb), tree(raw)
    result = import_feedback(fb, raw)
    assert result.written == 4 * 2 + 1 and not result.skipped, result.summary()
    assert tree(fb) == fb_before  # the feedback folder is only read
    assert all(raw_before[k] == v for k, v in tree(raw).items() if k in raw_before
               and k not in ("groups.csv",))  # nothing that was there changed
    with (raw / FEEDBACK_PROVENANCE).open() as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    record, lesion = records[0]
    row = rows[f"Training/glioma/{record['name']}.png"]
    assert row["user"] == "dr who" and row["image_md5"] == record["image_md5"]
    assert row["lesion_pixels"] == str(int(lesion.sum())) and row["model"]
    again = import_feedback(fb, raw)
    assert again.written == 0 and again.unchanged == 9  # a rerun writes nothing

    manifest = prepare(raw, tmp_path / "processed", tmp_path / "reports",
                       PrepareConfig(seed=0, confounder_permutations=0), progress=False)
    imported = manifest[manifest["path"].str.contains("fb-")]
    assert len(imported) == 5 and set(imported["split"]) <= {"train", "val"}
    assert (imported["status"] != "excluded").all(), imported[["path", "status", "reason"]]
    import keras
    import tensorflow as tf

    data = guided.with_masks(fit.TrainingData.from_manifest(
        tmp_path / "processed" / "manifest.csv", raw, 32), 1.0, seed=0)
    reached = 0
    for record, lesion in records:
        for frame, masks in ((data.train, data.train_masks), (data.val, data.val_masks)):
            rows_ = np.flatnonzero(frame["path"].str.contains(record["name"]).to_numpy())
            if len(rows_):
                drawn = tf.image.resize(lesion[..., None].astype(np.float32), (32, 32),
                                        method="area").numpy()[..., 0]
                assert drawn.sum() > 0 and np.allclose(masks[rows_[0], ..., 0], drawn)
                reached += frame is data.train
    assert reached >= 1  # at least one drawn lesion is in the training split
    # the term sees it: with the drawn mask the localisation term is positive, without it zero
    model = keras.models.load_model(study / "models" / "scratch_batchnorm" / "seed0.keras")
    trainer = guided.GuidedClassifier(model, "block1_relu", 1.0)
    trainer.compile(loss="categorical_crossentropy")
    i = int(np.flatnonzero(data.train["path"].str.contains("fb-").to_numpy()
                           & (data.train["class"] == "glioma").to_numpy())[0])
    stream, _ = data.datasets(8, channels=1, seed=0)
    x = tf.constant(stream.images[i:i + 1])
    y = tf.one_hot([int(data.train["label"].iloc[i])], data.n_classes)
    _, _, with_mask = trainer.losses_of((x, y, tf.constant(data.train_masks[i:i + 1])), False)
    _, _, no_mask = trainer.losses_of((x, y, tf.zeros_like(x)), False)
    assert float(with_mask) > 0 and float(no_mask) == 0.0


def test_bad_feedback_is_skipped_with_its_reason(posted, tmp_path) -> None:
    _, fb_src, records = posted
    fb = tmp_path / "fb"
    shutil.copytree(fb_src, fb)
    first, second, third = (r for r, _ in records[:3])
    (fb / first["files"]["image"]).write_bytes(png(np.zeros((64, 64), np.uint8)))  # edited
    (fb / "records" / f"{second['name']}.json").write_text("")  # an interrupted post
    (fb / "glioma" / "stray.png").write_bytes(png(np.zeros((64, 64), np.uint8)))  # no record
    bad = json.loads((fb / "records" / f"{third['name']}.json").read_text())
    (fb / "records" / f"{third['name']}.json").write_text(json.dumps({**bad, "label": "tumour"}))
    raw = tmp_path / "raw"
    (raw / "Training").mkdir(parents=True)
    result = import_feedback(fb, raw)
    reasons = dict(result.skipped)
    assert "md5 differs" in reasons[f"records/{first['name']}.json"]
    assert "record unreadable" in reasons[f"records/{second['name']}.json"]
    assert "unknown label 'tumour'" in reasons[f"records/{third['name']}.json"]
    assert "no record" in reasons["glioma/stray.png"]
    assert result.written == 2 + 1  # the fourth glioma (image + mask) and the healthy image
    assert "skipped 4" in result.summary()


def test_feedback_never_overwrites_and_refuses_a_folder_that_is_not_raw_data(posted,
                                                                            tmp_path) -> None:
    _, fb, records = posted
    raw = tmp_path / "raw"
    name = records[0][0]["name"]
    (raw / "Training" / "glioma").mkdir(parents=True)
    taken = raw / "Training" / "glioma" / f"{name}.png"
    taken.write_bytes(b"someone else's file")
    with pytest.raises(IngestError, match="exists with different content"):
        import_feedback(fb, raw)
    assert taken.read_bytes() == b"someone else's file"
    elsewhere = tmp_path / "notes"
    elsewhere.mkdir()
    (elsewhere / "todo.txt").write_text("x")
    with pytest.raises(IngestError, match="not a raw layout"):
        import_feedback(fb, elsewhere)
    with pytest.raises(IngestError, match="overlap"):
        import_feedback(fb, fb / "raw")
    with pytest.raises(SystemExit):
        main(["feedback", str(tmp_path / "missing"), "--out", str(raw)])
