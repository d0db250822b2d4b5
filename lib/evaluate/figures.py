"""The evaluate stage's figures (05): confusion, ROC/PR, reliability, error gallery, comparison."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..figures import EVAL_DPI, mosaic_figure, thumbnail
from ..stats import row_normalise


def confusion_matrices(cm: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """Counts and row-normalised shares side by side (rows true, columns predicted)."""
    cm = np.asarray(cm)
    shares = row_normalise(cm)
    size = 1.9 + 0.55 * len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 0.6, size))
    for ax, data, fmt, name in ((axes[0], cm, "d", "counts"),
                                (axes[1], shares, ".2f", "share of true class (recall)")):
        sns.heatmap(data, annot=True, fmt=fmt, cmap="Blues", cbar=False, square=True, ax=ax,
                    xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 7},
                    vmin=0, vmax=1 if fmt != "d" else None)
        ax.set(xlabel="predicted", ylabel="true", title=name)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def roc_pr_curves(roc: pd.DataFrame, pr: pd.DataFrame, roc_auc: dict[str, float | None],
                  pr_auc: dict[str, float | None], prevalence: dict[str, float] | None = None,
                  title: str = "") -> Figure:
    """One-vs-rest ROC (class, fpr, tpr) and precision-recall (class, recall, precision) curves.

    Legends carry each class's AUC / average precision; dotted lines are chance (the diagonal,
    and each class's prevalence for PR).
    """
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.5))
    colours = dict(zip(roc_auc, sns.color_palette("colorblind", len(roc_auc)), strict=False))
    for cls, group in roc.groupby("class", sort=False):
        axes[0].plot(group["fpr"], group["tpr"], color=colours.get(cls),
                     label=f"{cls} ({roc_auc[cls]:.2f})", lw=1.3)
    for cls, group in pr.groupby("class", sort=False):
        axes[1].step(group["recall"], group["precision"], where="post", color=colours.get(cls),
                     label=f"{cls} ({pr_auc[cls]:.2f})", lw=1.3)
        if prevalence and cls in prevalence:
            axes[1].axhline(prevalence[cls], color=colours.get(cls), ls=":", lw=0.8)
    axes[0].plot([0, 1], [0, 1], ":", color="grey", lw=0.8)

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    axes[0].set(xlabel="false positive rate", ylabel="true positive rate",
                title=f"ROC (macro AUC {fmt(roc_auc.get('macro'))})")
    axes[1].set(xlabel="recall", ylabel="precision",
                title=f"Precision-recall (macro AP {fmt(pr_auc.get('macro'))})")
    for ax in axes:
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is axes[0] else "lower left")
        ax.title.set_fontsize(9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def reliability_diagram(tables: dict[str, pd.DataFrame], scores: dict[str, dict[str, float]],
                        title: str = "") -> Figure:
    """Accuracy against confidence per bin, one line per version (before / after temperature).

    `tables` hold lo, hi, count, confidence, accuracy per bin; `scores` the ECE, Brier and NLL.
    Below the diagonal is over-confidence. The right panel shows where the confidences fall.
    """
    fig, axes = plt.subplots(1, 2, figsize=(8.2, 3.4), gridspec_kw={"width_ratios": [1.3, 1]})
    colours = sns.color_palette("colorblind", max(1, len(tables)))
    axes[0].plot([0, 1], [0, 1], ":", color="grey", lw=0.8, label="perfect calibration")
    for (label, table), colour in zip(tables.items(), colours, strict=False):
        used = table[table["count"] > 0]
        s = scores.get(label, {})
        axes[0].plot(used["confidence"], used["accuracy"], "o-", color=colour, ms=3, lw=1.2,
                     label=f"{label}: ECE {s.get('ece', np.nan):.3f}, "
                           f"NLL {s.get('nll', np.nan):.3f}")
        centres = (table["lo"] + table["hi"]) / 2
        width = float((table["hi"] - table["lo"]).iloc[0])
        axes[1].bar(centres, table["count"], width=width, color=colour, alpha=0.5, label=label)
    axes[0].set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top class)", ylabel="accuracy",
                title="Reliability")
    axes[1].set(xlim=(0, 1), xlabel="confidence (top class)", ylabel="test images",
                title="Confidence histogram")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        ax.title.set_fontsize(9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def error_gallery(rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[np.ndarray | None],
                                       Sequence[str]]], ncols: int, title: str = "",
                  tile: int = 72, dpi: int = EVAL_DPI) -> Figure:
    """Misclassified images, one row per (true → predicted) pair, masks as red outlines.

    Each row is (row title, images, masks, captions); no rows draws a figure that says so.
    Drawn as one mosaic (one image, one contour) at `tile` px per image: fast even with
    dozens of images, and small enough to embed. Save at the same dpi for 1:1 pixels.
    """
    ncols = max(1, ncols)
    if not rows:
        fig, ax = plt.subplots(figsize=(4, 0.8))
        ax.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        ax.set_axis_off()
        if title:
            ax.set_title(title, fontsize=9)
        return fig
    gap_x, gap_y = 4, 12  # pixels; gap_y leaves room for each image's caption
    height, width = len(rows) * (tile + gap_y), ncols * (tile + gap_x) - gap_x
    mosaic = np.full((height, width), 255, dtype=np.uint8)
    outline = np.zeros((height, width), dtype=bool)
    labels = []
    for r, (_, images, masks, captions) in enumerate(rows):
        for c, (img, mask, caption) in enumerate(zip(images, masks, captions, strict=True)):
            if c >= ncols:
                break
            y0, x0 = r * (tile + gap_y) + gap_y, c * (tile + gap_x)
            mosaic[y0:y0 + tile, x0:x0 + tile] = thumbnail(np.asarray(img), tile)
            if mask is not None and np.any(mask):
                outline[y0:y0 + tile, x0:x0 + tile] = thumbnail(np.asarray(mask), tile, True)
            labels.append((x0 + tile / 2, y0 - 2, caption))
    row_labels = [(r * (tile + gap_y) + gap_y + tile / 2, row_title)
                  for r, (row_title, *_rest) in enumerate(rows)]
    fig, _ = mosaic_figure(mosaic, outline, labels, row_labels, dpi=dpi, left_in=1.1,
                            title=title, image_kw={"cmap": "gray", "vmin": 0, "vmax": 255},
                            outline_kw={"colors": "red", "linewidths": 0.5})
    return fig


def model_comparison(table: pd.DataFrame, title: str = "") -> Figure:
    """Forest plot: one row per model, a point and its CI per metric (columns metric, model,
    value, lo, hi); models ordered as they first appear (best first)."""
    metrics = list(dict.fromkeys(table["metric"]))
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics) + 1.6,
                                                       0.45 * len(models) + 1.1),
                             sharey=True, squeeze=False)
    y = {m: i for i, m in enumerate(reversed(models))}
    for ax, metric in zip(axes[0], metrics, strict=True):
        data = table[table["metric"] == metric]
        pos = data["model"].map(y).to_numpy()
        err = [data["value"] - data["lo"], data["hi"] - data["value"]]
        ax.errorbar(data["value"], pos, xerr=err, fmt="o", color="C0", capsize=3, ms=4)
        for v, p in zip(data["value"], pos, strict=True):
            ax.annotate(f"{v:.3f}", (v, p), textcoords="offset points", xytext=(0, 5),
                        ha="center", fontsize=6.5)
        ax.set(xlabel=metric, ylim=(-0.6, len(models) - 0.4))
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(list(y.values()), list(y.keys()), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def gallery_rows(errors: pd.DataFrame, raw_dir: Path | str
                 ) -> list[tuple[str, list[np.ndarray], list[np.ndarray], list[str]]]:
    """(row title, images, masks, captions) per error pair, images as stored in raw_dir."""
    from ..data.images import load_image, load_mask

    rows = []
    for (true, predicted), group in errors.groupby(["true", "predicted"], sort=False):
        images = [load_image(Path(raw_dir), p) for p in group["path"]]
        masks = [load_mask(Path(raw_dir), m, img.shape) for m, img in zip(
            group["mask"], images, strict=True)]
        captions = [f"p {c:.2f} (true {t:.2f})" for c, t in zip(
            group["confidence"], group["p_true"], strict=True)]
        n = int(group["errors"].iat[0])
        rows.append((f"true {true}\n→ {predicted}\n({n} image{'s' * (n != 1)})", images, masks,
                     captions))
    return rows
