"""Figures of the study, one function per figure; each returns a Figure to show or save."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .stats import row_normalise

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
    from .stats import numpy_global_seed

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


# --------------------------------------------------------------------------------------------
# Evaluation (05_evaluate): confusion, ROC/PR, reliability, misclassified gallery, comparison
# --------------------------------------------------------------------------------------------
EVAL_DPI = 100  # the report embeds every evaluation figure: keep each file small


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


def _thumbnail(image: np.ndarray, size: int, mask: bool = False) -> np.ndarray:
    """The image fitted into size x size (aspect kept, black padding); masks stay binary."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    pil = Image.fromarray((image > 0).astype(np.uint8) * 255 if mask else image.astype(np.uint8))
    small = np.asarray(pil.resize(new, Image.Resampling.NEAREST if mask
                                  else Image.Resampling.LANCZOS))
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new[1]) // 2, (size - new[0]) // 2
    out[top:top + new[1], left:left + new[0]] = small
    return out > 127 if mask else out


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
            mosaic[y0:y0 + tile, x0:x0 + tile] = _thumbnail(np.asarray(img), tile)
            if mask is not None and np.any(mask):
                outline[y0:y0 + tile, x0:x0 + tile] = _thumbnail(np.asarray(mask), tile, True)
            labels.append((x0 + tile / 2, y0 - 2, caption))
    row_labels = [(r * (tile + gap_y) + gap_y + tile / 2, row_title)
                  for r, (row_title, *_rest) in enumerate(rows)]
    fig, _ = _mosaic_figure(mosaic, outline, labels, row_labels, dpi=dpi, left_in=1.1,
                            title=title, image_kw={"cmap": "gray", "vmin": 0, "vmax": 255},
                            outline_kw={"colors": "red", "linewidths": 0.5})
    return fig


def _mosaic_figure(mosaic: np.ndarray, outline: np.ndarray,
                   labels: Sequence[tuple[float, float, str]],
                   row_labels: Sequence[tuple[float, str]], *, dpi: int, left_in: float,
                   title: str, image_kw: dict[str, Any], outline_kw: dict[str, Any]
                   ) -> tuple[Figure, Any]:
    """One pixel-exact image of tiles (each tile pixel one screen pixel at `dpi`), mask outlines
    drawn as contours, tile captions above each tile and row titles in a left margin."""
    height, width = mosaic.shape[:2]
    top_in = 0.3 if title else 0.05
    fig = plt.figure(figsize=(width / dpi + left_in, height / dpi + top_in), dpi=dpi)
    ax = fig.add_axes((left_in / fig.get_figwidth(), 0, width / dpi / fig.get_figwidth(),
                       height / dpi / fig.get_figheight()))
    ax.imshow(mosaic, interpolation="nearest", **image_kw)
    if outline.any():
        ax.contour(outline.astype(float), levels=[0.5], **outline_kw)
    for x, y, caption in labels:
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=5)
    for y, row_title in row_labels:
        ax.text(-6, y, row_title, ha="right", va="center", fontsize=6)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8, y=1 - 0.04 / fig.get_figheight(), va="top")
    return fig, ax


def compact_png(fig: Figure, dpi: int = EVAL_DPI, colors: int = 128) -> bytes:
    """PNG bytes with a small palette: 3-5x smaller than `save`'s and they read the same.

    Rendered like `save` (no metadata), then quantised without dithering, so the bytes are
    identical from run to run.
    """
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata=PNG_METADATA)
    buffer.seek(0)
    with Image.open(buffer) as image:
        small = image.convert("RGB").quantize(colors, method=Image.Quantize.FASTOCTREE,
                                              dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def save_compact(fig: Figure, path: str | Path, dpi: int = EVAL_DPI, colors: int = 128) -> Path:
    """Write `compact_png` to path (for figures the report embeds by the dozen)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compact_png(fig, dpi, colors))
    return path


def publish_compact(fig: Figure, name: str, figures_dir: str | Path | None = None) -> None:
    """`publish` with compact PNGs: the notebook shows the very bytes that are saved."""
    try:
        data = compact_png(fig)
        if figures_dir:
            path = Path(figures_dir) / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        from IPython.display import Image, display

        display(Image(data=data, format="png"))
    finally:
        plt.close(fig)


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


# --------------------------------------------------------------------------------------------
# Explanations (06_explain): saliency mosaics, faithfulness curves, localisation scores
# --------------------------------------------------------------------------------------------
SALIENCY_CMAP = "inferno"
MASK_OUTLINE = "cyan"  # the red of the other galleries would vanish in a hot colormap


def saliency_overlay(image: np.ndarray, saliency: np.ndarray | None,
                     alpha: float = 0.7) -> np.ndarray:
    """RGB uint8: the grey image with the map blended in where it is high (map in [0, 1]).

    The blend weight grows with the map, so low-saliency regions keep showing the anatomy.
    """
    grey = np.repeat(np.asarray(image, dtype=np.float64)[..., None] / 255.0, 3, axis=-1)
    if saliency is None:
        return (grey * 255).round().astype(np.uint8)
    from PIL import Image

    sal = np.asarray(saliency, dtype=np.float32)
    if sal.shape != grey.shape[:2]:
        sal = np.asarray(Image.fromarray(sal).resize(grey.shape[1::-1],
                                                     Image.Resampling.BILINEAR))
    sal = np.clip(sal, 0, 1)[..., None]
    colour = plt.get_cmap(SALIENCY_CMAP)(sal[..., 0])[..., :3]
    out = grey * (1 - alpha * sal) + colour * alpha * sal
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _fit_tile(rgb: np.ndarray, tile: int) -> np.ndarray:
    """An RGB image fitted into tile x tile (aspect kept, black padding), as _thumbnail does."""
    return np.stack([_thumbnail(rgb[..., k], tile) for k in range(3)], axis=-1)


def saliency_mosaic(rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, np.ndarray | None,
                                                               np.ndarray | None, str]]]],
                    col_titles: Sequence[str] | None = None, title: str = "", tile: int = 72,
                    dpi: int = EVAL_DPI) -> Figure:
    """Rows of tiles (image, map or None, mask or None, caption), drawn as one mosaic.

    Each tile is the image with its map blended in (``saliency_overlay``) and the lesion mask as
    a cyan outline; one image and one contour for the whole grid keep it fast and small.
    Save at `dpi` for 1:1 pixels.
    """
    ncols = max((len(tiles) for _, tiles in rows), default=1)
    gap_x, gap_y = 4, 12
    head = 12 if col_titles else 0
    height, width = head + len(rows) * (tile + gap_y), ncols * (tile + gap_x) - gap_x
    mosaic = np.full((height, width, 3), 255, dtype=np.uint8)
    outline = np.zeros((height, width), dtype=bool)
    labels = []
    for r, (_, tiles) in enumerate(rows):
        for c, (image, saliency, mask, caption) in enumerate(tiles):
            y0, x0 = head + r * (tile + gap_y) + gap_y, c * (tile + gap_x)
            mosaic[y0:y0 + tile, x0:x0 + tile] = _fit_tile(saliency_overlay(image, saliency),
                                                           tile)
            if mask is not None and np.any(mask):
                outline[y0:y0 + tile, x0:x0 + tile] = _thumbnail(np.asarray(mask), tile, True)
            labels.append((x0 + tile / 2, y0 - 2, caption))
    row_labels = [(head + r * (tile + gap_y) + gap_y + tile / 2, row_title)
                  for r, (row_title, _) in enumerate(rows)]
    fig, ax = _mosaic_figure(mosaic, outline, labels, row_labels, dpi=dpi, left_in=1.0,
                             title=title, image_kw={},
                             outline_kw={"colors": MASK_OUTLINE, "linewidths": 0.6})
    for c, name in enumerate(col_titles or []):
        ax.text(c * (tile + gap_x) + tile / 2, 2, name, ha="center", va="top", fontsize=6.5,
                weight="bold")
    return fig


def faithfulness_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]],
                        aucs: dict[str, tuple[float, float]], title: str = "") -> Figure:
    """Mean deletion and insertion curves per method (target-class probability vs share of
    pixels removed / inserted in saliency order); legends carry the AUCs."""
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.0), sharey=True)
    colours = sns.color_palette("colorblind", max(1, len(curves)))
    for (method, (deletion, insertion)), colour in zip(curves.items(), colours, strict=False):
        x = np.linspace(0, 1, len(deletion))
        auc_del, auc_ins = aucs[method]
        axes[0].plot(x, deletion, color=colour, lw=1.3, label=f"{method} ({auc_del:.3f})")
        axes[1].plot(x, insertion, color=colour, lw=1.3, label=f"{method} ({auc_ins:.3f})")
    axes[0].set(xlabel="share of pixels removed (most salient first)",
                ylabel="target-class probability", title="Deletion (lower AUC is better)")
    axes[1].set(xlabel="share of pixels inserted (most salient first)",
                title="Insertion (higher AUC is better)")
    for ax in axes:
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, title="method (AUC)", title_fontsize=6.5)
        ax.title.set_fontsize(9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def localisation_scores(table: pd.DataFrame, score: str = "pointing game",
                        chance: float | None = None, target: float | None = None) -> Figure:
    """One point with its CI per (method, model): columns method, model, value, lo, hi.

    Dotted line: what a map that points at random would score; dashed: the study's target.
    """
    methods = list(dict.fromkeys(table["method"]))
    models = list(dict.fromkeys(table["model"]))
    fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 2.8, 3.2))
    colours = sns.color_palette("colorblind", max(1, len(models)))
    width = 0.7 / max(1, len(models))
    for k, (model, colour) in enumerate(zip(models, colours, strict=False)):
        data = table[table["model"] == model]
        x = data["method"].map({m: i for i, m in enumerate(methods)}).to_numpy()
        x = x - 0.35 + width * (k + 0.5)
        err = [data["value"] - data["lo"], data["hi"] - data["value"]]
        ax.errorbar(x, data["value"], yerr=err, fmt="o", color=colour, capsize=2, ms=3.5,
                    lw=1, label=model)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=0.9, label="random point")
    if target is not None:
        ax.axhline(target, color="black", ls="--", lw=0.9, label="target")
    ax.set_xticks(range(len(methods)), methods, fontsize=8)
    ax.set(ylim=(-0.02, 1.02), ylabel=score, title=f"{score.capitalize()} on tumour test images "
                                                   "(95 % bootstrap CI)")
    ax.title.set_fontsize(9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6.5, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
