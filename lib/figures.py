"""Figure plumbing shared by every stage: save and show, compact PNGs, mosaics, overlays.

Each stage's own figures live in its package (lib.eda.figures, lib.train.figures,
lib.evaluate.figures, lib.explain.figures); what they have in common is here, once: PNGs with
no metadata (same figure, same bytes), the notebook idiom ``publish``, palette-quantised PNGs
for the report, the pixel-exact tile mosaic and the saliency overlay the app shows too."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

PNG_METADATA = {"Software": None}  # no version string in the bytes: same figure, same file


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a PNG with fixed dpi and no metadata, so re-runs give byte-identical files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata=PNG_METADATA)
    return path


def publish(fig: Figure, name: str, figures_dir: str | Path | None = None) -> None:
    """Save (when a folder is given) and show a figure once, then free it: the notebook idiom."""
    if figures_dir:
        save(fig, Path(figures_dir) / f"{name}.png")
    try:
        from IPython.display import display

        display(fig)
    finally:
        plt.close(fig)


EVAL_DPI = 100  # the report embeds every evaluation figure: keep each file small


def thumbnail(image: np.ndarray, size: int, mask: bool = False) -> np.ndarray:
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


def mosaic_figure(mosaic: np.ndarray, outline: np.ndarray,
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


def fit_tile(rgb: np.ndarray, tile: int) -> np.ndarray:
    """An RGB image fitted into tile x tile (aspect kept, black padding), as thumbnail does."""
    return np.stack([thumbnail(rgb[..., k], tile) for k in range(3)], axis=-1)
