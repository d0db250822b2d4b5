"""Prepare stage: ingest a class-per-folder MRI set, audit every file, split it reproducibly.

The raw set is treated as untrusted and read-only: each file ends up either as a manifest row
(usable or not, with a status and a reason) or as a finding in the audit, so nothing is dropped
silently, and a bad file never crashes the stage. The validation split is stratified, seeded and
duplicate-group aware so that it cannot leak by construction.

Manifest conventions: one row per image-like or non-image file of a class folder (masks are
named in the `mask` column of their image, never rows); `status` is ok | warn | excluded;
`split` is train | val | test for usable rows and empty for excluded ones, so
``split != ""`` and ``status != "excluded"`` select the same rows. Duplicates: exact = same
md5; near = pHash distance <= phash_max_distance confirmed by a thumbnail comparison
(see PrepareConfig). Within-split duplicates are kept (warn); cross-split ones follow
`duplicates` (report: warn both; drop: exclude the Training copy, keep the Testing one).

CLI (the DVC stage): ``python -m lib.data --params params.yaml``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from .config import load_params, repo_root, section

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
SPLIT_DIRS = {"Training": "train", "Testing": "test"}
MASK_SUFFIX = "_mask"
DUPLICATE_POLICIES = ("drop", "report")
OK_MODES = {"L", "RGB"}
SPLITS = ("train", "val", "test")
THUMB_SIZE = 64  # side of the thumbnails that confirm pHash candidates

MANIFEST_COLUMNS = [
    "path", "class", "label", "source_split", "split", "md5", "phash",
    "width", "height", "mode", "mask", "status", "reason",
]
MANIFEST_NAME = "manifest.csv"
AUDIT_JSON = Path("metrics") / "data_audit.json"
AUDIT_MD = Path("data_audit.md")

_SEVERITY = {"ok": 0, "warn": 1, "excluded": 2}
# Which copy of a cross-split duplicate survives duplicates=drop: the one evaluated on.
_KEEP_PRIORITY = {"test": 0, "val": 1, "train": 2}
_SYSTEM_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
_FORMAT_OF_EXT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP",
                  ".tif": "TIFF", ".tiff": "TIFF"}
_FORMAT_ALIASES = {"MPO": "JPEG"}  # multi-picture JPEGs decode as plain JPEGs

# Every finding kind, with the heading it gets in the readable report.
FINDING_KINDS: dict[str, str] = {
    "missing_split_dir": "Training or Testing folder missing",
    "unknown_folder": "Top-level folders other than Training/Testing (not used)",
    "stray_file": "Files outside class folders (not used)",
    "hidden_ignored": "Hidden or system files and folders (ignored)",
    "nested_file": "Files in sub-folders of a class folder (not used)",
    "empty_class_folder": "Class folders without any image file",
    "class_missing_in_split": "Classes with a folder in one split only",
    "non_image_extension": "Files with a non-image extension in class folders (excluded)",
    "unreadable_file": "Files that could not be read (excluded)",
    "zero_byte": "Zero-byte files (excluded)",
    "not_an_image": "Files whose content is not an image (excluded)",
    "corrupt": "Truncated or corrupt images (excluded)",
    "huge_image": "Images over max_pixels / decompression bombs (excluded)",
    "mode_16bit": "16-bit or float images (excluded)",
    "mode_alpha": "Images with an alpha channel (excluded)",
    "mode_palette": "Palette images (excluded)",
    "mode_cmyk": "CMYK images (excluded)",
    "mode_1bit": "1-bit images (excluded)",
    "mode_unsupported": "Images in another unsupported mode (excluded)",
    "decode_warning": "Images that decoded with a warning",
    "multi_frame": "Multi-frame images (first frame used)",
    "extension_mismatch": "Extension does not match the content",
    "orphan_mask": "Masks without their image (not used)",
    "mask_unreadable": "Unreadable masks (image kept for classification only)",
    "mask_size_mismatch": "Masks of another size than their image (image kept for "
                          "classification only)",
    "missing_mask": "Images without a mask in a class where others have one",
    "class_without_masks": "Classes without any mask while other classes have masks",
    "duplicate_exact_cross_split": "Exact duplicates across splits (leakage)",
    "duplicate_near_cross_split": "Near duplicates across splits (leakage)",
    "duplicate_exact_within_split": "Exact duplicates within a split",
    "duplicate_near_within_split": "Near duplicates within a split",
}


class DataError(ValueError):
    """The data cannot support the study as configured; the message says what to fix."""


@dataclass(frozen=True)
class Finding:
    """One audit observation; paths are POSIX, relative to the raw dir, so outputs are portable."""

    kind: str
    path: str
    reason: str
    other_path: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"kind": self.kind, "path": self.path, "reason": self.reason}
        if self.other_path:
            out["other_path"] = self.other_path
        return out

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.path, self.other_path or "", self.reason)


@dataclass(frozen=True)
class ImageInfo:
    """What one image file turned out to be; `issues` holds (kind, severity, reason) triples."""

    status: str
    reason: str
    issues: tuple[tuple[str, str, str], ...] = ()
    width: int | None = None
    height: int | None = None
    mode: str = ""
    md5: str = ""
    phash: str = ""
    format: str = ""
    thumb: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PrepareConfig:
    """Knobs of the prepare stage; validated up front so a typo fails before any work.

    A near duplicate needs both a pHash distance <= phash_max_distance (cheap candidate search)
    and standardised 64x64 thumbnails that differ by at most near_max_diff (in image standard
    deviations) at every pixel: look-alike scans share a pHash far too often to trust it alone.
    """

    val_fraction: float = 0.15
    duplicates: str = "report"
    phash_max_distance: int = 4
    max_pixels: int = 40_000_000
    seed: int = 42
    near_max_diff: float = 0.5

    def __post_init__(self) -> None:
        if self.duplicates not in DUPLICATE_POLICIES:
            raise ValueError(
                f"prepare.duplicates must be one of {', '.join(DUPLICATE_POLICIES)}; "
                f"got {self.duplicates!r}"
            )
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, int | float) or not 0 < vf < 1:
            raise ValueError(f"prepare.val_fraction must be a number in (0, 1); got {vf!r}")
        d = self.phash_max_distance
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 64:
            raise ValueError(f"prepare.phash_max_distance must be an int in [0, 64]; got {d!r}")
        m = self.max_pixels
        if isinstance(m, bool) or not isinstance(m, int) or m <= 0:
            raise ValueError(f"prepare.max_pixels must be a positive int; got {m!r}")
        t = self.near_max_diff
        if isinstance(t, bool) or not isinstance(t, int | float) or t < 0:
            raise ValueError(f"prepare.near_max_diff must be a number >= 0; got {t!r}")
        s = self.seed
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seed must be a non-negative int; got {s!r}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PrepareConfig:
        """Read `prepare:` and the top-level `seed`; unknown keys are errors, not silent typos."""
        group = dict(section(params, "prepare"))
        known = {f.name for f in fields(cls)} - {"seed"}
        unknown = sorted(set(group) - known)
        if unknown:
            raise ValueError(
                f"unknown key(s) in params 'prepare:' group: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))} (the seed is the top-level 'seed:')"
            )
        return cls(**group, seed=params.get("seed", cls.seed))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------------------------
# Scanning the tree


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _SYSTEM_NAMES


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """Sorted directory entries, so every output is independent of file-system order."""
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _rel(raw_dir: Path, path: Path | str) -> str:
    return Path(path).relative_to(raw_dir).as_posix()


def scan(raw_dir: Path) -> tuple[list[str], pd.DataFrame, list[Finding]]:
    """Walk the raw tree without opening any file: classes, file table and structural findings.

    The file table has one row per candidate file in a class folder, with columns
    path, class, source_split, role (image | mask | other) and mask (the paired mask of an image).
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(
            f"raw data folder not found: {raw_dir}. Fetch it (dvc pull) or generate the phantom "
            "set first; expected the layout <raw>/Training/<class>/*.jpg and <raw>/Testing/..."
        )
    findings: list[Finding] = []
    for entry in _entries(raw_dir):
        name = entry.name
        if _is_hidden(name):
            findings.append(_hidden_finding(raw_dir, entry))
        elif entry.is_dir():
            if name not in SPLIT_DIRS:
                hint = next((f" (did you mean {s}?)" for s in SPLIT_DIRS
                             if s.lower() == name.lower()), "")
                n = _count_files(Path(entry.path))
                findings.append(Finding("unknown_folder", name,
                                        f"top-level folder is neither Training nor Testing{hint}; "
                                        f"its {n} file(s) are not used"))
        else:
            findings.append(Finding("stray_file", name,
                                    "file at the top level, outside Training/Testing; not used"))

    class_folders: dict[str, dict[str, Path]] = {}
    for split_dir in sorted(SPLIT_DIRS):
        folder = raw_dir / split_dir
        if not folder.is_dir():
            findings.append(Finding("missing_split_dir", split_dir,
                                    f"no {split_dir}/ folder: the {SPLIT_DIRS[split_dir]} split "
                                    "has no data"))
            continue
        class_folders[split_dir] = {}
        for entry in _entries(folder):
            rel = f"{split_dir}/{entry.name}"
            if _is_hidden(entry.name):
                findings.append(_hidden_finding(raw_dir, entry))
            elif entry.is_dir():
                class_folders[split_dir][entry.name] = Path(entry.path)
            else:
                findings.append(Finding("stray_file", rel,
                                        "file directly in the split folder, not in a class "
                                        "folder; its class is unknown, not used"))

    classes = sorted({c for per_split in class_folders.values() for c in per_split})
    if len(class_folders) == len(SPLIT_DIRS):
        for cls in classes:
            for split_dir in sorted(SPLIT_DIRS):
                if cls not in class_folders[split_dir]:
                    other = next(s for s in SPLIT_DIRS if s != split_dir)
                    findings.append(Finding(
                        "class_missing_in_split", f"{split_dir}/{cls}",
                        f"class '{cls}' has a {other}/ folder but no {split_dir}/ folder: "
                        f"it cannot be {'evaluated' if split_dir == 'Testing' else 'trained'}"))

    rows: list[dict[str, str]] = []
    for split_dir in sorted(class_folders):
        for cls, folder in sorted(class_folders[split_dir].items()):
            rows.extend(_scan_class_folder(raw_dir, split_dir, cls, folder, findings))
    table = pd.DataFrame(rows, columns=["path", "class", "source_split", "role", "mask"])
    table = table.sort_values("path", kind="stable").reset_index(drop=True)
    return classes, table, findings


def _hidden_finding(raw_dir: Path, entry: os.DirEntry[str]) -> Finding:
    rel = _rel(raw_dir, entry.path)
    if entry.is_dir():
        n = _count_files(Path(entry.path))
        return Finding("hidden_ignored", rel,
                       f"hidden/system folder ignored ({n} file(s) inside not used)")
    return Finding("hidden_ignored", rel, "hidden/system file ignored")


def _scan_class_folder(raw_dir: Path, split_dir: str, cls: str, folder: Path,
                       findings: list[Finding]) -> list[dict[str, str]]:
    """Classify the files of one class folder and pair masks with their images."""
    images: list[tuple[str, str]] = []  # (rel path, stem)
    masks: dict[str, list[str]] = defaultdict(list)  # image stem -> mask rel paths
    others: list[str] = []
    for entry in _entries(folder):
        rel = _rel(raw_dir, entry.path)
        if _is_hidden(entry.name):
            findings.append(_hidden_finding(raw_dir, entry))
        elif entry.is_dir():
            for sub_root, sub_dirs, sub_files in os.walk(entry.path):
                sub_dirs.sort()
                for name in sorted(sub_files):
                    findings.append(Finding(
                        "nested_file", _rel(raw_dir, Path(sub_root) / name),
                        f"inside a sub-folder of class folder {split_dir}/{cls}; the layout is "
                        "flat (<split>/<class>/<file>), so it is not used; move it up if needed"))
        elif not entry.is_file():
            findings.append(Finding("stray_file", rel,
                                    "not a regular file (broken link or special file); not used"))
        else:
            suffix = Path(entry.name).suffix
            stem = entry.name[: len(entry.name) - len(suffix)]
            if suffix.lower() not in IMAGE_EXTENSIONS:
                others.append(rel)
            elif stem.lower().endswith(MASK_SUFFIX):
                masks[stem[: -len(MASK_SUFFIX)]].append(rel)
            else:
                images.append((rel, stem))

    used_masks: set[str] = set()
    rows = []
    for rel, stem in images:
        candidates = masks.get(stem, [])
        # Prefer the documented <stem>_mask.png; any other image extension is accepted.
        candidates = sorted(candidates, key=lambda p: (not p.lower().endswith(".png"), p))
        mask = candidates[0] if candidates else ""
        if mask:
            used_masks.add(mask)
        rows.append({"path": rel, "class": cls, "source_split": split_dir, "role": "image",
                     "mask": mask})
    image_stems = {stem for _, stem in images}
    for stem, paths in sorted(masks.items()):
        for mask in sorted(paths):
            if mask in used_masks:
                continue
            if stem in image_stems:
                reason = "a second mask for the same image (the .png one was used); not used"
            else:
                reason = (f"mask without an image named {stem}.* beside it; not used "
                          "(if it is a scan, rename it without the _mask suffix)")
            findings.append(Finding("orphan_mask", mask, reason))
    for rel in others:
        rows.append({"path": rel, "class": cls, "source_split": split_dir, "role": "other",
                     "mask": ""})
    if not images:
        what = f"it holds {len(others)} non-image file(s)" if others else "it has no files"
        if masks:
            what += f" and {sum(map(len, masks.values()))} mask(s) without images"
        findings.append(Finding("empty_class_folder", f"{split_dir}/{cls}",
                                f"class folder without any image file ({what}): class '{cls}' "
                                f"has no data in {split_dir}"))
    return rows


# --------------------------------------------------------------------------------------------
# Inspecting one file


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP",
          b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"GIF8": "GIF"}


def _magic_format(path: Path) -> str:
    """The format an image file's signature claims, '' if none: tells 'corrupt' from 'not one'."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError:
        return ""
    return next((fmt for magic, fmt in _MAGIC.items() if head.startswith(magic)), "")


def _sniff(path: Path) -> str:
    """A guess at what a non-image file is, so the reason tells the user what they are facing."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1024)
    except OSError:
        return "unreadable content"
    low = head.lstrip().lower()
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "a DICOM file: export it to PNG/JPEG first"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if low.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a failed download?)"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text (a text file renamed with an image extension?)"
        except UnicodeDecodeError:
            pass
    return "unrecognised binary data"


def _mode_issue(mode: str) -> tuple[str, str] | None:
    if mode in OK_MODES:
        return None
    if mode.startswith("I;16") or mode in {"I", "F"}:
        return ("mode_16bit", f"{mode} (16-bit/32-bit/float) image: an 8-bit pipeline would "
                              "clip or rescale it silently; window and convert it to 8-bit L")
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        return ("mode_alpha", f"{mode} image: alpha would be discarded silently; convert to L "
                              "or RGB")
    if mode == "P":
        return ("mode_palette", "palette (P) image: pixel values are palette indices, not "
                                "intensities; convert to L or RGB")
    if mode == "CMYK":
        return ("mode_cmyk", "CMYK image: a print colour space, intensities would be wrong; "
                             "convert to L or RGB")
    if mode == "1":
        return ("mode_1bit", "1-bit image: looks like a mask or a thresholded export, not a "
                             "scan; convert to L if it really is an image")
    return ("mode_unsupported", f"{mode} image: unsupported mode; convert to L or RGB")


def _result(issues: list[tuple[str, str, str]], **kw: Any) -> ImageInfo:
    status = max((sev for _, sev, _ in issues), key=_SEVERITY.__getitem__, default="ok")
    reason = "; ".join(r for _, _, r in issues)
    return ImageInfo(status=status, reason=reason, issues=tuple(issues), **kw)


def inspect_image(path: Path, max_pixels: int) -> ImageInfo:
    """Open, size-check and fully decode one file; bad content becomes a status, never an error.

    The size is checked from the header before decoding, so a decompression bomb is refused
    without allocating it; the full decode is what catches truncated files.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return _result([("zero_byte", "excluded", "zero-byte file (an interrupted copy?); "
                                                      "re-copy it from the source or delete it")])
        md5 = _md5(path)
    except OSError as exc:
        return _result([("unreadable_file", "excluded",
                         f"cannot read the file ({exc.strerror or exc}); check permissions")])

    issues: list[tuple[str, str, str]] = []
    meta: dict[str, Any] = {"md5": md5}
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # someone else may have relaxed it globally
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                img = Image.open(path)
            except Image.DecompressionBombError as exc:
                return _result([("huge_image", "excluded",
                                 f"decompression bomb refused by PIL ({exc}); downscale it")],
                               **meta)
            except UnidentifiedImageError:
                claimed = _magic_format(path)
                if claimed:
                    return _result([("corrupt", "excluded",
                                     f"starts like a {claimed} file but its header cannot be "
                                     "parsed (truncated or corrupt); re-export or re-download "
                                     "it")], **meta)
                return _result([("not_an_image", "excluded",
                                 f"not an image: content looks like {_sniff(path)}; "
                                 "remove it or replace it with the real image")], **meta)
            except Exception as exc:  # any parser failure is a finding
                return _result([("corrupt", "excluded",
                                 f"unreadable image header ({type(exc).__name__}: {exc}); "
                                 "re-export or re-download it")], **meta)
            with img:
                width, height = img.size
                meta.update(width=width, height=height, mode=img.mode, format=img.format or "")
                bombs = [w for w in caught if issubclass(w.category,
                                                         Image.DecompressionBombWarning)]
                if width * height > max_pixels or bombs:
                    why = (f"{width}x{height} = {width * height:,} pixels exceeds max_pixels "
                           f"{max_pixels:,}")
                    if bombs:
                        why += f" (PIL: {bombs[0].message})"
                    return _result([("huge_image", "excluded",
                                     f"{why}: possible decompression bomb, not decoded; "
                                     "downscale it or raise prepare.max_pixels")], **meta)
                try:
                    img.load()
                except Exception as exc:
                    return _result([("corrupt", "excluded",
                                     f"truncated or corrupt image data ({type(exc).__name__}: "
                                     f"{exc}); re-export or re-download it")], **meta)
                mode_issue = _mode_issue(img.mode)
                if mode_issue:
                    issues.append((mode_issue[0], "excluded", mode_issue[1]))
                n_frames = getattr(img, "n_frames", 1)
                if n_frames > 1:
                    issues.append(("multi_frame", "warn",
                                   f"{n_frames} frames; only the first one is used"))
                ext_format = _FORMAT_OF_EXT.get(path.suffix.lower(), "")
                fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
                if ext_format and fmt and fmt != ext_format:
                    issues.append(("extension_mismatch", "warn",
                                   f"{fmt} content with a {path.suffix} extension; it decodes "
                                   "fine, but rename it so other tools agree"))
                try:
                    meta["phash"] = str(imagehash.phash(img))
                    gray = img.convert("L").resize((THUMB_SIZE, THUMB_SIZE),
                                                   Image.Resampling.BOX)
                    meta["thumb"] = np.asarray(gray, dtype=np.uint8)
                except Exception:  # an unhashable image only loses dedup
                    meta["phash"], meta["thumb"] = "", None
            library_noise = (Image.DecompressionBombWarning, DeprecationWarning,
                             PendingDeprecationWarning, FutureWarning)
            others = [w for w in caught if not issubclass(w.category, library_noise)]
            if others:
                msgs = sorted({str(w.message) for w in others})
                issues.append(("decode_warning", "warn",
                               f"decoded with warning(s): {'; '.join(msgs)}; check the image"))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return _result(issues, **meta)


def _inspect_mask(path: Path, image_size: tuple[int, int]) -> tuple[str, str] | None:
    """(kind, why) if the mask cannot serve its image; None if it can."""
    try:
        if path.stat().st_size == 0:
            return ("mask_unreadable", "zero-byte file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as m:
                size = m.size
                if size[0] * size[1] > 4 * image_size[0] * image_size[1]:
                    return ("mask_size_mismatch", f"mask is {size[0]}x{size[1]}, image is "
                                                  f"{image_size[0]}x{image_size[1]}")
                m.load()
    except UnidentifiedImageError:
        return ("mask_unreadable", f"not an image: {_sniff(path)}")
    except Exception as exc:
        return ("mask_unreadable", f"{type(exc).__name__}: {exc}")
    if size != image_size:
        return ("mask_size_mismatch", f"mask is {size[0]}x{size[1]}, image is "
                                      f"{image_size[0]}x{image_size[1]}")
    return None


# --------------------------------------------------------------------------------------------
# Duplicates


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


def near_duplicate_pairs(
    hashes: np.ndarray, max_distance: int, block: int = 256, max_pairs: int | None = None,
    confirm: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) within Hamming distance, plus each item's nearest-neighbour distance.

    Blocks of rows against all columns keep memory at block*n words (20 MB for 10k hashes)
    while staying vectorised; `confirm(i, j) -> bool mask` filters each block's candidates so
    that only confirmed pairs are kept. Returns (pairs as an (k, 3) int array of i, j,
    distance; nn) where nn is 65 for an item without any other item.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    nn = np.full(n, 65, dtype=np.int16)
    found: list[np.ndarray] = []
    total = 0
    for start in range(0, n, block):
        stop = min(start + block, n)
        dist = _popcount(hashes[start:stop, None] ^ hashes[None, :]).astype(np.int16)
        local = np.arange(stop - start)
        dist[local, local + start] = 65
        if n > 1:
            nn[start:stop] = dist.min(axis=1)
        ii, jj = np.nonzero(dist <= max_distance)
        ii = ii + start
        keep = jj > ii
        if confirm is not None and keep.any():
            keep[keep] = confirm(ii[keep], jj[keep])
        if keep.any():
            chunk = np.stack([ii[keep], jj[keep], dist[ii[keep] - start, jj[keep]]], axis=1)
            found.append(chunk.astype(np.int64))
            total += len(chunk)
            if max_pairs is not None and total > max_pairs:
                raise DataError(
                    f"more than {max_pairs} image pairs count as near duplicates (pHash "
                    f"distance <= {max_distance}): prepare.phash_max_distance/near_max_diff are "
                    "too permissive for this data set; lower them")
    pairs = np.concatenate(found) if found else np.zeros((0, 3), dtype=np.int64)
    return pairs, nn


def _hash_array(hexes: Sequence[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


class ThumbCheck:
    """Confirms pHash candidates by comparing standardised thumbnails pixel by pixel.

    Standardising (zero mean, unit std) makes a re-windowed or re-encoded copy match, while
    any local difference (another pose, another lesion) shows up in the maximum. The
    distribution of candidate differences is kept for the audit.
    """

    BIN = 0.1

    def __init__(self, thumbs: Sequence[np.ndarray], max_diff: float, chunk: int = 1024) -> None:
        self.thumbs = np.stack(thumbs) if len(thumbs) else np.zeros((0, 1, 1), np.uint8)
        flat = self.thumbs.reshape(len(self.thumbs), -1).astype(np.float32)
        self.mean = flat.mean(axis=1) if len(flat) else np.zeros(0, np.float32)
        self.std = np.maximum(flat.std(axis=1), 1e-3) if len(flat) else np.zeros(0, np.float32)
        self.max_diff = max_diff
        self.chunk = chunk
        self.diffs: list[np.ndarray] = []

    def diff(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = np.empty(len(i), dtype=np.float32)
        n = len(self.thumbs)
        flat = self.thumbs.reshape(n, -1)
        for s in range(0, len(i), self.chunk):
            a, b = i[s:s + self.chunk], j[s:s + self.chunk]
            za = (flat[a].astype(np.float32) - self.mean[a, None]) / self.std[a, None]
            zb = (flat[b].astype(np.float32) - self.mean[b, None]) / self.std[b, None]
            out[s:s + self.chunk] = np.abs(za - zb).max(axis=1)
        return out

    def __call__(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        d = self.diff(i, j)
        self.diffs.append(d)
        return d <= self.max_diff

    def histogram(self) -> list[list[float]]:
        """[bin start, candidates] over all checked pairs, last bin open-ended at 3.0."""
        d = np.concatenate(self.diffs) if self.diffs else np.zeros(0)
        bins = np.minimum(np.floor(d / self.BIN + 1e-6), 30).astype(int)
        counts = np.bincount(bins, minlength=31)
        return [[round(k * self.BIN, 1), int(c)] for k, c in enumerate(counts) if c]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


# --------------------------------------------------------------------------------------------
# Building the manifest


@dataclass
class _Row:
    path: str
    cls: str
    label: int
    source_split: str
    mask: str
    info: ImageInfo
    issues: list[tuple[str, str, str]] = field(default_factory=list)
    split: str = ""

    @property
    def status(self) -> str:
        return max((s for _, s, _ in self.issues), key=_SEVERITY.__getitem__, default="ok")

    @property
    def usable(self) -> bool:
        return self.status != "excluded"

    @property
    def natural_split(self) -> str:
        return SPLIT_DIRS[self.source_split]


def _split_training(rows: list[_Row], idx: list[int], pairs: Iterable[tuple[int, int]],
                    cfg: PrepareConfig) -> None:
    """Seeded, stratified, group-aware train/val assignment of the Training rows in `idx`.

    Duplicate groups are connected components, so a chain of near duplicates stays on one
    side. Each class gets its own generator seeded by (seed, crc32(class)) so that adding
    files to one class does not reshuffle the others.
    """
    pos = {i: k for k, i in enumerate(idx)}
    uf = _UnionFind(len(idx))
    for i, j in pairs:
        if i in pos and j in pos:
            uf.union(pos[i], pos[j])
    members: dict[int, list[int]] = defaultdict(list)
    for i in idx:
        members[uf.find(pos[i])].append(i)
    by_class: dict[str, list[list[int]]] = defaultdict(list)
    for group in members.values():
        labels = Counter(rows[i].label for i in group)
        top = min(labels, key=lambda lab: (-labels[lab], lab))
        by_class[next(rows[i].cls for i in group if rows[i].label == top)].append(sorted(group))
    for cls, groups in sorted(by_class.items()):
        groups.sort(key=lambda g: rows[g[0]].path)
        n = sum(len(g) for g in groups)
        target = min(max(int(np.floor(cfg.val_fraction * n + 0.5)), 1), n - 1) if n > 1 else 0
        rng = np.random.default_rng([cfg.seed, zlib.crc32(cls.encode("utf-8"))])
        order = rng.permutation(len(groups))
        in_val = 0
        val_groups: set[int] = set()
        for g in order:
            size = len(groups[g])
            if in_val + size <= target:
                val_groups.add(int(g))
                in_val += size
            if in_val == target:
                break
        if not val_groups and target > 0 and len(groups) > 1:
            # Only big groups: give val the smallest so that it is not empty.
            val_groups.add(min(range(len(groups)), key=lambda g: (len(groups[g]), g)))
        for g, group in enumerate(groups):
            for i in group:
                rows[i].split = "val" if g in val_groups else "train"


def _dup_phrase(exact: bool, dist: int) -> str:
    return "exact duplicate (same bytes)" if exact else f"near duplicate (pHash distance {dist})"


def build_manifest(raw_dir: Path, cfg: PrepareConfig,
                   progress: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scan, inspect, deduplicate and split; returns the manifest and the audit, writes nothing.

    Excluded rows get an empty `split`: the split column only ever names a set a file is in.
    """
    raw_dir = Path(raw_dir)
    classes, table, findings = scan(raw_dir)
    label_of = {c: i for i, c in enumerate(classes)}

    rows: list[_Row] = []
    files = table[table["role"] != "mask"]
    for rec in tqdm(files.to_dict("records"), desc="prepare: inspect", unit="file",
                    disable=not progress, file=sys.stderr):
        if rec["role"] == "other":
            info = ImageInfo("excluded", "", ())
            issue = ("non_image_extension", "excluded",
                     f"'{Path(rec['path']).suffix or '(no extension)'}' is not an image "
                     f"extension ({', '.join(sorted(IMAGE_EXTENSIONS))}); remove it from the "
                     "class folder or convert it")
            issues = [issue]
        else:
            info = inspect_image(raw_dir / rec["path"], cfg.max_pixels)
            issues = list(info.issues)
        row = _Row(rec["path"], rec["class"], label_of[rec["class"]], rec["source_split"],
                   rec["mask"], info, issues)
        rows.append(row)
        findings.extend(Finding(k, row.path, r) for k, _, r in issues)

    _check_masks(raw_dir, rows, classes, findings, progress)
    dup_stats = _deduplicate_and_split(rows, cfg, findings)

    manifest = _to_frame(rows)
    audit = _audit(rows, classes, findings, cfg, dup_stats, raw_dir)
    return manifest, audit


def _check_masks(raw_dir: Path, rows: list[_Row], classes: list[str],
                 findings: list[Finding], progress: bool) -> None:
    """Validate paired masks; flag images that lack one where their class otherwise has them."""
    with_mask = [r for r in rows if r.mask and r.usable and r.info.width]
    for row in tqdm(with_mask, desc="prepare: masks", unit="mask", disable=not progress,
                    file=sys.stderr):
        problem = _inspect_mask(raw_dir / row.mask, (row.info.width, row.info.height))
        if problem:
            kind, why = problem
            verb = "unreadable" if kind == "mask_unreadable" else "of a different size"
            reason = (f"mask {row.mask} is {verb} ({why}): image usable for classification "
                      "but not for localisation; fix or remove the mask")
            findings.append(Finding(kind, row.mask, reason, other_path=row.path))
            row.issues.append((kind, "warn", reason))
            row.mask = ""
    classes_with_masks = {r.cls for r in rows if r.mask or any(
        k in ("mask_unreadable", "mask_size_mismatch") for k, _, _ in r.issues)}
    for row in rows:
        if row.cls in classes_with_masks and not row.mask and row.usable and not any(
                k.startswith("mask_") for k, _, _ in row.issues) and row.info.width:
            reason = ("no mask while other images of this class have one: usable for "
                      f"classification but not for localisation (expected {_mask_name(row)})")
            row.issues.append(("missing_mask", "warn", reason))
            findings.append(Finding("missing_mask", row.path, reason))
    if classes_with_masks:
        for cls in classes:
            if cls in classes_with_masks:
                continue
            folders = sorted({r.source_split for r in rows if r.cls == cls})
            for folder in folders:
                findings.append(Finding(
                    "class_without_masks", f"{folder}/{cls}",
                    f"no image of class '{cls}' has a mask while other classes do: fine for a "
                    "no-tumour class, otherwise its localisation cannot be evaluated"))


def _mask_name(row: _Row) -> str:
    p = Path(row.path)
    return (p.parent / f"{p.stem}{MASK_SUFFIX}.png").as_posix()


def _deduplicate_and_split(rows: list[_Row], cfg: PrepareConfig,
                           findings: list[Finding]) -> dict[str, Any]:
    """Find duplicate pairs among usable rows, apply the policy, then split Training.

    Dropping happens before the split so that val keeps its stratified size.
    """
    usable = [i for i, r in enumerate(rows) if r.usable]
    hashed = [i for i in usable if rows[i].info.phash and rows[i].info.thumb is not None]
    hashes = _hash_array([rows[i].info.phash for i in hashed])
    check = ThumbCheck([rows[i].info.thumb for i in hashed], cfg.near_max_diff)
    max_pairs = max(100_000, 50 * len(hashed))
    near, nn = near_duplicate_pairs(hashes, cfg.phash_max_distance, max_pairs=max_pairs,
                                    confirm=check)
    pair_dist: dict[tuple[int, int], int] = {
        (hashed[a], hashed[b]): int(d) for a, b, d in near.tolist()}
    by_md5: dict[str, list[int]] = defaultdict(list)
    for i in usable:
        by_md5[rows[i].info.md5].append(i)
    for group in by_md5.values():
        for i, j in itertools.combinations(sorted(group), 2):
            pair_dist.setdefault((i, j), 0)
    pairs = sorted(pair_dist)

    dropped: set[int] = set()
    if cfg.duplicates == "drop":
        for i, j in pairs:
            si, sj = rows[i].source_split, rows[j].source_split
            if si != sj:
                dropped.add(i if SPLIT_DIRS[si] == "train" else j)

    training = [i for i in usable if rows[i].source_split == "Training" and i not in dropped]
    _split_training(rows, training, pairs, cfg)
    for i in usable:
        if rows[i].source_split == "Testing":
            rows[i].split = "test"

    per_row: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for i, j in pairs:
        exact = rows[i].info.md5 == rows[j].info.md5
        side = {k: rows[k].split or rows[k].natural_split for k in (i, j)}
        if i in dropped or j in dropped:
            cross = rows[i].source_split != rows[j].source_split
        else:
            cross = side[i] != side[j]
        kind = (f"duplicate_{'exact' if exact else 'near'}_"
                f"{'cross' if cross else 'within'}_split")
        # The finding sits on the copy that would go under duplicates=drop.
        a, b = sorted((i, j), key=lambda k: (-_KEEP_PRIORITY[side[k]], rows[k].path))
        phrase = _dup_phrase(exact, pair_dist[(i, j)])
        label_note = ""
        if rows[a].cls != rows[b].cls:
            label_note = (f"; the copies are labelled differently ({rows[a].cls} vs "
                          f"{rows[b].cls}): at least one label is wrong")
        if cross and a in dropped:
            action = "excluded the first (duplicates=drop), the evaluated copy is kept"
        elif cross:
            action = "both kept (duplicates=report): test/val scores may be optimistic"
        else:
            action = ("both kept; they stay on the same side of the train/val split"
                      if side[a] in ("train", "val") else "both kept; the copy counts twice")
        findings.append(Finding(
            kind, rows[a].path,
            f"{phrase} of {rows[b].path}: "
            f"{f'{side[a]} vs {side[b]}' if cross else f'both in {side[a]}'}; "
            f"{action}{label_note}",
            other_path=rows[b].path))
        for k, other in ((a, b), (b, a)):
            if cross and cfg.duplicates == "drop" and k not in dropped:
                continue  # the surviving copy has nothing left to fix
            per_row[k][kind].append(f"{rows[other].path} ({side[other]}){label_note}")

    for k, kinds in per_row.items():
        row = rows[k]
        for kind, others in sorted(kinds.items()):
            exact = "_exact_" in kind
            what = "exact duplicate" if exact else "near duplicate"
            more = f" and {len(others) - 1} more" if len(others) > 1 else ""
            if k in dropped and "_cross_" in kind:
                reason = (f"{what} of {others[0]}{more}: excluded (duplicates=drop) so the "
                          "evaluated copy does not leak into training")
                row.issues.append((kind, "excluded", reason))
            elif "_cross_" in kind:
                reason = (f"{what} of {others[0]}{more} in another split: possible leakage, "
                          "kept (duplicates=report)")
                row.issues.append((kind, "warn", reason))
            else:
                reason = f"{what} of {others[0]}{more} in the same split"
                row.issues.append((kind, "warn", reason))
    for i in dropped:
        rows[i].split = ""

    hist = np.bincount(nn, minlength=66) if len(nn) else np.zeros(66, dtype=np.int64)
    groups = _UnionFind(len(rows))
    for i, j in pairs:
        groups.union(i, j)
    sizes = Counter(groups.find(i) for i in usable)
    return {
        "phash_max_distance": cfg.phash_max_distance,
        "near_max_diff": cfg.near_max_diff,
        # [distance, usable images whose nearest other image is that far]; 65 = no other
        # image. Many distinct images at or below phash_max_distance = pHash alone is not enough.
        "phash_nearest_neighbour_hist": [[int(d), int(c)] for d, c in enumerate(hist) if c],
        "phash_candidate_pairs": int(sum(len(d) for d in check.diffs)),
        # [bin start, candidates]: max standardised thumbnail difference of pHash candidates.
        "candidate_thumb_diff_hist": check.histogram(),
        "duplicate_pairs": len(pairs),
        "exact_duplicate_pairs": sum(rows[i].info.md5 == rows[j].info.md5 for i, j in pairs),
        "largest_duplicate_group": max(sizes.values(), default=0),
    }


def _to_frame(rows: list[_Row]) -> pd.DataFrame:
    data = [{
        "path": r.path, "class": r.cls, "label": r.label, "source_split": r.source_split,
        "split": r.split if r.usable else "", "md5": r.info.md5, "phash": r.info.phash,
        "width": r.info.width, "height": r.info.height, "mode": r.info.mode, "mask": r.mask,
        "status": r.status, "reason": "; ".join(reason for _, _, reason in r.issues),
    } for r in rows]
    frame = pd.DataFrame(data, columns=MANIFEST_COLUMNS)
    frame["label"] = frame["label"].astype("int64")
    for col in ("width", "height"):
        frame[col] = pd.array(frame[col].tolist(), dtype="Int64")
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Audit


def _class_errors(rows: list[_Row], classes: list[str], raw_dir: Path,
                  cfg: PrepareConfig) -> list[str]:
    """Why a class cannot be trained, tuned or tested, in words a user can act on."""
    if not classes:
        return ["no class folders found: expected <raw>/Training/<class>/ and "
                "<raw>/Testing/<class>/ (see the findings for what was there instead)"]
    errors = []
    if len(classes) == 1:
        errors.append(f"only one class ('{classes[0]}') found: classification needs at least "
                      "two class folders")
    for cls in classes:
        for split in SPLITS:
            if any(r.cls == cls and r.split == split and r.usable for r in rows):
                continue
            folder = "Testing" if split == "test" else "Training"
            own = [r for r in rows if r.cls == cls and r.source_split == folder]
            if split == "val":
                n = sum(r.usable for r in own)
                if not n:
                    continue  # the train error already says why
                errors.append(
                    f"class '{cls}' has no usable image in val: only {n} usable Training "
                    f"image(s) (duplicates grouped together); need at least 2 groups to carve "
                    f"a validation split of {cfg.val_fraction}")
                continue
            if not own:
                where = (f"{folder}/{cls} has no image files" if (raw_dir / folder / cls).is_dir()
                         else f"there is no {folder}/{cls} folder")
                errors.append(f"class '{cls}' has no usable image in {split}: {where}")
                continue
            kinds = Counter(k for r in own for k, s, _ in r.issues if s == "excluded")
            why = ", ".join(f"{n}x {k}" for k, n in sorted(kinds.items()))
            errors.append(
                f"class '{cls}' has no usable image in {split}: all {len(own)} file(s) in "
                f"{folder}/{cls} were excluded ({why}); fix or replace them "
                "(details in reports/data_audit.md)")
    return errors


def _audit(rows: list[_Row], classes: list[str], findings: list[Finding], cfg: PrepareConfig,
           dup_stats: dict[str, Any], raw_dir: Path) -> dict[str, Any]:
    usable = {c: {s: 0 for s in SPLITS} for c in classes}
    for r in rows:
        if r.usable and r.split:
            usable[r.cls][r.split] += 1
    findings = sorted(set(findings), key=Finding.sort_key)
    by_kind = Counter(f.kind for f in findings)
    return {
        "classes": list(classes),
        "params": cfg.to_dict(),
        "counts": {
            "manifest_rows": len(rows),
            "status": {s: sum(r.status == s for r in rows) for s in _SEVERITY},
            "usable": usable,
            "usable_total": {s: sum(usable[c][s] for c in classes) for s in SPLITS},
            "findings_by_kind": dict(sorted(by_kind.items())),
        },
        "duplicates": dup_stats,
        "findings": [f.to_dict() for f in findings],
        "errors": _class_errors(rows, classes, raw_dir, cfg),
    }


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def audit_markdown(audit: dict[str, Any], max_rows_per_kind: int = 200) -> str:
    """Readable report: counts first, then findings grouped by kind."""
    p = audit["params"]
    out = ["# Data audit", "",
           f"Classes: {', '.join(audit['classes']) or '(none)'}  ",
           "Params: " + ", ".join(f"{k}={p[k]}" for k in sorted(p)), ""]
    if audit["errors"]:
        out += ["## Errors", ""] + [f"- {_md_cell(e)}" for e in audit["errors"]] + [""]
    out += ["## Usable images per class and split", "",
            "| class | train | val | test | total |", "|---|---:|---:|---:|---:|"]
    for cls in audit["classes"]:
        c = audit["counts"]["usable"][cls]
        out.append(f"| {_md_cell(cls)} | {c['train']} | {c['val']} | {c['test']} | "
                   f"{sum(c.values())} |")
    t = audit["counts"]["usable_total"]
    out += [f"| **total** | {t['train']} | {t['val']} | {t['test']} | {sum(t.values())} |", ""]
    out += ["## Manifest rows per status", "", "| status | rows |", "|---|---:|"]
    out += [f"| {s} | {n} |" for s, n in audit["counts"]["status"].items()] + [""]
    dup = audit["duplicates"]
    nn = ", ".join(f"{d}: {n}" for d, n in dup["phash_nearest_neighbour_hist"])
    td = ", ".join(f"{b:.1f}: {n}" for b, n in dup["candidate_thumb_diff_hist"])
    out += ["## Duplicate search", "",
            f"- {dup['duplicate_pairs']} duplicate pair(s) ({dup['exact_duplicate_pairs']} exact); "
            f"largest group {dup['largest_duplicate_group']} image(s)",
            f"- {dup['phash_candidate_pairs']} pHash candidate pair(s) (distance <= "
            f"{dup['phash_max_distance']}), confirmed when the standardised thumbnails differ "
            f"by <= {dup['near_max_diff']}",
            f"- pHash distance to the nearest other image (distance: images): {nn or '-'}",
            f"- thumbnail difference of candidates (bin: pairs): {td or '-'}", ""]
    out += [f"## Findings ({len(audit['findings'])})", ""]
    grouped: dict[str, list[dict[str, str]]] = defaultdict(list)
    for f in audit["findings"]:
        grouped[f["kind"]].append(f)
    if not grouped:
        out += ["None.", ""]
    order = list(FINDING_KINDS) + sorted(set(grouped) - set(FINDING_KINDS))
    for kind in order:
        items = grouped.get(kind)
        if not items:
            continue
        out += [f"### {kind}: {FINDING_KINDS.get(kind, kind)} ({len(items)})", "",
                "| path | other | reason |", "|---|---|---|"]
        for f in items[:max_rows_per_kind]:
            out.append(f"| {_md_cell(f['path'])} | {_md_cell(f.get('other_path', ''))} | "
                       f"{_md_cell(f['reason'])} |")
        if len(items) > max_rows_per_kind:
            out.append(f"\n... and {len(items) - max_rows_per_kind} more in "
                       "metrics/data_audit.json")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Stage entry points


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.replace(path)


def prepare(raw_dir: Path, out_dir: Path, reports_dir: Path, cfg: PrepareConfig,
            progress: bool = True) -> pd.DataFrame:
    """Write manifest.csv and the audit, then raise DataError if a class lacks usable images.

    Writing first means the user can read why the stage failed.
    """
    raw_dir, out_dir, reports_dir = Path(raw_dir), Path(out_dir), Path(reports_dir)
    for target in (out_dir, reports_dir):
        if raw_dir.exists() and _inside(target, raw_dir):
            raise DataError(f"refusing to write {target} inside the raw data folder {raw_dir}")
    manifest, audit = build_manifest(raw_dir, cfg, progress=progress)
    _write_text(out_dir / MANIFEST_NAME, manifest.to_csv(index=False, lineterminator="\n"))
    _write_text(reports_dir / AUDIT_JSON,
                json.dumps(audit, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    _write_text(reports_dir / AUDIT_MD, audit_markdown(audit))
    if audit["errors"]:
        raise DataError("\n".join(audit["errors"]))
    return manifest


def load_manifest(path: Path, usable_only: bool = True) -> pd.DataFrame:
    """Read manifest.csv with the dtypes it was written with (hashes stay strings, '' stays '')."""
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    frame["label"] = frame["label"].astype("int64")
    for col in ("width", "height"):
        frame[col] = pd.to_numeric(frame[col].replace("", np.nan)).astype("Int64")
    if usable_only:
        frame = frame[frame["status"] != "excluded"].reset_index(drop=True)
    return frame


def load_image(raw_dir: Path, rel_path: str) -> np.ndarray:
    """uint8 grayscale HxW; RGB goes through PIL "L" so every consumer sees the same pixels."""
    with Image.open(Path(raw_dir) / rel_path) as img:
        if img.mode not in OK_MODES:
            raise DataError(f"{rel_path}: mode {img.mode} is not supported (L or RGB); "
                            "the manifest should have excluded it")
        return np.array(img.convert("L") if img.mode != "L" else img, dtype=np.uint8)


def load_mask(raw_dir: Path, rel_path: str | None, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean lesion mask (any non-zero pixel); all False when the image has no mask."""
    shape = tuple(shape)[:2]
    if rel_path is None or (isinstance(rel_path, float) and np.isnan(rel_path)) or not rel_path:
        return np.zeros(shape, dtype=bool)
    with Image.open(Path(raw_dir) / rel_path) as img:
        mask = np.asarray(img.convert("L")) > 0
    if mask.shape != shape:
        raise DataError(f"{rel_path}: mask shape {mask.shape} does not match image {shape}")
    return mask


def _summary(audit: dict[str, Any], written: Sequence[str]) -> str:
    c = audit["counts"]
    t = c["usable_total"]
    lines = [
        f"prepare: {len(audit['classes'])} classes ({', '.join(audit['classes'])}), "
        f"{c['manifest_rows']} files",
        f"  usable: train {t['train']}, val {t['val']}, test {t['test']}",
        "  status: " + ", ".join(f"{k} {v}" for k, v in c["status"].items()),
    ]
    if c["findings_by_kind"]:
        lines.append("  findings: " + ", ".join(f"{k} {v}"
                                                for k, v in c["findings_by_kind"].items()))
    lines.append("  wrote: " + ", ".join(written))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """DVC stage: read params, run prepare, print a summary; exit 1 with the reason on bad data."""
    parser = argparse.ArgumentParser(prog="python -m lib.data", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=None,
                        help="params.yaml (default: the one at the repository root); relative "
                             "paths in it are resolved from its folder")
    parser.add_argument("--reports-dir", type=Path, default=None,
                        help="where data_audit.md and metrics/ go (default: <root>/reports)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        params_path = args.params or repo_root() / "params.yaml"
        params = load_params(params_path)
        root = Path(params_path).resolve().parent
        data = section(params, "data")
        raw_dir = root / data["raw_dir"]
        out_dir = root / data["processed_dir"]
        reports_dir = args.reports_dir or root / "reports"
        cfg = PrepareConfig.from_params(params)
    except (OSError, KeyError, ValueError) as exc:
        print(f"prepare: bad configuration: {exc}", file=sys.stderr)
        return 2
    try:
        prepare(raw_dir, out_dir, reports_dir, cfg, progress=not args.no_progress)
    except DataError as exc:
        print(f"prepare failed (see {reports_dir / AUDIT_MD}):\n{exc}", file=sys.stderr)
        return 1
    audit = json.loads((reports_dir / AUDIT_JSON).read_text(encoding="utf-8"))
    written = [out_dir / MANIFEST_NAME, reports_dir / AUDIT_JSON, reports_dir / AUDIT_MD]
    shown = [p.relative_to(root).as_posix() if _inside(p, root) else str(p) for p in written]
    print(_summary(audit, shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
