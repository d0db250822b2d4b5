"""The EDA stage's figures (01_eda): counts, sizes, intensities, samples, conspicuity, means."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..figures import SAVE_DPI, readable

MAX_SIZE_ROWS = 12  # up to this many distinct image sizes, one row each; more: a scatter


@readable(SAVE_DPI)
def counts_bar(counts: pd.DataFrame) -> Figure:
    """Images per class and split (a table of class rows, split columns)."""
    data = counts.drop(columns="total", errors="ignore").reset_index()
    long = data.melt(id_vars="class", var_name="split", value_name="images")
    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    sns.barplot(long, x="class", y="images", hue="split", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, padding=2)
    ax.margins(y=0.15)
    ax.set(title="Images per class and split", xlabel="")
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


@readable(SAVE_DPI)
def size_scatter(stats_df: pd.DataFrame) -> Figure:
    """Image sizes per class: a class with its own image size is a shortcut waiting to happen.

    One marker per distinct size and class, its area growing with the number of images of that
    size and the count written beside it; no jitter, so a constant size shows as one point per
    class. Up to MAX_SIZE_ROWS distinct sizes: a dot table (size rows, class columns); more: a
    width × height scatter with hollow markers (overlapping classes stay visible). Each class
    has one colour, used by its markers and its legend entry alike.
    """
    classes = list(pd.Categorical(stats_df["class"]).categories)
    colours = dict(zip(classes, sns.color_palette("colorblind", max(1, len(classes))),
                       strict=False))
    counts = (stats_df.groupby(["class", "width", "height"], observed=True).size()
              .rename("n").reset_index())
    sizes = (counts.groupby(["width", "height"])["n"].sum().reset_index()
             .assign(area=lambda d: d["width"] * d["height"]).sort_values(["area", "width"]))
    top = max(1, int(counts["n"].max())) if len(counts) else 1

    def area(n: pd.Series) -> np.ndarray:
        return 30 + 370 * np.sqrt(n.to_numpy() / top)

    if len(sizes) <= MAX_SIZE_ROWS:
        row = {(w, h): k for k, (w, h) in enumerate(zip(sizes["width"], sizes["height"],
                                                         strict=True))}
        fig, ax = plt.subplots(figsize=(1.6 * max(2, len(classes)) + 1.8,
                                        0.55 * len(sizes) + 2.0))
        for k, cls in enumerate(classes):
            sub = counts[counts["class"] == cls]
            ys = [row[(w, h)] for w, h in zip(sub["width"], sub["height"], strict=True)]
            ax.scatter(np.full(len(sub), k), ys, s=area(sub["n"]), color=colours[cls],
                       label=cls)
            for y, n in zip(ys, sub["n"], strict=True):
                ax.annotate(f"{n}", (k, y), textcoords="offset points", xytext=(14, 0),
                            va="center")
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(sizes)), [f"{w} × {h}" for w, h in zip(
            sizes["width"], sizes["height"], strict=True)])
        ax.set(xlim=(-0.6, len(classes) - 0.1), ylim=(-0.7, len(sizes) - 0.3),
               ylabel="width × height (px)")
        one = (f": every image is {sizes['width'].iat[0]} × {sizes['height'].iat[0]} px"
               if len(sizes) == 1 else "")
        ax.set_title(f"Images per size and class{one}")
        ax.grid(axis="y", alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(7.0, 5.0))
        for cls in classes:
            sub = counts[counts["class"] == cls]
            ax.scatter(sub["width"], sub["height"], s=area(sub["n"]), facecolors="none",
                       edgecolors=[colours[cls]], linewidths=1.4, label=cls)
        ax.set(xlabel="width (px)", ylabel="height (px)",
               title="Image sizes (marker area: images of that size)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@readable(SAVE_DPI)
def intensity_by_class(stats_df: pd.DataFrame) -> Figure:
    """Per-image mean and spread of intensity inside the head, per class."""
    fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.8))
    sns.violinplot(stats_df, x="class", y="mean", ax=axes[0], cut=0, inner="quartile")
    axes[0].set(title="Mean intensity in the head", ylabel="mean (0-255)")
    sns.violinplot(stats_df, x="class", y="std", ax=axes[1], cut=0, inner="quartile")
    axes[1].set(title="Intensity spread in the head", ylabel="std (0-255)")
    for ax in axes:
        ax.set_xlabel("")
    fig.tight_layout()
    return fig


@readable(SAVE_DPI)
def lesion_share(stats_df: pd.DataFrame) -> Figure:
    """Lesion area as a share of the head, tumour classes only."""
    data = stats_df.dropna(subset=["lesion_share"])
    data = data[data["lesion_share"] > 0]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    if data.empty:
        ax.text(0.5, 0.5, "no masks in this dataset", ha="center", va="center")
        ax.set_axis_off()
        return fig
    sns.boxplot(data.assign(percent=100 * data["lesion_share"]), x="class", y="percent", ax=ax)
    ax.set(title="Lesion area (% of head area)", ylabel="% of head area", xlabel="")
    fig.tight_layout()
    return fig


@readable(SAVE_DPI)
def image_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
               titles: Sequence[str], ncols: int) -> Figure:
    """Images in a grid with each mask drawn as a red outline.

    Titles are shown at the report's body size with file extensions dropped (``short_title``), so
    six tiles and their titles fit the width the report shows a figure at.
    """
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    width = min(1.6 * ncols, 8.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, (width / ncols + 0.5) * nrows),
                             squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, img, mask, title in zip(axes.ravel(), images, masks, titles, strict=False):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(short_title(title))
    fig.tight_layout(pad=0.4, w_pad=0.3, h_pad=0.3)
    return fig


def short_title(title: str) -> str:
    """A tile title without image file extensions (`glioma_0058.png` -> `glioma_0058`)."""
    import re

    return re.sub(r"\.(png|jpe?g|tiff?|bmp|dcm)$", "", str(title), flags=re.I | re.M)


@readable(SAVE_DPI)
def conspicuity_by_class(per_image: pd.DataFrame, sequence_order: Sequence[str] | None = None,
                         visible: float = 1.0) -> Figure:
    """Lesion conspicuity per class (x) and sequence (colour), one dot per lesion; below the
    dashed line a reader cannot tell the lesion from the tissue around it."""
    data = per_image.dropna(subset=["conspicuity"])
    fig, ax = plt.subplots(figsize=(7.2, 3.9))
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
    ax.text(1.0, visible, f" {visible:g}", transform=ax.get_yaxis_transform(), va="center")
    ax.set_ylim(bottom=0)
    ax.set(title="Lesion conspicuity: |lesion − ring| / sd(ring)", xlabel="",
           ylabel="conspicuity")
    ax.legend(title="sequence", loc="upper left", bbox_to_anchor=(1.06, 1.0), frameon=False)
    fig.tight_layout()
    return fig


@readable(SAVE_DPI)
def lesion_ring(image: np.ndarray, mask: np.ndarray, ring: np.ndarray, title: str = "") -> Figure:
    """One image as a reader sees it, and again with the lesion (red) and the ring of tissue it is
    compared with (yellow) outlined: what a conspicuity number measures."""
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.6))
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
    yellow = np.zeros((*ring.shape, 4))
    yellow[ring] = (1.0, 0.9, 0.0, 0.55)
    axes[1].imshow(yellow)
    axes[1].contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
    axes[0].set_title("as a reader sees it")
    axes[1].set_title("lesion (red), ring (yellow)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@readable(SAVE_DPI)
def mean_images(means: dict[str, np.ndarray]) -> Figure:
    """Mean image per class (one grey scale for all, with its colour bar) and its difference
    from the all-class mean (a diverging scale centred on 0, with its colour bar)."""
    classes = list(means)
    overall = np.mean([means[c] for c in classes], axis=0)
    fig, axes = plt.subplots(2, len(classes), figsize=(1.75 * len(classes) + 1.5, 4.4),
                             squeeze=False, layout="constrained")
    lo = min(float(np.min(means[c])) for c in classes)
    hi = max(float(np.max(means[c])) for c in classes)
    lim = max(float(np.abs(means[c] - overall).max()) for c in classes) or 1.0
    for i, cls in enumerate(classes):
        grey = axes[0, i].imshow(means[cls], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        axes[0, i].set_title(cls)
        diff = axes[1, i].imshow(means[cls] - overall, cmap="coolwarm", vmin=-lim, vmax=lim)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, name in enumerate(("class mean", "minus the mean\nof all classes")):
        axes[r, 0].text(-0.08, 0.5, name, transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center")
    fig.colorbar(grey, ax=axes[0, :].tolist(), shrink=0.9, label="intensity")
    fig.colorbar(diff, ax=axes[1, :].tolist(), shrink=0.9, label="difference")
    return fig
