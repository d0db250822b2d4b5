"""The evaluate stage's figures (05): confusion, ROC/PR, reliability, error gallery, comparison."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..figures import EVAL_DPI, mosaic_figure, readable, text_pt, thumbnail
from ..stats import row_normalise


@readable(EVAL_DPI)
def confusion_matrices(cm: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """Counts and row-normalised shares side by side (rows true, columns predicted), each with
    its colour bar."""
    cm = np.asarray(cm)
    shares = row_normalise(cm)
    size = 2.6 + 0.45 * len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 0.8, size - 0.2))
    for ax, data, fmt, name, bar in (
            (axes[0], cm, "d", "counts", "test images"),
            (axes[1], shares, ".2f", "share of true class (recall)", "share of the row")):
        sns.heatmap(data, annot=True, fmt=fmt, cmap="Blues", square=True, ax=ax,
                    xticklabels=classes, yticklabels=classes,
                    annot_kws={"fontsize": text_pt(EVAL_DPI)}, vmin=0,
                    vmax=1 if fmt != "d" else None,
                    cbar_kws={"label": bar, "shrink": 0.85, "pad": 0.03})
        ax.set(xlabel="predicted", ylabel="true", title=name)
        ax.tick_params(axis="x", labelrotation=35)
        ax.tick_params(axis="y", labelrotation=0)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@readable(EVAL_DPI)
def roc_pr_curves(roc: pd.DataFrame, pr: pd.DataFrame, roc_auc: dict[str, float | None],
                  pr_auc: dict[str, float | None], prevalence: dict[str, float] | None = None,
                  title: str = "") -> Figure:
    """One-vs-rest ROC (class, fpr, tpr) and precision-recall (class, recall, precision) curves.

    One legend below both panels carries each class's AUC and average precision; dotted lines
    are chance (the diagonal, and each class's prevalence for PR).
    """
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.6))
    colours = dict(zip(roc_auc, sns.color_palette("colorblind", len(roc_auc)), strict=False))
    handles = []
    for cls, group in roc.groupby("class", sort=False):
        (line,) = axes[0].plot(group["fpr"], group["tpr"], color=colours.get(cls), lw=1.5,
                               label=f"{cls}: AUC {fmt3(roc_auc.get(cls), 2)}, "
                                     f"AP {fmt3(pr_auc.get(cls), 2)}")
        handles.append(line)
    for cls, group in pr.groupby("class", sort=False):
        axes[1].step(group["recall"], group["precision"], where="post", color=colours.get(cls),
                     lw=1.5)
        if prevalence and cls in prevalence:
            axes[1].axhline(prevalence[cls], color=colours.get(cls), ls=":", lw=0.9)
    axes[0].plot([0, 1], [0, 1], ":", color="grey", lw=0.9)
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate",
                title=f"ROC (macro AUC {fmt3(roc_auc.get('macro'))})")
    axes[1].set(xlabel="recall", ylabel="precision",
                title=f"Precision-recall (macro AP {fmt3(pr_auc.get('macro'))})")
    for ax in axes:
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="lower center", ncols=2, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07 * (1 + (len(handles) - 1) // 2), 1, 1))
    return fig


def fmt3(v: float | None, digits: int = 3) -> str:
    """A score for a legend or title, or n/a when it is undefined."""
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


@readable(EVAL_DPI)
def reliability_diagram(tables: dict[str, pd.DataFrame], scores: dict[str, dict[str, float]],
                        title: str = "") -> Figure:
    """Accuracy against confidence per bin, one line per version (before / after temperature).

    `tables` hold lo, hi, count, confidence, accuracy per bin; `scores` the ECE, Brier and NLL.
    Below the diagonal is over-confidence. The right panel shows where the confidences fall.
    One legend below both panels.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.4), gridspec_kw={"width_ratios": [1.2, 1]})
    colours = sns.color_palette("colorblind", max(1, len(tables)))
    axes[0].plot([0, 1], [0, 1], ":", color="grey", lw=0.9, label="perfect calibration")
    for (label, table), colour in zip(tables.items(), colours, strict=False):
        used = table[table["count"] > 0]
        s = scores.get(label, {})
        axes[0].plot(used["confidence"], used["accuracy"], "o-", color=colour, ms=4, lw=1.4,
                     label=f"{label}: ECE {fmt3(s.get('ece'))}, NLL {fmt3(s.get('nll'))}")
        centres = (table["lo"] + table["hi"]) / 2
        width = float((table["hi"] - table["lo"]).iloc[0])
        axes[1].bar(centres, table["count"], width=width, color=colour, alpha=0.5)
    axes[0].set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top class)", ylabel="accuracy",
                title="Reliability")
    axes[1].set(xlim=(0, 1), xlabel="confidence (top class)", ylabel="test images",
                title="Confidence histogram")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


GALLERY_NOTE = "Above each image: probability of the predicted (wrong) class vs the true class"


@readable(EVAL_DPI)
def error_gallery(rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[np.ndarray | None],
                                       Sequence[str]]], ncols: int, title: str = "",
                  tile: int = 112, dpi: int = EVAL_DPI, note: str = GALLERY_NOTE) -> Figure:
    """Misclassified images, one row per (true → predicted) pair, masks as red outlines.

    Each row is (row title, images, masks, captions), as ``gallery_rows`` makes them (most
    confident mistake first); no rows draws a figure that says so. Drawn as one mosaic (one
    image, one contour) at `tile` px per image, every text at the report's body size: fast even
    with dozens of images, and small enough to embed. Save at the same dpi for 1:1 pixels.
    """
    ncols = max(1, ncols)
    if not rows:
        fig, ax = plt.subplots(figsize=(4, 0.8))
        ax.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        ax.set_axis_off()
        if title:
            ax.set_title(title)
        return fig
    tiles, outlines, captions = [], [], []
    for _, images, masks, labels in rows:
        shown = list(zip(images, masks, labels, strict=True))[:ncols]
        tiles.append([thumbnail(np.asarray(img), tile) for img, _, _ in shown])
        outlines.append([thumbnail(np.asarray(mask), tile, True)
                         if mask is not None and np.any(mask) else None for _, mask, _ in shown])
        captions.append([caption for _, _, caption in shown])
    heading = "\n".join(t for t in (title, note) if t)
    return mosaic_figure(tiles, outlines, captions, [row[0] for row in rows], dpi=dpi,
                         title=heading, image_kw={"cmap": "gray", "vmin": 0, "vmax": 255},
                         outline_kw={"colors": "red", "linewidths": 0.8})


@readable(EVAL_DPI)
def model_comparison(table: pd.DataFrame, title: str = "") -> Figure:
    """Forest plot: one row per model, a point and its CI per metric (columns metric, model,
    value, lo, hi); models ordered as they first appear (best first)."""
    metrics = list(dict.fromkeys(table["metric"]))
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics) + 2.8,
                                                       0.5 * len(models) + 1.2),
                             sharey=True, squeeze=False)
    y = {m: i for i, m in enumerate(reversed(models))}
    for ax, metric in zip(axes[0], metrics, strict=True):
        data = table[table["metric"] == metric]
        pos = data["model"].map(y).to_numpy()
        err = [data["value"] - data["lo"], data["hi"] - data["value"]]
        ax.errorbar(data["value"], pos, xerr=err, fmt="o", color="C0", capsize=3, ms=4)
        for v, p in zip(data["value"], pos, strict=True):
            ax.annotate(f"{v:.3f}", (v, p), textcoords="offset points", xytext=(0, 3),
                        ha="center", va="bottom")
        ax.set(xlabel=metric, ylim=(-0.6, len(models) - 0.2))
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(list(y.values()), list(y.keys()))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def gallery_rows(errors: pd.DataFrame, raw_dir: Path | str
                 ) -> list[tuple[str, list[np.ndarray], list[np.ndarray], list[str]]]:
    """(row title, images, masks, captions) per error pair, images as stored in raw_dir.

    Pairs keep the order of `errors` (``misclassified``: the most frequent pair first); within a
    pair the most confident mistake comes first (highest probability of the wrong class), the
    order the report's caption states. Captions: p(predicted) vs p(true)."""
    from ..data.images import load_image, load_mask

    rows = []
    for (true, predicted), group in errors.groupby(["true", "predicted"], sort=False):
        group = group.sort_values("confidence", ascending=False, kind="stable")
        images = [load_image(Path(raw_dir), p) for p in group["path"]]
        masks = [load_mask(Path(raw_dir), m, img.shape) for m, img in zip(
            group["mask"], images, strict=True)]
        captions = [f"{c:.2f} vs {t:.2f}" for c, t in zip(
            group["confidence"], group["p_true"], strict=True)]
        n = int(group["errors"].iat[0])
        rows.append((f"true {true}\n→ {predicted}\n({n} image{'s' * (n != 1)})", images, masks,
                     captions))
    return rows
