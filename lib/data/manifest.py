"""The manifest: the prepare stage's one output every later stage reads (the data contract).

One row per file of a class folder: path, class, label, source_split, split, md5, phash, width,
height, mode, mask, status, reason (docs/architecture.md lists what each means). Readers get
usable rows only unless they ask; split names come from lib.splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..splits import SPLITS

MASK_SEPARATOR = "|"  # the manifest's `mask` column joins an image's several masks with it


MANIFEST_COLUMNS = [
    "path", "class", "label", "source_split", "split", "md5", "phash",
    "width", "height", "mode", "mask", "status", "reason",
]


MANIFEST_NAME = "manifest.csv"


class DataError(ValueError):
    """The data cannot support the study as configured; the message says what to fix."""


def mask_paths(value: Any) -> list[str]:
    """The mask paths of a manifest `mask` cell: [] for ''/None/NaN, else the joined parts."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or not value:
        return []
    return [part for part in str(value).split(MASK_SEPARATOR) if part]


def load_manifest(path: Path, usable_only: bool = True) -> pd.DataFrame:
    """Read manifest.csv with the dtypes it was written with (hashes stay strings, '' stays '')."""
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    frame["label"] = frame["label"].astype("int64")
    for col in ("width", "height"):
        frame[col] = pd.to_numeric(frame[col].replace("", np.nan)).astype("Int64")
    if "orientation" in frame.columns:
        frame["orientation"] = frame["orientation"].astype("int64")
    if usable_only:
        frame = frame[frame["status"] != "excluded"].reset_index(drop=True)
    return frame


def class_names(manifest: pd.DataFrame) -> list[str]:
    """Class names ordered by label index, the order of every model's softmax output."""
    pairs = manifest[["label", "class"]].drop_duplicates().sort_values("label")
    if pairs["label"].duplicated().any():
        raise DataError("manifest maps one label to several class names; rerun prepare")
    return pairs["class"].tolist()


def split_frame(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """Usable rows of one split; an empty split is an error that says which and why."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rows = manifest[(manifest["split"] == split) & (manifest["status"] != "excluded")]
    if rows.empty:
        raise DataError(f"the manifest has no usable '{split}' images; see the prepare audit")
    return rows.reset_index(drop=True)
