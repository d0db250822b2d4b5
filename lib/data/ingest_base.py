"""What every importer shares (lib.data.ingest, lib.data.brisc): the study's classes, the item
an importer yields, the result it returns, the group-wise split, the checks on SRC and out, and
the idempotent writer of the raw layout (rules: lib.data.ingest's docstring)."""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..splits import TESTING, TRAINING
from .images import binary_mask, png_bytes

CLASSES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")
GROUPS_CSV = "groups.csv"
# What the importers write at the top of out: the splits, the groups, the BRISC importer's
# per-image metadata (plane), the feedback importer's provenance, the phantom's settings.
IMPORTER_FILES = (TRAINING, TESTING, GROUPS_CSV, "metadata.csv", "feedback_provenance.csv",
                  "phantom.json")


class IngestError(RuntimeError):
    """The import cannot go on safely (a conflicting file, out inside SRC, a bad option)."""


class _Skip(Exception):
    """A source file (or slice) that is reported as skipped; the message is the reason."""


@dataclass
class Item:
    """One image to write: class, name (no extension), group id, 8-bit pixels, optional mask."""

    cls: str
    name: str
    group: str
    image: np.ndarray
    mask: np.ndarray | None = None
    source: str = ""


@dataclass
class IngestResult:
    """What an importer did: counts per split and class, groups, written files and skips."""

    format: str
    out: str
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    images: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> n
    groups: dict[str, int] = field(default_factory=dict)  # split -> number of groups
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.format} -> {self.out}: {self.written} file(s) written, "
                 f"{self.unchanged} unchanged, {self.removed} removed from the other split"]
        for split in (TRAINING, TESTING):
            per = self.images.get(split, {})
            counts = ", ".join(f"{c} {per[c]}" for c in sorted(per)) or "none"
            lines.append(f"  {split}: {self.groups.get(split, 0)} group(s); images: {counts}")
        reasons = Counter(reason for _, reason in self.skipped)
        lines.append(f"  skipped {len(self.skipped)}:")
        for reason, n in sorted(reasons.items()):
            example = next(src for src, r in self.skipped if r == reason)
            lines.append(f"    {n} x {reason} (e.g. {example})")
        lines.extend(f"  WARNING: {w}" for w in self.warnings)
        return "\n".join(lines)


# ----------------------------------------------------------------------------- splits and writing


def assign_splits(groups: Iterable[str | tuple[str, str]], test_fraction: float, seed: int
                  ) -> dict[str, str]:
    """Group id -> Training | Testing, stratified by class: within each class (in sorted order)
    a seeded shuffle of its sorted group ids sends round(test_fraction * n) groups to Testing,
    at least one and never all when the class has two or more groups.

    ``groups`` holds ids, or (id, class) pairs; a group seen under several classes (a patient
    with a tumour slice and a healthy slice) is split with its first class in sorted order. One
    random generator runs through the classes, so plain ids (one class) are split as before.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise IngestError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    stratum: dict[str, str] = {}
    for entry in sorted({(g, "") if isinstance(g, str) else tuple(g) for g in groups}):
        stratum.setdefault(entry[0], entry[1])
    rng = np.random.default_rng(seed)
    out = {}
    for cls in sorted(set(stratum.values())):
        ids = sorted(g for g, c in stratum.items() if c == cls)
        order = rng.permutation(len(ids))
        n_test = int(round(test_fraction * len(ids)))
        if len(ids) >= 2 and test_fraction > 0:
            n_test = min(max(n_test, 1), len(ids) - 1)
        test = {ids[i] for i in order[:n_test]}
        out.update({g: (TESTING if g in test else TRAINING) for g in ids})
    return dict(sorted(out.items()))




def _check_paths(src: Path, out: Path) -> None:
    if not src.exists():
        raise IngestError(f"source not found: {src}")
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise IngestError(f"out folder {out} and source {src} overlap: the source must stay "
                          "untouched, write somewhere else")
    if out.is_dir():
        foreign = sorted(e.name for e in out.iterdir() if e.name not in IMPORTER_FILES)
        if foreign:
            raise IngestError(f"out folder {out} holds {foreign[:5]}, which no importer wrote; "
                              "use an empty folder or one made by lib.ingest")


class _Writer:
    """Writes items idempotently into out and keeps the counts."""

    def __init__(self, out: Path, result: IngestResult, overwrite: bool) -> None:
        self.out, self.result, self.overwrite = out, result, overwrite
        self.groups: dict[str, str] = {}

    def _put(self, path: Path, data: bytes) -> None:
        if path.exists():
            if path.read_bytes() == data:
                self.result.unchanged += 1
                return
            if not self.overwrite:
                raise IngestError(f"{path} exists with different content (another importer, "
                                  "other options, or changed code); pass --overwrite to replace")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.result.written += 1

    def write(self, item: Item, split: str) -> None:
        other = TESTING if split == TRAINING else TRAINING
        rel = Path(split, item.cls, f"{item.name}.png")
        stale = self.out / other / item.cls / f"{item.name}.png"
        if stale.exists():
            if not self.overwrite:
                raise IngestError(f"{stale.relative_to(self.out).as_posix()} is in the other "
                                  "split (different seed or test fraction?); pass --overwrite "
                                  "to move it, or use a fresh out folder")
            for p in (stale, stale.with_name(f"{item.name}_mask.png")):
                if p.exists():
                    p.unlink()
                    self.result.removed += 1
            self.groups[Path(other, item.cls, f"{item.name}.png").as_posix()] = ""
        self._put(self.out / rel, png_bytes(item.image))
        if item.mask is not None:
            self._put(self.out / split / item.cls / f"{item.name}_mask.png",
                      png_bytes(binary_mask(item.mask)))
        self.groups[rel.as_posix()] = item.group
        per = self.result.images.setdefault(split, {})
        per[item.cls] = per.get(item.cls, 0) + 1

    def write_groups(self) -> None:
        path = self.out / GROUPS_CSV
        rows: dict[str, str] = {}
        if path.exists():
            with path.open(newline="") as fh:
                rows = {r["file"]: r["group"] for r in csv.DictReader(fh)}
        rows.update(self.groups)
        rows = {f: g for f, g in rows.items() if g}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", "group"])
        writer.writerows(sorted(rows.items()))
        data = buf.getvalue().encode()
        if path.exists() and path.read_bytes() == data:
            return
        self.out.mkdir(parents=True, exist_ok=True)  # merged rows: rewriting is always safe
        path.write_bytes(data)


def _run(out: Path, groups: Iterable[str | tuple[str, str]], items: Iterator[Item],
         result: IngestResult, test_fraction: float, seed: int, overwrite: bool) -> IngestResult:
    """Split the groups (found by a cheap first pass), then stream and write the items.

    Streaming keeps one image in memory at a time (a Decathlon set is ~75 000 slices); the
    groups of files that later turn out unreadable take part in the split, harmlessly.
    """
    splits = assign_splits(groups, test_fraction, seed)
    writer = _Writer(out, result, overwrite)
    n = 0
    for item in items:
        if item.group not in splits:  # the first pass and the import disagree: a bug, not data
            raise IngestError(f"{item.source}: group {item.group} was not seen by the first pass")
        writer.write(item, splits[item.group])
        n += 1
    if n:
        writer.write_groups()
    else:
        result.warnings.append("nothing imported: check SRC and the options")
    used = set(writer.groups.values())
    result.groups = dict(Counter(v for g, v in splits.items() if g in used))
    return result


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")
