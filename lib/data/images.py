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


NONFINITE_MAX_FRACTION = 0.5  # more NaN/inf pixels than this share: not an image (ingest skips)
MIN_DYNAMIC_RANGE = 8  # grey levels from the 1st to the 99th percentile; below: a blank image


def nonfinite_count(x: np.ndarray) -> int:
    """How many values of x are NaN or infinite (0 for integer data): bad numbers are findings."""
    x = np.asarray(x)
    return 0 if not np.issubdtype(x.dtype, np.inexact) else int(x.size - np.isfinite(x).sum())


def dynamic_range(pixels: np.ndarray) -> float:
    """Grey levels from the 1st to the 99th percentile of an image: how much it shows."""
    p = np.asarray(pixels, dtype=np.float64)
    if p.size == 0:
        return 0.0
    lo, hi = np.percentile(p, [1, 99])
    return float(hi - lo)


def percentile_bounds(ref: np.ndarray) -> tuple[float, float] | None:
    """The 0.5th and 99.5th percentiles of ref's finite values; None when it has none."""
    sample = np.asarray(ref, dtype=np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return None
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(lo), float(hi)


def scale_to_uint8(x: np.ndarray, lo: float, width: float) -> np.ndarray:
    """(x - lo) / width -> 0-255, clipped, rounded half to even; NaN/inf -> 0 (background).

    Non-finite values are replaced before the arithmetic, so no "invalid value encountered in
    cast" warning and no platform-dependent garbage byte ever reaches a PNG.
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, lo)
    return np.rint(np.clip((x - lo) / width, 0.0, 1.0) * 255.0).astype(np.uint8)


def window_percentile(x: np.ndarray, ref: np.ndarray | None = None,
                      bounds: tuple[float, float] | None = None) -> np.ndarray:
    """8-bit image of x: the 0.5th-99.5th percentiles of ref (default x) -> 0-255, clipped.

    Percentiles are taken over finite values only (NaN/inf excluded); non-finite pixels of x
    become 0. ``bounds`` (from ``percentile_bounds``) skips recomputing them for every slice of
    a volume. No finite reference value, or a constant one (hi <= lo), gives an all-zero image.
    """
    x = np.asarray(x, dtype=np.float64)
    if bounds is None:
        bounds = percentile_bounds(x if ref is None else ref)
    if bounds is None or bounds[1] <= bounds[0]:
        return np.zeros(x.shape, np.uint8)
    lo, hi = bounds
    return scale_to_uint8(x, lo, hi - lo)


def window_dicom(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """8-bit image of x with a DICOM window: [center - width/2, center + width/2] -> 0-255.

    A simplified linear VOI window (without the standard's -0.5/-1 offsets), clipped and rounded
    half to even; x is the modality value (stored value * RescaleSlope + RescaleIntercept);
    NaN/inf values (float pixel data) become 0.
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return scale_to_uint8(x, center - width / 2.0, width)


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


def _present(value: object) -> bool:
    """A DICOM element value that holds something (not absent, not empty)."""
    return value is not None and not (isinstance(value, (str, bytes)) and not value)


def functional_item(ds: object, frame: int, macro: str) -> object | None:
    """The first item of an enhanced file's functional-group macro for a frame (0-based): the
    frame's own (PerFrameFunctionalGroupsSequence), else the shared one; None when neither."""
    for name, index in (("PerFrameFunctionalGroupsSequence", frame),
                        ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(name)  # type: ignore[attr-defined]
        if groups is not None and index < len(groups):
            seq = groups[index].get(macro)
            if seq:
                return seq[0]
    return None


def frame_rescale(ds: object, frame: int = 0) -> tuple[float, float]:
    """(slope, intercept) to modality values: the frame's Pixel Value Transformation, else the
    file's RescaleSlope/RescaleIntercept, else (1, 0)."""
    item = functional_item(ds, frame, "PixelValueTransformationSequence")
    src = item if item is not None and _present(item.get("RescaleSlope")) else ds  # type: ignore[attr-defined]
    return (first_value(src.get("RescaleSlope", 1) or 1),  # type: ignore[attr-defined]
            first_value(src.get("RescaleIntercept", 0) or 0))  # type: ignore[attr-defined]


def frame_window(ds: object, frame: int = 0) -> tuple[float, float] | None:
    """(center, width) of a frame: its Frame VOI LUT, else the shared one, else the file's
    WindowCenter/WindowWidth (first value when multi-valued); None when none has width > 0."""
    for src in (functional_item(ds, frame, "FrameVOILUTSequence"), ds):
        if src is None:
            continue
        center, width = src.get("WindowCenter"), src.get("WindowWidth")  # type: ignore[attr-defined]
        if _present(center) and _present(width) and first_value(width) > 0:
            return first_value(center), first_value(width)
    return None


def dicom_to_uint8(ds: object, raw: np.ndarray, frame: int = 0) -> np.ndarray:
    """8-bit greyscale of one DICOM frame: rescaled to modality values, then windowed.

    ``frame`` (0-based) picks an enhanced multi-frame file's per-frame rescale and window
    (``frame_rescale``, ``frame_window``); a classic file uses its top-level elements. The
    window when present (``window_dicom``), else the percentile rule on the frame itself;
    MONOCHROME1 (white = low) is inverted so that every image shows bright tissue as bright, and
    NaN/inf values (float pixel data) end as 0, background. The importer and the app (lib.serve,
    a DICOM upload) share it.
    """
    slope, intercept = frame_rescale(ds, frame)
    value = raw * slope + intercept
    window = frame_window(ds, frame)
    pixels = window_dicom(value, *window) if window else window_percentile(value)
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":  # type: ignore[attr-defined]
        pixels = 255 - pixels
        if nonfinite_count(value):
            pixels[~np.isfinite(value)] = 0
    return pixels
