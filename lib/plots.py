"""Figures of the study, one function per figure; each returns a Figure to show or save."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

PNG_METADATA = {"Software": None}  # no version string in the bytes: same figure, same file


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a PNG with fixed dpi and no metadata, so re-runs give byte-identical files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata=PNG_METADATA)
    return path


def counts_bar(counts: pd.DataFrame) -> Figure:
    """Images per class and split (a table of class rows, split columns)."""
    data = counts.drop(columns="total", errors="ignore").reset_index()
    long = data.melt(id_vars="class", var_name="split", value_name="images")
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    sns.barplot(long, x="class", y="images", hue="split", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fontsize=7)
    ax.set_title("Images per class and split")
    fig.tight_layout()
    return fig


def size_scatter(stats_df: pd.DataFrame) -> Figure:
    """Width × height per class: a class with its own image size is a shortcut waiting to happen."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    jitter = np.random.default_rng(0).normal(0, 0.6, size=(len(stats_df), 2))
    ax.scatter(stats_df["width"] + jitter[:, 0], stats_df["height"] + jitter[:, 1], s=6,
               c=pd.Categorical(stats_df["class"]).codes, cmap="tab10", alpha=0.6)
    for i, cls in enumerate(pd.Categorical(stats_df["class"]).categories):
        ax.scatter([], [], color=plt.get_cmap("tab10")(i), label=cls, s=12)
    ax.legend(fontsize=7, loc="best")
    ax.set(xlabel="width (px)", ylabel="height (px)", title="Image sizes")
    fig.tight_layout()
    return fig


def intensity_by_class(stats_df: pd.DataFrame) -> Figure:
    """Per-image mean and spread of intensity inside the head, per class."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    sns.violinplot(stats_df, x="class", y="mean", ax=axes[0], cut=0, inner="quartile")
    axes[0].set(title="Mean intensity in the head", ylabel="mean (0-255)")
    sns.violinplot(stats_df, x="class", y="std", ax=axes[1], cut=0, inner="quartile")
    axes[1].set(title="Intensity spread in the head", ylabel="std (0-255)")
    fig.tight_layout()
    return fig


def lesion_share(stats_df: pd.DataFrame) -> Figure:
    """Lesion area as a share of the head, tumour classes only."""
    data = stats_df.dropna(subset=["lesion_share"])
    data = data[data["lesion_share"] > 0]
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    if data.empty:
        ax.text(0.5, 0.5, "no masks in this dataset", ha="center", va="center")
        ax.set_axis_off()
        return fig
    sns.boxplot(data.assign(percent=100 * data["lesion_share"]), x="class", y="percent", ax=ax)
    ax.set(title="Lesion area (% of head area)", ylabel="%")
    fig.tight_layout()
    return fig


def image_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
               titles: Sequence[str], ncols: int) -> Figure:
    """Images in a grid with each mask drawn as a red outline."""
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.7 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, img, mask, title in zip(axes.ravel(), images, masks, titles, strict=False):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig


def mean_images(means: dict[str, np.ndarray]) -> Figure:
    """Mean image per class and its difference from the all-class mean."""
    classes = list(means)
    overall = np.mean([means[c] for c in classes], axis=0)
    fig, axes = plt.subplots(2, len(classes), figsize=(2.1 * len(classes), 4.3), squeeze=False)
    lim = max(float(np.abs(means[c] - overall).max()) for c in classes) or 1.0
    for i, cls in enumerate(classes):
        axes[0, i].imshow(means[cls], cmap="gray")
        axes[0, i].set_title(cls, fontsize=8)
        im = axes[1, i].imshow(means[cls] - overall, cmap="coolwarm", vmin=-lim, vmax=lim)
        axes[1, i].set_title("minus all-class mean", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.7)
    return fig


def publish(fig: Figure, name: str, figures_dir: str | Path | None = None) -> None:
    """Save (when a folder is given) and show a figure once, then free it: the notebook idiom."""
    if figures_dir:
        save(fig, Path(figures_dir) / f"{name}.png")
    try:
        from IPython.display import display

        display(fig)
    finally:
        plt.close(fig)


def augment_grid(images_by_row: list[np.ndarray], masks_by_row: list[np.ndarray],
                 row_titles: list[str], col_titles: Sequence[str] | None = None) -> Figure:
    """Augmented copies of one image per row, each mask a red outline: it must move with the tumour.

    Row i shows images_by_row[i] (n, H, W) with masks_by_row[i] (n, H, W); grayscale 0-255.
    """
    nrows = max(1, len(images_by_row))
    ncols = max((len(row) for row in images_by_row), default=1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.25 * ncols + 0.3, 1.3 * nrows),
                             squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, (imgs, masks, title) in enumerate(zip(images_by_row, masks_by_row, row_titles,
                                                 strict=True)):
        for c, (img, mask) in enumerate(zip(imgs, masks, strict=True)):
            ax = axes[r, c]
            ax.imshow(np.squeeze(img), cmap="gray", vmin=0, vmax=255)
            if mask is not None and np.any(mask):  # same outline style as image_grid
                ax.contour(np.squeeze(mask).astype(float), levels=[0.5], colors="red",
                           linewidths=0.8)
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
        axes[r, 0].text(-0.06, 0.5, title, transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=7)
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=0.2)
    return fig


def training_curves(histories: dict[str, pd.DataFrame], title: str = "",
                    monitor: str = "val_loss") -> Figure:
    """Loss and macro-F1 per epoch, train (dashed) and validation (solid), one colour per run.

    A widening gap between the two is overfitting; the marker is the epoch kept (best `monitor`).
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    colours = sns.color_palette("colorblind", max(1, len(histories)))
    for (label, hist), colour in zip(histories.items(), colours, strict=False):
        if hist.empty:
            continue
        col = hist[monitor]
        best = int(col.idxmin() if monitor.endswith("loss") else col.idxmax())
        for ax, metric in zip(axes, ("loss", "macro_f1"), strict=True):
            if metric not in hist:
                continue
            ax.plot(hist["epoch"] + 1, hist[metric], "--", color=colour, alpha=0.7)
            ax.plot(hist["epoch"] + 1, hist[f"val_{metric}"], "-", color=colour, label=label)
            ax.plot(hist["epoch"][best] + 1, hist[f"val_{metric}"][best], "o", color=colour)
    for ax, name in zip(axes, ("loss", "macro-F1"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7, title="val (solid), train (dashed)", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
