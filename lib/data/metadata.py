"""Per-image clinical metadata: read ``<raw>/metadata.csv``, join it to the manifest, encode it.

A hospital export often comes with a table beside the images: age, sex, the plane, the field
strength. ``metadata.csv`` has a ``path`` column (the image's path relative to the raw folder,
as the manifest writes it) and then any columns. The prepare stage joins it (:func:`join`) and
reports what a researcher needs to trust the join: each column's type (numeric when every
present value is a number, otherwise categorical), its missing values (blank, NA, unknown, ...:
:data:`MISSING`), the rows whose path names no image (typos, images excluded by the audit) and
the images without a row. Nothing is dropped silently: a missing value stays missing and the
encoder gives it its own indicator.

The metadata audit (:func:`audit`) asks the confounder audit's question of each column: can it
alone predict the class? On real data a yes is a population difference (meningioma patients
are older women) that a model given the metadata can learn instead of the image.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .confounders import DEFAULT_ALPHA, DEFAULT_CHANCE_MARGIN, permutation_score
from .manifest import DataError

METADATA_CSV = "metadata.csv"
PATH = "path"
# Cell values read as "not recorded" (compared lower-case, stripped).
MISSING = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown", "?", "-"})
EXAMPLES = 10  # paths listed per problem in the report
ALL = "all metadata"


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        str(value).strip().lower() in MISSING


def read_table(path: Path) -> pd.DataFrame:
    """metadata.csv as strings; a clear error when it cannot be a metadata table."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV ({type(err).__name__}: {err}); write it as "
                        "UTF-8 CSV with a header row: path,<column>,...") from err
    header = [c.strip() for c in next(csv.reader(path.open(encoding="utf-8", newline="")), [])]
    table.columns = header if len(header) == len(table.columns) else \
        [str(c).strip() for c in table.columns]
    if PATH not in table.columns:
        raise DataError(f"{path}: no 'path' column (columns: {list(table.columns)}); the first "
                        "row must name the columns, one of them 'path': each image's path "
                        "relative to the raw folder, e.g. Training/glioma/img001.jpg")
    dupes = sorted({c for c in table.columns if list(table.columns).count(c) > 1})
    if dupes:
        raise DataError(f"{path}: column(s) {dupes} appear more than once; rename them")
    if len(table.columns) < 2:
        raise DataError(f"{path}: only a 'path' column: nothing to join")
    table[PATH] = [str(p).strip().replace("\\", "/").removeprefix("./") for p in table[PATH]]
    return table


def column_types(table: pd.DataFrame) -> dict[str, str]:
    """numeric (every present value parses as a finite number) or categorical, per column."""
    out = {}
    for col in table.columns:
        if col == PATH:
            continue
        present = [v for v in table[col] if not is_missing(v)]
        numbers = pd.to_numeric(pd.Series(present, dtype=object), errors="coerce")
        numeric = bool(present) and numbers.notna().all() and np.isfinite(numbers).all()
        out[col] = "numeric" if numeric else "categorical"
    return out


def _examples(paths: Sequence[str]) -> dict[str, Any]:
    paths = sorted(paths)
    return {"count": len(paths), "examples": paths[:EXAMPLES]}


def join(manifest: pd.DataFrame, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(one row per usable manifest image, in manifest order: path + the metadata columns, ''
    where missing; the join report)."""
    usable = manifest[manifest["status"] != "excluded"]
    images = list(usable["path"])
    dup = table[PATH].duplicated(keep="first")
    duplicates = sorted(set(table.loc[dup, PATH]))
    first = table[~dup].set_index(PATH)
    known = set(images)
    excluded = set(manifest["path"]) - known
    unknown = [p for p in first.index if p not in known and p not in excluded]
    types = column_types(table)
    joined = first.reindex(images).fillna("")
    joined = joined.apply(lambda c: c.map(lambda v: "" if is_missing(v) else str(v).strip()))
    joined.insert(0, PATH, images)
    joined = joined.reset_index(drop=True)
    columns = {}
    for col, kind in types.items():
        present = joined[col][joined[col] != ""]
        info: dict[str, Any] = {"type": kind, "missing": int((joined[col] == "").sum())}
        if kind == "numeric" and len(present):
            values = present.astype(float)
            info["range"] = [float(values.min()), float(values.max())]
        elif len(present):
            info["levels"] = {k: int(v) for k, v in sorted(present.value_counts().items())}
        columns[col] = info
    without = [p for p in images if p not in first.index]
    report = {
        "file": METADATA_CSV, "rows": len(table), "images": len(images),
        "matched": len(images) - len(without), "columns": columns,
        "unknown_paths": _examples(unknown),
        "excluded_images": _examples([p for p in first.index if p in excluded]),
        "images_without_row": _examples(without),
        "duplicate_paths": _examples(duplicates),
    }
    report["warnings"] = _warnings(report)
    return joined, report


def _warnings(report: dict[str, Any]) -> list[str]:
    out = []
    if report["unknown_paths"]["count"]:
        out.append(f"{report['unknown_paths']['count']} metadata row(s) name no image of the "
                   f"raw folder (e.g. {report['unknown_paths']['examples'][0]}): check the "
                   "paths are relative to the raw folder, with the class folder")
    if report["images_without_row"]["count"]:
        out.append(f"{report['images_without_row']['count']} image(s) have no metadata row "
                   f"(e.g. {report['images_without_row']['examples'][0]}): their values are "
                   "missing, which the encoder marks")
    if report["duplicate_paths"]["count"]:
        out.append(f"{report['duplicate_paths']['count']} path(s) appear in several rows "
                   f"(e.g. {report['duplicate_paths']['examples'][0]}): the first row is used")
    for col, info in report["columns"].items():
        if info["missing"]:
            out.append(f"column {col}: {info['missing']} of {report['images']} images missing")
    return out


# --------------------------------------------------------------------------------------------
# Encoding for a model
# --------------------------------------------------------------------------------------------
@dataclass
class Encoder:
    """Numbers z-scored with a missing indicator (missing -> 0 after scaling), categories
    one-hot with a 'missing' column; fitted on the training rows only, so the validation and
    test rows never shape the encoding. Levels unseen in training count as missing."""

    types: dict[str, str]
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    levels: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, types: dict[str, str]) -> Encoder:
        enc = cls(dict(types))
        for col, kind in types.items():
            present = frame[col][frame[col] != ""]
            if kind == "numeric":
                values = present.astype(float)
                mean = float(values.mean()) if len(values) else 0.0
                sd = float(values.std(ddof=0)) if len(values) > 1 else 1.0
                enc.stats[col] = (mean, sd if sd > 0 else 1.0)
            else:
                enc.levels[col] = sorted(set(present))
        return enc

    @property
    def names(self) -> list[str]:
        out = []
        for col, kind in self.types.items():
            if kind == "numeric":
                out += [col, f"{col}=missing"]
            else:
                out += [f"{col}={v}" for v in self.levels[col]] + [f"{col}=missing"]
        return out

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        for col, kind in self.types.items():
            cells = frame[col].astype(str).to_numpy()
            missing = cells == ""
            if kind == "numeric":
                mean, sd = self.stats[col]
                values = np.where(missing, mean, pd.to_numeric(
                    pd.Series(np.where(missing, "nan", cells)), errors="coerce").fillna(mean))
                blocks += [((values - mean) / sd)[:, None], missing[:, None].astype(float)]
            else:
                levels = self.levels[col]
                onehot = np.stack([cells == v for v in levels], axis=1) if levels else \
                    np.zeros((len(cells), 0), bool)
                unseen = ~missing & ~onehot.any(axis=1)
                blocks += [onehot.astype(float), (missing | unseen)[:, None].astype(float)]
        return np.hstack(blocks).astype(np.float32) if blocks else \
            np.zeros((len(frame), 0), np.float32)


# --------------------------------------------------------------------------------------------
# The metadata audit
# --------------------------------------------------------------------------------------------
def audit(frame: pd.DataFrame, classes: Sequence[str], types: dict[str, str], seed: int,
          permutations: int, folds: int = 5, chance_margin: float = DEFAULT_CHANCE_MARGIN,
          alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """Can each column alone (and all together) predict the class? The confounder audit's test
    (lib.data.confounders.permutation_score) on the encoded metadata."""
    from sklearn.model_selection import StratifiedKFold

    labels = list(classes)
    y = np.array([labels.index(c) for c in frame["class"]])
    chance = 1.0 / len(set(y)) if len(y) else float("nan")
    n_splits = min(folds, int(np.bincount(y).min())) if len(y) else 0
    result: dict[str, Any] = {"n_images": len(y), "chance": chance, "folds": n_splits,
                              "permutations": int(permutations), "chance_margin": chance_margin,
                              "alpha": alpha, "columns": {}}
    if n_splits < 2 or len(set(y)) < 2:
        result["skipped"] = "needs at least 2 classes with 2 images each"
        result["findings"] = []
        return result
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for col in [*types, ALL]:
        chosen = dict(types) if col == ALL else {col: types[col]}
        x = Encoder.fit(frame, chosen).transform(frame)
        x = x[:, x.std(axis=0) > 0]
        if not x.shape[1]:
            result["columns"][col] = {"balanced_accuracy": None, "p_value": None,
                                      "finding": False, "message": "constant: cannot confound"}
            continue
        ba, p = permutation_score(x, y, cv, permutations, seed)
        finding = bool(ba - chance >= chance_margin and p <= alpha)
        what = "all metadata together" if col == ALL else f"{col} alone"
        message = (f"{what} predicts the class with balanced accuracy {ba:.2f} (chance "
                   f"{chance:.2f}, p = {p:.3g})")
        if finding:
            message += ("; on real data this is a population difference a model given the "
                        "metadata can learn instead of the image: a confounder")
        result["columns"][col] = {"balanced_accuracy": ba, "p_value": p, "finding": finding,
                                  "message": message}
    result["findings"] = [c for c, r in result["columns"].items() if r["finding"]]
    return result


def markdown(report: dict[str, Any]) -> str:
    """A ``## Metadata`` section for reports/data_audit.md."""
    lines = ["## Metadata", "",
             f"`{report['file']}`: {report['rows']} rows, {report['matched']} of "
             f"{report['images']} usable images matched.", "",
             "| column | type | missing | values |", "|---|---|---|---|"]
    for col, info in report["columns"].items():
        values = (f"{info['range'][0]:g} to {info['range'][1]:g}" if "range" in info else
                  ", ".join(f"{k} ({v})" for k, v in list(info.get("levels", {}).items())[:8]))
        lines.append(f"| {col} | {info['type']} | {info['missing']} | {values} |")
    if report["warnings"]:
        lines += ["", *[f"- {w}" for w in report["warnings"]]]
    found = report.get("audit")
    if found and found.get("columns"):
        lines += ["", "Can the metadata alone predict the class? (the confounder audit's test)",
                  ""]
        lines += [f"- {'**finding**: ' if r['finding'] else ''}{r['message']}"
                  for r in found["columns"].values()]
    return "\n".join(lines) + "\n"


def prepare_metadata(raw_dir: Path, manifest: pd.DataFrame, seed: int, permutations: int
                     ) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The prepare stage's step: (joined table, report) when <raw>/metadata.csv exists, else
    (the usable images' paths without a column, None)."""
    path = Path(raw_dir) / METADATA_CSV
    if not path.is_file():
        usable = manifest[manifest["status"] != "excluded"]
        return pd.DataFrame({PATH: list(usable["path"])}), None
    table = read_table(path)
    joined, report = join(manifest, table)
    if permutations:
        usable = manifest[manifest["status"] != "excluded"].reset_index(drop=True)
        frame = joined.assign(**{"class": usable["class"].to_numpy()})
        classes = sorted(set(usable["class"]))
        report["audit"] = audit(frame, classes, column_types(table), seed, permutations)
    return joined, report
