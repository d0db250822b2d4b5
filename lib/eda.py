"""Descriptive statistics of a prepared dataset: what the EDA notebook shows and eda.json keeps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage, stats
from tqdm.auto import tqdm

from lib.data import load_image, load_mask

SPLIT_ORDER = ("train", "val", "test")


def otsu_threshold(image: np.ndarray) -> float:
    """Otsu's threshold on a uint8 image (kept here to avoid a scikit-image dependency)."""
    hist = np.bincount(image.ravel(), minlength=256).astype(float)
    prob = hist / hist.sum()
    omega = np.cumsum(prob)
    mu = np.cumsum(prob * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    return float(np.nanargmax(between))


def head_mask(image: np.ndarray) -> np.ndarray:
    """Largest bright connected region with holes filled: the head, without any anatomy model."""
    fg = image > otsu_threshold(image)
    labels, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))


@dataclass(frozen=True)
class Survey:
    """Per-image statistics and per-class mean images, from one decode of each image."""

    stats: pd.DataFrame
    means: dict[str, np.ndarray]


def survey(manifest: pd.DataFrame, raw_dir: Path, mean_size: int = 128,
           progress: bool = True) -> Survey:
    """One row per usable image (size, intensity inside the head, lesion share of the head) and
    the pixel-wise mean image per class at a common size, where classes differ on average."""
    rows, sums, counts = [], {}, {}
    records = manifest.to_dict("records")
    for rec in tqdm(records, disable=not progress, desc="image statistics", unit="img"):
        img = load_image(raw_dir, rec["path"])
        head = head_mask(img)
        values = img[head] if head.any() else img.ravel()
        has_mask = isinstance(rec["mask"], str) and rec["mask"] != ""
        lesion = load_mask(raw_dir, rec["mask"] if has_mask else None, img.shape)
        rows.append({
            "path": rec["path"], "class": rec["class"], "split": rec["split"],
            "width": int(rec["width"]), "height": int(rec["height"]),
            "mean": float(values.mean()), "std": float(values.std()),
            "p99": float(np.percentile(values, 99)),
            "lesion_share": (float((lesion & head).sum() / max(head.sum(), 1))
                             if has_mask else np.nan),
        })
        small = Image.fromarray(img).resize((mean_size, mean_size), Image.BILINEAR)
        cls = str(rec["class"])
        sums[cls] = sums.get(cls, 0.0) + np.asarray(small, dtype=float)
        counts[cls] = counts.get(cls, 0) + 1
    means = {cls: sums[cls] / counts[cls] for cls in sorted(sums)}
    return Survey(pd.DataFrame(rows), means)


def counts_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Usable images per class (rows) and split (columns), with totals."""
    table = pd.crosstab(manifest["class"], manifest["split"])
    table = table.reindex(columns=[s for s in SPLIT_ORDER if s in table.columns], fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


def kruskal_by_class(stats_df: pd.DataFrame, column: str) -> dict[str, float]:
    """Kruskal-Wallis H test of `column` across classes, with epsilon-squared as effect size.

    A tiny p-value with a tiny effect size means "detectable but negligible"; a large effect
    on a nuisance statistic (like mean brightness) would hint at a shortcut a CNN could learn.
    """
    groups = [g[column].dropna().to_numpy() for _, g in stats_df.groupby("class")]
    groups = [g for g in groups if len(g) > 0]
    n, k = sum(len(g) for g in groups), len(groups)
    if k < 2 or n <= k:
        return {"H": float("nan"), "p": float("nan"), "epsilon2": float("nan"), "n": n, "k": k}
    h, p = stats.kruskal(*groups)
    return {"H": float(h), "p": float(p), "epsilon2": float((h - k + 1) / (n - k)), "n": n, "k": k}


def sample_records(manifest: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """A seeded sample of up to `per_class` training images per class (same every run)."""
    pool = manifest[manifest["split"] == "train"]
    if pool.empty:
        pool = manifest
    shuffled = pool.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("class").head(per_class).sort_values("class", kind="stable") \
        .reset_index(drop=True)


def audit_overview(audit: dict[str, Any]) -> pd.DataFrame:
    """Files per manifest status and findings per kind, as one small table."""
    counts = audit.get("counts", {})
    rows = [("status", k, v) for k, v in counts.get("status", {}).items()]
    rows += [("finding", k, v) for k, v in counts.get("findings_by_kind", {}).items()]
    return pd.DataFrame(rows, columns=["what", "kind", "files"]).set_index(["what", "kind"])


def audit_findings(audit: dict[str, Any]) -> pd.DataFrame:
    """Every finding with its reason, one row each."""
    return pd.DataFrame(audit.get("findings", []))


def load_samples(sample: pd.DataFrame, raw_dir: Path) -> tuple[list, list, list[str]]:
    """Images, masks and titles of sampled manifest rows, ready for plots.image_grid."""
    images = [load_image(raw_dir, p) for p in sample["path"]]
    masks = [load_mask(raw_dir, m or None, im.shape)
             for m, im in zip(sample["mask"].fillna(""), images, strict=True)]
    titles = [f"{c}\n{Path(p).name}" for c, p in zip(sample["class"], sample["path"], strict=True)]
    return images, masks, titles


def summary(manifest: pd.DataFrame, stats_df: pd.DataFrame, audit: dict[str, Any]) -> dict:
    """The numbers eda.json keeps for DVC and the report: stable keys, rounded for stable diffs."""
    counts = counts_table(manifest)
    lesion = stats_df.dropna(subset=["lesion_share"])
    lesion = lesion[lesion["lesion_share"] > 0]
    return {
        "n_images": int(len(manifest)),
        "n_classes": int(manifest["class"].nunique()),
        "counts": {cls: {col: int(v) for col, v in row.items()} for cls, row in counts.iterrows()},
        "image_size": {
            "n_distinct": int(stats_df[["width", "height"]].drop_duplicates().shape[0]),
            "min_side": int(stats_df[["width", "height"]].min().min()),
            "max_side": int(stats_df[["width", "height"]].max().max()),
        },
        "intensity_mean_by_class": {
            str(c): round(float(v), 3) for c, v in stats_df.groupby("class")["mean"].mean().items()
        },
        "kruskal_mean_intensity": _rounded(kruskal_by_class(stats_df, "mean")),
        "kruskal_intensity_std": _rounded(kruskal_by_class(stats_df, "std")),
        "lesion_share_of_head": {
            str(c): {"median": round(float(g.median()), 4), "min": round(float(g.min()), 4),
                     "max": round(float(g.max()), 4)}
            for c, g in lesion.groupby("class")["lesion_share"]
        },
        "audit_findings": int(sum(audit.get("counts", {}).get("findings_by_kind", {}).values())),
    }


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: (v if isinstance(v, int) else float(f"{v:.6g}")) for k, v in d.items()}
