"""The Gradio interface of the app, mounted at /ui of the API's FastAPI app.

Upload a slice (PNG, JPEG, WebP, TIFF, BMP, GIF or DICOM) or pick one of the study's test
images, choose a model and a saliency method, and see the class probabilities (raw and
temperature-scaled), a warning when the image is unlike the training images (``lib.serve.ood``),
the map blended over the image (opacity re-blends the kept map, no model run) and, for a test
image with a lesion mask, the true lesion's outline. Draw where the lesion is: the pointing game
and the energy-in-mask of the map against the drawing update at once, and "Send feedback" stores
the drawing and a label through ``Service.feedback``. The model picker labels each model with
the study's rule for "best" (mean validation macro-F1 over seeds), the saliency method starts at
the study's headline method (explain.json; none, with the reason, when there is none), and the
model card below says what the chosen model was trained on and what it is not for.

Every callback is a method of ``UI`` that takes and returns plain values, so the tests call them
without a browser. Nothing is fetched from outside localhost: analytics are off and the theme
uses system fonts only (gradio's default theme loads Google Fonts). In gradio 6 the theme is an
argument of ``mount_gradio_app``/``launch``, not of ``Blocks``: mount with ``mount_ui``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..config import section
from ..data.images import load_mask
from ..data.manifest import MANIFEST_NAME, load_manifest, split_frame
from ..explain.methods import METHODS
from .inference import FORMATS, BadInput, Prediction, Upload, overlay, score_against
from .service import Service
from .study import rule_label

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no request may leave localhost

log = logging.getLogger(__name__)

NO_METHOD = "none"
EXAMPLES_PER_CLASS = 4
OUTLINE_RGB = (0, 255, 120)  # the true lesion's outline: green, apart from the map's colours
CSS = """#status p { font-weight: 600; } #scores p { font-size: 1.05em; }
#overlay img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"""


def theme() -> Any:
    """Gradio's default look with system fonts only: no request to Google Fonts."""
    import gradio as gr

    return gr.themes.Default(
        font=[gr.themes.Font("ui-sans-serif"), gr.themes.Font("system-ui"), "sans-serif"],
        font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("Consolas"), "monospace"])


@dataclass
class Shown:
    """What the page shows now (kept in gr.State): the image, the prediction and its truth."""

    data: bytes                     # the uploaded bytes (feedback re-reads them)
    upload: Upload
    pred: Prediction
    name: str                       # file name or <class>/<name> of a test image
    truth: np.ndarray | None = None  # the test image's lesion mask (bool, upload size)


def message(text: str, ok: bool = True) -> str:
    return text if ok else f"⚠ {text}"


def ood_text(ood: dict[str, Any] | None) -> str:
    """The out-of-distribution verdict as the page shows it: a warning unless clearly fine."""
    if not ood or not ood.get("available"):
        return message((ood or {}).get("message") or "OOD check unavailable", ok=False)
    if ood["unlike_training"]:
        return message(f"**Unlike the training images.** {ood['message']}", ok=False)
    return ood["message"]


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def card_markdown(card: dict[str, Any]) -> str:
    """Service.model_card as the page shows it."""
    m, data, perf, best = card["model"], card["training_data"], card["performance"], card["best"]
    sal, ood = card["saliency"], card["ood"]
    seeds = ", ".join(map(str, m["seeds"])) or "n/a"
    test = (f"{fmt(perf['test_macro_f1_mean'])} ± {fmt(perf['test_macro_f1_sd'])} (mean ± sd "
            f"over {perf['n_seeds']} seeds; this seed {fmt(perf['test_macro_f1_this_seed'])})"
            if perf["test_macro_f1_mean"] is not None else
            f"{fmt(perf['test_macro_f1_this_seed'])} (this seed; evaluate.json has no seeds' "
            "summary)")
    counts = ", ".join(f"{data[k]} {name}" for k, name in (
        ("n_train", "training"), ("n_validation", "validation"), ("n_test", "test"))
        if data[k] is not None) or "no manifest"
    verdict = "**yes**" if best["is_best"] else f"no (best: {best['best_model']})"
    lines = [
        f"### Model card: {m['artifact']} (`{m['key']}`)",
        f"{m['description']}; seeds {seeds}.",
        f"- **Trained on** {data['description']}; after the prepare stage's split: {counts} "
        f"images; classes {', '.join(data['classes'])}.",
        f"- **Test macro-F1** {test}; validation macro-F1 {fmt(perf['val_macro_f1_mean'])} "
        "(mean over seeds).",
        f"- **Best by the study's rule** ({best['rule']}): {verdict}."
        + (f" ⚠ {best['note']}." if best["note"] else ""),
        f"- **Saliency method by default:** {sal['message']}.",
        f"- **Out-of-distribution check:** {ood['method']}; {ood['message']}."
        if ood["available"] else f"- **Out-of-distribution check:** ⚠ {ood['message']}.",
        "- **Not for:**", *[f"  - {item}" for item in card["not_for"]],
    ]
    return "\n".join(lines)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a boolean mask (the mask minus its 4-neighbour erosion), 2 px."""
    mask = np.asarray(mask, dtype=bool)
    edge = np.zeros_like(mask)
    for _ in range(2):
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        edge |= mask & ~inner
        mask = inner
    return edge


def drawn_mask(editor: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """The user's brush strokes as a boolean mask of the image's HxW; None if nothing drawn.

    The editor's layers are RGBA (alpha = painted); a layer of another size than the image (the
    canvas may be scaled) is resized with nearest neighbour.
    """
    if not isinstance(editor, dict):
        return None
    mask = np.zeros(shape, dtype=bool)
    for layer in editor.get("layers") or []:
        if layer is None:
            continue
        arr = np.asarray(layer)
        painted = arr[..., 3] > 0 if arr.ndim == 3 and arr.shape[-1] == 4 else (
            arr.max(axis=-1) > 0 if arr.ndim == 3 else arr > 0)
        if painted.shape != tuple(shape):
            painted = np.asarray(Image.fromarray(painted.astype(np.uint8) * 255).resize(
                (shape[1], shape[0]), Image.Resampling.NEAREST)) > 0
        mask |= painted
    return mask if mask.any() else None


class UI:
    """The callbacks over one Service, and the test images they may open."""

    def __init__(self, service: Service, per_class: int = EXAMPLES_PER_CLASS) -> None:
        self.service = service
        data = section(service.params, "data")
        root = service.registry.root
        self.raw_dir = (root / data.get("raw_dir", "data/raw")).resolve()
        self.manifest_path = root / data.get("processed_dir", "data/processed") / MANIFEST_NAME
        self.test = self.test_rows(per_class)
        self.examples = [(f"{r['class']} / {Path(r['path']).name}{' · mask' if r['mask'] else ''}",
                          r["path"]) for r in self.test.values()]

    # ---- inputs --------------------------------------------------------------------------
    def test_rows(self, per_class: int) -> dict[str, dict[str, str]]:
        """A few usable test images per class from prepare's manifest (path -> row); none
        before prepare has run. The manifest knows each image's masks (BUSI-style parts too)."""
        if not self.manifest_path.is_file():
            return {}
        test = split_frame(load_manifest(self.manifest_path), "test")
        test = test.sort_values("path").groupby("class", sort=True).head(per_class)
        mask = test["mask"].fillna("").astype(str)
        return {p: {"path": p, "class": c, "mask": m}
                for p, c, m in zip(test["path"], test["class"], mask, strict=True)}

    def example_path(self, value: str) -> Path:
        """A test image by its manifest path; BadInput for anything else."""
        if value not in self.test:
            raise BadInput(f"unknown test image {value!r}", 404)
        return self.raw_dir / value

    def truth(self, value: str, shape: tuple[int, int]) -> np.ndarray | None:
        """The test image's lesion mask (every part OR-merged, as the study reads it), if any."""
        cell = self.test[value]["mask"]
        return load_mask(self.raw_dir, cell, shape) if cell else None

    # ---- callbacks -----------------------------------------------------------------------
    def predict(self, file: str | None, example: str | None, model: str | None,
                method: str | None, alpha: float, show_truth: bool
                ) -> tuple[Any, ...]:
        """(state, status, raw probs, calibrated probs, overlay, editor, truth checkbox)."""
        import gradio as gr

        cleared = (None, None, None, None, gr.Checkbox(visible=False))  # no stale result
        try:
            if file:
                path, truth_of = Path(file), None
            elif example:
                path, truth_of = self.example_path(example), example
            else:
                raise BadInput("upload an image or pick a test image first", 400)
            data = path.read_bytes()
            upload, pred = self.service.predict(data, model, method)
        except BadInput as exc:
            return (None, message(exc.reason, ok=False), *cleared)
        except Exception as exc:  # noqa: BLE001 - a message on the page, the trace in the log
            log.exception("prediction failed")
            return (None, message(f"internal error ({type(exc).__name__}): {exc}", ok=False),
                    *cleared)
        name = example if truth_of else Path(file).name
        truth = self.truth(truth_of, upload.pixels.shape) if truth_of else None
        shown = Shown(data, upload, pred, name, truth)
        probs = dict(zip(pred.classes, map(float, pred.probs), strict=True))
        calibrated = dict(zip(pred.classes, map(float, pred.probs_calibrated), strict=True))
        status = (f"**{pred.label}** ({probs[pred.label]:.1%}) by `{pred.artifact}` on "
                  f"`{name}` ({upload.format}, {upload.pixels.shape[1]}×{upload.pixels.shape[0]})")
        if pred.saliency is None:
            status += "; no saliency method chosen, so no map"
        status = message(status) + "\n\n" + ood_text(pred.ood)
        editor = {"background": np.repeat(upload.pixels[..., None], 3, axis=-1),
                  "layers": [], "composite": None}
        truth_box = gr.Checkbox(visible=truth is not None, value=show_truth and truth is not None)
        return (shown, status, probs, calibrated, self.blend(shown, alpha, show_truth), editor,
                truth_box)

    def blend(self, shown: Shown | None, alpha: float, show_truth: bool) -> np.ndarray | None:
        """The overlay at this opacity (the kept map, no model run), with the true outline."""
        if shown is None:
            return None
        if shown.pred.saliency is None:
            rgb = np.repeat(shown.upload.pixels[..., None], 3, axis=-1)
        else:
            rgb = overlay(shown.upload, shown.pred, float(alpha))
        if show_truth and shown.truth is not None:
            rgb = rgb.copy()
            rgb[outline(shown.truth)] = OUTLINE_RGB
        return rgb

    def scores(self, shown: Shown | None, editor: Any) -> dict[str, float | bool] | None:
        """Pointing game and energy-in-mask of the map against the drawing; None if no drawing."""
        if shown is None:
            return None
        mask = drawn_mask(editor, shown.upload.pixels.shape)
        return None if mask is None else score_against(shown.pred, mask)

    def score_text(self, shown: Shown | None, editor: Any) -> str:
        try:
            got = self.scores(shown, editor)
        except BadInput as exc:
            return message(exc.reason, ok=False)
        if got is None:
            return "Draw where the lesion is: the map is scored against your drawing."
        hit = "hit ✓" if got["pointing_game"] else "miss ✗"
        where = "inside" if got["pointing_game"] else "outside"
        return (f"Pointing game: **{hit}** (the map's peak is {where} your drawing) · "
                f"energy in mask: **{got['energy_in_mask']:.3f}**")

    def feedback(self, shown: Shown | None, editor: Any, label: str | None, user: str | None
                 ) -> str:
        """Store the image, the label and the drawing; the stored record's name, or why not."""
        if shown is None:
            return message("predict an image first, then send feedback on it", ok=False)
        if not label:
            return message("choose the label you believe is right", ok=False)
        try:
            mask = drawn_mask(editor, shown.upload.pixels.shape)
            record = self.service.feedback(shown.data, label, mask, shown.pred.artifact,
                                           user or "")
        except BadInput as exc:
            return message(exc.reason, ok=False)
        except Exception as exc:  # noqa: BLE001
            log.exception("feedback failed")
            return message(f"internal error ({type(exc).__name__}): {exc}", ok=False)
        drawn = f", lesion of {record['lesion_pixels']} px" if record["lesion_pixels"] else ""
        return f"Thank you: stored as **{record['name']}** ({record['label']}{drawn})."

    # ---- the page ------------------------------------------------------------------------
    def model_choices(self) -> list[tuple[str, str]]:
        """(label, artifact) of each loaded model, labelled with the study's rule's quantity."""
        reg, out = self.service.registry, []
        for card in reg.cards:
            if card.artifact not in reg.loaded:
                continue
            note = rule_label(reg.ranking.configuration_of(card.key), card.best)
            out.append((f"{card.artifact} ({note})" if note else card.artifact, card.artifact))
        return out

    @property
    def default_method(self) -> str:
        """The study's headline saliency method; none when explain.json names none."""
        return self.service.registry.headline.method or NO_METHOD

    def card_text(self, model: str | None) -> str:
        try:
            return card_markdown(self.service.model_card(model))
        except BadInput as exc:
            return message(exc.reason, ok=False)

    def blocks(self) -> Any:
        import gradio as gr

        reg = self.service.registry
        with gr.Blocks(title="Brain MRI tumour classifier", analytics_enabled=False) as demo:
            gr.Markdown("## Brain MRI tumour classifier\nA research model trained on synthetic "
                        "(phantom) images only: not a medical device, not validated on real "
                        "scans (see the model card below). Upload a slice or pick a test image, "
                        "then draw where the lesion is.")
            shown = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1):
                    file = gr.File(label=f"Upload an MRI slice ({FORMATS})",
                                   type="filepath", file_count="single", height=120)
                    example = gr.Dropdown(self.examples, value=None, label="or a test image",
                                          info=f"{len(self.examples)} from the study's test split")
                    model = gr.Dropdown(self.model_choices(), value=reg.default, label="Model",
                                        info=f"best by the study's rule: {reg.ranking.rule}")
                    method = gr.Dropdown([NO_METHOD, *METHODS], value=self.default_method,
                                         label="Saliency method",
                                         info=message(reg.headline.message,
                                                      ok=reg.headline.method is not None))
                    run = gr.Button("Predict", variant="primary")
                    status = gr.Markdown("Upload an image or pick a test image.",
                                         elem_id="status")
                    probs = gr.Label(label="Probabilities (model output)", num_top_classes=8,
                                     elem_id="probs")
                    calibrated = gr.Label(label="Probabilities (temperature-scaled)",
                                          num_top_classes=8, elem_id="calibrated",
                                          show_heading=False)
                with gr.Column(scale=1):
                    image = gr.Image(label="Saliency map over the image", type="numpy",
                                     interactive=False, elem_id="overlay", format="png",
                                     height=420)
                    alpha = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Map opacity")
                    truth = gr.Checkbox(label="Show the true lesion outline (green)",
                                        value=True, visible=False)
                with gr.Column(scale=1):
                    editor = gr.ImageEditor(
                        label="Draw where the lesion is", type="numpy", format="png",
                        image_mode="RGB", sources=(), transforms=(), layers=False,
                        brush=gr.Brush(colors=[("#ff2d2d", 0.6)], default_size=6,
                                       color_mode="fixed"),
                        eraser=gr.Eraser(default_size=10), height=420, elem_id="editor")
                    scores = gr.Markdown("Draw where the lesion is: the map is scored against "
                                         "your drawing.", elem_id="scores")
                    with gr.Row():
                        label = gr.Dropdown(self.service.classes, value=None,
                                            label="Your label")
                        user = gr.Textbox(label="Your name (optional)", max_length=80)
                    send = gr.Button("Send feedback")
                    stored = gr.Markdown("", elem_id="stored")
            card = gr.Markdown(self.card_text(reg.default), elem_id="card")

            outputs = [shown, status, probs, calibrated, image, editor, truth]
            inputs = [file, example, model, method, alpha, truth]
            run.click(self.predict, inputs, outputs, api_name="predict")
            example.input(lambda: None, None, file, queue=False, api_visibility="private").then(
                self.predict, inputs, outputs, api_visibility="private")
            file.upload(lambda: None, None, example, queue=False, api_visibility="private").then(
                self.predict, inputs, outputs, api_visibility="private")
            for control in (alpha, truth):
                control.change(self.blend, [shown, alpha, truth], image, queue=False,
                               api_visibility="private", show_progress="hidden")
            editor.change(self.score_text, [shown, editor], scores, api_name="score",
                          show_progress="hidden", trigger_mode="always_last")
            send.click(self.feedback, [shown, editor, label, user], stored, api_name="feedback")
            model.change(self.card_text, model, card, queue=False, api_visibility="private",
                         show_progress="hidden")
        return demo


def build_ui(service: Service) -> Any:
    """A gr.Blocks over the service (mount it with ``mount_ui`` to keep the offline theme)."""
    return UI(service).blocks()


def mount_ui(app: Any, service: Service, path: str = "/ui",
             max_file_size: int | None = None) -> Any:
    """Mount the UI on a FastAPI app with the system-font theme (gradio 6 sets it here).

    ``root_path=path``: gradio's ``/run/<api>`` route (the UI's unqueued events: the opacity
    slider, the outline checkbox) builds file URLs without the mount path, so without it the
    overlay after an upload or an opacity change pointed at /gradio_api/file=... (404: a blank
    overlay) instead of /ui/gradio_api/file=....
    """
    import gradio as gr
    from fastapi import Response

    if not any(getattr(r, "path", None) == "/favicon.ico" for r in app.routes):
        # browsers ask the root for /favicon.ico; gradio leaves that to the parent app
        app.add_api_route("/favicon.ico", lambda: Response(status_code=204),
                          include_in_schema=False)
    return gr.mount_gradio_app(app, build_ui(service), path=path, theme=theme(), css=CSS,
                               footer_links=["api"], ssr_mode=False,
                               max_file_size=max_file_size, root_path=path)
