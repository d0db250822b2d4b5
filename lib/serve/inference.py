"""One upload -> checked pixels -> class probabilities and, on request, a saliency map.

Every check is the prepare stage's (``lib.data.audit.inspect_image`` with ``prepare.max_pixels``
and ``prepare.min_side``), so every format the audit accepts the app accepts; every decode is
training's (``lib.data.inputs.decode_to_model``, fed the file itself for PNG and JPEG and a PNG of
the shown pixels otherwise: ``model_bytes``) and every map is the explain stage's
(``lib.explain.methods.Explainer``), so the app cannot drift from the study. Bad input raises
``BadInput`` with an HTTP status (4xx) and a reason a user can act on.
"""

from __future__ import annotations

import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..config import section
from ..data.audit import ImageInfo, inspect_image
from ..data.images import dicom_to_uint8, load_image, png_bytes
from ..data.inputs import decode_to_model
from ..data.prepare import PrepareConfig
from ..explain.methods import METHODS, Explainer, SaliencyConfig
from ..explain.scores import energy_in_mask, pointing_game
from ..explain.study import ExplainConfig
from ..forward import predict_probs
from .registry import LoadedModel

DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # an MRI slice is well under 1 MiB as PNG; DICOM a few MiB
DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"
# What tf.io.decode_image(channels=1), training's decoder, reads as training reads it. BMP and GIF
# need 3 channels there, WebP 3 or 4, and TIFF it cannot read at all.
MODEL_DECODES = frozenset({"PNG", "JPEG"})
_FORMAT_ALIASES = {"MPO": "JPEG"}  # a multi-picture JPEG: the audit's alias; TF reads its first
FORMATS = "PNG, JPEG, WebP, TIFF, BMP, GIF (8-bit grey or RGB) or a single-frame DICOM"
_STATUS = {"huge_image": 413, "not_an_image": 415, "non_image_extension": 415}


class BadInput(ValueError):
    """An upload or option the app refuses: an HTTP status (4xx) and a reason."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


@dataclass(frozen=True)
class Limits:
    """What an upload may be: bytes on the wire, and prepare's pixel limits."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = PrepareConfig.max_pixels
    min_side: int = PrepareConfig.min_side

    @classmethod
    def from_params(cls, params: dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES) -> Limits:
        prep = section(params, "prepare")
        return cls(max_bytes, int(prep.get("max_pixels", cls.max_pixels)),
                   int(prep.get("min_side", cls.min_side)))


@dataclass(frozen=True)
class Upload:
    """An accepted image: the encoded bytes a model decodes and the 8-bit pixels as shown."""

    data: bytes           # what decode_to_model reads: as uploaded, or a PNG (``model_bytes``)
    pixels: np.ndarray    # uint8 HxW, EXIF orientation applied (what a viewer shows)
    orientation: int      # EXIF orientation 1..8 of `data` (1 = upright, or already applied)
    format: str           # PNG, JPEG, WEBP, TIFF, BMP, GIF, ... or DICOM


def _dicom_png(data: bytes) -> bytes:
    """A single-frame DICOM -> PNG bytes of its 8-bit windowed pixels (the importer's rule)."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        if "PixelData" not in ds:
            raise BadInput("DICOM file without pixel data (a header-only or structured report "
                           "object); upload an image series slice", 422)
        raw = np.asarray(ds.pixel_array)
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable DICOM is the user's file, not a 500
        raise BadInput(f"unreadable DICOM file ({type(exc).__name__}: {exc})", 422) from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise BadInput(f"multi-frame DICOM ({frames} frames): the app classifies one slice; "
                       "upload one frame, or import the series with `python -m lib.data.ingest "
                       "dicom`, which writes each frame as a slice", 422)
    if raw.ndim != 2:
        raise BadInput(f"DICOM pixel data has shape {raw.shape}; one greyscale frame is needed "
                       "(a colour or multi-sample DICOM is not an MR slice)", 422)
    return png_bytes(dicom_to_uint8(ds, raw))


def model_bytes(data: bytes, fmt: str, pixels: np.ndarray, orientation: int
                ) -> tuple[bytes, int]:
    """(bytes for ``decode_to_model``, the EXIF orientation it must apply) of an accepted upload.

    PNG and JPEG keep their own bytes and orientation: training decodes the same file exactly
    so, and TF's JPEG decoder and RGB-to-grey differ from PIL's by a grey level here and there,
    so only the file's own bytes give the model bit-identical input. Every other format the
    audit accepts (WebP, TIFF, BMP, GIF, ...) TF cannot decode to grey (a 500 before), so it
    becomes a PNG of its shown pixels: ``load_image``'s uint8 grey with EXIF applied, exactly
    the pixels prepare audits and a viewer shows, hence orientation 1.
    """
    if fmt in MODEL_DECODES:
        return data, orientation
    return png_bytes(pixels), 1


def _is_webp(data: bytes) -> bool:
    """A WebP signature (RIFF container of kind WEBP): the audit's magic table has none."""
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _refusal(info: ImageInfo, data: bytes) -> BadInput:
    """The audit's exclusion as an HTTP answer: 413 too large, 415 not an image or an
    unsupported mode, 422 unreadable (truncated, corrupt, too small)."""
    kind = next((k for k, sev, _ in info.issues if sev == "excluded"), "")
    if kind == "not_an_image" and _is_webp(data):  # a broken WebP is corrupt, not 'not an image'
        return BadInput("starts like a WEBP file but cannot be parsed (truncated or corrupt); "
                        "re-export or re-download it", 422)
    return BadInput(info.reason, _STATUS.get(kind, 415 if kind.startswith("mode_") else 422))


def _shown(path: Path) -> tuple[np.ndarray, str]:
    """(load_image's pixels, PIL's format name) of a file the audit accepted."""
    try:
        with Image.open(path) as img:
            fmt = img.format or ""
        return load_image(path.parent, path.name), _FORMAT_ALIASES.get(fmt, fmt)
    except Exception as exc:  # noqa: BLE001 - the audit decoded it; anything left is the file's
        raise BadInput(f"unreadable image ({type(exc).__name__}: {exc}); re-export it as PNG",
                       422) from exc


def read_upload(data: bytes, limits: Limits = Limits()) -> Upload:
    """Check an uploaded file as prepare checks a raw image; BadInput says why it is refused.

    Any format PIL reads and the audit accepts is accepted (``FORMATS``); ``model_bytes`` says
    what the model decodes."""
    if not data:
        raise BadInput("empty upload: no bytes received", 400)
    if len(data) > limits.max_bytes:
        raise BadInput(f"upload of {len(data):,} bytes exceeds the limit of "
                       f"{limits.max_bytes:,} bytes", 413)
    dicom = data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC
    if dicom:
        data = _dicom_png(data)
    with tempfile.TemporaryDirectory(prefix="brain-mri-upload-") as tmp:
        path = Path(tmp) / "upload"  # no extension: PIL reads the content, as the audit does
        path.write_bytes(data)
        info = inspect_image(path, limits.max_pixels, limits.min_side)
        if info.status == "excluded":
            raise _refusal(info, data)
        pixels, fmt = _shown(path)
    encoded, orientation = model_bytes(data, fmt, pixels, int(info.orientation or 1))
    return Upload(encoded, pixels, orientation, "DICOM" if dicom else fmt)


def _tf_reason(exc: Exception) -> str:
    """A TensorFlow op error's message without its function-node and op decorations."""
    text = getattr(exc, "message", "") or str(exc)
    return re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", text).strip()


def model_input(loaded: LoadedModel, upload: Upload) -> np.ndarray:
    """(1, S, S, C) float32 in 0-255, exactly as make_dataset feeds the model this file."""
    import tensorflow as tf

    orientation = upload.orientation if upload.orientation != 1 else None
    try:
        x = np.asarray(decode_to_model(upload.data, loaded.size, orientation))
    except tf.errors.OpError as exc:  # PIL read it, TF's decoder did not (a damaged file)
        raise BadInput(f"unreadable {upload.format} file: the model's decoder says "
                       f"{_tf_reason(exc)!r}; re-export it as PNG", 422) from exc
    if loaded.channels == 3:
        x = np.repeat(x, 3, axis=-1)
    return x[None]


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of log(p) / T: the evaluate stage's calibration (lib.evaluate, imported lazily)."""
    from ..evaluate.metrics import apply_temperature as scaled

    return scaled(np.asarray(probs, dtype=np.float64)[None], temperature)[0]


@dataclass
class Prediction:
    """What a model says about one image, and (when asked) where it looked."""

    artifact: str
    key: str
    classes: list[str]
    probs: np.ndarray             # softmax, as the model outputs it
    probs_calibrated: np.ndarray  # after the evaluate stage's temperature
    temperature: float
    method: str | None = None
    saliency: np.ndarray | None = None  # HxW in [0, 1] at the upload's size
    peak: tuple[int, int] | None = None  # (row, col) of the map's maximum, upload pixels
    ood: dict[str, Any] | None = None    # lib.serve.ood.OODCheck.assess: like the training images?

    @property
    def index(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def label(self) -> str:
        return self.classes[self.index]


def check_method(method: str | None) -> str | None:
    """None/''/'none' -> None; a saliency method name -> itself; else BadInput listing them."""
    if method in (None, "", "none"):
        return None
    if method not in METHODS:
        raise BadInput(f"unknown method {method!r}; choose one of: none, {', '.join(METHODS)}",
                       422)
    return method


def saliency_config(params: dict[str, Any]) -> tuple[SaliencyConfig, str, int]:
    """The explain stage's saliency knobs, CAM layer and min grid: its own config, from
    params.yaml, so the app's maps are the study's."""
    cfg = ExplainConfig.from_params(section(params, "explain"), params["seed"])
    return cfg.saliency, cfg.layer, cfg.min_grid


def to_image_size(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A model-size map -> the upload's HxW (bilinear, as the report's overlays resize)."""
    sal = np.asarray(saliency, dtype=np.float32)
    if sal.shape == tuple(shape):
        return sal
    return np.clip(np.asarray(Image.fromarray(sal).resize((shape[1], shape[0]),
                                                          Image.Resampling.BILINEAR)), 0, 1)


def predict(loaded: LoadedModel, upload: Upload, classes: list[str], method: str | None = None,
            params: dict[str, Any] | None = None) -> Prediction:
    """Probabilities of one upload; with a method, its map for the predicted class."""
    method = check_method(method)
    x = model_input(loaded, upload)
    with loaded.lock:  # one model, one caller at a time: tf-keras-vis objects are not reentrant
        probs = predict_probs(loaded.model, x)[0]
        pred = Prediction(loaded.card.artifact, loaded.card.key, list(classes), probs,
                          apply_temperature(probs, loaded.card.temperature),
                          loaded.card.temperature, method)
        pred.ood = loaded.ood.assess(x) if loaded.ood is not None else {
            "available": False, "distance": None, "threshold": None, "unlike_training": None,
            "message": "OOD check unavailable: not prepared (the service was not opened with "
                       "Service.open)"}
        if method is not None:
            if loaded.explainer is None:
                cfg, layer, min_grid = saliency_config(params or {"explain": {}})
                loaded.explainer = Explainer(loaded.model, layer, cfg, min_grid)
            sal = loaded.explainer.maps(x, np.array([pred.index]), method)[0]
            pred.saliency = to_image_size(sal, upload.pixels.shape)
            row, col = np.unravel_index(int(np.argmax(pred.saliency)), pred.saliency.shape)
            pred.peak = (int(row), int(col))
    return pred


def overlay(upload: Upload, pred: Prediction, alpha: float = 0.7) -> np.ndarray:
    """RGB uint8 of the upload with the map blended in (the report's overlay)."""
    from ..figures import saliency_overlay

    return saliency_overlay(upload.pixels, pred.saliency, alpha)


def png(rgb_or_grey: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb_or_grey, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def score_against(pred: Prediction, mask: np.ndarray) -> dict[str, float | bool]:
    """Pointing game and energy-in-mask of the prediction's map against a lesion mask."""
    if pred.saliency is None:
        raise BadInput("no saliency map to score: ask for a method", 422)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != pred.saliency.shape:
        raise BadInput(f"mask of shape {mask.shape} does not match the image "
                       f"{pred.saliency.shape}", 422)
    if not mask.any():
        raise BadInput("the mask is empty: draw where the lesion is", 422)
    return {"pointing_game": bool(pointing_game(pred.saliency, mask)),
            "energy_in_mask": float(energy_in_mask(pred.saliency, mask))}
