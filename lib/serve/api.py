"""The REST API over ``Service``: ``/health``, ``/models``, ``/model-card``, ``/predict``,
``/feedback``, and its documentation at ``/docs`` (Swagger UI from local files: ``apidocs``).

    app = create_app(Service.open("."))          # uvicorn serves it: python -m lib.serve

Every refusal is a 4xx with ``{"detail": reason}`` (``BadInput`` carries the status), never a
500; FastAPI's own validation errors stay 422 with its list of errors. Uploads are limited twice:
a request whose Content-Length exceeds the limit is answered 413 before its body is read, and an
uploaded file longer than ``Limits.max_bytes`` is refused by ``read_upload``. Inference is
CPU-bound, so the endpoints are plain ``def`` (FastAPI runs them in its thread pool).
"""

from __future__ import annotations

import base64
import enum
import io
import json
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from ..explain.methods import METHODS
from .apidocs import add_docs
from .inference import FORMATS, BadInput, Prediction, Upload, check_method, overlay, png
from .service import Service

UPLOAD_PATHS = ("/predict", "/feedback")
MULTIPART_SLACK = 1024 * 1024  # form fields and multipart boundaries around the files

Method = enum.Enum("Method", {m: m for m in ("none", *METHODS)}, type=str)
Method.__doc__ = "A saliency method of the explain stage, or none."
NO_METHOD = Method("none")


# ----------------------------------------------------------------------------- schemas


class Health(BaseModel):
    status: str = Field(description="ok when the models are loaded")
    models: list[str] = Field(description="artifact names of the loaded models")
    default: str = Field(description="the model used when none is named")
    revision: str | None = Field(description="git commit of the study ('+dirty' if edited)")


class OODSummary(BaseModel):
    available: bool = Field(description="false when the reference images are missing: see "
                            "message")
    method: str
    threshold: float | None = Field(description="distance above which an upload is flagged")
    percentile: float | None = Field(description="the threshold's percentile of the "
                                     "validation images' distances")
    n_reference: int | None = Field(description="training images the distance is measured to")
    n_validation: int | None = Field(description="validation images the threshold is set on")
    message: str


class Card(BaseModel):
    artifact: str = Field(description="DVC artifact name (dvc.yaml artifacts:), e.g. transfer")
    key: str = Field(description="the study's id of the model, e.g. transfer_s42")
    description: str
    labels: list[str]
    trained: bool = Field(description="the model file exists (else: run make repro)")
    loaded: bool
    md5: str | None
    test_macro_f1: float | None = Field(description="test macro-F1 of this model (one seed)")
    ece: float | None = Field(description="test ECE before temperature scaling")
    ece_calibrated: float | None = Field(description="test ECE after temperature scaling")
    temperature: float = Field(description="fitted on validation by the evaluate stage")
    best: bool = Field(description="the study's best model by its rule (best_rule): highest "
                       "mean validation macro-F1 over the configuration's seeds")
    configuration: str | None = Field(None, description="the model's configuration, e.g. "
                                      "transfer")
    seeds: list[int] = Field([], description="the configuration's seeds")
    val_macro_f1_mean: float | None = Field(None, description="mean validation macro-F1 over "
                                            "the configuration's seeds: what best ranks by")
    test_macro_f1_mean: float | None = Field(None, description="mean test macro-F1 over the "
                                             "configuration's seeds")
    test_macro_f1_sd: float | None = Field(None, description="its standard deviation over seeds")
    label: str = Field("", description="how the UI labels the model: the rule's quantity")
    input_size: int | None = Field(None, description="side of the square input, pixels")
    input_channels: int | None = Field(None, description="1 greyscale, 3 RGB")
    ood: OODSummary | None = Field(None, description="the out-of-distribution check of "
                                   "predictions by this model")


class Models(BaseModel):
    models: list[Card]
    classes: list[str]
    default: str
    best_rule: str = Field(description="how the study chooses its best model "
                           "(lib.evaluate.metrics.BEST_MODEL_RULE)")
    best_note: str | None = Field(None, description="why the rule could not be applied, or a "
                                  "disagreement with evaluate.json")
    headline_method: str | None = Field(None, description="the study's headline saliency method "
                                        "(explain.json), null when unknown: see "
                                        "headline_message")
    headline_message: str = ""
    revision: str | None


class ModelInfo(BaseModel):
    artifact: str
    key: str
    description: str
    configuration: str | None
    seeds: list[int]
    input_size: int
    input_channels: int
    md5: str | None
    revision: str | None


class TrainingDataInfo(BaseModel):
    source: str = Field(description="phantom, or data/raw as found")
    synthetic: bool
    description: str
    classes: list[str]
    image_size: int | None
    n_train: int | None = Field(description="usable images of the prepare stage's train split")
    n_validation: int | None
    n_test: int | None


class Performance(BaseModel):
    test_macro_f1_mean: float | None = Field(description="over the configuration's seeds")
    test_macro_f1_sd: float | None
    n_seeds: int | None
    test_macro_f1_this_seed: float | None
    val_macro_f1_mean: float | None = Field(description="what the study's rule ranks by")
    ece: float | None
    ece_calibrated: float | None
    temperature: float
    source: str


class Best(BaseModel):
    is_best: bool
    best_model: str | None
    best_configuration: str | None
    rule: str
    note: str | None


class Saliency(BaseModel):
    default_method: str | None = Field(description="the study's headline method; null when "
                                       "explain.json does not name one")
    message: str


class ModelCardBody(BaseModel):
    model: ModelInfo
    training_data: TrainingDataInfo
    performance: Performance
    best: Best
    saliency: Saliency
    ood: OODSummary
    not_for: list[str] = Field(description="what the model is not for")


class OOD(BaseModel):
    available: bool = Field(description="false when the app has no reference images: see "
                            "message")
    distance: float | None = Field(description="mean distance to the nearest training images "
                                   "in the model's features")
    threshold: float | None = Field(description="the 99th percentile of the validation images' "
                                    "distances")
    unlike_training: bool | None = Field(description="distance > threshold: the prediction is "
                                         "not meaningful for this image")
    message: str


class Peak(BaseModel):
    row: int
    col: int


class Size(BaseModel):
    height: int
    width: int


class PredictResult(BaseModel):
    model: str = Field(description="artifact name")
    key: str
    label: str = Field(description="the predicted class (argmax of the raw probabilities)")
    probabilities: dict[str, float] = Field(description="softmax as the model outputs it")
    probabilities_calibrated: dict[str, float] = Field(
        description="after the evaluate stage's temperature scaling")
    temperature: float
    method: str | None = Field(description="saliency method, null when none was asked")
    image: Size = Field(description="the upload's size as shown (EXIF orientation applied)")
    format: str = Field(description="the file's format: PNG, JPEG, WEBP, TIFF, BMP, GIF, "
                        "DICOM, ...")
    peak: Peak | None = Field(None, description="the map's maximum, in image pixels")
    overlay_png_base64: str | None = Field(None, description="the map over the image, PNG")
    ood: OOD = Field(description="is the upload like the images the model was trained on?")


class ModelSaid(BaseModel):
    model: str
    key: str
    label: str
    probs: dict[str, float]
    model_md5: str | None
    revision: str | None


class FeedbackRecord(BaseModel):
    name: str = Field(description="file stem under the feedback folder")
    label: str
    user: str | None
    time_utc: str
    format: str
    files: dict[str, str] = Field(description="paths relative to the feedback folder")
    image_md5: str
    lesion_pixels: int
    model_said: ModelSaid


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text} for code, text in (
        (400, "empty upload"), (404, "unknown model"), (413, "upload too large"),
        (415, "not an image, or an unsupported image mode"),
        (422, "an unreadable image, a bad option, label or mask"))}


# ----------------------------------------------------------------------------- helpers


class ContentLengthLimit:
    """ASGI middleware: 413 before reading a body whose declared length exceeds the limit."""

    def __init__(self, app: Any, max_body: int, paths: tuple[str, ...] = UPLOAD_PATHS) -> None:
        self.app, self.max_body, self.paths = app, max_body, paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            length = dict(scope.get("headers") or []).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body:
                detail = (f"request body of {int(length):,} bytes exceeds the limit of "
                          f"{self.max_body:,} bytes")
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def read_file(file: UploadFile, max_bytes: int) -> bytes:
    """The upload's bytes, reading at most one byte past the limit (read_upload refuses it)."""
    return file.file.read(max_bytes + 1)


def read_mask(data: bytes, service: Service) -> np.ndarray | None:
    """A mask upload -> HxW array, any non-zero (and not transparent) pixel is lesion."""
    if not data:
        return None
    if len(data) > service.limits.max_bytes:
        raise BadInput(f"mask upload exceeds the limit of {service.limits.max_bytes:,} bytes", 413)
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > service.limits.max_pixels:
            raise BadInput(f"mask of {w}x{h} pixels exceeds the limit of "
                           f"{service.limits.max_pixels:,} pixels", 413)
        img.load()
    except BadInput:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInput(f"unreadable mask: a PNG is needed ({type(exc).__name__}: {exc})",
                       422) from exc
    if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
        return np.asarray(img)
    if "A" in img.getbands() or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"))
        return np.where(rgba[..., 3] > 0, rgba[..., :3].max(axis=-1), 0)
    return np.asarray(img.convert("RGB")).max(axis=-1)


def prediction_body(upload: Upload, pred: Prediction, alpha: float) -> dict[str, Any]:
    """The JSON of a prediction (floats as Python floats, the overlay as base64 PNG)."""
    h, w = upload.pixels.shape
    body = {"model": pred.artifact, "key": pred.key, "label": pred.label,
            "probabilities": dict(zip(pred.classes, map(float, pred.probs), strict=True)),
            "probabilities_calibrated": dict(zip(pred.classes, map(float, pred.probs_calibrated),
                                                 strict=True)),
            "temperature": float(pred.temperature), "method": pred.method,
            "image": {"height": int(h), "width": int(w)}, "format": upload.format,
            "ood": pred.ood}
    if pred.saliency is not None:
        body["peak"] = {"row": pred.peak[0], "col": pred.peak[1]}
        body["overlay_png_base64"] = base64.b64encode(png(overlay(upload, pred, alpha))).decode()
    return body


def card_body(service: Service, card: Any) -> dict[str, Any]:
    from .study import rule_label

    loaded = service.registry.loaded.get(card.artifact)
    config = service.registry.ranking.configuration_of(card.key)
    return {"artifact": card.artifact, "key": card.key, "description": card.description,
            "labels": list(card.labels), "trained": card.trained, "loaded": loaded is not None,
            "md5": card.md5, "test_macro_f1": card.test_macro_f1, "ece": card.ece,
            "ece_calibrated": card.ece_calibrated, "temperature": card.temperature,
            "best": card.best, "configuration": card.configuration, "seeds": list(card.seeds),
            "val_macro_f1_mean": card.val_macro_f1_mean,
            "test_macro_f1_mean": card.test_macro_f1_mean,
            "test_macro_f1_sd": card.test_macro_f1_sd, "label": rule_label(config, card.best),
            "input_size": loaded.size if loaded else None,
            "input_channels": loaded.channels if loaded else None,
            "ood": loaded.ood.summary() if loaded is not None and loaded.ood is not None
            else None}


# ----------------------------------------------------------------------------- the app


def create_app(service: Service, ui: bool = True) -> FastAPI:
    """The FastAPI app over a loaded service; with ui, the Gradio UI mounted at /ui."""
    max_bytes = service.limits.max_bytes
    app = FastAPI(
        title="Brain MRI study",
        summary="Brain-tumour MRI classifiers of the study: predictions, saliency maps, feedback",
        description=("The models are the DVC artifacts of dvc.yaml, with the test scores of the "
                     "evaluate stage. Research code: not a medical device, trained on synthetic "
                     "images only (GET /model-card says what it is not for). No authentication "
                     "is built in; the server binds 127.0.0.1 unless told otherwise."),
        version=service.registry.revision or "unknown", docs_url=None, redoc_url=None)
    add_docs(app)  # Swagger UI from local files: the documentation works offline
    # an image and a mask of at most max_bytes each, plus the form around them
    app.add_middleware(ContentLengthLimit, max_body=2 * max_bytes + MULTIPART_SLACK)

    @app.exception_handler(BadInput)
    def bad_input(_request: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    @app.get("/health", response_model=Health, tags=["app"])
    def health() -> dict[str, Any]:
        """Whether the models are loaded, which, and the study's git revision."""
        reg = service.registry
        return {"status": "ok", "models": list(reg.loaded), "default": reg.default,
                "revision": reg.revision}

    @app.get("/models", response_model=Models, tags=["app"])
    def models() -> dict[str, Any]:
        """Every declared model (trained or not) with the study's test scores for it."""
        reg = service.registry
        return {"models": [card_body(service, c) for c in reg.cards], "classes": service.classes,
                "default": reg.default, "best_rule": reg.ranking.rule,
                "best_note": reg.ranking.note, "headline_method": reg.headline.method,
                "headline_message": reg.headline.message, "revision": reg.revision}

    @app.get("/model-card", response_model=ModelCardBody, responses={404: ERRORS[404]},
             tags=["app"])
    def model_card(
        model: Annotated[str | None, Query(description="artifact name; default: the study's "
                                           "best model")] = None,
    ) -> dict[str, Any]:
        """What a model is, what it was trained on (a synthetic phantom), its test macro-F1 over
        seeds, the study's rule for "best", the default saliency method, the out-of-distribution
        check, and what it is not for."""
        return service.model_card(model)

    @app.post("/predict", response_model=PredictResult, response_model_exclude_none=False,
              responses=ERRORS, tags=["models"])
    def predict(
        file: Annotated[UploadFile, File(description=FORMATS)],
        model: Annotated[str | None, Query(description="artifact name (GET /models); default: "
                                           "the study's best model")] = None,
        method: Annotated[Method, Query(description="saliency method for the predicted "
                                        "class; the study's headline method is GET /models: "
                                        "headline_method")] = NO_METHOD,
        alpha: Annotated[float, Query(ge=0.0, le=1.0, description="overlay opacity of the "
                                      "map")] = 0.7,
    ) -> dict[str, Any]:
        """Class probabilities of one image (raw and temperature-scaled), whether the image is
        like the training images (``ood``: when ``unlike_training``, the prediction means
        nothing) and, with a method, where the model looked: an overlay PNG (base64) and the
        map's peak in image pixels."""
        name = check_method(method.value)
        service.model(model)  # 404 before reading the upload
        upload, pred = service.predict(read_file(file, max_bytes), model, name)
        return prediction_body(upload, pred, alpha)

    @app.post("/feedback", response_model=FeedbackRecord, status_code=201,
              responses={**ERRORS, 429: {"model": Problem, "description": "too many feedback "
                                         "items with the same image in one second: retry"}},
              tags=["feedback"])
    def feedback(
        file: Annotated[UploadFile, File(description="the image, as for /predict")],
        label: Annotated[str, Form(description="the class the user believes (GET /models: "
                                   "classes)")],
        mask: Annotated[UploadFile | None, File(description="PNG of the image's size; any "
                                                "non-zero pixel is lesion; none on notumor")
                        ] = None,
        model: Annotated[str | None, Form(description="artifact name; default: the study's "
                                          "best model")] = None,
        user: Annotated[str, Form(description="who gives the feedback (letters, digits, "
                                  "spaces, ._@+-)")] = "",
    ) -> dict[str, Any]:
        """Store an image with the label a user gives and, optionally, the lesion drawn on it:
        feedback/<label>/<name>.png (+ _mask.png) and feedback/records/<name>.json. Never
        overwrites a file."""
        service.model(model or None)
        data = read_file(file, max_bytes)
        drawn = read_mask(read_file(mask, max_bytes), service) if mask is not None else None
        record = service.feedback(data, label, drawn, model or None, user)
        return json.loads(json.dumps(record))

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/" if ui else "/docs")

    if ui:
        from .ui import mount_ui

        app = mount_ui(app, service, max_file_size=max_bytes)
    return app
