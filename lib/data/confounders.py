"""Confounder audit: can the class be predicted from things that are not anatomy?

A classifier is only as honest as its data. In the Kaggle "Brain Tumor MRI Dataset", for
example, most notumor images come from another source than the tumour images and differ in
size, encoding and background, so a network can score well by reading the file rather than the
brain. This module measures such cues directly: per image it extracts non-anatomical features,
grouped in families, and for each family (and all together) it asks a simple cross-validated
classifier to predict the class from that family alone.

Families (see :func:`image_features`):

* ``size``: width, height, aspect ratio (w / h), pixel count.
* ``format``: file format, PIL mode, channels, file bytes per pixel, estimated JPEG quality.
* ``border``: mean and sd of the outer 5 % frame of the grey image (background intensity).
* ``histogram``: 16-bin grey histogram of the whole image, normalised to sum 1.

Test (see :func:`confounder_audit`): StandardScaler + LogisticRegression on the family's
features (categorical ones one-hot, columns constant over the data set dropped), balanced
accuracy from a seeded stratified K-fold, and a seeded permutation p-value from
``sklearn.model_selection.permutation_test_score`` (the labels are shuffled ``permutations``
times and the CV score recomputed; p = (1 + #{permuted >= observed}) / (1 + permutations), so
with the default 100 permutations the smallest possible p is 1/101 = 0.0099). A family is a
*finding* when its balanced accuracy is at least ``chance_margin`` above chance (1 / n_classes)
AND p <= ``alpha``. A family whose features are all constant cannot confound and is reported
as such. A linear model is deliberately simple: a finding is a lower bound on what a network
could exploit, and "no confounder found" means none that a linear read of these features sees.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FAMILIES: tuple[str, ...] = ("size", "format", "border", "histogram")
ALL = "all"
BORDER_FRACTION = 0.05  # the outer 5 % of the shorter side, on every side
HIST_BINS = 16
DEFAULT_PERMUTATIONS = 100
DEFAULT_CHANCE_MARGIN = 0.15
DEFAULT_ALPHA = 0.05
NO_CONFOUNDER = "no confounder found"
CONSTANT = "constant: cannot confound"

# IJG (libjpeg) standard luminance quantisation table, ITU-T T.81 Annex K.1, natural
# (row-major) order; the table libjpeg, Pillow and most cameras scale with the quality setting.
IJG_LUMINANCE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)
# Zig-zag scan: _ZIGZAG[k] is the natural index of the k-th coefficient in the file's order.
_ZIGZAG: tuple[int, ...] = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
)

_MESSAGES: dict[str, tuple[str, str]] = {
    # family -> (what predicts, consequence and remedy)
    "size": ("image size alone",
             "models can learn this; resize every image to one size before saving, "
             "or compare with a size-matched subset"),
    "format": ("the file format and encoding alone",
               "models can learn compression artefacts; re-encode every image the same way "
               "(one format, one quality), or compare within one format"),
    "border": ("the background intensity at the image border alone",
               "models can learn the export or scanner background; normalise intensities per "
               "image or mask the background, or compare with an intensity-matched subset"),
    "histogram": ("the global grey-level histogram alone",
                  "global brightness or contrast differs between classes (acquisition, "
                  "windowing or slice level rather than the lesion); normalise intensities per "
                  "image and check that explanations point at the lesion"),
    ALL: ("these non-anatomical properties together",
          "models can learn the class without looking at the anatomy; remove the cue "
          "(resize, re-encode, normalise) or evaluate on a subset where it is matched"),
}


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------
def _ijg_table(quality: int) -> np.ndarray:
    """The IJG luminance table that libjpeg writes for `quality` (1..100, baseline clamp 255)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    table = np.floor((np.asarray(IJG_LUMINANCE) * scale + 50) / 100)
    return np.clip(table, 1, 255)


_IJG_TABLES = None


def jpeg_quality(img: Image.Image) -> float | None:
    """Estimated IJG quality (1..100) of a JPEG from its luminance quantisation table.

    Method: libjpeg scales the standard table (Annex K) by S = 5000/q (q < 50) or 200 - 2q and
    rounds; we compute the table for every q in 1..100 and return the q whose table is closest
    (mean absolute difference) to table 0 of the file, trying the natural and the zig-zag order
    (Pillow versions differ). Ties go to the lowest q. Files from encoders with their own tables
    get the nearest IJG quality, a rough but comparable number. None when not a JPEG or no table.
    """
    global _IJG_TABLES
    tables = getattr(img, "quantization", None)
    if img.format != "JPEG" or not tables or 0 not in tables:
        return None
    observed = np.asarray(list(tables[0]), dtype=np.float64)
    if observed.size != 64:
        return None
    if _IJG_TABLES is None:
        _IJG_TABLES = np.stack([_ijg_table(q) for q in range(1, 101)])
    unzig = np.empty(64)
    unzig[list(_ZIGZAG)] = observed  # in case the table came in zig-zag (file) order
    err = np.minimum(np.abs(_IJG_TABLES - observed).mean(axis=1),
                     np.abs(_IJG_TABLES - unzig).mean(axis=1))
    return float(int(np.argmin(err)) + 1)


def _grey(img: Image.Image) -> np.ndarray:
    """The image as float grey levels on the 0..255 scale (16-bit and float modes rescaled)."""
    if img.mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float64) / 257.0
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        return (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return np.asarray(img.convert("L"), dtype=np.float64)


def _border(grey: np.ndarray) -> np.ndarray:
    h, w = grey.shape
    k = max(1, int(round(BORDER_FRACTION * min(h, w))))
    frame = np.ones((h, w), dtype=bool)
    frame[k:h - k, k:w - k] = False
    return grey[frame]


def image_features(path: str | Path) -> dict[str, dict[str, Any]] | None:
    """Non-anatomical features of one image file, grouped by family; None if it cannot be read.

    Returns ``{"size": {...}, "format": {...}, "border": {...}, "histogram": {...}}`` with
    size: width, height, aspect (w / h), pixels; format: format (str), mode (str), channels,
    bytes_per_pixel (file size / pixels), jpeg_quality (float or None, see :func:`jpeg_quality`);
    border: mean, sd of the outer 5 % frame of the grey image; histogram: bin00..bin15, the
    fraction of pixels in 16 equal grey-level bins over 0..255.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                width, height = img.size
                pixels = width * height
                if pixels == 0:
                    return None
                fmt = {"MPO": "JPEG"}.get(img.format or "", img.format or "unknown")
                quality = jpeg_quality(img)
                mode = img.mode
                channels = len(img.getbands())
                grey = _grey(img)
    except Exception:  # noqa: BLE001 - any unreadable file is reported by the caller
        return None
    if not np.all(np.isfinite(grey)):
        return None
    border = _border(grey)
    hist, _ = np.histogram(grey, bins=HIST_BINS, range=(0.0, 256.0))
    return {
        "size": {"width": float(width), "height": float(height),
                 "aspect": float(width / height), "pixels": float(pixels)},
        "format": {"format": fmt, "mode": mode, "channels": float(channels),
                   "bytes_per_pixel": float(len(data) / pixels), "jpeg_quality": quality},
        "border": {"mean": float(border.mean()), "sd": float(border.std())},
        "histogram": {f"bin{i:02d}": float(v) for i, v in enumerate(hist / pixels)},
    }


# --------------------------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------------------------
def _pairs(rows: Any) -> list[tuple[str, str]]:
    """(path, class) pairs from a DataFrame with path/class columns or an iterable of pairs."""
    if hasattr(rows, "columns"):
        return [(str(p), str(c)) for p, c in zip(rows["path"], rows["class"], strict=True)]
    return [(str(p), str(c)) for p, c in rows]


def _design(records: Sequence[dict[str, Any]], family: str):
    """Numeric design matrix of one family (one-hot categoricals, constant columns dropped)."""
    import pandas as pd

    frame = pd.DataFrame([r[family] for r in records])
    if "jpeg_quality" in frame:
        # Not a JPEG -> 0, so the column is numeric; the format column already says "not JPEG".
        frame["jpeg_quality"] = frame["jpeg_quality"].astype(float).fillna(0.0)
    cats = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    frame = pd.get_dummies(frame, columns=cats, dtype=float)
    keep = [c for c in frame.columns if frame[c].nunique(dropna=False) > 1]
    return frame[keep].to_numpy(dtype=np.float64), keep


def _message(family: str, ba: float, chance: float, p: float) -> str:
    what, then = _MESSAGES[family]
    return (f"{what} predicts the class with balanced accuracy {ba:.2f} "
            f"(chance {chance:.2f}, p = {p:.3g}); {then}")


def permutation_score(x: np.ndarray, y: np.ndarray, cv: Any, permutations: int, seed: int
                      ) -> tuple[float, float]:
    """(cross-validated balanced accuracy, permutation p) of StandardScaler + LogisticRegression
    predicting y from x: the one test of every audit here (image families and metadata)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import permutation_test_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    # One BLAS thread: the fits are tiny, and threads on a shared CPU made them 10x slower.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")  # convergence chatter on tiny or separable sets
        score, _, p = permutation_test_score(
            model, x, y, cv=cv, n_permutations=int(permutations),
            scoring="balanced_accuracy", random_state=seed, n_jobs=1)
    return round(float(score), 4), round(float(p), 4)  # stable JSON bytes across CPUs


def confounder_audit(
    rows: Any,
    seed: int,
    folds: int = 5,
    permutations: int = DEFAULT_PERMUTATIONS,
    chance_margin: float = DEFAULT_CHANCE_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    root: str | Path | None = None,
    families: Iterable[str] = FAMILIES,
) -> dict[str, Any]:
    """Predict the class from each feature family alone, and from all of them together.

    `rows`: a DataFrame with ``path`` and ``class`` columns (e.g. the prepare manifest, ok rows
    only) or an iterable of (path, class); relative paths are read under `root`. Unreadable
    files are skipped and listed under ``unreadable``. Returns a JSON-ready dict::

        {"verdict": "no confounder found" | [message, ...], "findings": [family, ...],
         "n_images", "n_classes", "classes", "chance", "folds", "permutations",
         "chance_margin", "alpha", "model", "unreadable": [path, ...],
         "families": {family: {"status": "tested" | "constant" | "skipped",
                               "features": [...], "balanced_accuracy", "chance", "p_value",
                               "finding": bool, "message": str}}}

    Families are tested in the order of `families`, then ``all`` (every non-constant feature).
    """
    from sklearn.model_selection import StratifiedKFold

    families = list(families)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown feature famil(ies) {unknown}; known: {list(FAMILIES)}")
    base = Path(root) if root is not None else None
    records, labels, unreadable = [], [], []
    for path, cls in _pairs(rows):
        full = Path(path) if base is None or Path(path).is_absolute() else base / path
        feats = image_features(full)
        if feats is None:
            unreadable.append(path)
        else:
            records.append(feats)
            labels.append(cls)
    classes = sorted(set(labels))
    y = np.array([classes.index(c) for c in labels])
    n_classes = len(classes)
    chance = 1.0 / n_classes if n_classes else float("nan")
    smallest = int(np.bincount(y).min()) if n_classes else 0
    n_splits = min(int(folds), smallest)
    result: dict[str, Any] = {
        "n_images": len(records), "n_classes": n_classes, "classes": classes,
        "chance": chance, "folds": n_splits, "permutations": int(permutations),
        "chance_margin": float(chance_margin), "alpha": float(alpha),
        "model": "StandardScaler + LogisticRegression",
        "unreadable": unreadable, "families": {},
    }

    def skipped(reason: str) -> dict[str, Any]:
        return {"status": "skipped", "features": [], "balanced_accuracy": None,
                "chance": chance, "p_value": None, "finding": False, "message": reason}

    designs = {f: _design(records, f) for f in families} if records else {}
    if designs:
        blocks = [(designs[f][0], [f"{f}.{c}" for c in designs[f][1]]) for f in families]
        designs[ALL] = (np.hstack([b[0] for b in blocks]), [c for b in blocks for c in b[1]])
    cv = StratifiedKFold(n_splits=max(n_splits, 2), shuffle=True, random_state=seed)
    for family in [*families, ALL]:
        if n_classes < 2 or n_splits < 2:
            result["families"][family] = skipped(
                "skipped: needs at least 2 classes with 2 readable images each")
            continue
        x, cols = designs[family]
        if not cols:
            result["families"][family] = {
                "status": "constant", "features": [], "balanced_accuracy": None,
                "chance": chance, "p_value": None, "finding": False, "message": CONSTANT}
            continue
        ba, p = permutation_score(x, y, cv, permutations, seed)
        finding = bool(ba - chance >= chance_margin and p <= alpha)
        msg = _message(family, ba, chance, p)
        if not finding:
            weak = p <= alpha and ba > chance
            msg = (f"{'weak, below the margin' if weak else 'not a confounder'}: balanced "
                   f"accuracy {ba:.2f} (chance {chance:.2f}, p = {p:.3g})")
        result["families"][family] = {
            "status": "tested", "features": cols, "balanced_accuracy": ba, "chance": chance,
            "p_value": p, "finding": finding, "message": msg}
    found = [f for f, r in result["families"].items() if r["finding"]]
    result["findings"] = found
    result["verdict"] = ([result["families"][f]["message"] for f in found] if found
                         else NO_CONFOUNDER)
    return result


def markdown(result: dict[str, Any]) -> str:
    """A ``## Confounders`` section for reports/data_audit.md."""

    def num(v: Any, fmt: str = ".2f") -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = [
        "## Confounders", "",
        "Can the class be predicted from things that are not anatomy? For each feature family "
        f"a {result['model']} classifier predicts the class from that family alone, scored by "
        f"balanced accuracy over {result['folds']} stratified folds; p from "
        f"{result['permutations']} label permutations. A finding needs balanced accuracy >= "
        f"chance + {result['chance_margin']:.2f} and p <= {result['alpha']:.2f}. A weak but "
        "significant histogram score can be the lesion itself (it changes the grey levels).",
        "",
    ]
    if result["findings"]:
        lines.append(f"**Verdict: {len(result['findings'])} finding(s).**")
        lines.append("")
        lines += [f"- **{f}**: {result['families'][f]['message']}" for f in result["findings"]]
    else:
        lines.append(f"**Verdict: {NO_CONFOUNDER}** ({result['n_images']} images, "
                     f"{result['n_classes']} classes).")
    lines += ["", "| family | features | balanced accuracy | chance | p | finding |",
              "|---|---|---|---|---|---|"]
    for family, r in result["families"].items():
        if r["status"] == "tested":
            cells = [num(r["balanced_accuracy"]), num(r["chance"]), num(r["p_value"], ".3g"),
                     "**yes**" if r["finding"] else "no"]
        else:
            cells = [r["message"], num(r["chance"]), "–", "no"]
        lines.append(f"| {family} | {len(r['features'])} | " + " | ".join(cells) + " |")
    if result["unreadable"]:
        lines += ["", f"{len(result['unreadable'])} unreadable file(s) left out: "
                  + ", ".join(f"`{p}`" for p in result["unreadable"][:20])
                  + (" …" if len(result["unreadable"]) > 20 else "")]
    return "\n".join(lines) + "\n"
