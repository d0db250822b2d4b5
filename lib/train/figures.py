"""Training-side figures: the augmentation preview (02) and the learning curves (03, 04)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure


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
