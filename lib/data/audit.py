"""Judging raw files: what each file is, what is wrong with it, and which images duplicate others.

Knows nothing about the data layout, the manifest or the split (that is lib.data): it inspects
one image or mask at a time, finds near-duplicate pairs among perceptual hashes, and renders
the audit that lib.data assembles as a readable report. A bad file becomes a finding with a
reason the user can act on, never an exception.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..hashing import file_md5
from .images import MIN_DYNAMIC_RANGE, OK_MODES, dynamic_range, exif_orientation

# Extension -> the format its content should have; also the set of extensions read as images.
FORMAT_OF_EXT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_EXTENSIONS = set(FORMAT_OF_EXT)
THUMB_SIZE = 64  # side of the thumbnails that confirm pHash candidates
# Statuses from best to worst: a file's status is the worst severity among its issues.
SEVERITY = {"ok": 0, "warn": 1, "excluded": 2}
ROTATION_SEARCH_DEG = 10  # label conflicts: a copy rotated by up to this many degrees still matches
_FORMAT_ALIASES = {"MPO": "JPEG"}  # multi-picture JPEGs decode as plain JPEGs

# Every finding kind, with the heading it gets in the readable report.
FINDING_KINDS: dict[str, str] = {
    "missing_split_dir": "Training or Testing folder missing",
    "unknown_folder": "Top-level folders other than Training/Testing (not used)",
    "stray_file": "Files outside class folders (not used)",
    "non_utf8_name": "File or folder names that are not valid UTF-8 (not used, not renamed)",
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
    "too_small": "Images smaller than prepare.min_side (excluded)",
    "format_not_trainable": "BMP, TIFF, GIF or WebP content that training cannot decode "
                            "(excluded: convert to PNG)",
    "blank_image": "Blank or near-constant images (kept with a warning: they show no anatomy)",
    "decode_warning": "Images that decoded with a warning",
    "exif_orientation": "JPEG/PNG EXIF orientation applied (as viewers show the image)",
    "multi_frame": "Multi-frame images (first frame used)",
    "extension_mismatch": "Extension does not match the content",
    "orphan_mask": "Masks not used (no image beside them, a second extension or a bad part)",
    "mask_unreadable": "Unreadable masks (image kept for classification only)",
    "mask_size_mismatch": "Masks of another size than their image (image kept for "
                          "classification only)",
    "missing_mask": "Images without a mask in a class where others have one",
    "class_without_masks": "Classes without any mask while other classes have masks",
    "duplicate_exact_cross_split": "Exact duplicates across splits (leakage)",
    "duplicate_near_cross_split": "Near duplicates across splits (leakage)",
    "duplicate_exact_within_split": "Exact duplicates within a split",
    "duplicate_near_within_split": "Near duplicates within a split",
    "label_conflict": "The same picture filed under two classes (at least one label is wrong)",
    "groups_file": "Problems in the group file (groups.csv, or manifest.csv's group column)",
    "group_missing": "Images without a group in the group file (each is its own group)",
    "group_leakage": "Groups (patients) in both Training and Testing (leakage)",
}


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
    orientation: int = 1
    thumb: np.ndarray | None = field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------------------------
# Inspecting one file


_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP",
          b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"GIF8": "GIF"}


def _head(path: Path, size: int) -> bytes | None:
    """The first bytes of a file, None if it cannot be read."""
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError:
        return None


def _magic_format(path: Path) -> str:
    """The format an image file's signature claims, '' if none: tells 'corrupt' from 'not one'."""
    head = _head(path, 8) or b""
    return next((fmt for magic, fmt in _MAGIC.items() if head.startswith(magic)), "")


def _sniff(path: Path) -> str:
    """A guess at what a non-image file is, so the reason tells the user what they are facing."""
    head = _head(path, 1024)
    if head is None:
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


def worst_status(issues: Sequence[tuple[str, str, str]]) -> str:
    """The status of a file with these (kind, severity, reason) issues: "ok" when none."""
    return max((sev for _, sev, _ in issues), key=SEVERITY.__getitem__, default="ok")


def _result(issues: list[tuple[str, str, str]], **kw: Any) -> ImageInfo:
    status = worst_status(issues)
    reason = "; ".join(r for _, _, r in issues)
    return ImageInfo(status=status, reason=reason, issues=tuple(issues), **kw)




def _blank_issue(img: Image.Image) -> tuple[str, str, str] | None:
    """A blank or near-constant image shows no anatomy, so no label can be learnt from it.

    The span of its 1st-99th percentile grey levels (as viewers show it, in "L") below
    MIN_DYNAMIC_RANGE (8 of 256 levels) is blank: every real scan has a dark background and
    bright tissue (the phantom's 2,000 images span >= 109 levels), while a failed export, an
    empty slice or a uniform test card spans 0-7. Severity "warn", not "excluded": this is the
    single-file judgement the app shares (lib.serve refuses any "excluded" upload), where a grey
    square must reach the model so that its out-of-distribution check can say why the answer
    means nothing; in a data set the warning asks the user to remove the file.
    """
    span = dynamic_range(np.asarray(img if img.mode == "L" else img.convert("L")))
    if span >= MIN_DYNAMIC_RANGE:
        return None
    return ("blank_image", "warn",
            f"blank or near-constant image: its 1st-99th percentile grey levels span {span:g} "
            f"(< {MIN_DYNAMIC_RANGE} of 256), it shows no anatomy and cannot carry its class "
            "label; delete it or replace it with the real scan (a failed export or an empty "
            "slice?)")


def inspect_image(path: Path, max_pixels: int, min_side: int = 1) -> ImageInfo:
    """Open, size-check and fully decode one file; bad content becomes a status, never an error.

    The size is checked from the header before decoding, so a decompression bomb is refused
    without allocating it; the full decode is what catches truncated files.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return _result([("zero_byte", "excluded", "zero-byte file (an interrupted copy?); "
                                                      "re-copy it from the source or delete it")])
        md5 = file_md5(path)
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
                meta.update(width=width, height=height, mode=img.mode)
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
                if min(width, height) < min_side:
                    issues.append(("too_small", "excluded",
                                   f"{width}x{height} image: a side is below prepare.min_side "
                                   f"= {min_side} px, too small to be a scan (an icon or a "
                                   "thumbnail?); replace it with the full-size image"))
                orientation = exif_orientation(img)
                meta["orientation"] = orientation
                shown = img
                if orientation != 1:
                    shown = ImageOps.exif_transpose(img)
                    meta.update(width=shown.size[0], height=shown.size[1])
                    issues.append(("exif_orientation", "ok",
                                   f"EXIF orientation {orientation} applied, as viewers show "
                                   f"it (stored {width}x{height}); the model sees the same "
                                   "pixels (manifest column 'orientation')"))
                mode_issue = _mode_issue(img.mode)
                if mode_issue:
                    issues.append((mode_issue[0], "excluded", mode_issue[1]))
                if not any(sev == "excluded" for _, sev, _ in issues):
                    blank = _blank_issue(shown)
                    if blank:
                        issues.append(blank)
                n_frames = getattr(img, "n_frames", 1)
                if n_frames > 1:
                    issues.append(("multi_frame", "warn",
                                   f"{n_frames} frames; only the first one is used"))
                ext_format = FORMAT_OF_EXT.get(path.suffix.lower(), "")
                fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
                if ext_format and fmt and fmt != ext_format:
                    issues.append(("extension_mismatch", "warn",
                                   f"{fmt} content with a {path.suffix} extension; it decodes "
                                   "fine, but rename it so other tools agree"))
                try:
                    meta["phash"] = str(imagehash.phash(shown))
                    gray = shown.convert("L").resize((THUMB_SIZE, THUMB_SIZE),
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


def inspect_mask(path: Path, image_wh: tuple[int, int]) -> tuple[str, str] | None:
    """(kind, why) if the mask cannot serve its image (``image_wh``: its width, height); None
    if it can."""
    try:
        if path.stat().st_size == 0:
            return ("mask_unreadable", "zero-byte file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as m:
                size = m.size
                if size[0] * size[1] > 4 * image_wh[0] * image_wh[1]:
                    return ("mask_size_mismatch", f"mask is {size[0]}x{size[1]}, image is "
                                                  f"{image_wh[0]}x{image_wh[1]}")
                m.load()
    except UnidentifiedImageError:
        return ("mask_unreadable", f"not an image: {_sniff(path)}")
    except Exception as exc:
        return ("mask_unreadable", f"{type(exc).__name__}: {exc}")
    if size != image_wh:
        return ("mask_size_mismatch", f"mask is {size[0]}x{size[1]}, image is "
                                      f"{image_wh[0]}x{image_wh[1]}")
    return None


# --------------------------------------------------------------------------------------------
# Duplicates


class TooManyPairsError(ValueError):
    """The duplicate thresholds match so many pairs that searching on is pointless."""


# Nearest-neighbour distances (the audit's histogram) are measured exactly for up to this many
# images, against all; above it, for a seeded sample of this many: O(sample x N), not O(N^2).
NN_SAMPLE = 2000


def _chunk_bounds(max_distance: int) -> list[tuple[int, int]]:
    """max_distance + 1 bit ranges covering the 64-bit hash: two hashes within max_distance
    differ in at most max_distance ranges, so they agree exactly on at least one (pigeonhole)."""
    edges = np.linspace(0, 64, max_distance + 2).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _close_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Sorted unique i * n + j (i < j) of every pair within max_distance. Only pairs that
    agree on a whole chunk are compared (multi-index hashing, Norouzi et al. 2012), and each
    chunk's candidates are filtered at once, so memory holds the close pairs, not the
    candidates."""
    n = len(hashes)
    found: list[np.ndarray] = []
    for lo, hi in _chunk_bounds(max_distance):
        key = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
        sizes = np.diff(np.r_[starts, n])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            members = np.sort(order[start:start + size]).astype(np.int64)
            ii, jj = np.triu_indices(size, 1)
            i, j = members[ii], members[jj]
            close = np.bitwise_count(hashes[i] ^ hashes[j]) <= max_distance
            found.append(i[close] * n + j[close])
    return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)


def nearest_distances(hashes: np.ndarray, rows: np.ndarray, block: int = 256) -> np.ndarray:
    """Each of `rows`' Hamming distance to its nearest other hash (65: no other item), in
    blocks of rows against all columns (block * n words of memory)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    nn = np.full(len(rows), 65, dtype=np.int16)
    if len(hashes) < 2:
        return nn
    for start in range(0, len(rows), block):
        chunk = rows[start:start + block]
        dist = np.bitwise_count(hashes[chunk, None] ^ hashes[None, :]).astype(np.int16)
        dist[np.arange(len(chunk)), chunk] = 65
        nn[start:start + len(chunk)] = dist.min(axis=1)
    return nn


def near_duplicate_pairs(
    hashes: np.ndarray, max_distance: int, block: int = 4096, max_pairs: int | None = None,
    confirm: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    nn_sample: int = NN_SAMPLE, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) within Hamming distance, plus nearest-neighbour distances.

    Pairs come from multi-index hashing (:func:`_close_pairs`): the hash is cut into
    max_distance + 1 chunks and only pairs that agree on a whole chunk are compared, so the
    work is the pairs that share a chunk (about n^2 / 2^13 per chunk for unrelated 64-bit hashes
    at distance 4) instead of all n^2 / 2. `confirm(i, j) -> bool mask` filters the pairs, in
    blocks of `block`, so that only confirmed pairs are kept; more than `max_pairs` confirmed
    pairs raises TooManyPairsError as soon as they are found. Returns (pairs as an (k, 3) int
    array of i, j, distance, sorted by i then j; nn): nn holds each item's nearest-neighbour
    distance (65: no other item) when n <= `nn_sample`, else those of a seeded sample of
    `nn_sample` items (against all items).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    rows = (np.arange(n) if n <= nn_sample else
            np.sort(np.random.default_rng(seed).choice(n, nn_sample, replace=False)))
    nn = nearest_distances(hashes, rows)
    flat = _close_pairs(hashes, max_distance) if n > 1 else np.zeros(0, dtype=np.int64)
    ii, jj = flat // max(n, 1), flat % max(n, 1)
    dist = np.bitwise_count(hashes[ii] ^ hashes[jj]).astype(np.int64)
    found: list[np.ndarray] = []
    total = 0
    for start in range(0, len(ii), block):
        i, j, d = ii[start:start + block], jj[start:start + block], dist[start:start + block]
        keep = confirm(i, j) if confirm is not None else np.ones(len(i), dtype=bool)
        if keep.any():
            found.append(np.stack([i[keep], j[keep], d[keep]], axis=1))
            total += int(keep.sum())
            if max_pairs is not None and total > max_pairs:
                raise TooManyPairsError(
                    f"more than {max_pairs} image pairs count as near duplicates (pHash "
                    f"distance <= {max_distance}): prepare.phash_max_distance/near_max_diff are "
                    "too permissive for this data set; lower them")
    pairs = np.concatenate(found) if found else np.zeros((0, 3), dtype=np.int64)
    return pairs, nn


def hash_array(hexes: Sequence[str]) -> np.ndarray:
    """pHash hex strings as the uint64 array near_duplicate_pairs works on."""
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def rotated_match(a: np.ndarray, b: np.ndarray, max_diff: float,
                  max_deg: int = ROTATION_SEARCH_DEG) -> float | None:
    """The rotation (degrees) that makes thumbnail b match a, None if none in +-max_deg does.

    Standardised thumbnails are compared on their central part (rotation brings in corners)
    for every whole degree; a match is a maximum difference <= max_diff. Costs ~21 small
    rotations, so it is only run on pHash candidates whose plain comparison failed.
    """
    def z(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return (x - x.mean()) / max(float(x.std()), 1e-3)

    m = a.shape[0] // 8
    za = z(a)[m:-m, m:-m]
    img = Image.fromarray(np.asarray(b, dtype=np.uint8))
    for deg in sorted(range(-max_deg, max_deg + 1), key=lambda d: (abs(d), d)):
        zb = z(np.asarray(img.rotate(deg, resample=Image.Resampling.BILINEAR)))[m:-m, m:-m]
        if float(np.abs(za - zb).max()) <= max_diff:
            return float(deg)
    return None


def rotated_matches(thumbs: np.ndarray, pairs: np.ndarray, max_diff: float,
                    max_deg: int = ROTATION_SEARCH_DEG) -> list[float | None]:
    """rotated_match for many (i, j) pairs of rows of `thumbs`, each j rotated only once.

    Pairs are grouped by j: its 2*max_deg+1 rotations are standardised once and compared with
    every i paired with it at once, so the cost is one set of rotations per image, not per pair.
    """
    thumbs = np.asarray(thumbs)
    out: list[float | None] = [None] * len(pairs)
    if not len(pairs):
        return out
    m = thumbs.shape[1] // 8
    angles = sorted(range(-max_deg, max_deg + 1), key=lambda d: (abs(d), d))

    def z(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        axes = tuple(range(x.ndim - 2, x.ndim))
        std = np.maximum(x.std(axis=axes, keepdims=True), 1e-3)
        return (x - x.mean(axis=axes, keepdims=True)) / std

    by_j: dict[int, list[int]] = defaultdict(list)
    for k, j in enumerate(pairs[:, 1].tolist()):
        by_j[j].append(k)
    for j, ks in by_j.items():
        img = Image.fromarray(np.asarray(thumbs[j], dtype=np.uint8))
        rot = z(np.stack([np.asarray(img.rotate(d, resample=Image.Resampling.BILINEAR))
                          for d in angles]))[:, m:-m, m:-m]
        za = z(thumbs[pairs[ks, 0]])[:, m:-m, m:-m]
        diff = np.abs(za[:, None] - rot[None]).max(axis=(2, 3))  # (pairs, angles)
        ok = diff <= max_diff
        for row, k in enumerate(ks):
            hit = np.flatnonzero(ok[row])
            out[k] = float(angles[hit[0]]) if len(hit) else None
    return out


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


# --------------------------------------------------------------------------------------------
# Readable report


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
            f"- thumbnail difference of candidates (bin: pairs): {td or '-'}",
            f"- {dup.get('label_conflict_pairs', 0)} label conflict(s): the same picture in two "
            "classes (also found rotated by up to "
            f"{ROTATION_SEARCH_DEG} degrees)", ""]
    out += ["## Validation split", "",
            f"Carved from Training {audit.get('split', 'by image')}, stratified by class and "
            "seeded; duplicate groups stay on one side.", ""]
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
