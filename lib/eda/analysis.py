"""Descriptive statistics of a prepared dataset: what the EDA notebook shows and eda.json keeps."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage, stats
from tqdm import tqdm

from ..config import check_int, from_group
from ..contracts import PHANTOM_GENERATOR
from ..data import phantom
from ..data.images import load_image, load_mask
from ..jsonio import round_floats, significant
from ..splits import SOURCE_SPLITS, SPLITS
from ..stats import otsu_threshold

UNKNOWN_SEQUENCE = "unknown"  # real data: the MRI sequence of a file is not recorded anywhere
# The ring of tissue a lesion is compared with: 3 px at 128 px (5.6 mm of the phantom's 240 mm
# field of view), scaled with the image side so it covers the same anatomy at any resolution.
RING_PX_AT_128 = 3
VISIBLE = 1.0  # conspicuity below this: the lesion differs from its ring by less than the ring's sd


@dataclass(frozen=True)
class EdaConfig:
    """The `eda:` group and the study's seed (the seeded image sample)."""

    samples_per_class: int = 6
    seed: int = 42

    def __post_init__(self) -> None:
        check_int("eda.samples_per_class", self.samples_per_class, 1)

    @classmethod
    def from_params(cls, group: dict[str, Any], seed: int) -> EdaConfig:
        return from_group(cls, group, "eda", seed=seed)


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
    """One row per usable image (size, intensity inside the head, lesion share of the head,
    lesion conspicuity) and the pixel-wise mean image per class at a common size, where classes
    differ on average."""
    rows, sums, counts = [], {}, {}
    records = manifest.to_dict("records")
    for rec in tqdm(records, disable=not progress, desc="image statistics", unit="img"):
        img = load_image(raw_dir, rec["path"])
        head = head_mask(img)
        values = img[head] if head.any() else img.ravel()
        has_mask = isinstance(rec["mask"], str) and rec["mask"] != ""
        lesion = load_mask(raw_dir, rec["mask"] if has_mask else None, img.shape)
        ring_px = ring_width(min(img.shape))
        rows.append({
            "path": rec["path"], "class": rec["class"], "split": rec["split"],
            "width": int(rec["width"]), "height": int(rec["height"]),
            "mean": float(values.mean()), "std": float(values.std()),
            "p99": float(np.percentile(values, 99)),
            "lesion_share": (float((lesion & head).sum() / max(head.sum(), 1))
                             if has_mask else np.nan),
            "lesion": bool(lesion.any()), "ring_px": ring_px,
            "conspicuity": conspicuity(img, lesion, ring_px, head),
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
    table = table.reindex(columns=[s for s in SPLITS if s in table.columns], fill_value=0)
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
    """Images, masks and titles (class, sequence when known, file) of sampled manifest rows,
    ready for plots.image_grid."""
    images = [load_image(raw_dir, p) for p in sample["path"]]
    masks = [load_mask(raw_dir, m or None, im.shape)
             for m, im in zip(sample["mask"].fillna(""), images, strict=True)]
    sequences = image_sequences(sample, raw_dir)
    titles = [f"{c}{'' if s == UNKNOWN_SEQUENCE else f' · {s}'}\n{Path(p).name}"
              for c, s, p in zip(sample["class"], sequences, sample["path"], strict=True)]
    return images, masks, titles


# --------------------------------------------------------------------------------------------
# Lesion conspicuity: can a reader see the lesion at all?
# --------------------------------------------------------------------------------------------
def ring_width(image_side: int) -> int:
    """Ring width in pixels for an image side: RING_PX_AT_128 scaled, at least 2 px so the ring
    has enough pixels for a standard deviation on small images."""
    return max(2, int(round(RING_PX_AT_128 * image_side / 128)))


def lesion_ring(mask: np.ndarray, head: np.ndarray, ring_px: int) -> np.ndarray:
    """Pixels within `ring_px` (Euclidean) of the lesion, outside it and inside the head: the
    tissue a reader compares the lesion with. Air outside the head would inflate the contrast."""
    mask = np.asarray(mask, dtype=bool)
    outside = ~mask
    return (ndimage.distance_transform_edt(outside) <= ring_px) & outside & head


def conspicuity(image: np.ndarray, mask: np.ndarray, ring_px: int | None = None,
                head: np.ndarray | None = None) -> float:
    """|mean(lesion) - mean(ring)| / sd(ring): the lesion's contrast in units of the variation of
    the tissue around it. Below 1 a reader cannot tell the lesion from its surroundings.

    `ring_px` defaults to ring_width of the image side, `head` to head_mask(image). NaN when there
    is no lesion, fewer than 2 ring pixels, or a perfectly flat ring (the ratio is undefined).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return float("nan")
    ring_px = ring_width(min(image.shape[:2])) if ring_px is None else ring_px
    head = head_mask(image) if head is None else head
    ring = lesion_ring(mask, head, ring_px)
    if ring.sum() < 2:
        return float("nan")
    values = image.astype(np.float64)
    sd = float(values[ring].std())
    if sd == 0.0:
        return float("nan")
    return abs(float(values[mask].mean()) - float(values[ring].mean())) / sd


def phantom_config(raw_dir: Path) -> phantom.PhantomConfig | None:
    """The generator's config from raw_dir/phantom.json, or None for data we did not generate."""
    path = Path(raw_dir) / phantom.MANIFEST
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    if info.get("generator") != PHANTOM_GENERATOR:
        return None
    return phantom.PhantomConfig.from_params(info["config"])


def image_sequences(manifest: pd.DataFrame, raw_dir: Path) -> pd.Series:
    """The MRI sequence of each manifest row: redrawn from the phantom generator's config (each
    image is regenerated from its split, class and index), or "unknown" for real data."""
    cfg = phantom_config(raw_dir)
    if cfg is None:
        return pd.Series(UNKNOWN_SEQUENCE, index=manifest.index, dtype=object)

    def one(rel_path: str) -> str:
        parts = PurePosixPath(rel_path).parts
        if len(parts) != 3 or parts[0] not in SOURCE_SPLITS or parts[1] not in phantom.CLASSES:
            return UNKNOWN_SEQUENCE
        split, cls, name = parts
        match = re.fullmatch(rf"{re.escape(cls)}_(\d+)\.png", name)
        if not match:
            return UNKNOWN_SEQUENCE
        return phantom.draw_case(cfg, split, cls, int(match.group(1))).sequence

    return pd.Series([one(p) for p in manifest["path"]], index=manifest.index, dtype=object)


def lesion_conspicuity(stats_df: pd.DataFrame, raw_dir: Path) -> pd.DataFrame:
    """One row per image with a non-empty lesion mask, from survey's stats (no second decode),
    in all splits: it checks the data (is each lesion visible?), not a model, so the test split
    is no more precious here than the rest, and more lesions give steadier medians."""
    columns = ["path", "class", "split", "sequence", "ring_px", "conspicuity"]
    lesions = stats_df[stats_df["lesion"].astype(bool)].copy()
    lesions["sequence"] = image_sequences(lesions, raw_dir)
    return lesions[columns].reset_index(drop=True)


def sequence_order(sequences: pd.Series) -> list[str]:
    """Sequences in the generator's order (T1, T1c, T2, FLAIR), then any others, then unknown."""
    seen = set(sequences)
    rest = sorted(seen - set(phantom.SEQUENCES) - {UNKNOWN_SEQUENCE})
    return ([s for s in phantom.SEQUENCES if s in seen] + rest
            + ([UNKNOWN_SEQUENCE] if UNKNOWN_SEQUENCE in seen else []))


def conspicuity_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per class × sequence: lesions, median conspicuity, quartiles, IQR and the share below
    VISIBLE (lesions a reader cannot see)."""
    columns = ["n", "median", "q25", "q75", "iqr", "share_below_1"]
    data = per_image.dropna(subset=["conspicuity"])
    if data.empty:
        index = pd.MultiIndex.from_arrays([[], []], names=["class", "sequence"])
        return pd.DataFrame(columns=columns, index=index)
    grouped = data.groupby(["class", "sequence"])["conspicuity"]
    table = pd.DataFrame({
        "n": grouped.size(),
        "median": grouped.median(),
        "q25": grouped.quantile(0.25),
        "q75": grouped.quantile(0.75),
        "share_below_1": grouped.apply(lambda c: float((c < VISIBLE).mean())),
    })
    table["iqr"] = table["q75"] - table["q25"]
    order = sequence_order(data["sequence"])
    table = table.reset_index()
    table["sequence"] = pd.Categorical(table["sequence"], categories=order, ordered=True)
    table = table.sort_values(["class", "sequence"]).astype({"sequence": str})
    return table.set_index(["class", "sequence"])[columns]


def conspicuity_summary(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """conspicuity_table as {class: {sequence: numbers}}, rounded for stable diffs."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (cls, seq), row in table.iterrows():
        out.setdefault(str(cls), {})[str(seq)] = {
            "n": int(row["n"]), "median": round_floats(float(row["median"]), 2),
            "q25": round_floats(float(row["q25"]), 2),
            "q75": round_floats(float(row["q75"]), 2),
            "iqr": round_floats(float(row["iqr"]), 2),
            "share_below_1": round_floats(float(row["share_below_1"]), 3),
        }
    return out


def summary(manifest: pd.DataFrame, stats_df: pd.DataFrame, audit: dict[str, Any],
            lesions: pd.DataFrame | None = None) -> dict:
    """The numbers eda.json keeps for DVC and the report: stable keys, rounded for stable diffs.
    `lesions` is a conspicuity_table; it is kept under "conspicuity" when given."""
    counts = counts_table(manifest)
    lesion = stats_df.dropna(subset=["lesion_share"])
    lesion = lesion[lesion["lesion_share"] > 0]
    out = {
        "n_images": int(len(manifest)),
        "n_classes": int(manifest["class"].nunique()),
        "counts": {cls: {col: int(v) for col, v in row.items()} for cls, row in counts.iterrows()},
        "image_size": {
            "n_distinct": int(stats_df[["width", "height"]].drop_duplicates().shape[0]),
            "min_side": int(stats_df[["width", "height"]].min().min()),
            "max_side": int(stats_df[["width", "height"]].max().max()),
        },
        "intensity_mean_by_class": {
            str(c): round_floats(float(v), 3)
            for c, v in stats_df.groupby("class")["mean"].mean().items()
        },
        "kruskal_mean_intensity": _significant(kruskal_by_class(stats_df, "mean")),
        "kruskal_intensity_std": _significant(kruskal_by_class(stats_df, "std")),
        "lesion_share_of_head": {
            str(c): {"median": round_floats(float(g.median()), 4),
                     "min": round_floats(float(g.min()), 4),
                     "max": round_floats(float(g.max()), 4)}
            for c, g in lesion.groupby("class")["lesion_share"]
        },
        "audit_findings": int(sum(audit.get("counts", {}).get("findings_by_kind", {}).values())),
    }
    if lesions is not None:
        out["conspicuity"] = {"ring_px_at_128": RING_PX_AT_128, "splits": "all",
                              "by_class_sequence": conspicuity_summary(lesions)}
    return out


def _significant(d: dict[str, float]) -> dict[str, float]:
    """Test statistics and p-values to lib.jsonio.SIGNIFICANT significant digits (counts as is)."""
    return {k: (v if isinstance(v, int) else significant(v)) for k, v in d.items()}
