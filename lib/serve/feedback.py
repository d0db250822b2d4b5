"""User feedback becomes ground truth: an image, the label a user believes, the lesion they drew.

Stored in the raw layout so that prepare can read it (copy ``feedback/<class>/`` into
``data/raw/Training/<class>/``):

    feedback/<class>/<name>.png          the image as shown (8-bit greyscale, EXIF applied)
    feedback/<class>/<name>_mask.png     the lesion the user drew (0/255), when they drew one
    feedback/records/<name>.json         who, when, which model said what, file checksums

A file is created only if it does not exist (never overwritten), and the folder may not be, or
lie inside, the study's raw data: raw data is immutable.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import png_bytes
from .inference import BadInput, Upload

HEALTHY = "notumor"
RECORDS = "records"
MAX_USER_CHARS = 80
_USER_OK = re.compile(r"^[\w .@+-]*$")


def check_location(feedback_dir: Path, raw_dir: Path) -> Path:
    """The resolved feedback folder; ValueError when it is, or is inside, the raw data."""
    fb, raw = Path(feedback_dir).resolve(), Path(raw_dir).resolve()
    if fb == raw or raw in fb.parents:
        raise ValueError(f"feedback folder {fb} lies inside the raw data {raw}; raw data is "
                         "never written: choose another folder (--feedback-dir)")
    return fb


def check_mask(mask: np.ndarray | None, upload: Upload, label: str) -> np.ndarray | None:
    """A boolean lesion mask of the upload's size, None when nothing was drawn; else BadInput."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.ndim == 3:  # an RGB(A) drawing: any painted channel counts
        mask = mask.max(axis=-1)
    if mask.shape != upload.pixels.shape:
        raise BadInput(f"mask of shape {mask.shape} does not match the image "
                       f"{upload.pixels.shape}", 422)
    mask = mask > 0
    if not mask.any():
        return None
    if label == HEALTHY:
        raise BadInput(f"a lesion was drawn on an image labelled {HEALTHY!r}; choose the tumour "
                       "class or clear the drawing", 422)
    return mask


def _create(path: Path, data: bytes) -> None:
    """Write a new file; FileExistsError rather than overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as fh:
        fh.write(data)


def store(feedback_dir: Path, upload: Upload, label: str, classes: list[str],
          mask: np.ndarray | None, said: dict[str, Any], user: str = "") -> dict[str, Any]:
    """Write one feedback item; returns its record (also written as records/<name>.json)."""
    if label not in classes:
        raise BadInput(f"unknown label {label!r}; choose one of: {', '.join(classes)}", 422)
    user = user.strip()
    if len(user) > MAX_USER_CHARS or not _USER_OK.match(user):
        raise BadInput(f"user must be at most {MAX_USER_CHARS} letters, digits, spaces or "
                       "._@+- characters", 422)
    lesion = check_mask(mask, upload, label)
    image = png_bytes(upload.pixels)
    when = datetime.now(UTC)
    stem = f"fb-{when:%Y%m%dT%H%M%S}-{hashlib.md5(image).hexdigest()[:10]}"
    folder, records = Path(feedback_dir) / label, Path(feedback_dir) / RECORDS
    for k in range(1000):
        name = stem if k == 0 else f"{stem}-{k}"
        try:  # the record claims the name across all labels (the same image, another label)
            _create(records / f"{name}.json", b"")
        except FileExistsError:
            continue
        try:
            _create(folder / f"{name}.png", image)
            break
        except FileExistsError:
            (records / f"{name}.json").unlink()
            continue
    else:
        raise BadInput("too many feedback items with the same image in one second", 429)
    files = {"image": f"{label}/{name}.png"}
    if lesion is not None:
        mask_png = png_bytes(np.where(lesion, 255, 0).astype(np.uint8))
        _create(folder / f"{name}_mask.png", mask_png)
        files["mask"] = f"{label}/{name}_mask.png"
    record = {"name": name, "label": label, "user": user or None,
              "time_utc": when.isoformat(timespec="seconds"), "format": upload.format,
              "files": files, "image_md5": hashlib.md5(image).hexdigest(),
              "lesion_pixels": int(lesion.sum()) if lesion is not None else 0,
              "model_said": said}
    # fills the record this call claimed above (empty until now), never another one
    (records / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
