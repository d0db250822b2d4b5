"""BRISC 2025 importer: BRISC's classification and segmentation folders -> the raw layout.

    python -m lib.data.ingest brisc SRC [--out data/raw] [--resplit] [--test-fraction 0.2]
                                        [--seed 42] [--overwrite]

BRISC (Fateh et al. 2025, "BRISC: Annotated Dataset for Brain Tumor Segmentation and
Classification", arXiv:2506.14318, CC BY 4.0) holds 6,000 contrast-enhanced
T1-weighted slices in the study's four classes, in three planes, with radiologist-drawn tumour
masks. Its layout::

    classification_task/{train,test}/{glioma,meningioma,pituitary,no_tumor}/<stem>.jpg
    segmentation_task/{train,test}/{images,masks}/<stem>.jpg | <stem>.png
    <stem> = brisc2025_<split>_<index>_<gl|me|pi|no>_<ax|co|sa>_t1

The rules of lib.data.ingest's module docstring hold here (SRC read-only, out outside SRC,
idempotent byte-identical PNGs, groups.csv merged, every skip reported). Specific to BRISC:

* The classification images are the dataset; a mask joins its image by stem (any non-zero
  pixel is lesion). The segmentation task's own JPEGs are copies of classification images and
  are not read; a mask or segmentation image whose stem has no classification image is a skip.
* Classes: ``no_tumor`` -> ``notumor``, the others keep their folder name; a stem whose class
  code disagrees with its folder is a skip (the label would be ambiguous).
* BRISC publishes NO patient ids, so every image is its own group (``brisc:<stem>``): slices of
  one patient may sit in both splits, and ``resplit=True`` (by group with ``assign_splits``)
  cannot prevent that either. By default BRISC's own train/test split is kept (train ->
  Training, test -> Testing), which keeps results comparable with the paper's.
* The plane (ax/co/sa) is recorded in ``<out>/metadata.csv`` (columns ``path`` relative to
  out, posix, and ``plane``: axial | coronal | sagittal), merged like groups.csv: a plane is a
  candidate shortcut the confounder audit may want.
* Exact duplicates across BRISC's splits are kept (raw data keeps what the source has);
  prepare's duplicate audit reports them.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..splits import TESTING, TRAINING
from .images import exif_orientation
from .ingest_base import (
    IngestError,
    IngestResult,
    Item,
    _check_paths,
    _Writer,
    assign_splits,
)

FORMAT = "brisc"
METADATA_CSV = "metadata.csv"
METADATA_COLUMNS = ("path", "plane")
SPLIT_FOLDERS: dict[str, str] = {"train": TRAINING, "test": TESTING}
CLASS_FOLDERS: dict[str, str] = {"glioma": "glioma", "meningioma": "meningioma",
                                 "pituitary": "pituitary", "no_tumor": "notumor"}
CLASS_CODES: dict[str, str] = {"gl": "glioma", "me": "meningioma", "pi": "pituitary",
                               "no": "notumor"}
PLANES: dict[str, str] = {"ax": "axial", "co": "coronal", "sa": "sagittal"}
JPEG_SUFFIXES = (".jpg", ".jpeg")
STEM = re.compile(r"^(?P<head>.+)_(?P<cls>[a-z]+)_(?P<plane>[a-z]+)_t1$")
# An RGB JPEG of a grey scan has equal channels up to JPEG noise: a 99th-percentile channel
# spread above this many grey levels means the file is truly colour.
COLOUR_TOLERANCE = 8


@dataclass(frozen=True)
class Entry:
    """One classification image found by the listing pass (nothing decoded yet)."""

    path: Path
    split: str  # TRAINING | TESTING: BRISC's own split
    cls: str
    stem: str
    plane: str

    @property
    def group(self) -> str:
        return f"{FORMAT}:{self.stem}"


# ----------------------------------------------------------------------------- listing


def _visible(folder: Path) -> list[Path]:
    """Entries of a folder, sorted, hidden ones left out (a listing, never a walk of SRC)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _parse_stem(stem: str, folder_cls: str) -> tuple[str, str]:
    """(plane, '') for a stem that fits its class folder, else ('', why)."""
    match = STEM.match(stem)
    if match is None:
        return "", "name does not end in _<class>_<plane>_t1 (BRISC's naming): plane unknown"
    code, plane = match["cls"], match["plane"]
    if plane not in PLANES:
        return "", f"unknown plane code {plane!r} (expected one of {', '.join(PLANES)})"
    if CLASS_CODES.get(code) != folder_cls:
        return "", (f"class code {code!r} in the name disagrees with the folder's class "
                    f"{folder_cls}: label ambiguous")
    return PLANES[plane], ""


def _list_class_folder(folder: Path, split: str, cls: str,
                       result: IngestResult) -> Iterator[Entry]:
    for path in _visible(folder):
        if not path.is_file() or path.suffix.lower() not in JPEG_SUFFIXES:
            result.skipped.append((str(path), "not a .jpg file"))
            continue
        plane, why = _parse_stem(path.stem, cls)
        if why:
            result.skipped.append((str(path), why))
            continue
        yield Entry(path, split, cls, path.stem, plane)


def _list_images(src: Path, result: IngestResult) -> list[Entry]:
    """Every importable classification image; everything else there is a reported skip."""
    root = src / "classification_task"
    if not root.is_dir():
        raise IngestError(f"{root} not found: expected BRISC's classification_task/ and "
                          f"segmentation_task/ in {src}")
    entries: list[Entry] = []
    for split_dir in _visible(root):
        if split_dir.name not in SPLIT_FOLDERS or not split_dir.is_dir():
            result.skipped.append((str(split_dir), "not BRISC's train/ or test/ folder"))
            continue
        for folder in _visible(split_dir):
            if folder.name not in CLASS_FOLDERS or not folder.is_dir():
                result.skipped.append((str(folder), "not a class folder of BRISC "
                                                    f"({', '.join(CLASS_FOLDERS)})"))
                continue
            entries.extend(_list_class_folder(folder, SPLIT_FOLDERS[split_dir.name],
                                              CLASS_FOLDERS[folder.name], result))
    return entries


def _index_masks(src: Path, known: set[str], result: IngestResult) -> dict[str, Path]:
    """Stem -> mask path, from segmentation_task/{train,test}/masks/*.png.

    Masks (and segmentation images) whose stem has no classification image are skips: they
    carry no class folder, and the classification set is the dataset.
    """
    masks: dict[str, Path] = {}
    root = src / "segmentation_task"
    for split in SPLIT_FOLDERS:
        for kind in ("masks", "images"):
            folder = root / split / kind
            for path in _visible(folder) if folder.is_dir() else []:
                if kind == "images":
                    if path.stem not in known:
                        result.skipped.append((str(path), "segmentation image without a "
                                                          "classification image: no class"))
                elif path.suffix.lower() != ".png" or not path.is_file():
                    result.skipped.append((str(path), "not a .png mask"))
                elif path.stem not in known:
                    result.skipped.append((str(path), "mask without a classification image"))
                else:
                    masks[path.stem] = path
    return masks


# ----------------------------------------------------------------------------- decoding


def _read_image(path: Path) -> tuple[np.ndarray, bool]:
    """8-bit greyscale pixels (PIL "L", EXIF orientation applied as viewers and
    lib.data.images.load_image do) and whether the file is truly colour.

    PIL's "L" of equal channels is exactly that channel, so grey RGB JPEGs lose nothing.
    """
    with Image.open(path) as img:
        if exif_orientation(img) != 1:
            img = ImageOps.exif_transpose(img)
        if img.mode == "L":
            return np.asarray(img).copy(), False
        rgb = np.asarray(img.convert("RGB")).astype(np.int16)
        spread = rgb.max(axis=2) - rgb.min(axis=2)
        colour = bool(np.percentile(spread, 99) > COLOUR_TOLERANCE)
        return np.asarray(img.convert("L")).copy(), colour


def _read_mask(path: Path) -> np.ndarray:
    """Boolean lesion mask: any non-zero pixel (in any colour channel; alpha ignored)."""
    with Image.open(path) as img:
        if img.mode in ("1", "L", "I", "I;16", "F"):
            arr = np.asarray(img)
        else:
            arr = np.asarray(img.convert("RGB")).max(axis=2)
    return arr > 0


@dataclass
class _Notes:
    """Counts behind the warnings (each warning is recorded once, with an example)."""

    colour: list[str]
    no_mask: list[str]
    empty_mask: list[str]


def _item(entry: Entry, masks: dict[str, Path], notes: _Notes,
          result: IngestResult) -> Item | None:
    """The entry decoded and checked against its mask, or None with the skip recorded."""
    try:
        pixels, colour = _read_image(entry.path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a reported skip
        result.skipped.append((str(entry.path), f"unreadable image: {type(exc).__name__}"))
        return None
    if colour:
        notes.colour.append(str(entry.path))
    mask = None
    mask_path = masks.get(entry.stem)
    if mask_path is not None:
        try:
            mask = _read_mask(mask_path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a reported skip
            result.skipped.append((str(entry.path), f"unreadable mask {mask_path.name}: "
                                                    f"{type(exc).__name__}"))
            return None
        if mask.shape != pixels.shape:
            result.skipped.append((str(entry.path), f"mask {mask.shape} and image "
                                                    f"{pixels.shape} differ in size"))
            return None
        if entry.cls == "notumor" and mask.any():
            result.skipped.append((str(entry.path), "a no_tumor image with a non-empty mask: "
                                                    "label ambiguous"))
            return None
        if not mask.any():
            if entry.cls != "notumor":
                notes.empty_mask.append(str(entry.path))
            mask = None
    elif entry.cls != "notumor":
        notes.no_mask.append(str(entry.path))
    return Item(entry.cls, entry.stem, entry.group, pixels, mask, str(entry.path))


def _warnings(notes: _Notes) -> list[str]:
    out = []
    if notes.colour:
        out.append(f"{len(notes.colour)} image(s) are truly colour, not grey RGB (e.g. "
                   f"{notes.colour[0]}): converted with PIL's 'L' (luma) all the same")
    if notes.no_mask:
        out.append(f"{len(notes.no_mask)} tumour image(s) have no mask (e.g. "
                   f"{notes.no_mask[0]}): written without one; the explanation scores skip them")
    if notes.empty_mask:
        out.append(f"{len(notes.empty_mask)} tumour image(s) have an empty mask (e.g. "
                   f"{notes.empty_mask[0]}): written without one; the explanation scores skip "
                   "them")
    return out


# ----------------------------------------------------------------------------- writing


def write_metadata(out: Path, planes: dict[str, str]) -> None:
    """Merge path -> plane rows into <out>/metadata.csv; an empty plane removes the row.

    Like ``_Writer.write_groups``: read, update, write sorted, rewrite only if bytes change.
    """
    path = out / METADATA_CSV
    rows: dict[str, str] = {}
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            rows = {r["path"]: r["plane"] for r in csv.DictReader(fh)}
    rows.update(planes)
    rows = {p: plane for p, plane in rows.items() if plane}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    writer.writerows(sorted(rows.items()))
    data = buf.getvalue().encode()
    if path.exists() and path.read_bytes() == data:
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _splits(entries: list[Entry], resplit: bool, test_fraction: float,
            seed: int) -> dict[str, str]:
    """Group -> Training | Testing: BRISC's own split, or a seeded stratified re-split."""
    if resplit:
        return assign_splits([(e.group, e.cls) for e in entries], test_fraction, seed)
    return {e.group: e.split for e in entries}


def import_brisc(src: Path | str, out: Path | str = "data/raw", resplit: bool = False,
                 test_fraction: float = 0.2, seed: int = 42,
                 overwrite: bool = False) -> IngestResult:
    """BRISC 2025 -> raw layout (PNG images, ``_mask.png`` beside tumour images, groups.csv,
    metadata.csv with the plane); see the module docstring for the rules.

    ``test_fraction`` and ``seed`` only matter with ``resplit``: each image is its own group
    (BRISC has no patient ids), so a re-split is by image, stratified by class.
    """
    src, out = Path(src), Path(out)
    _check_paths(src, out)
    result = IngestResult(FORMAT, str(out))
    entries = _list_images(src, result)
    masks = _index_masks(src, {e.stem for e in entries}, result)
    splits = _splits(entries, resplit, test_fraction, seed)
    writer, notes = _Writer(out, result, overwrite), _Notes([], [], [])
    planes: dict[str, str] = {}
    for entry in entries:
        item = _item(entry, masks, notes, result)
        if item is None:
            continue
        split = splits[entry.group]
        writer.write(item, split)
        planes[f"{split}/{entry.cls}/{entry.stem}.png"] = entry.plane
    if planes:
        writer.write_groups()
        planes.update({p: "" for p, g in writer.groups.items() if not g})  # moved away
        write_metadata(out, planes)
    else:
        result.warnings.append("nothing imported: check SRC and the options")
    used = set(writer.groups.values())
    result.groups = {s: sum(1 for g, v in splits.items() if v == s and g in used)
                     for s in (TRAINING, TESTING)}
    result.warnings.extend(_warnings(notes))
    result.warnings.append("BRISC has no patient ids: each image is its own group, so slices "
                           "of one patient may be in both splits")
    return result
