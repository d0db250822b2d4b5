"""Pixels in and out, in one place: every decode and encode the study does to an image file.

Reading (``load_image``, ``load_mask``: uint8 greyscale as a viewer shows it, EXIF orientation
applied), writing (``png_bytes``: deterministic PNG bytes), and the windowing that turns scanner
values into 8-bit pixels (DICOM window or percentiles), shared by the importers and the app.
Decoding for a model (tf.data, resize) is lib.data.inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .manifest import DataError, mask_paths

OK_MODES = {"L", "RGB"}


EXIF_ORIENTATION = 0x0112  # the EXIF tag viewers rotate by; 1 = upright, 2..8 = flips/rotations


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or invalid."""
    try:
        value = int(img.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block is not worth a crash; the image stays as stored
        return 1
    return value if 1 <= value <= 8 else 1


def load_image(raw_dir: Path, rel_path: str) -> np.ndarray:
    """uint8 grayscale HxW; RGB goes through PIL "L" so every consumer sees the same pixels.

    EXIF orientation is applied as viewers do (and as make_dataset does).
    """
    with Image.open(Path(raw_dir) / rel_path) as img:
        if img.mode not in OK_MODES:
            raise DataError(f"{rel_path}: mode {img.mode} is not supported (L or RGB); "
                            "the manifest should have excluded it")
        if exif_orientation(img) != 1:
            img = ImageOps.exif_transpose(img)
        return np.array(img.convert("L") if img.mode != "L" else img, dtype=np.uint8)


def load_mask(raw_dir: Path, rel_path: str | None, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean lesion mask (any non-zero pixel); all False when the image has no mask.

    `rel_path` is a manifest `mask` cell: one path, or several joined with MASK_SEPARATOR (one
    mask per lesion, BUSI-style), OR-merged; each must have the image's shape.
    """
    shape = tuple(shape)[:2]
    mask = np.zeros(shape, dtype=bool)
    for part in mask_paths(rel_path):
        with Image.open(Path(raw_dir) / part) as img:
            if exif_orientation(img) != 1:
                img = ImageOps.exif_transpose(img)
            one = np.asarray(img.convert("L")) > 0
        if one.shape != shape:
            raise DataError(f"{part}: mask shape {one.shape} does not match image {shape}")
        mask |= one
    return mask


def window_percentile(x: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """8-bit image of x: the 0.5th-99.5th percentiles of ref (default x) -> 0-255, clipped."""
    x = np.asarray(x, dtype=np.float64)
    sample = x if ref is None else np.asarray(ref, dtype=np.float64)
    if sample.size == 0:
        return np.zeros(x.shape, np.uint8)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    return np.rint(np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def window_dicom(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """8-bit image of x with a DICOM window: [center - width/2, center + width/2] -> 0-255.

    A simplified linear VOI window (without the standard's -0.5/-1 offsets), clipped and rounded
    half to even; x is the modality value (stored value * RescaleSlope + RescaleIntercept).
    """
    x = np.asarray(x, dtype=np.float64)
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    lo = center - width / 2.0
    return np.rint(np.clip((x - lo) / width, 0.0, 1.0) * 255.0).astype(np.uint8)


def binary_mask(mask: np.ndarray) -> np.ndarray:
    """0/255 uint8 mask: any non-zero label is tumour."""
    return np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Deterministic PNG encoding of an 8-bit greyscale array (no timestamps or text chunks)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def first_value(value: object) -> float:
    """A DICOM numeric value that may be multi-valued: its first value."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = list(value)[0]  # type: ignore[call-overload]
    return float(value)  # type: ignore[arg-type]


def dicom_to_uint8(ds: object, raw: np.ndarray) -> np.ndarray:
    """8-bit greyscale of one DICOM frame: rescaled to modality values, then windowed.

    The file's WindowCenter/WindowWidth when present (``window_dicom``), else the percentile rule;
    MONOCHROME1 (white = low) is inverted so that every image shows bright tissue as bright. The
    importer and the app (lib.serve, a DICOM upload) share it.
    """
    value = raw * first_value(ds.get("RescaleSlope", 1) or 1) + first_value(  # type: ignore[attr-defined]
        ds.get("RescaleIntercept", 0) or 0)  # type: ignore[attr-defined]
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")  # type: ignore[attr-defined]
    if center is not None and width is not None and first_value(width) > 0:
        pixels = window_dicom(value, first_value(center), first_value(width))
    else:
        pixels = window_percentile(value)
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":  # type: ignore[attr-defined]
        pixels = 255 - pixels
    return pixels
