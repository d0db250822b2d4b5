"""Training-side figures: the augmentation preview (02) and the learning curves (03, 04)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..figures import SAVE_DPI, readable


@readable(SAVE_DPI)
def augment_grid(images_by_row: list[np.ndarray], masks_by_row: list[np.ndarray],
                 row_titles: list[str], col_titles: Sequence[str] | None = None) -> Figure:
    """Augmented copies of one image per row, each mask a red outline: it must move with the tumour.

    Row i shows images_by_row[i] (n, H, W) with masks_by_row[i] (n, H, W); grayscale 0-255.
    """
    nrows = max(1, len(images_by_row))
    ncols = max((len(row) for row in images_by_row), default=1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(1.35 * ncols + 0.5, 8.4), 1.5 * nrows),
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
                ax.set_title(col_titles[c])
        axes[r, 0].text(-0.06, 0.5, title, transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center")
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=0.2)
    return fig


@readable(SAVE_DPI)
def training_curves(histories: dict[str, pd.DataFrame], title: str = "",
                    monitor: str = "val_loss") -> Figure:
    """Loss and macro-F1 per epoch, train (dashed) and validation (solid), one colour per run;
    a third panel for the localisation term when the runs were guided (lib.train.guided).

    Epochs are counted from 1, as Keras prints them (the history's 0-based ``epoch`` + 1; the
    report shows the kept epoch the same way), on integer ticks. A widening gap between the two
    lines is overfitting; the dot is the epoch kept (best `monitor`).
    """
    panels = [("loss", "loss"), ("macro_f1", "macro-F1")]
    if any("localisation" in h for h in histories.values()):
        panels.append(("localisation", "localisation term"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.9))
    colours = sns.color_palette("colorblind", max(1, len(histories)))
    handles = []
    for (label, hist), colour in zip(histories.items(), colours, strict=False):
        if hist.empty:
            continue
        col = hist[monitor]
        best = col.idxmin() if monitor.endswith("loss") else col.idxmax()
        epoch = hist["epoch"] + 1
        for ax, (metric, _) in zip(axes, panels, strict=True):
            if metric not in hist:
                continue
            ax.plot(epoch, hist[metric], "--", color=colour, alpha=0.7)
            ax.plot(epoch, hist[f"val_{metric}"], "-", color=colour)
            ax.plot(epoch[best], hist[f"val_{metric}"][best], "o", color=colour, ms=7)
        handles.append(Line2D([], [], color=colour, label=label))
    for ax, (_, name) in zip(axes, panels, strict=True):
        ax.set_xlabel("epoch (from 1)")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1.02)
    handles += [Line2D([], [], color="grey", ls="-", label="validation"),
                Line2D([], [], color="grey", ls="--", label="training"),
                Line2D([], [], color="grey", ls="", marker="o", label="epoch kept")]
    fig.legend(handles=handles, loc="lower center", ncols=min(len(handles), 6), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig
