"""The EDA stage's figures (01_eda): counts, sizes, intensities, samples, conspicuity, means."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure


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


def conspicuity_by_class(per_image: pd.DataFrame, sequence_order: Sequence[str] | None = None,
                         visible: float = 1.0) -> Figure:
    """Lesion conspicuity per class (x) and sequence (colour), one dot per lesion; below the
    dashed line a reader cannot tell the lesion from the tissue around it."""
    data = per_image.dropna(subset=["conspicuity"])
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    if data.empty:
        ax.text(0.5, 0.5, "no lesion masks in this dataset", ha="center", va="center")
        ax.set_axis_off()
        return fig
    order = sorted(data["class"].unique())
    hue_order = list(sequence_order) if sequence_order else sorted(data["sequence"].unique())
    sns.boxplot(data, x="class", y="conspicuity", hue="sequence", order=order,
                hue_order=hue_order, ax=ax, showfliers=False, fill=False, legend=False)
    from ..stats import numpy_global_seed

    with numpy_global_seed(0):  # seaborn's jitter: seeded, so the figure's bytes reproduce
        sns.stripplot(data, x="class", y="conspicuity", hue="sequence", order=order,
                      hue_order=hue_order, ax=ax, dodge=True, size=2.5, alpha=0.6, jitter=0.2)
    ax.axhline(visible, color="black", linestyle="--", linewidth=1)
    ax.text(1.0, visible, f" {visible:g}", transform=ax.get_yaxis_transform(), va="center",
            fontsize=7)
    ax.set_ylim(bottom=0)
    ax.set(title="Lesion conspicuity: |lesion − ring| / sd(ring)", xlabel="",
           ylabel="conspicuity")
    ax.legend(title="sequence", fontsize=7, title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig


def lesion_ring(image: np.ndarray, mask: np.ndarray, ring: np.ndarray, title: str = "") -> Figure:
    """One image as a reader sees it, and again with the lesion (red) and the ring of tissue it is
    compared with (yellow) outlined: what a conspicuity number measures."""
    fig, axes = plt.subplots(1, 2, figsize=(5.0, 2.7))
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
    yellow = np.zeros((*ring.shape, 4))
    yellow[ring] = (1.0, 0.9, 0.0, 0.55)
    axes[1].imshow(yellow)
    axes[1].contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
    axes[0].set_title("as a reader sees it", fontsize=8)
    axes[1].set_title("lesion (red), ring (yellow)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
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
