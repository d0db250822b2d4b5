"""Prepare stage: ingest a class-per-folder MRI set, audit every file, split it reproducibly.

The raw set is treated as untrusted and read-only: each file ends up either as a manifest row
(usable or not, with a status and a reason) or as a finding in the audit, so nothing is dropped
silently, and a bad file never crashes the stage. The validation split is stratified, seeded and
duplicate-group aware so that it cannot leak by construction.

Manifest conventions: one row per image-like or non-image file of a class folder (masks are
named in the `mask` column of their image, never rows: ``<name>_mask.<ext>`` and, BUSI-style, one
``<name>_mask_<k>.<ext>`` per further lesion, several joined with ``|`` and OR-merged by
`load_mask`); `status` is ok | warn | excluded;
`split` is train | val | test for usable rows and empty for excluded ones, so
``split != ""`` and ``status != "excluded"`` select the same rows. Duplicates: exact = same
md5; near = pHash distance <= phash_max_distance confirmed by a thumbnail comparison
(see PrepareConfig). Within-split duplicates are kept (warn); cross-split ones follow
`duplicates` (report: warn both; drop: exclude the Training copy, keep the Testing one).

Judging single files and finding duplicates is lib.data.audit's job; this module owns the layout,
the manifest, the split and the stage.

CLI (the DVC stage): ``python -m lib.data.prepare --params params.yaml``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ..config import from_group, load_params, repo_root, section
from ..splits import SOURCE_TO_SPLIT, SPLITS, TEST, TESTING, TRAIN, TRAINING, VAL
from .audit import (
    IMAGE_EXTENSIONS,
    SEVERITY,
    Finding,
    ImageInfo,
    ThumbCheck,
    TooManyPairsError,
    audit_markdown,
    hash_array,
    inspect_image,
    inspect_mask,
    near_duplicate_pairs,
    rotated_matches,
    worst_status,
)
from .confounders import confounder_audit
from .confounders import markdown as confounders_markdown
from .manifest import MANIFEST_COLUMNS, MANIFEST_NAME, MASK_SEPARATOR, DataError, mask_paths
from .metadata import METADATA_CSV, prepare_metadata
from .metadata import markdown as metadata_markdown

MASK_SUFFIX = "_mask"
# <stem>_mask and, BUSI-style (one mask per lesion), <stem>_mask_<k>; case-insensitive
_MASK_STEM = re.compile(r"(?P<stem>.*)(?P<suffix>_mask(?:_(?P<k>[0-9]+))?)", re.IGNORECASE)
DUPLICATE_POLICIES = ("drop", "report")
GROUPS_FILE = "groups.csv"  # optional <raw>/groups.csv: file (relative to raw), group (patient)
# Without groups.csv, a <raw>/manifest.csv with a `group` column and a `path` (or `file`) column
# (e.g. exported from an earlier prepare run) is the group source.
GROUP_PATH_COLUMNS = ("path", "file")

AUDIT_JSON = Path("metrics") / "data_audit.json"
AUDIT_MD = Path("data_audit.md")

# Which copy of a cross-split duplicate survives duplicates=drop: the one evaluated on.
_KEEP_PRIORITY = {"test": 0, "val": 1, "train": 2}
_SYSTEM_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}




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
    min_side: int = 32
    group_leakage: str = "report"
    confounder_permutations: int = 100  # the confounder audit's permutation test; 0 skips it

    def __post_init__(self) -> None:
        for key in ("duplicates", "group_leakage"):
            if getattr(self, key) not in DUPLICATE_POLICIES:
                raise ValueError(
                    f"prepare.{key} must be one of {', '.join(DUPLICATE_POLICIES)}; "
                    f"got {getattr(self, key)!r}"
                )
        ms = self.min_side
        if isinstance(ms, bool) or not isinstance(ms, int) or ms < 1:
            raise ValueError(f"prepare.min_side must be a positive int; got {ms!r}")
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
    def from_params(cls, group: dict[str, Any], seed: int) -> PrepareConfig:
        """From the `prepare:` group and the study's top-level `seed`."""
        return from_group(cls, group, "prepare", seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------------------------
# Scanning the tree


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _SYSTEM_NAMES


def _is_utf8(name: str) -> bool:
    """False for a name whose bytes are not UTF-8 (Python holds them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(rel: str) -> str:
    """A printable, UTF-8-safe form of a path: undecodable bytes appear as \\xNN escapes."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _entries(folder: Path, raw_dir: Path | None = None,
             findings: list[Finding] | None = None) -> list[os.DirEntry[str]]:
    """Sorted directory entries, so every output is independent of file-system order.

    Entries whose name is not valid UTF-8 become non_utf8_name findings (never renamed) and
    are left out: the manifest and the audit are UTF-8 text, and tf.data would need the name.
    """
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    if findings is None or raw_dir is None:
        return entries
    kept = []
    for entry in entries:
        if _is_utf8(entry.name):
            kept.append(entry)
            continue
        rel = _shown(_rel(raw_dir, entry.path))
        what = (f"folder (its {_count_files(Path(entry.path))} file(s) are not used)"
                if entry.is_dir(follow_symlinks=False) else "file, not used")
        findings.append(Finding(
            "non_utf8_name", rel,
            f"name is not valid UTF-8 (bytes shown as \\xNN; an archive from another system?): "
            f"{what}; left untouched, rename it to UTF-8 to use it"))
    return kept


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _rel(raw_dir: Path, path: Path | str) -> str:
    return Path(path).relative_to(raw_dir).as_posix()


def scan(raw_dir: Path) -> tuple[list[str], pd.DataFrame, list[Finding]]:
    """Walk the raw tree without opening any file: classes, file table and structural findings.

    The file table has one row per candidate file in a class folder, with columns
    path, class, source_split, role (image | mask | other) and mask (the paired mask(s) of an
    image, joined with MASK_SEPARATOR). The group sources (groups.csv, or a manifest.csv with a
    group column) are left to build_manifest; a manifest.csv that cannot be one is a stray file.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(
            f"raw data folder not found: {raw_dir}. Fetch it (dvc pull) or generate the phantom "
            "set first; expected the layout <raw>/Training/<class>/*.jpg and <raw>/Testing/..."
        )
    findings: list[Finding] = []
    for entry in _entries(raw_dir, raw_dir, findings):
        name = entry.name
        if name == GROUPS_FILE and entry.is_file():
            continue  # read by build_manifest
        if name == MANIFEST_NAME and entry.is_file():
            problem = _group_columns(Path(entry.path))[1]
            if not problem:
                continue  # a group source: read (or reported as unused) by build_manifest
            findings.append(Finding("stray_file", name,
                                    f"file at the top level, outside Training/Testing: {problem}; "
                                    "not used"))
        elif _is_hidden(name):
            findings.append(_hidden_finding(raw_dir, entry))
        elif entry.is_dir():
            if name not in SOURCE_TO_SPLIT:
                hint = next((f" (did you mean {s}?)" for s in SOURCE_TO_SPLIT
                             if s.lower() == name.lower()), "")
                n = _count_files(Path(entry.path))
                findings.append(Finding("unknown_folder", name,
                                        f"top-level folder is neither Training nor Testing{hint}; "
                                        f"its {n} file(s) are not used"))
        else:
            findings.append(Finding("stray_file", name, SIDECARS.get(
                name, "file at the top level, outside Training/Testing; not used")))

    class_folders: dict[str, dict[str, Path]] = {}
    for split_dir in sorted(SOURCE_TO_SPLIT):
        folder = raw_dir / split_dir
        if not folder.is_dir():
            findings.append(Finding("missing_split_dir", split_dir,
                                    f"no {split_dir}/ folder: the "
                                    f"{SOURCE_TO_SPLIT[split_dir]} split has no data"))
            continue
        class_folders[split_dir] = {}
        for entry in _entries(folder, raw_dir, findings):
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
    if len(class_folders) == len(SOURCE_TO_SPLIT):
        for cls in classes:
            for split_dir in sorted(SOURCE_TO_SPLIT):
                if cls not in class_folders[split_dir]:
                    other = next(s for s in SOURCE_TO_SPLIT if s != split_dir)
                    findings.append(Finding(
                        "class_missing_in_split", f"{split_dir}/{cls}",
                        f"class '{cls}' has a {other}/ folder but no {split_dir}/ folder: "
                        f"it cannot be {'evaluated' if split_dir == TESTING else 'trained'}"))

    rows: list[dict[str, str]] = []
    for split_dir in sorted(class_folders):
        for cls, folder in sorted(class_folders[split_dir].items()):
            rows.extend(_scan_class_folder(raw_dir, split_dir, cls, folder, findings))
    table = pd.DataFrame(rows, columns=["path", "class", "source_split", "role", "mask"])
    table = table.sort_values("path", kind="stable").reset_index(drop=True)
    return classes, table, findings


def _group_columns(path: Path) -> tuple[tuple[str, str] | None, str]:
    """((path column, group column), "") if the csv at `path` can name groups, else (None, why).

    Only the header is read; a file that cannot be read is a why, never an error.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            header = [(h or "").strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return None, f"cannot read it as a csv ({type(exc).__name__}: {exc})"
    path_col = next((c for c in GROUP_PATH_COLUMNS if c in header), None)
    if "group" not in header or path_col is None:
        return None, (f"its columns {header[:12]} lack 'group' and 'path' (or 'file'), so it is "
                      "not a group source either")
    return (path_col, "group"), ""


def _mask_order(item: tuple[str, Any]) -> tuple[int, str]:
    """Sort key of (mask suffix, ...): "_mask" first, then "_mask_<k>" by k (numerically)."""
    k = item[0][len(MASK_SUFFIX) + 1:]
    return (int(k) + 1 if k else 0, item[0])




def _hidden_finding(raw_dir: Path, entry: os.DirEntry[str]) -> Finding:
    rel = _shown(_rel(raw_dir, entry.path))
    if entry.is_dir():
        n = _count_files(Path(entry.path))
        return Finding("hidden_ignored", rel,
                       f"hidden/system folder ignored ({n} file(s) inside not used)")
    return Finding("hidden_ignored", rel, "hidden/system file ignored")


def _scan_class_folder(raw_dir: Path, split_dir: str, cls: str, folder: Path,
                       findings: list[Finding]) -> list[dict[str, str]]:
    """Classify the files of one class folder and pair masks with their images.

    An image's masks are its ``<stem>_mask.*`` and ``<stem>_mask_<k>.*`` files (BUSI names one
    mask per lesion so); the row's `mask` joins them with MASK_SEPARATOR, `_mask` first, then by k.
    Of one mask name under several extensions the .png is used and the others are findings.
    """
    images: list[tuple[str, str]] = []  # (rel path, stem)
    # image stem -> mask suffix ("_mask", "_mask_1", ...) -> mask rel paths (one per extension)
    masks: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    others: list[str] = []
    for entry in _entries(folder, raw_dir, findings):
        rel = _rel(raw_dir, entry.path)
        if _is_hidden(entry.name):
            findings.append(_hidden_finding(raw_dir, entry))
        elif entry.is_dir():
            for sub_root, sub_dirs, sub_files in os.walk(entry.path):
                sub_dirs.sort()
                for name in sorted(sub_files):
                    findings.append(Finding(
                        "nested_file", _shown(_rel(raw_dir, Path(sub_root) / name)),
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
            elif match := _MASK_STEM.fullmatch(stem):
                masks[match["stem"]][match["suffix"].lower()].append(rel)
            else:
                images.append((rel, stem))

    used_masks: dict[str, str] = {}  # mask rel path -> its image's rel path
    rows = []
    for rel, stem in images:
        parts = []
        for _, candidates in sorted(masks.get(stem, {}).items(), key=_mask_order):
            # Prefer the documented .png; any other image extension is accepted.
            candidates = sorted(candidates, key=lambda p: (not p.lower().endswith(".png"), p))
            if MASK_SEPARATOR in Path(candidates[0]).name:
                continue  # reported below: the joined column could not be split back
            parts.append(candidates[0])
            used_masks[candidates[0]] = rel
        rows.append({"path": rel, "class": cls, "source_split": split_dir, "role": "image",
                     "mask": MASK_SEPARATOR.join(parts)})
    image_stems = {stem for _, stem in images}
    for stem, by_suffix in sorted(masks.items()):
        for suffix, paths in sorted(by_suffix.items(), key=_mask_order):
            used = next((p for p in paths if p in used_masks), None)
            for mask in sorted(paths):
                if mask == used:
                    continue
                if stem not in image_stems:
                    reason = (f"mask without an image named {stem}.* beside it; not used "
                              "(if it is a scan, rename it without the _mask suffix)")
                elif MASK_SEPARATOR in Path(mask).name:
                    reason = (f"the name contains {MASK_SEPARATOR!r}, which separates an image's "
                              "masks in the manifest; not used (rename it)")
                else:
                    reason = (f"a second {stem}{suffix}.* mask for the same image ({used} was "
                              "used); not used")
                findings.append(Finding("orphan_mask", mask, reason))
    for rel in others:
        rows.append({"path": rel, "class": cls, "source_split": split_dir, "role": "other",
                     "mask": ""})
    if not images:
        what = f"it holds {len(others)} non-image file(s)" if others else "it has no files"
        if masks:
            n_masks = sum(len(paths) for by in masks.values() for paths in by.values())
            what += f" and {n_masks} mask(s) without images"
        findings.append(Finding("empty_class_folder", f"{split_dir}/{cls}",
                                f"class folder without any image file ({what}): class '{cls}' "
                                f"has no data in {split_dir}"))
    return rows


# --------------------------------------------------------------------------------------------
# Building the manifest


class _UnionFind:
    """Duplicate groups as connected components of the pair graph, so chains stay together."""

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
        return worst_status(self.issues)

    @property
    def usable(self) -> bool:
        return self.status != "excluded"

    @property
    def natural_split(self) -> str:
        return SOURCE_TO_SPLIT[self.source_split]


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
            info = inspect_image(raw_dir / rec["path"], cfg.max_pixels, cfg.min_side)
            issues = list(info.issues) + _trainable_issue(raw_dir / rec["path"], info)
        row = _Row(rec["path"], rec["class"], label_of[rec["class"]], rec["source_split"],
                   rec["mask"], info, issues)
        rows.append(row)
        findings.extend(Finding(k, row.path, r) for k, _, r in issues)

    _check_masks(raw_dir, rows, classes, findings, progress)
    groups, group_source = _read_groups(raw_dir, rows, findings)
    dup_stats = _deduplicate_and_split(rows, cfg, findings, groups, group_source)

    manifest = _to_frame(rows, groups)
    audit = _audit(rows, classes, findings, cfg, dup_stats, raw_dir)
    return manifest, audit


# Top-level files an importer or the generator writes beside the images: kept for provenance,
# reported (never silently skipped) with what they are.
SIDECARS = {
    "phantom.json": "the phantom generator's settings and counts (lib.data.phantom); provenance, "
                    "not read by the pipeline",
    "metadata.csv": "per-image clinical metadata (path, then any columns: age, sex, the BRISC "
                    "importer's plane); prepare joins it into data/processed/metadata.csv and "
                    "reports it under Metadata (lib.data.metadata)",
    "feedback_provenance.csv": "provenance of the images imported from the app's feedback "
                               "(python -m lib.data.ingest feedback); not read by the pipeline",
}
TRAINABLE_FORMATS = ("PNG", "JPEG")  # what tf.io.decode_image reads to grey (lib.data.inputs)


def _trainable_issue(path: Path, info: ImageInfo) -> list[tuple[str, str, str]]:
    """An image the audit accepts but training cannot decode (BMP, TIFF, GIF, WebP content:
    tf.io.decode_image reads them in colour only, or not at all) is excluded with the way out,
    rather than crash the training stages. The app accepts them (lib.serve.inference converts
    an upload to PNG); raw data is never converted here."""
    if info.status == "excluded":
        return []
    with Image.open(path) as img:
        fmt = "JPEG" if img.format == "MPO" else (img.format or "")
    if fmt in TRAINABLE_FORMATS:
        return []
    return [("format_not_trainable", "excluded",
             f"{fmt or 'unknown'} content: training decodes PNG and JPEG only; convert it "
             "(e.g. Image.open(f).convert('L').save(<name>.png)) and remove the original")]


def _group_source(raw_dir: Path, findings: list[Finding]) -> tuple[str, str] | None:
    """(file name, path column) of the group source, or None when the raw folder has none.

    <raw>/groups.csv (columns file, group) wins; without it, a <raw>/manifest.csv with a group
    column and a path (or file) column is used. A manifest.csv whose group column loses to
    groups.csv is a finding (scan reports a manifest.csv that cannot name groups as stray).
    """
    manifest = raw_dir / MANIFEST_NAME
    columns = _group_columns(manifest)[0] if manifest.is_file() else None
    if (raw_dir / GROUPS_FILE).is_file():
        if columns:
            findings.append(Finding(
                "groups_file", MANIFEST_NAME,
                f"has a '{columns[1]}' column, but {GROUPS_FILE} is there too and is the group "
                "source: this file's groups are not used"))
        return GROUPS_FILE, "file"
    if columns:
        return MANIFEST_NAME, columns[0]
    return None


def _read_groups(raw_dir: Path, rows: list[_Row],
                 findings: list[Finding]) -> tuple[dict[int, str] | None, str]:
    """(row index -> group (patient), source file name); (None, "") without a group source.

    The source is <raw>/groups.csv, else the group column of <raw>/manifest.csv
    (see _group_source). Problems with it are findings, never errors: a row naming an unknown
    file is reported, an image without a row is its own group (reported), a file given two
    groups keeps the first (reported).
    """
    source = _group_source(raw_dir, findings)
    if source is None:
        return None, ""
    name, path_col = source
    try:
        with (raw_dir / name).open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            records = list(reader)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        findings.append(Finding("groups_file", name,
                                f"cannot read it ({exc}); the split is made by image"))
        return None, ""
    if not {path_col, "group"} <= set(header):
        findings.append(Finding("groups_file", name,
                                f"needs the columns '{path_col}' and 'group', has {header}; "
                                "the split is made by image"))
        return None, ""
    index = {r.path: i for i, r in enumerate(rows)}
    groups: dict[int, str] = {}
    for n, rec in enumerate(records, start=2):
        # (a row longer than the header puts its extra fields under the key None: left out)
        rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items() if k is not None}
        rel = Path(rec[path_col].replace("\\", "/")).as_posix()
        group = rec["group"]
        where = f"{name} line {n}"
        if rel not in index:
            findings.append(Finding("groups_file", name,
                                    f"{where}: file {rel!r} is not an image of the manifest "
                                    "(paths are relative to the raw folder); row ignored"))
        elif not group:
            findings.append(Finding("groups_file", rel, f"{where}: empty group; row ignored"))
        elif index[rel] in groups and groups[index[rel]] != group:
            findings.append(Finding("groups_file", rel,
                                    f"{where}: second group {group!r} for this file, the first "
                                    f"({groups[index[rel]]!r}) is kept"))
        else:
            groups.setdefault(index[rel], group)
    for i, row in enumerate(rows):
        if i not in groups and row.usable:
            findings.append(Finding("group_missing", row.path,
                                    f"no row in {name}: treated as its own group (its "
                                    "patient may still appear in another split)"))
    return groups, name


def _check_masks(raw_dir: Path, rows: list[_Row], classes: list[str],
                 findings: list[Finding], progress: bool) -> None:
    """Validate paired masks; flag images that lack one where their class otherwise has them.

    Every mask of an image is checked; one bad mask of several makes the whole `mask` empty (the
    others alone would miss a lesion), with a finding for each bad one.
    """
    with_mask = [r for r in rows if r.mask and r.usable and r.info.width]
    for row in tqdm(with_mask, desc="prepare: masks", unit="mask", disable=not progress,
                    file=sys.stderr):
        parts = mask_paths(row.mask)
        bad: list[str] = []
        for part in parts:
            problem = inspect_mask(raw_dir / part, (row.info.width, row.info.height))
            if not problem:
                continue
            kind, why = problem
            verb = "unreadable" if kind == "mask_unreadable" else "of a different size"
            reason = (f"mask {part} is {verb} ({why}): image usable for classification "
                      "but not for localisation; fix or remove the mask")
            if len(parts) > 1:
                reason += (f" (its other {len(parts) - 1} mask(s) are not used either: they "
                           "would miss this lesion)")
            findings.append(Finding(kind, part, reason, other_path=row.path))
            row.issues.append((kind, "warn", reason))
            bad.append(part)
        for part in parts if bad else []:
            if part not in bad:  # a good mask left unused is said so, not dropped silently
                findings.append(Finding(
                    "orphan_mask", part,
                    f"not used: {bad[0]}, another mask of the same image, is bad, and without "
                    "it the image's masks would miss a lesion", other_path=row.path))
        if bad:
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


def _group_leakage(rows: list[_Row], usable: list[int], groups: dict[int, str],
                   cfg: PrepareConfig, findings: list[Finding]) -> set[int]:
    """Groups with usable images in both Training and Testing: findings, and under
    group_leakage=drop the Training images of those groups (returned) are excluded."""
    members: dict[str, list[int]] = defaultdict(list)
    for i in usable:
        if i in groups:
            members[groups[i]].append(i)
    dropped: set[int] = set()
    for group, idx in sorted(members.items()):
        train = sorted((i for i in idx if rows[i].source_split == TRAINING),
                       key=lambda i: rows[i].path)
        test = sorted((i for i in idx if rows[i].source_split == TESTING),
                      key=lambda i: rows[i].path)
        if not train or not test:
            continue
        if cfg.group_leakage == "drop":
            action = f"its {len(train)} Training image(s) excluded (group_leakage=drop)"
            dropped.update(train)
        else:
            action = "kept (group_leakage=report): test scores may be optimistic"
        findings.append(Finding(
            "group_leakage", rows[train[0]].path,
            f"group {group!r} has {len(train)} image(s) in Training and {len(test)} in "
            f"Testing: the same patient on both sides; {action}",
            other_path=rows[test[0]].path))
        for i in train:
            why = (f"group {group!r} is also in Testing ({rows[test[0]].path})")
            if cfg.group_leakage == "drop":
                rows[i].issues.append(("group_leakage", "excluded",
                                       f"{why}: excluded (group_leakage=drop)"))
            else:
                rows[i].issues.append(("group_leakage", "warn",
                                       f"{why}: possible leakage, kept (group_leakage=report)"))
        if cfg.group_leakage == "report":
            for i in test:
                rows[i].issues.append((
                    "group_leakage", "warn",
                    f"group {group!r} is also in Training ({rows[train[0]].path}): possible "
                    "leakage, kept (group_leakage=report)"))
    return dropped


def _label_conflicts(rows: list[_Row], hashed: list[int], check: ThumbCheck,
                     candidates: np.ndarray, pair_dist: dict[tuple[int, int], int],
                     cfg: PrepareConfig, findings: list[Finding]) -> int:
    """The same picture under two classes: label_conflict findings, whatever the policies.

    Confirmed duplicate pairs (exact or near) across classes count, and so do pHash candidates
    across classes whose thumbnails match once one is rotated by up to ROTATION_SEARCH_DEG
    degrees (a lightly rotated copy fails the plain comparison). Such rotation-only pairs are
    not treated as duplicates (the split and the manifest do not change): they are reported.
    """
    found: dict[tuple[int, int], str] = {}
    for (i, j), d in pair_dist.items():
        if rows[i].cls != rows[j].cls:
            found[(i, j)] = _dup_phrase(rows[i].info.md5 == rows[j].info.md5, d)
    angles = rotated_matches(check.thumbs, candidates, 2 * cfg.near_max_diff)
    for (a, b), deg in zip(candidates.tolist(), angles, strict=True):
        i, j = hashed[a], hashed[b]
        if deg is not None:
            d = bin(int(rows[i].info.phash, 16) ^ int(rows[j].info.phash, 16)).count("1")
            found[(i, j)] = (f"near copy rotated by about {abs(deg):.0f} degrees (pHash "
                             f"distance {d})")
    for (i, j), phrase in sorted(found.items()):
        findings.append(Finding(
            "label_conflict", rows[i].path,
            f"{phrase} of {rows[j].path}, filed as '{rows[i].cls}' and '{rows[j].cls}': at "
            "least one label is wrong; check both and remove the wrong copy",
            other_path=rows[j].path))
    return len(found)


def _deduplicate_and_split(rows: list[_Row], cfg: PrepareConfig,
                           findings: list[Finding],
                           groups: dict[int, str] | None = None,
                           group_source: str = GROUPS_FILE) -> dict[str, Any]:
    """Find duplicate pairs among usable rows, apply the policy, then split Training.

    Dropping happens before the split so that val keeps its stratified size.
    """
    usable = [i for i, r in enumerate(rows) if r.usable]
    hashed = [i for i in usable if rows[i].info.phash and rows[i].info.thumb is not None]
    hashes = hash_array([rows[i].info.phash for i in hashed])
    check = ThumbCheck([rows[i].info.thumb for i in hashed], cfg.near_max_diff)
    max_pairs = max(100_000, 50 * len(hashed))
    labels = np.array([rows[i].label for i in hashed], dtype=np.int64)
    cross_candidates: list[np.ndarray] = []  # unconfirmed pHash candidates across classes

    def confirm(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        ok = check(i, j)
        other = (labels[i] != labels[j]) & ~ok
        cross_candidates.append(np.stack([i[other], j[other]], axis=1))
        return ok

    try:
        near, nn = near_duplicate_pairs(hashes, cfg.phash_max_distance, max_pairs=max_pairs,
                                        confirm=confirm, seed=cfg.seed)
    except TooManyPairsError as exc:
        raise DataError(str(exc)) from exc
    pair_dist: dict[tuple[int, int], int] = {
        (hashed[a], hashed[b]): int(d) for a, b, d in near.tolist()}
    by_md5: dict[str, list[int]] = defaultdict(list)
    for i in usable:
        by_md5[rows[i].info.md5].append(i)
    for group in by_md5.values():
        for i, j in itertools.combinations(sorted(group), 2):
            pair_dist.setdefault((i, j), 0)
    pairs = sorted(pair_dist)
    candidates = (np.concatenate(cross_candidates) if cross_candidates
                  else np.zeros((0, 2), dtype=np.int64))
    conflicts = _label_conflicts(rows, hashed, check, candidates, pair_dist, cfg, findings)

    dropped: set[int] = set()
    if groups is not None:
        dropped |= _group_leakage(rows, usable, groups, cfg, findings)
    if cfg.duplicates == "drop":
        for i, j in pairs:
            si, sj = rows[i].source_split, rows[j].source_split
            if si != sj:
                dropped.add(i if SOURCE_TO_SPLIT[si] == TRAIN else j)

    training = [i for i in usable if rows[i].source_split == TRAINING and i not in dropped]
    split_pairs: list[tuple[int, int]] = list(pairs)
    split_by = "by image"
    if groups is not None:
        first: dict[str, int] = {}
        for i in training:
            g = groups.get(i)
            if g is not None:
                split_pairs.append((first.setdefault(g, i), i))
        n_groups = len({groups[i] for i in training if i in groups})
        n_groups += sum(i not in groups for i in training)
        split_by = f"by group ({n_groups} groups, from {group_source})"
    _split_training(rows, training, split_pairs, cfg)
    for i in usable:
        if rows[i].source_split == TESTING:
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
                      if side[a] in (TRAIN, VAL) else "both kept; the copy counts twice")
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
        # above audit.NN_SAMPLE images the histogram is of a seeded sample of them (all shown)
        **({"phash_nearest_neighbour_sample": len(nn)} if len(nn) < len(hashes) else {}),
        "phash_candidate_pairs": int(sum(len(d) for d in check.diffs)),
        # [bin start, candidates]: max standardised thumbnail difference of pHash candidates.
        "candidate_thumb_diff_hist": check.histogram(),
        "duplicate_pairs": len(pairs),
        "exact_duplicate_pairs": sum(rows[i].info.md5 == rows[j].info.md5 for i, j in pairs),
        "largest_duplicate_group": max(sizes.values(), default=0),
        "label_conflict_pairs": conflicts,
        "split": split_by,  # moved to the audit's top level by _audit
    }


def _to_frame(rows: list[_Row], groups: dict[int, str] | None = None) -> pd.DataFrame:
    """The manifest; `orientation` and `group` columns only exist when the data has them."""
    data = [{
        "path": r.path, "class": r.cls, "label": r.label, "source_split": r.source_split,
        "split": r.split if r.usable else "", "md5": r.info.md5, "phash": r.info.phash,
        "width": r.info.width, "height": r.info.height, "mode": r.info.mode, "mask": r.mask,
        "status": r.status, "reason": "; ".join(reason for _, _, reason in r.issues),
    } for r in rows]
    columns = list(MANIFEST_COLUMNS)
    if any(r.info.orientation != 1 for r in rows):
        columns.append("orientation")
        for rec, r in zip(data, rows, strict=True):
            rec["orientation"] = r.info.orientation
    if groups is not None:
        columns.append("group")
        for k, rec in enumerate(data):
            rec["group"] = groups.get(k, "")
    frame = pd.DataFrame(data, columns=columns)
    frame["label"] = frame["label"].astype("int64")
    for col in ("width", "height"):
        frame[col] = pd.array(frame[col].tolist(), dtype="Int64")
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Audit summary (audit_markdown in lib.data.audit renders it)


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
            folder = TESTING if split == TEST else TRAINING
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
    dup_stats = dict(dup_stats)
    split_by = dup_stats.pop("split", "by image")
    return {
        "classes": list(classes),
        # how train/val was carved: "by image" (duplicate groups kept together) or
        # "by group (N groups, from <file>)" when <raw>/groups.csv (or the group column of
        # <raw>/manifest.csv) names each image's patient
        "split": split_by,
        "params": cfg.to_dict(),
        "counts": {
            "manifest_rows": len(rows),
            "status": {s: sum(r.status == s for r in rows) for s in SEVERITY},
            "usable": usable,
            "usable_total": {s: sum(usable[c][s] for c in classes) for s in SPLITS},
            "findings_by_kind": dict(sorted(by_kind.items())),
        },
        "duplicates": dup_stats,
        "findings": [f.to_dict() for f in findings],
        "errors": _class_errors(rows, classes, raw_dir, cfg),
    }


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
    audit["confounders"] = _confounders(manifest, raw_dir, cfg, progress)
    joined, meta = prepare_metadata(raw_dir, manifest, cfg.seed, cfg.confounder_permutations)
    # Always written (a stage output): without <raw>/metadata.csv, the paths and no column.
    _write_text(out_dir / METADATA_CSV, joined.to_csv(index=False, lineterminator="\n"))
    if meta is not None:
        audit["metadata"] = meta
    _write_text(reports_dir / AUDIT_JSON,
                json.dumps(audit, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    text = audit_markdown(audit)
    if audit["confounders"]:
        text = text.rstrip("\n") + "\n\n" + confounders_markdown(audit["confounders"])
    if meta is not None:
        text = text.rstrip("\n") + "\n\n" + metadata_markdown(meta)
    _write_text(reports_dir / AUDIT_MD, text)
    if audit["errors"]:
        raise DataError("\n".join(audit["errors"]))
    return manifest


def _confounders(manifest: pd.DataFrame, raw_dir: Path, cfg: PrepareConfig,
                 progress: bool) -> dict[str, Any] | None:
    """Can the class be told from things that are not anatomy (size, format, border, histogram)?

    Run on the usable images; a finding is a warning for the researcher, not an error.
    """
    if not cfg.confounder_permutations:
        return None
    usable = manifest[manifest["status"] != "excluded"]
    if progress:
        print(f"prepare: confounder audit on {len(usable)} images", file=sys.stderr)
    return confounder_audit(usable[["path", "class"]], seed=cfg.seed, root=raw_dir,
                            permutations=cfg.confounder_permutations)


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
    parser = argparse.ArgumentParser(prog="python -m lib.data.prepare",
                                     description=__doc__.split("\n")[0])
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
        cfg = PrepareConfig.from_params(section(params, "prepare"), params["seed"])
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
