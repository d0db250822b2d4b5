"""Figure plumbing shared by every stage: save and show, compact PNGs, mosaics, overlays.

Each stage's own figures live in its package (lib.eda.figures, lib.train.figures,
lib.evaluate.figures, lib.explain.figures); what they have in common is here, once: PNGs with
no metadata (same figure, same bytes), the notebook idiom ``publish``, palette-quantised PNGs
for the report, the pixel-exact tile mosaic and the saliency overlay the app shows too.

Readability. The report shows a figure's PNG pixel for CSS pixel, no wider than
``REPORT_FIGURE_PX``, next to body text of ``REPORT_BODY_PX`` (lib.report.build sets both in the
report's CSS; tests/test_figure_readability.py checks they agree and that every figure's text is
at least body size). A font of f pt in a PNG saved at d dpi is f·d/72 px tall, so ``text_pt(d)`` is
the smallest font a figure saved at d dpi may use, and ``readable(d)`` makes it the default."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

PNG_METADATA = {"Software": None}  # no version string in the bytes: same figure, same file
SAVE_DPI = 110  # `save` and `publish`: the EDA, augmentation and training figures
REPORT_BODY_PX = 16  # the report's body text (CSS px); lib.report.build.BODY_FONT_PX
REPORT_FIGURE_PX = 960  # the widest a figure is shown (CSS px); lib.report.build.FIGURE_MAX_PX


def text_pt(dpi: float) -> float:
    """The smallest font size (pt, rounded up to 0.1) whose glyphs are as large as the report's
    body text when a PNG saved at `dpi` is shown 1:1: REPORT_BODY_PX · 72 / dpi."""
    return math.ceil(REPORT_BODY_PX * 72 / dpi * 10 - 1e-9) / 10


def text_px(text: str, pt: float, dpi: float, weight: str = "normal") -> float:
    """Width in pixels of the widest line of `text` at `pt` points in a PNG saved at `dpi`."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    lines = str(text).split("\n")
    font = FontProperties(size=pt, weight=weight)
    widths = [TextToPath().get_text_width_height_descent(line, font, ismath=False)[0]
              for line in lines]
    return max(widths, default=0.0) * dpi / 72


def readable_rc(dpi: float) -> dict[str, Any]:
    """matplotlib rcParams under which every default text is body size at `dpi` (`text_pt`)."""
    pt = text_pt(dpi)
    return {"font.size": pt, "axes.titlesize": pt, "axes.labelsize": pt,
            "xtick.labelsize": pt, "ytick.labelsize": pt, "legend.fontsize": pt,
            "legend.title_fontsize": pt, "figure.titlesize": pt, "figure.labelsize": pt}


def readable(dpi: float) -> Callable[[Callable[..., Figure]], Callable[..., Figure]]:
    """Decorate a figure function: it draws under ``readable_rc(dpi)``, and its tick labels keep
    that size even when matplotlib makes more ticks later (they read rcParams when drawn)."""
    def wrap(draw: Callable[..., Figure]) -> Callable[..., Figure]:
        @functools.wraps(draw)
        def drawn(*args: Any, **kwargs: Any) -> Figure:
            with plt.rc_context(readable_rc(dpi)):
                fig = draw(*args, **kwargs)
                for ax in fig.axes:
                    ax.tick_params(which="both", labelsize=text_pt(dpi))
            return fig
        return drawn
    return wrap


def save(fig: Figure, path: str | Path, dpi: int = SAVE_DPI) -> Path:
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


def wrap_text(text: str, width_px: float, pt: float, dpi: float) -> str:
    """`text` with line breaks between words so no line is wider than `width_px`."""
    out = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}" if line else word
            if line and text_px(trial, pt, dpi) > width_px:
                out.append(line)
                line = word
            else:
                line = trial
        out.append(line)
    return "\n".join(out)


def mosaic_figure(tiles: Sequence[Sequence[np.ndarray]],
                  outlines: Sequence[Sequence[np.ndarray | None]],
                  captions: Sequence[Sequence[str]], row_titles: Sequence[str], *, dpi: int,
                  title: str = "", col_titles: Sequence[str] | None = None, group: int = 1,
                  image_kw: dict[str, Any] | None = None,
                  outline_kw: dict[str, Any] | None = None,
                  colorbar: tuple[Any, str] | None = None) -> Figure:
    """Rows of equal square tiles drawn as one pixel-exact image (a tile pixel is a screen pixel
    at `dpi`), mask outlines as one contour, every text at body size (``text_pt(dpi)``).

    tiles[r][c]: a tile x tile grey or RGB uint8 image; outlines[r][c]: a boolean mask of the same
    size or None. Every `group` consecutive tiles of a row form a group with one caption above it
    (captions[r][g]); col_titles name the groups; row titles go in a left margin as wide as the
    widest, a long title wraps. Slots widen to fit their captions, so no text overlaps.
    `colorbar` = (colormap, label) adds a colour bar under the tiles for what their colours
    encode (values 0 to 1).
    """
    pt = text_pt(dpi)
    line = pt * dpi / 72 * 1.3  # one line of text, px
    tile = int(np.asarray(tiles[0][0]).shape[0]) if tiles and len(tiles[0]) else 1
    n_rows = len(tiles)
    n_groups = max((-(-len(row) // group) for row in tiles), default=1)
    gap_in, gap_out = 4, (4 if group == 1 else 16)
    group_w = group * tile + (group - 1) * gap_in
    widths = ([text_px(c, pt, dpi) for row in captions for c in row if c]
              + [text_px(t, pt, dpi) for t in col_titles or []])
    slot = int(max([group_w] + [math.ceil(w) + 8 for w in widths]))
    head = int(line) + 4 if col_titles else 0
    cap = int(line) + 2 if any(c for row in captions for c in row) else 4
    pitch_y = cap + tile + 2
    height, width = head + n_rows * pitch_y, n_groups * slot + (n_groups - 1) * gap_out
    rgb = any(np.asarray(t).ndim == 3 for row in tiles for t in row)
    mosaic = np.full((height, width, 3) if rgb else (height, width), 255, dtype=np.uint8)
    outline = np.zeros((height, width), dtype=bool)
    labels, ys = [], []
    for r, row in enumerate(tiles):
        y0 = head + r * pitch_y + cap
        ys.append(y0 + tile / 2)
        for c, img in enumerate(row):
            g, j = divmod(c, group)
            x0 = g * (slot + gap_out) + (slot - group_w) // 2 + j * (tile + gap_in)
            img = np.asarray(img)
            mosaic[y0:y0 + tile, x0:x0 + tile] = img[..., None] if rgb and img.ndim == 2 else img
            if outlines[r][c] is not None and np.any(outlines[r][c]):
                outline[y0:y0 + tile, x0:x0 + tile] = outlines[r][c]
        for g, caption in enumerate(captions[r] if r < len(captions) else []):
            labels.append((g * (slot + gap_out) + slot / 2, y0 - 3, caption))
    left = math.ceil(max([text_px(t, pt, dpi) for t in row_titles] + [0])) + 14
    bottom = 12 + 14 + 2 * math.ceil(line) + 8 if colorbar is not None else 0  # bar, ticks, label
    title = wrap_text(title, left + width, pt, dpi) if title else ""
    top = (title.count("\n") + 1) * line + 8 if title else 4
    fig_w, fig_h = (left + width + 8) / dpi, (top + height + bottom) / dpi
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes((left / dpi / fig_w, bottom / dpi / fig_h, width / dpi / fig_w,
                       height / dpi / fig_h))
    ax.imshow(mosaic, interpolation="nearest", **(image_kw or {}))
    if outline.any():
        ax.contour(outline.astype(float), levels=[0.5], **(outline_kw or {}))
    for x, y, caption in labels:
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=pt)
    for y, row_title in zip(ys, row_titles, strict=False):
        ax.text(-8, y, row_title, ha="right", va="center", fontsize=pt)
    for g, name in enumerate(col_titles or []):
        ax.text(g * (slot + gap_out) + slot / 2, 2, name, ha="center", va="top", fontsize=pt)
    ax.set_axis_off()
    if title:
        fig.text(4 / dpi / fig_w, 1 - 4 / dpi / fig_h, title, ha="left", va="top", fontsize=pt)
    if colorbar is not None:  # under the tiles, where it costs no width
        cmap, label = colorbar
        bar_w = min(width, max(240, math.ceil(text_px(label, pt, dpi)) + 20))
        cax = fig.add_axes((left / dpi / fig_w, (bottom - 12 - 14) / dpi / fig_h,
                            bar_w / dpi / fig_w, 14 / dpi / fig_h))
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), cax=cax, ticks=[0, 0.5, 1],
                           orientation="horizontal")
        bar.set_label(label, fontsize=pt)
        bar.ax.tick_params(labelsize=pt)
    return fig


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


def overlay_colormap(grey: int = 128) -> Any:
    """The colours ``saliency_overlay`` gives a map value from 0 to 1 on tissue of this grey
    level: the colour bar of a saliency figure shows what a reader sees in its tiles."""
    from matplotlib.colors import ListedColormap

    ramp = saliency_overlay(np.full((1, 256), grey, dtype=np.uint8),
                            np.linspace(0, 1, 256, dtype=np.float32)[None, :])
    return ListedColormap(ramp[0] / 255.0, name=f"{SALIENCY_CMAP}_overlay")


def fit_tile(rgb: np.ndarray, tile: int) -> np.ndarray:
    """An RGB image fitted into tile x tile (aspect kept, black padding), as thumbnail does."""
    return np.stack([thumbnail(rgb[..., k], tile) for k in range(3)], axis=-1)
