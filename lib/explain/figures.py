"""The explain stage's figures (06): saliency mosaics, faithfulness curves, localisation scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..figures import (
    EVAL_DPI,
    MASK_OUTLINE,
    fit_tile,
    mosaic_figure,
    overlay_colormap,
    publish_compact,
    readable,
    saliency_overlay,
    save_compact,
    thumbnail,
)
from .study import ExplainConfig, ModelExplanation, SplitImages
from .verdict import TARGET_POINTING_GAME

SALIENCY_BAR = "map value (0–1)"  # the colour bar's label on every saliency mosaic


@readable(EVAL_DPI)
def saliency_mosaic(rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, np.ndarray | None,
                                                               np.ndarray | None, str]]]],
                    col_titles: Sequence[str] | None = None, title: str = "", tile: int = 80,
                    dpi: int = EVAL_DPI, group: int = 1, bar_label: str = SALIENCY_BAR
                    ) -> Figure:
    """Rows of tiles (image, map or None, mask or None, caption), drawn as one mosaic.

    Each tile is the image with its map blended in (``saliency_overlay``) and the lesion mask as
    a cyan outline; one image and one contour for the whole grid keep it fast and small. Every
    `group` tiles share one caption (that of the group's first tile) and col_titles name the
    groups. When any tile carries a map, a colour bar shows the blend a map value gives on grey
    tissue. Texts are at the report's body size; save at `dpi` for 1:1 pixels.
    """
    tiles, outlines, captions = [], [], []
    for _, row in rows:
        tiles.append([fit_tile(saliency_overlay(image, saliency), tile)
                      for image, saliency, _, _ in row])
        outlines.append([thumbnail(np.asarray(mask), tile, True)
                         if mask is not None and np.any(mask) else None
                         for _, _, mask, _ in row])
        captions.append([caption for _, _, _, caption in row][::group])
    has_map = any(saliency is not None for _, row in rows for _, saliency, _, _ in row)
    return mosaic_figure(tiles, outlines, captions, [name for name, _ in rows], dpi=dpi,
                         title=title, col_titles=col_titles, group=group,
                         outline_kw={"colors": MASK_OUTLINE, "linewidths": 0.8},
                         colorbar=(overlay_colormap(), bar_label) if has_map else None)


@readable(EVAL_DPI)
def faithfulness_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]],
                        aucs: dict[str, tuple[float, float]], title: str = "") -> Figure:
    """Mean deletion and insertion curves per method (target-class probability vs share of
    pixels removed / inserted in saliency order); one legend below both panels carries each
    method's two AUCs."""
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.4), sharey=True)
    colours = sns.color_palette("colorblind", max(1, len(curves)))
    for (method, (deletion, insertion)), colour in zip(curves.items(), colours, strict=False):
        x = np.linspace(0, 1, len(deletion))
        auc_del, auc_ins = aucs[method]
        axes[0].plot(x, deletion, color=colour, lw=1.5,
                     label=f"{method}: deletion {auc_del:.3f}, insertion {auc_ins:.3f}")
        axes[1].plot(x, insertion, color=colour, lw=1.5)
    axes[0].set(xlabel="share of pixels removed\n(most salient first)",
                ylabel="target-class probability", title="Deletion (lower AUC is better)")
    axes[1].set(xlabel="share of pixels inserted\n(most salient first)",
                title="Insertion (higher AUC is better)")
    for ax in axes:
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    rows = -(-len(handles) // 2)
    fig.legend(handles, labels, loc="lower center", ncols=2, frameon=False,
               title="method: area under the curve")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 + 0.065 * rows, 1, 1))
    return fig


@readable(EVAL_DPI)
def localisation_scores(table: pd.DataFrame, score: str = "pointing game",
                        chance: float | None = None, target: float | None = None) -> Figure:
    """One point with its CI per (method, model): columns method, model, value, lo, hi.

    Dotted line: what a map that points at random would score; dashed: the study's target.
    """
    methods = list(dict.fromkeys(table["method"]))
    models = list(dict.fromkeys(table["model"]))
    fig, ax = plt.subplots(figsize=(min(1.0 * len(methods) + 2.6, 8.6), 4.4))
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
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right",
                  rotation_mode="anchor")
    ax.set(ylim=(-0.02, 1.02), ylabel=score, title=f"{score.capitalize()} on tumour test "
                                                   "images\n(95 % bootstrap CI)")
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    rows = -(-len(handles) // 2)
    fig.legend(handles, labels, loc="lower center", ncols=2, frameon=False)
    fig.tight_layout(rect=(0, 0.065 * rows, 1, 1))
    return fig


def _target_words(cfg: ExplainConfig, names: list[str]) -> str:
    if cfg.class_index in ("predicted", "true"):
        return f"the {cfg.class_index} class"
    return f"class '{names[int(cfg.class_index)]}'"


def model_figures(res: ModelExplanation, test: SplitImages, cfg: ExplainConfig
                  ) -> dict[str, Any]:
    """{file stem: Figure} for one model: gallery, methods, blocks (scratch) and faithfulness."""
    names, labels = test.names, test.frame["label"].to_numpy()
    rows = []
    for c, cls in enumerate(names):
        tiles = []
        for r, ok, saliency in res.gallery:
            if labels[r] != c:
                continue
            p = int(res.predicted[r])
            caption = (f"correct {res.probs[r, p]:.2f}" if ok
                       else f"as {names[p]} {res.probs[r, p]:.2f}")
            tiles += [(test.images[r], None, test.masks[r], caption),
                      (test.images[r], saliency, test.masks[r], "")]
        rows.append((cls, tiles))
    target = _target_words(cfg, names)
    figures = {f"{cfg.gallery_method.replace('+', 'p')}_{res.key}": saliency_mosaic(
        rows, group=2,
        title=f"{res.key}: {cfg.gallery_method} of {target} at {res.layer}. Each pair: the scan "
              "with the lesion mask (cyan), then the map; above it the predicted class's "
              "probability. Correct first, then wrong")}
    show = [(test.images[r], test.masks[r]) for r in res.showcase]
    showcase_names = [names[labels[r]] for r in res.showcase]
    methods = list(res.showcase_maps)
    figures[f"methods_{res.key}"] = saliency_mosaic(
        [(cls, [(img, None, mask, "")] + [(img, res.showcase_maps[m][k], mask, "")
                                          for m in methods])
         for k, (cls, (img, mask)) in enumerate(zip(showcase_names, show, strict=True))],
        col_titles=["scan", *methods], title=f"{res.key}: every method, {target}")
    if res.blocks:
        figures[f"blocks_{res.key}"] = saliency_mosaic(
            [(cls, [(img, None, mask, "")] + [(img, maps[k], mask, "")
                                              for maps in res.blocks.values()])
             for k, (cls, (img, mask)) in enumerate(zip(showcase_names, show, strict=True))],
            col_titles=["scan", *res.blocks], title=f"{res.key}: mean activation per block",
            bar_label="mean activation (0–1)")
    faith = res.metrics["faithfulness"]
    figures[f"faithfulness_{res.key}"] = faithfulness_curves(
        res.curves, {m: (v["deletion_auc"], v["insertion_auc"]) for m, v in faith.items()},
        title=f"{res.key}: deletion and insertion ({len(test.sample)} sampled test images)")
    return figures


def localisation_table(results: dict[str, ModelExplanation], score: str = "pointing_game"
                       ) -> pd.DataFrame:
    """One row per (method, model): value and CI of a localisation score."""
    rows = [{"method": method, "model": key, "value": s[score]["value"],
             "lo": s[score]["ci"][0], "hi": s[score]["ci"][1], "n": s["n"]}
            for key, r in results.items()
            for method, s in r.metrics["localisation"].items() if method != "skipped"]
    return pd.DataFrame(rows, columns=["method", "model", "value", "lo", "hi", "n"])


def publish_figures(results: dict[str, ModelExplanation], test: SplitImages, cfg: ExplainConfig,
                    figures_dir: Path | str | None, show: str | None = None) -> list[str]:
    """Save every model's figures (compact PNGs) and display those of `show`; returns names."""
    import matplotlib.pyplot as plt

    written = []
    for key, res in results.items():
        for name, fig in model_figures(res, test, cfg).items():
            if key == show:
                publish_compact(fig, name, figures_dir)
            else:
                if figures_dir:
                    save_compact(fig, Path(figures_dir) / f"{name}.png")
                plt.close(fig)
            written.append(name)
    table = localisation_table(results)
    if len(table):
        chance = float(np.mean([test.masks[i].mean() for i in test.tumour]))
        publish_compact(localisation_scores(table, chance=chance,
                                                        target=TARGET_POINTING_GAME),
                              "localisation", figures_dir)
        written.append("localisation")
    return written
