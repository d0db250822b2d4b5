"""What the app says about the study (lib.serve.study, lib.serve.ood, lib.serve.apidocs): the
best model by the study's own rule, the headline saliency method as the default, the model card,
the out-of-distribution warning, /docs without a CDN, and the overlay's URL under /ui.

The tiny served study (tests/serve_study.py) is shared read-only; each variant here is a folder
of symlinks to it with its own reports/metrics (evaluate.json with per-seed validation scores,
explain.json with a headline method, or none) and its own OOD cache.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.evaluate.metrics import BEST_MODEL_RULE, best_model
from lib.serve import apidocs, ood
from lib.serve.api import create_app
from lib.serve.inference import Prediction, overlay, read_upload
from lib.serve.service import Service
from lib.serve.study import EVALUATE_JSON, EXPLAIN_JSON, headline_method, ranking
from lib.serve.ui import UI, card_markdown
from tests.conftest import REPO
from tests.serve_study import shared_served_study

# Two seeds per configuration. The rule (mean validation macro-F1) picks scratch_none (0.75 vs
# 0.70), while the best single validation score (0.90) and the test macro-F1 (0.60 vs 0.50) both
# point at scratch_batchnorm: a label or a "best" taken from either would fail these tests.
CONFIGURATIONS = {
    "scratch_none": {"seeds": [0, 1], "val_macro_f1": {"mean": 0.75, "values": [0.80, 0.70]},
                     "test_macro_f1": {"mean": 0.50, "sd": 0.02, "values": [0.5, 0.52]}},
    "scratch_batchnorm": {"seeds": [0, 1], "val_macro_f1": {"mean": 0.70,
                                                            "values": [0.90, 0.50]},
                          "test_macro_f1": {"mean": 0.60, "sd": 0.03, "values": [0.6, 0.57]}},
}
LINKED = ("raw", "processed", "models", "dvc.yaml", "params.yaml")


def variant(study: Path, root: Path, evaluate: dict | None = None,
            explain: dict | None = None, linked: tuple[str, ...] = LINKED) -> Path:
    """A study folder of symlinks to the shared one, with its own metrics."""
    root.mkdir(parents=True)
    for name in linked:
        (root / name).symlink_to(study / name)
    metrics = root / EVALUATE_JSON.parent
    metrics.mkdir(parents=True)
    base = json.loads((study / EVALUATE_JSON).read_text())
    (root / EVALUATE_JSON).write_text(json.dumps({**base, **(evaluate or {})}))
    if explain is not None:
        (root / EXPLAIN_JSON).write_text(json.dumps(explain))
    return root


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def real_mri() -> np.ndarray:
    """A real MRI slice (sagittal, 256x256) that matplotlib ships as sample data."""
    with matplotlib.cbook.get_sample_data("s1045.ima.gz") as fh:
        raw = np.frombuffer(fh.read(), ">u2").reshape(256, 256).astype(float)
    return np.clip(raw / np.percentile(raw, 99.5) * 255, 0, 255).astype(np.uint8)


def non_brain() -> dict[str, bytes]:
    """A photograph (matplotlib's sample), a plain grey square and a checkerboard."""
    photo = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
                       .convert("L"))
    yy, xx = np.mgrid[:256, :256]
    return {"photograph": encode(photo, "JPEG"),
            "grey square": encode(np.full((256, 256), 128, np.uint8)),
            "checkerboard": encode(((yy // 32 + xx // 32) % 2 * 255).astype(np.uint8))}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return shared_served_study(tmp_path_factory)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve-study")


@pytest.fixture(scope="module")
def ranked(study, work) -> Service:
    """Per-seed validation scores and a headline method (hirescam) in the study's metrics."""
    root = variant(study, work / "ranked",
                   {"configurations": CONFIGURATIONS, "best_model": "scratch_none_s0"},
                   {"headline_method": "hirescam", "validation": {"model": "scratch_none_s0"}})
    return Service.open(root, work / "fb-ranked", ood_cache=work / "ood-cache")


@pytest.fixture(scope="module")
def bare(study, work) -> Service:
    """No explain.json and no prepare manifest (data/processed): nothing to default or compare
    with, and the app must say so."""
    root = variant(study, work / "bare", linked=("raw", "models", "dvc.yaml", "params.yaml"))
    return Service.open(root, work / "fb-bare", ood_cache=work / "ood-bare")


@pytest.fixture(scope="module")
def client(ranked):
    from fastapi.testclient import TestClient

    with TestClient(create_app(ranked, ui=False)) as c:
        yield c


# ----------------------------------------------------------------------------- the best model


def test_best_is_the_rule_on_mean_validation_f1_not_test_or_one_seed() -> None:
    got = ranking({"configurations": CONFIGURATIONS, "best_model": "scratch_none_s0"})
    val = {f"{n}_s{s}": v for n, c in CONFIGURATIONS.items()
           for s, v in zip(c["seeds"], c["val_macro_f1"]["values"], strict=True)}
    assert got.best_model == best_model(val) == "scratch_none_s0"
    assert got.best_configuration == "scratch_none" and got.rule == BEST_MODEL_RULE
    assert got.note is None
    assert got.configurations["scratch_none"].val_macro_f1_mean == 0.75
    stale = ranking({"configurations": CONFIGURATIONS, "best_model": "scratch_batchnorm_s0"})
    assert stale.best_model == "scratch_none_s0" and "stale" in stale.note
    old = ranking({"best_model": "scratch_batchnorm_s0"})  # no per-seed validation scores
    assert old.best_model == "scratch_batchnorm_s0" and "no per-seed validation" in old.note


def test_models_are_labelled_with_the_rules_quantity(ranked, client) -> None:
    body = client.get("/models").json()
    assert body["default"] == "scratch-none" and body["best_rule"] == BEST_MODEL_RULE
    cards = {c["artifact"]: c for c in body["models"]}
    assert cards["scratch-none"]["best"] and not cards["scratch-batchnorm"]["best"]
    assert cards["scratch-none"]["val_macro_f1_mean"] == 0.75
    assert cards["scratch-none"]["label"] == "val macro-F1 0.750, mean of 2 seeds; best by the " \
                                             "study's rule"
    labels = dict((v, k) for k, v in UI(ranked).model_choices())
    assert labels == {"scratch-batchnorm": "scratch-batchnorm (val macro-F1 0.700, mean of 2 "
                                           "seeds)",
                      "scratch-none": "scratch-none (val macro-F1 0.750, mean of 2 seeds; best "
                                      "by the study's rule)"}


# ----------------------------------------------------------------------------- headline method


def test_default_method_is_the_headline_method_or_none_with_a_reason(ranked, bare, client
                                                                      ) -> None:
    assert UI(ranked).default_method == "hirescam"
    assert client.get("/models").json()["headline_method"] == "hirescam"
    assert "validation" in ranked.registry.headline.message
    assert UI(bare).default_method == "none"  # explain.json missing: nothing picked silently
    assert bare.registry.headline.method is None
    assert "explain.json is missing" in bare.registry.headline.message
    demo = UI(bare).blocks()
    [picker] = [b for b in demo.blocks.values() if getattr(b, "label", "") == "Saliency method"]
    assert picker.value == "none" and "explain.json is missing" in picker.info


def test_headline_method_refuses_an_unknown_or_missing_key(tmp_path) -> None:
    (tmp_path / EXPLAIN_JSON.parent).mkdir(parents=True)
    for explain, needle in (({}, "has no `headline_method`"),
                            ({"headline_method": "lime"}, "does not know")):
        (tmp_path / EXPLAIN_JSON).write_text(json.dumps(explain))
        got = headline_method(tmp_path)
        assert got.method is None and needle in got.message


# ----------------------------------------------------------------------------- model card


def test_model_card_reads_the_studys_files(client, ranked, study) -> None:
    card = client.get("/model-card").json()
    assert card["model"]["artifact"] == "scratch-none" and card["model"]["seeds"] == [0, 1]
    perf = card["performance"]
    assert (perf["test_macro_f1_mean"], perf["test_macro_f1_sd"], perf["n_seeds"]) == \
        (0.5, 0.02, 2)
    data = card["training_data"]
    phantom = json.loads((study / "raw" / "phantom.json").read_text())
    manifest = pd.read_csv(study / "processed" / "manifest.csv", keep_default_na=False)
    assert data["synthetic"] and data["source"] == "phantom" and "MNI152" in data["description"]
    assert data["image_size"] == phantom["config"]["image_size"]
    assert data["n_train"] == int((manifest["split"] == "train").sum())
    assert data["n_validation"] == int((manifest["split"] == "val").sum())
    assert data["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert card["best"]["is_best"] and card["best"]["rule"] == BEST_MODEL_RULE
    assert card["saliency"]["default_method"] == "hirescam" and card["ood"]["available"]
    text = " ".join(card["not_for"])
    assert "Not a medical device" in text and "Not validated on real scans" in text
    assert "right on 5" in text and "glioma with probability 0.96" in text
    other = client.get("/model-card", params={"model": "scratch-batchnorm"}).json()
    assert other["performance"]["test_macro_f1_mean"] == 0.6 and not other["best"]["is_best"]
    assert client.get("/model-card", params={"model": "resnet"}).status_code == 404
    shown = card_markdown(ranked.model_card())
    assert "0.500 ± 0.020 (mean ± sd over 2 seeds" in shown and "Not a medical device" in shown
    assert UI(ranked).card_text("scratch-batchnorm").startswith("### Model card: "
                                                                "scratch-batchnorm")


# ----------------------------------------------------------------------------- OOD


def test_ood_flags_non_brain_images_not_the_studys_own(ranked, client, study, tmp_path
                                                      ) -> None:
    manifest = pd.read_csv(study / "processed" / "manifest.csv", keep_default_na=False)
    test = manifest[manifest["split"] == "test"]["path"]
    for artifact, loaded in ranked.registry.loaded.items():
        threshold = loaded.ood.reference.threshold
        flagged = [ranked.predict((study / "raw" / p).read_bytes(), artifact)[1]
                   .ood["unlike_training"] for p in test]
        assert sum(flagged) <= len(flagged) // 4, (artifact, flagged)
        for name, data in non_brain().items():
            got = ranked.predict(data, artifact)[1].ood
            assert got["unlike_training"] and got["distance"] > 2 * threshold, (artifact, name)
            assert got["threshold"] == threshold
    body = client.post("/predict", files={"file": ("grey.png", non_brain()["grey square"])}
                       ).json()
    assert body["ood"]["unlike_training"] is True and "Unlike the training" in \
        body["ood"]["message"]
    ui = UI(ranked)
    path = tmp_path / "grey.png"
    path.write_bytes(non_brain()["grey square"])
    status = ui.predict(str(path), None, None, "none", 0.5, True)[1]
    assert "⚠ **Unlike the training images.**" in status
    status = ui.predict(None, "Testing/glioma/glioma_0001.png", None, "none", 0.5, True)[1]
    assert "Like the training images" in status and "⚠" not in status


def test_ood_unavailable_is_said_not_skipped(bare, study, tmp_path) -> None:
    loaded = bare.model(None)
    assert not loaded.ood.available and "manifest.csv is missing" in loaded.ood.message
    upload, pred = bare.predict(encode(np.full((64, 64), 90, np.uint8)))
    assert pred.ood["available"] is False and pred.ood["unlike_training"] is None
    assert pred.ood["message"].startswith("OOD check unavailable:")
    assert "OOD check unavailable" in card_markdown(bare.model_card())
    manifest = study / "processed" / "manifest.csv"
    empty = tmp_path / "raw"
    empty.mkdir()
    check = ood.prepare(loaded, manifest, empty, None)  # the images are not there
    assert not check.available and "are missing under" in check.message


def test_ood_reference_is_cached_by_model_and_images(ranked, study, work, monkeypatch) -> None:
    loaded = ranked.model("scratch-none")
    manifest, raw = study / "processed" / "manifest.csv", study / "raw"
    cached = sorted((work / "ood-cache").glob("scratch-none-*.npz"))
    assert len(cached) == 1
    monkeypatch.setattr(ood, "embed", lambda *a, **k: pytest.fail("recomputed"))
    again = ood.prepare(loaded, manifest, raw, work / "ood-cache", "auto", 32)
    assert again.reference.threshold == loaded.ood.reference.threshold
    monkeypatch.undo()
    stale = work / "ood-cache" / "scratch-none-0123456789abcdef.npz"  # an older model's
    other = work / "ood-cache" / "scratch-none-x-0123456789abcdef.npz"  # another artifact's
    for path in (stale, other):
        path.write_bytes(cached[0].read_bytes())
    cached[0].unlink()  # recomputed and written: the older model's entry goes, not another's
    ood.prepare(loaded, manifest, raw, work / "ood-cache", "auto", 32)
    assert sorted(p.name for p in (work / "ood-cache").glob("scratch-none*.npz")) == \
        sorted([cached[0].name, other.name])
    frame = pd.read_csv(manifest, keep_default_na=False)
    assert ood.cache_key("a", "l", frame) != ood.cache_key("b", "l", frame)
    assert ood.cache_key("a", "l", frame) != ood.cache_key("a", "l", frame.iloc[1:])


REAL_MODEL = REPO / "models" / "scratch_batchnorm" / "seed42.keras"
REAL_MANIFEST = REPO / "data" / "processed" / "manifest.csv"


@pytest.mark.skipif(not (REAL_MODEL.is_file() and REAL_MANIFEST.is_file()),
                    reason="the study's trained models and data are not here (make repro)")
def test_ood_on_a_study_model_flags_a_real_scan(tmp_path) -> None:
    """The study's scratch-batchnorm model (64 px, seconds to embed): a real MRI slice, unlike
    the phantom, is flagged, as is every non-brain image; the test split mostly is not."""
    from lib.serve.registry import cards, load_model

    [card] = [c for c in cards(REPO) if c.artifact == "scratch-batchnorm"]
    loaded = load_model(card)
    check = ood.prepare(loaded, REAL_MANIFEST, REPO / "data" / "raw", tmp_path, "auto", 32)
    loaded.ood = check
    threshold = check.reference.threshold
    manifest = pd.read_csv(REAL_MANIFEST, keep_default_na=False)
    test = manifest[manifest["split"] == "test"]["path"].head(80)
    from lib.serve.inference import predict

    def verdict(data: bytes) -> dict:
        return predict(loaded, read_upload(data), ["a", "b", "c", "d"]).ood

    flagged = [verdict((REPO / "data" / "raw" / p).read_bytes())["unlike_training"]
               for p in test]
    assert sum(flagged) <= 4, sum(flagged)  # measured: 9 of 400 (2.2 %)
    mri = verdict(encode(real_mri()))
    assert mri["unlike_training"] and mri["distance"] > 2 * threshold  # measured 2.9x
    for name, data in non_brain().items():
        assert verdict(data)["unlike_training"], name


# ----------------------------------------------------------------------------- /docs offline


def fake_assets(folder: Path) -> Path:
    for name in apidocs.FILES:
        (folder / name).write_text("/* local */" if name.endswith((".js", ".css")) else "png")
    return folder


@pytest.mark.parametrize("assets", ["fake", "installed"])
def test_docs_load_only_local_files(ranked, tmp_path, monkeypatch, assets) -> None:
    from fastapi.testclient import TestClient

    if assets == "installed":
        # requirements.txt pins it, so make setup always installs it
        assert apidocs.assets_dir() is not None, f"{apidocs.ASSETS_REQUIREMENT} is not installed"
    else:
        monkeypatch.setattr(apidocs, "assets_dir", lambda: fake_assets(tmp_path))
    client = TestClient(create_app(ranked, ui=False))
    r = client.get("/docs")
    assert r.status_code == 200, r.text
    assert not re.search(r"https?://", r.text), re.findall(r"https?://[^\"' ]+", r.text)
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", r.text)
    kinds = {".js": "javascript", ".css": "text/css"}
    local = [u for u in urls if u.startswith(apidocs.ASSETS_URL)]
    assert {Path(u).suffix for u in local} >= set(kinds), urls
    for url in local:
        got = client.get(url)
        assert got.status_code == 200 and got.content, url
        kind = kinds.get(Path(url).suffix)
        assert kind is None or kind in got.headers["content-type"], url
    assert client.get("/redoc").status_code == 404  # ReDoc fetches its logo from a CDN
    assert "openapi.json" in client.get("/docs").text


def test_docs_without_their_files_say_what_to_install(ranked, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setattr(apidocs, "assets_dir", lambda: None)
    r = TestClient(create_app(ranked, ui=False)).get("/docs")
    assert r.status_code == 503 and f"pip install {apidocs.ASSETS_REQUIREMENT}" in r.text
    assert "cdn" not in r.text.lower()


# ----------------------------------------------------------------------------- the overlay


def test_ui_file_urls_keep_the_mount_path(ranked) -> None:
    """gradio's /run/<api> route (the UI's unqueued events: opacity, outline) built file URLs
    without /ui, so an uploaded image's overlay was a 404 in the browser; mount_ui sets
    root_path to its mount path."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(ranked, ui=True)) as client:
        r = client.post("/ui/gradio_api/run/predict", json={
            "data": [None, "Testing/glioma/glioma_0001.png", "scratch-none", "gradcam", 0.5,
                     True], "session_hash": "t"})
        assert r.status_code == 200, r.text
        [image] = [d for d in r.json()["data"] if isinstance(d, dict) and "url" in d]
        path = "/" + image["url"].split("://", 1)[1].split("/", 1)[1]
        assert path.startswith("/ui/gradio_api/file="), image["url"]
        got = client.get(path)
        assert got.status_code == 200 and got.content[:4] == b"\x89PNG"


@pytest.mark.parametrize("size", [(512, 512), (512, 384)])
def test_overlay_of_a_large_jpeg_has_no_band(ranked, size) -> None:
    """The overlay keeps the upload's shape and, where the map is zero, its grey pixels, up to
    the last row and column: a map resized with a crop or a pad would leave a coloured band."""
    w, h = size
    grey = np.asarray(Image.fromarray(real_mri()).resize(size, Image.Resampling.BICUBIC))
    upload = read_upload(encode(grey, "JPEG"))
    sal = np.zeros((h, w), np.float32)
    sal[h // 4: h // 2, w // 4: w // 2] = 1.0
    pred = Prediction("m", "m_s0", ["a"], np.ones(1), np.ones(1), 1.0, "gradcam", sal)
    rgb = overlay(upload, pred, 0.7)
    assert rgb.shape == (h, w, 3)
    outside = np.ones((h, w), bool)
    outside[h // 4 - 1: h // 2 + 1, w // 4 - 1: w // 2 + 1] = False
    shown = np.repeat(upload.pixels[..., None], 3, axis=-1)
    assert np.array_equal(rgb[outside], shown[outside])
    _, real = ranked.predict(encode(grey, "JPEG"), "scratch-none", "hirescam")
    assert real.saliency.shape == (h, w) and 0 <= real.peak[0] < h and 0 <= real.peak[1] < w
