"""The Gradio UI (lib.serve.ui): its callbacks, a real server read by gradio_client, a browser.

One tiny served study (tests/serve_study.py) for the module, seen through a folder of symlinks
whose explain.json names a headline method (the UI's default); the server is a real uvicorn on a
free localhost port in a subprocess, started by ``launch.running``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageStat

from lib.evaluate.predict import predict_frame
from lib.serve import launch
from lib.serve.inference import apply_temperature, score_against
from lib.serve.service import Service
from lib.serve.ui import UI, drawn_mask, outline
from tests.serve_study import CLASSES, shared_served_study
from tests.test_report import NO_BROWSER, find_browser
from tests.test_serve_study import encode, non_brain, variant

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
EXAMPLE = "Testing/glioma/glioma_0001.png"  # a phantom test image with a lesion mask
EXAMPLE_LABEL = "glioma / glioma_0001.png · mask"  # as the picker shows it


# ---- fixtures --------------------------------------------------------------------------------
HEADLINE = "hirescam"  # the study's headline method in this module's explain.json


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This file's own folder for feedback, logs and junk: the shared study stays read-only."""
    return tmp_path_factory.mktemp("ui-work")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, work: Path) -> Path:
    return variant(shared_served_study(tmp_path_factory), work / "study",
                   explain={"headline_method": HEADLINE})


@pytest.fixture(scope="module")
def service(study: Path, work: Path) -> Service:
    return Service.open(study, feedback_dir=work / "fb-unit")


@pytest.fixture(scope="module")
def ui(service: Service) -> UI:
    return UI(service)


@pytest.fixture(scope="module")
def server(study: Path, work: Path) -> Iterator[str]:
    """The app's entry point (python -m lib.serve) serving the study with the UI at /ui."""
    with launch.running(study, work / "fb-server", work / "server.log") as running:
        yield running.url


def study_scores(service: Service, study: Path, model: str, relpath: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(softmax, temperature-scaled) of one test image by the study's own prediction path."""
    manifest = pd.read_csv(study / "processed" / "manifest.csv", keep_default_na=False)
    frame = manifest[manifest["path"] == relpath].reset_index(drop=True)
    assert len(frame) == 1
    loaded = service.model(model)
    probs = predict_frame(loaded.model, frame, study / "raw", len(CLASSES))[0]
    return probs, apply_temperature(probs, loaded.card.temperature)


def confidences(label: dict[str, Any]) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def lesion_layer(mask: np.ndarray, scale: int = 1) -> np.ndarray:
    """An RGBA brush layer (red, opaque where painted), optionally at a larger canvas size."""
    big = np.kron(mask.astype(np.uint8), np.ones((scale, scale), np.uint8)) > 0
    layer = np.zeros((*big.shape, 4), np.uint8)
    layer[big] = (255, 45, 45, 255)
    return layer


# ---- callbacks, no browser -------------------------------------------------------------------
def test_examples_are_test_images_with_their_masks(ui: UI, study: Path) -> None:
    """Up to four usable test images per class from the manifest, with its mask column."""
    manifest = pd.read_csv(study / "processed" / "manifest.csv", keep_default_na=False)
    test = manifest[(manifest["split"] == "test") & (manifest["status"] != "excluded")]
    values = [v for _, v in ui.examples]
    for name in CLASSES:
        n = int((test["class"] == name).sum())
        assert sum(v.startswith(f"Testing/{name}/") for v in values) == min(4, n)
    assert set(values) <= set(test["path"]) and (EXAMPLE_LABEL, EXAMPLE) in ui.examples
    masked = dict(zip(test["path"], test["mask"] != "", strict=True))
    assert all(label.endswith("· mask") == masked[v] for label, v in ui.examples)


def test_drawing_over_the_lesion_scores_like_score_against(ui: UI) -> None:
    shown, status, probs, calibrated, image, editor, truth_box = ui.predict(
        None, EXAMPLE, "scratch-none", "gradcam", 0.5, True)
    assert "scratch-none" in status and shown.truth is not None and shown.truth.any()
    assert truth_box.visible and image.shape == (*shown.upload.pixels.shape, 3)
    want = score_against(shown.pred, shown.truth)
    for scale in (1, 3):  # the editor's canvas may come back larger than the image
        drawing = {**editor, "layers": [lesion_layer(shown.truth, scale)]}
        assert np.array_equal(drawn_mask(drawing, shown.upload.pixels.shape), shown.truth)
        assert ui.scores(shown, drawing) == want
        text = ui.score_text(shown, drawing)
        assert f"{want['energy_in_mask']:.3f}" in text
        assert ("hit" if want["pointing_game"] else "miss") in text
    assert "Draw where the lesion is" in ui.score_text(shown, editor)  # nothing drawn yet


def test_opacity_and_outline_reblend_without_running_the_model(
        ui: UI, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = ui.predict(None, EXAMPLE, "scratch-none", "gradcam", 0.5, False)[0]
    monkeypatch.setattr(ui.service, "predict", lambda *a, **k: pytest.fail("model re-run"))
    faint, strong = ui.blend(shown, 0.1, False), ui.blend(shown, 0.9, False)
    assert not np.array_equal(faint, strong)
    edge = outline(shown.truth)
    assert edge.any() and not (edge & ~shown.truth).any()
    assert (ui.blend(shown, 0.5, True)[edge] == (0, 255, 120)).all()


def test_bad_input_is_a_message_not_an_exception(ui: UI, tmp_path: Path) -> None:
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"this is not an image at all")
    out = ui.predict(str(junk), None, None, "gradcam", 0.5, True)
    assert len(out) == 7 and out[0] is None  # a refused image leaves nothing to score
    assert out[1].startswith("⚠") and "Traceback" not in out[1]
    assert ui.predict(None, None, None, "gradcam", 0.5, True)[1].startswith("⚠")
    assert "unknown model" in ui.predict(None, EXAMPLE, "nope", "gradcam", 0.5, True)[1]
    shown = ui.predict(None, EXAMPLE, None, "none", 0.5, True)[0]
    drawing = {"layers": [lesion_layer(shown.truth)]}
    assert "ask for a method" in ui.score_text(shown, drawing)
    assert ui.feedback(None, None, "glioma", "")[0] == "⚠"


def test_feedback_stores_image_mask_and_record(ui: UI, service: Service) -> None:
    shown = ui.predict(None, EXAMPLE, "scratch-batchnorm", "gradcam", 0.5, True)[0]
    drawing = {"layers": [lesion_layer(shown.truth, 2)]}
    said = ui.feedback(shown, drawing, "glioma", "tester")
    name = said.split("**")[1]
    folder = service.feedback_dir
    assert (folder / "glioma" / f"{name}.png").is_file()
    mask = np.asarray(Image.open(folder / "glioma" / f"{name}_mask.png")) > 0
    assert np.array_equal(mask, shown.truth)
    assert (folder / "records" / f"{name}.json").is_file()
    refused = ui.feedback(shown, drawing, "notumor", "tester")  # a lesion on a healthy label
    assert refused.startswith("⚠") and "notumor" in refused


# ---- a real server -----------------------------------------------------------------------------
@pytest.mark.slow  # a real `python -m lib.serve` process: about 20 s with its start and stop
def test_client_predicts_like_the_study(server: str, service: Service, study: Path,
                                       work: Path) -> None:
    from gradio_client import Client, handle_file

    client = Client(f"{server}/ui/", verbose=False, download_files=False)
    for model in ("scratch-none", "scratch-batchnorm"):
        probs, calibrated = study_scores(service, study, model, EXAMPLE)
        for file, example in ((None, EXAMPLE), (handle_file(str(study / "raw" / EXAMPLE)),
                                                 None)):
            status, raw, cal, image, _editor, _truth = client.predict(
                file, example, model, "gradcam", 0.5, True, api_name="/predict")
            assert model in status and image is not None
            assert raw["label"] == CLASSES[int(np.argmax(probs))]
            got, got_cal = confidences(raw), confidences(cal)
            assert set(got) == set(CLASSES)
            for i, name in enumerate(CLASSES):
                assert got[name] == pytest.approx(probs[i], abs=1e-5)
                assert got_cal[name] == pytest.approx(calibrated[i], abs=1e-5)
    junk = work / "junk.png"
    junk.write_bytes(b"not an image")
    status = client.predict(handle_file(str(junk)), None, None, "gradcam", 0.5, True,
                            api_name="/predict")[0]
    assert status.startswith("⚠") and "Traceback" not in status


# ---- a real browser ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    found = find_browser()
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(NO_BROWSER)
        pytest.skip(NO_BROWSER)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=found, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watch:
    """A page whose console errors, uncaught errors and non-local requests are recorded."""

    page: Any
    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)


def watched_page(chromium: Any, width: int = 1280, height: int = 1000) -> Watch:
    context = chromium.new_context(viewport={"width": width, "height": height})
    watch = Watch(context.new_page())

    def local(url: str) -> bool:
        parsed = urlparse(url)
        return parsed.scheme in ("data", "blob", "about") or parsed.hostname in LOCAL_HOSTS

    def route(r: Any) -> None:  # anything external is aborted, so the test cannot hang on it
        if local(r.request.url):
            r.continue_()
        else:
            watch.external.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    watch.page.on("request", lambda req: None if local(req.url) else
                  watch.external.append(req.url))
    watch.page.on("console", lambda msg: watch.errors.append(msg.text)
                  if msg.type == "error" else None)
    watch.page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    return watch


def overlay_loaded(page: Any, previous: str | None = None) -> dict[str, Any]:
    """The overlay <img> once it has loaded (a new one when previous is its old src)."""
    page.wait_for_function("""(old) => { const i = document.querySelector('#overlay img');
        return i && i.src && i.src !== old && i.complete; }""", arg=previous, timeout=60_000)
    return page.evaluate("""() => { const i = document.querySelector('#overlay img');
        return {src: i.src, width: i.naturalWidth, height: i.naturalHeight}; }""")


def test_browser_check_catches_errors_and_fetches(chromium: Any) -> None:
    """The check itself must be able to fail: a script error and a CDN image are both seen."""
    watch = watched_page(chromium)
    watch.page.set_content('<html><body><img src="https://cdn.example.invalid/x.png">'
                           "<script>notDefined()</script></body></html>")
    watch.page.wait_for_timeout(300)
    assert any("notDefined" in e for e in watch.errors), watch.errors
    assert "https://cdn.example.invalid/x.png" in watch.external
    watch.page.context.close()


@pytest.mark.slow  # the real server and headless Chromium
def test_ui_in_a_browser_predicts_offline(chromium: Any, server: str, tmp_path: Path) -> None:
    watch = watched_page(chromium)
    page = watch.page
    page.goto(f"{server}/ui/", wait_until="load")
    page.get_by_label("or a test image").click()  # picking a test image runs the prediction
    page.get_by_role("option", name=EXAMPLE_LABEL).first.click()
    page.locator("#overlay img").first.wait_for(state="visible", timeout=60_000)
    page.locator("#status").get_by_text(EXAMPLE).wait_for(timeout=30_000)
    canvas = page.locator("#editor canvas").first  # a brush stroke is scored at once
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(12):
        page.mouse.move(x + 3 * k, y + 2 * k)
    page.mouse.up()
    page.locator("#scores").get_by_text("Pointing game").wait_for(timeout=30_000)
    status = page.locator("#status").inner_text()
    assert "scratch-batchnorm" in status and EXAMPLE in status, status
    shot_overlay = tmp_path / "overlay.png"
    page.locator("#overlay img").first.screenshot(path=str(shot_overlay))
    stat = ImageStat.Stat(Image.open(shot_overlay).convert("L"))
    assert stat.var[0] > 100, "a blank overlay"
    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("UI_SCREENSHOT"):
        Path(os.environ["UI_SCREENSHOT"]).write_bytes(shot.read_bytes())
    assert page.get_by_label("Saliency method").input_value() == HEADLINE  # the default
    assert "Model card: scratch-batchnorm" in page.locator("#card").inner_text()
    assert watch.errors == [], watch.errors
    assert watch.external == [], watch.external
    page.context.close()


@pytest.mark.slow  # the real server and headless Chromium
def test_uploaded_overlay_shows_in_the_browser_with_its_warning(chromium: Any, server: str,
                                                                  tmp_path: Path) -> None:
    """An upload's overlay loads (it was a 404 under /ui: a blank box) at the upload's size, also
    after the opacity changes, and a photograph is flagged unlike the training images."""
    photo = np.asarray(Image.open(io.BytesIO(non_brain()["photograph"])).convert("L"))
    path = tmp_path / "photo_512x384.jpg"
    path.write_bytes(encode(np.asarray(Image.fromarray(photo).resize((512, 384))), "JPEG"))
    watch = watched_page(chromium)
    page = watch.page
    page.goto(f"{server}/ui/", wait_until="load")
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.locator("#status").get_by_text(path.name).wait_for(timeout=60_000)
    page.locator("#status").get_by_text("Unlike the training images").wait_for(timeout=30_000)
    first = overlay_loaded(page)
    assert (first["width"], first["height"]) == (512, 384), first
    opacity = page.get_by_label("number input for Map opacity")
    opacity.fill("0.3")
    opacity.press("Enter")
    second = overlay_loaded(page, first["src"])
    assert (second["width"], second["height"]) == (512, 384), second
    assert "/ui/" in second["src"], second
    assert watch.errors == [], watch.errors
    assert watch.external == [], watch.external
    page.context.close()
