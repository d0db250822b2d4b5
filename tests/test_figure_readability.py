"""Every figure the report embeds can be read where the report shows it.

Each figure function the report's figures come from is drawn on small synthetic inputs and
saved the way its stage saves it (``lib.figures.save`` for EDA, augmentation and training;
``compact_png`` for evaluation and explanation). Then, on the matplotlib Figure it returned:

* text size: every visible, non-empty Text is at least as large as the report's body text where
  the report shows the PNG. The report shows a PNG one image pixel per CSS pixel, no wider than
  ``FIGURE_MAX_PX`` (lib.report.build, in the report's CSS), so a font of f pt saved at d dpi is
  ``f · d / 72 · min(1, FIGURE_MAX_PX / png width)`` CSS px, and must be ≥ ``BODY_FONT_PX``.
  This is the rule "f × displayed width / figure width ≥ body px × 0.75" with the displayed
  width in CSS inches (96 px) and the figure width the saved PNG's (bbox_inches="tight"
  changes it), since 0.75 pt = 1 CSS px;
* colour bars: every colour that encodes a value has one: a colormapped image, mesh or
  collection (not a grey image of a scan), and any RGB image in colour (a saliency overlay);
* captions: the report's caption table gives every figure name a sentence of at least four
  words that is not its file name.

The last tests pin the reviewer's defects: the size scatter's colours and jitter, the error
gallery's order against its caption, the learning curves' epochs.
"""

from __future__ import annotations

import ast
import functools
import io
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import Collection, QuadMesh  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402

from lib import figures  # noqa: E402
from lib.eda import figures as eda  # noqa: E402
from lib.evaluate import figures as evf  # noqa: E402
from lib.explain import figures as exf  # noqa: E402
from lib.report import build as report  # noqa: E402
from lib.train import figures as trf  # noqa: E402
from tests.conftest import REPO  # noqa: E402

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
MODEL = "scratch_dropout_batchnorm_s42"  # the longest model key the study has
GREY_CMAPS = {"gray", "grey", "Greys", "Greys_r", "binary", "binary_r", "gist_gray"}


# ---- small synthetic inputs ------------------------------------------------------------------
def scan(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A head-like grey image and a round lesion mask (empty for odd seeds)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    head = (xx / 0.38) ** 2 + (yy / 0.45) ** 2 < 1
    image = np.where(head, 110 + 20 * np.cos(9 * xx), 5) + rng.normal(0, 6, (size, size))
    cy, cx = rng.uniform(-0.2, 0.2, 2)
    mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < 0.01) & (seed % 2 == 0)
    image[mask] += 60
    return np.clip(image, 0, 255).astype(np.uint8), mask


def stats_frame(sizes: list[tuple[int, int]]) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = [{"class": c, "width": w, "height": h, "mean": rng.normal(100 + 5 * k, 8),
             "std": rng.normal(40, 4),
             "lesion_share": 0 if c == "notumor" else rng.uniform(.01, .1)}
            for k, c in enumerate(CLASSES) for i in range(25) for w, h in [sizes[i % len(sizes)]]]
    return pd.DataFrame(rows)


def history(seed: int, epochs: int = 14) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    e = np.arange(epochs)
    return pd.DataFrame({"epoch": e, "loss": 1.2 * np.exp(-e / 4) + .1,
                         "val_loss": 1.2 * np.exp(-e / 4) + .2 + rng.uniform(0, .1, epochs),
                         "macro_f1": 1 - .8 * np.exp(-e / 3),
                         "val_macro_f1": .9 - .7 * np.exp(-e / 3) + rng.uniform(0, .05, epochs)})


def curves() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float], dict[str, float]]:
    x = np.linspace(0, 1, 30)
    roc = pd.concat(pd.DataFrame({"class": c, "fpr": x, "tpr": x ** (0.2 + 0.1 * k)})
                    for k, c in enumerate(CLASSES))
    pr = pd.concat(pd.DataFrame({"class": c, "recall": x, "precision": 1 - 0.3 * x ** (3 - k / 2)})
                   for k, c in enumerate(CLASSES))
    auc = {c: 0.95 - 0.02 * k for k, c in enumerate(CLASSES)} | {"macro": 0.92}
    return roc, pr, auc, auc


def reliability() -> dict[str, pd.DataFrame]:
    lo = np.linspace(0, 1, 16)[:-1]
    table = pd.DataFrame({"lo": lo, "hi": lo + 1 / 15, "count": (lo * 40).astype(int),
                          "confidence": lo + 1 / 30, "accuracy": np.clip(lo + 0.02, 0, 1)})
    return {"before": table, "after": table.assign(accuracy=lo + 1 / 30)}


def comparison() -> pd.DataFrame:
    models = [f"{c}_s{s}" for c in ("transfer", "scratch_dropout_batchnorm", "scratch_none")
              for s in (42, 43, 44)]
    return pd.DataFrame([{"metric": m, "model": k, "value": 0.9 - 0.01 * i, "lo": 0.86 - 0.01 * i,
                          "hi": 0.94 - 0.01 * i}
                         for m in ("accuracy", "macro-F1") for i, k in enumerate(models)])


def error_rows() -> list[tuple[str, list[np.ndarray], list[np.ndarray], list[str]]]:
    errors = pd.DataFrame([{"true": t, "predicted": p, "confidence": c, "p_true": 1 - c,
                            "errors": n, "path": f"{t}_{i}.png", "mask": ""}
                           for t, p, n in (("meningioma", "glioma", 6), ("notumor", "pituitary", 2))
                           for i, c in enumerate(np.linspace(0.5, 0.97, n))])
    return gallery_rows(errors)


def gallery_rows(errors: pd.DataFrame) -> list[tuple[str, list, list, list[str]]]:
    """lib.evaluate.figures.gallery_rows with synthetic images in place of the raw files."""
    import lib.data.images as images

    loaded = {p: scan(k) for k, p in enumerate(errors["path"])}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "load_image", lambda _raw, p: loaded[p][0])
        patch.setattr(images, "load_mask", lambda _raw, m, shape: np.zeros(shape, bool))
        return evf.gallery_rows(errors, "unused")


def explanation(blocks: bool = True) -> tuple[Any, Any, Any]:
    """A ModelExplanation, SplitImages and ExplainConfig stand-in for model_figures."""
    pairs = [scan(k) for k in range(12)]
    labels = np.arange(12) % 4
    predicted = np.where(np.arange(12) % 5 == 0, (labels + 1) % 4, labels)
    probs = np.full((12, 4), 0.02)
    probs[np.arange(12), predicted] = 0.94
    test = SimpleNamespace(names=CLASSES, frame=pd.DataFrame({"label": labels}),
                           images=[p[0] for p in pairs], masks=[p[1] for p in pairs],
                           sample=np.arange(12))
    rng = np.random.default_rng(0)
    maps = rng.random((12, 16, 16)).astype(np.float32)
    methods = ["gradcam", "gradcam++", "hirescam", "scorecam", "smoothgrad", "occlusion"]
    res = SimpleNamespace(
        key=MODEL, layer="block4_relu", predicted=predicted, probs=probs,
        gallery=[(r, bool(predicted[r] == labels[r]), maps[r]) for r in range(12)],
        showcase=np.arange(4), showcase_maps={m: maps[:4] for m in methods},
        blocks={f"block{i}_relu": maps[:4] for i in range(1, 5)} if blocks else None,
        metrics={"faithfulness": {m: {"deletion_auc": 0.2, "insertion_auc": 0.6}
                                  for m in methods}},
        curves={m: (np.linspace(1, 0, 11) ** (k + 1), np.linspace(0, 1, 11) ** (1 / (k + 1)))
                for k, m in enumerate(methods)})
    cfg = SimpleNamespace(class_index="predicted", gallery_method="gradcam")
    return res, test, cfg


def localisation() -> pd.DataFrame:
    methods = ["gradcam", "gradcam++", "hirescam", "scorecam", "smoothgrad", "occlusion"]
    return pd.DataFrame([{"method": m, "model": k, "value": 0.5 + 0.05 * i, "lo": 0.4 + 0.05 * i,
                          "hi": 0.6 + 0.05 * i} for i, m in enumerate(methods)
                         for k in (f"scratch_{v}_s42" for v in ("none", "dropout", "batchnorm",
                                                                "dropout_batchnorm"))])


def samples() -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    pairs = [scan(k) for k in range(24)]
    titles = [f"{c} · T1c\n{c}_{k:04d}.png" for c in CLASSES for k in range(6)]
    return [p[0] for p in pairs], [p[1] for p in pairs], titles


def conspicuity() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame([{"class": c, "sequence": s, "conspicuity": rng.gamma(2, 1)}
                         for c in ("glioma", "meningioma", "pituitary") for s in ("T1", "T1c", "T2")
                         for _ in range(8)])


def augment() -> Figure:
    pairs = [[scan(k + 10 * r) for k in range(6)] for r in range(4)]
    return trf.augment_grid([np.stack([p[0] for p in row]) for row in pairs],
                            [np.stack([p[1] for p in row]) for row in pairs], CLASSES,
                            ["original"] + [f"augmented {i}" for i in range(1, 6)])


@functools.cache
def model_figures() -> dict[str, Figure]:
    """lib.explain.figures.model_figures on the stand-in explanation, drawn once."""
    return exf.model_figures(*explanation())


def model_figure(prefix: str) -> Callable[[], Figure]:
    return lambda: model_figures()[f"{prefix}_{MODEL}"]


def shortcut_f1() -> Figure:
    from lib.explain.shortcut import f1_figure

    seeds = {s: {"f1_marked": 0.93 - 0.01 * s, "f1_clean": 0.76 + 0.02 * s} for s in range(3)}
    return f1_figure({"plain": seeds, "guided": seeds})


SAVE, COMPACT = "save", "compact"
# file the report embeds (relative to reports/, as report.caption_for takes it), how its stage
# saves it, and how to draw it; one entry per figure the pipeline writes (see the coverage test)
REPORT_FIGURES: dict[str, tuple[str, Callable[[], Figure]]] = {
    "figures/eda/eda_counts.png": (SAVE, lambda: eda.counts_bar(pd.DataFrame(
        {"train": [900, 880, 1100, 950], "val": [160, 150, 190, 170], "test": [100] * 4},
        index=pd.Index(CLASSES, name="class")))),
    "figures/eda/eda_sizes.png": (SAVE, lambda: eda.size_scatter(stats_frame([(128, 128)]))),
    "figures/eda/eda_intensity.png": (SAVE, lambda: eda.intensity_by_class(stats_frame([(1, 1)]))),
    "figures/eda/eda_samples_plain.png": (SAVE, lambda: eda.image_grid(
        samples()[0], [None] * 24, samples()[2], ncols=6)),
    "figures/eda/eda_samples.png": (SAVE, lambda: eda.image_grid(*samples(), ncols=6)),
    "figures/eda/eda_conspicuity.png": (SAVE, lambda: eda.conspicuity_by_class(
        conspicuity(), ["T1", "T1c", "T2"])),
    "figures/eda/eda_mean_images.png": (SAVE, lambda: eda.mean_images(
        {c: scan(k)[0].astype(float) for k, c in enumerate(CLASSES)})),
    "figures/eda/eda_lesion_share.png": (SAVE, lambda: eda.lesion_share(stats_frame([(1, 1)]))),
    "figures/augment/augment_preview.png": (SAVE, augment),
    "training/scratch_dropout_batchnorm/training_curves.png": (SAVE, lambda: trf.training_curves(
        {f"seed {s}": history(s) for s in (42, 43, 44)}, "scratch CNN, variant 'dropout'",
        "val_macro_f1")),
    "training/scratch_dropout_batchnorm/plain_vs_guided.png": (SAVE, lambda: exf.saliency_mosaic(
        [(arm, [(scan(k)[0], scan(k + 1)[0] / 255.0, scan(k)[1], "glioma") for k in range(6)])
         for arm in ("plain", "guided")], title="Grad-CAM at block2_relu, plain vs guided")),
    "figures/shortcut/shortcut_f1.png": (SAVE, lambda: shortcut_f1()),
    "figures/shortcut/shortcut_maps.png": (COMPACT, lambda: exf.saliency_mosaic(
        [(arm, [(scan(k)[0], scan(k + 2)[0] / 255.0, scan(k)[1], "pituitary") for k in range(6)])
         for arm in ("plain", "guided")], title="Grad-CAM at block2_relu on marked test images")),
    "figures/evaluate/comparison.png": (COMPACT, lambda: evf.model_comparison(comparison())),
    f"figures/evaluate/confusion_{MODEL}.png": (COMPACT, lambda: evf.confusion_matrices(
        np.array([[90, 5, 3, 2], [4, 88, 6, 2], [1, 2, 96, 1], [0, 3, 2, 95]]), CLASSES, MODEL)),
    f"figures/evaluate/roc_pr_{MODEL}.png": (COMPACT, lambda: evf.roc_pr_curves(
        *curves(), {c: 0.25 for c in CLASSES}, MODEL)),
    f"figures/evaluate/reliability_{MODEL}.png": (COMPACT, lambda: evf.reliability_diagram(
        reliability(), {"before": {"ece": 0.05, "nll": 0.3}, "after": {"ece": 0.02, "nll": 0.2}},
        f"{MODEL}: temperature 1.23")),
    f"figures/evaluate/errors_{MODEL}.png": (COMPACT, lambda: evf.error_gallery(
        error_rows(), 6, f"{MODEL}: 34 errors")),
    f"figures/explain/gradcam_{MODEL}.png": (COMPACT, model_figure("gradcam")),
    f"figures/explain/methods_{MODEL}.png": (COMPACT, model_figure("methods")),
    f"figures/explain/blocks_{MODEL}.png": (COMPACT, model_figure("blocks")),
    f"figures/explain/faithfulness_{MODEL}.png": (COMPACT, model_figure("faithfulness")),
    "figures/explain/localisation.png": (COMPACT, lambda: exf.localisation_scores(
        localisation(), chance=0.05, target=0.8)),
}


@pytest.fixture(scope="module", autouse=True)
def many_open_figures() -> Any:
    """The report's figures stay open for this module's tests: no warning about how many."""
    with plt.rc_context({"figure.max_open_warning": 0}):
        yield


@pytest.fixture(scope="module")
def drawn() -> dict[str, tuple[Figure, int, int]]:
    """Each report figure drawn once and saved as its stage saves it: (figure, dpi, png width)."""
    out = {}
    for name, (saver, draw) in REPORT_FIGURES.items():
        fig = draw()
        if saver == SAVE:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=figures.SAVE_DPI, bbox_inches="tight",
                        metadata=figures.PNG_METADATA)
            data, dpi = buffer.getvalue(), figures.SAVE_DPI
        else:
            data, dpi = figures.compact_png(fig), figures.EVAL_DPI
        out[name] = (fig, dpi, Image.open(io.BytesIO(data)).size[0])
    yield out
    plt.close("all")


# ---- the three rules -------------------------------------------------------------------------
def too_small(fig: Figure, dpi: int, png_width: int) -> list[str]:
    """Texts smaller than the report's body text where the report shows this figure."""
    shown = min(png_width, report.FIGURE_MAX_PX) / png_width
    small = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        px = text.get_fontsize() * dpi / 72 * shown
        if px < report.BODY_FONT_PX - 1e-6:
            small.append(f"{text.get_text()[:40]!r}: {px:.1f} px")
    return small


def colour_without_bar(fig: Figure) -> list[str]:
    """Colour that encodes a value with no colour bar to read it by."""
    bars = [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    bar_axes = {bar.ax for bar in bars}
    missing = []
    for artist in fig.findobj(lambda a: isinstance(a, (AxesImage, QuadMesh, Collection))):
        if artist.axes in bar_axes:
            continue
        if isinstance(artist, AxesImage):
            data = np.asarray(artist.get_array())
            if data.ndim == 3:  # RGB(A): a value only where it is in colour (an overlay)
                rgb = data[..., :3].astype(float)
                coloured = np.ptp(rgb, axis=-1).max() > 8 * (255 if rgb.max() > 1 else 1) / 255
                if coloured and not bars:
                    missing.append(f"RGB image in colour {data.shape}")
                continue
            if artist.get_cmap().name in GREY_CMAPS:
                continue  # a grey scan
        elif isinstance(artist, Collection) and not isinstance(artist, QuadMesh):
            if isinstance(artist, ContourSet) and len(artist.levels) == 1:
                continue  # an outline (a mask's edge), one colour
            if artist.get_array() is None:
                continue  # colours set one by one (classes, lines), not from values
        norm = artist.norm
        if not any(bar.mappable is artist or (bar.cmap.name == artist.get_cmap().name and
                                              bar.norm.vmin == norm.vmin and
                                              bar.norm.vmax == norm.vmax) for bar in bars):
            missing.append(f"{type(artist).__name__} with colormap {artist.get_cmap().name}")
    return missing


def reader_caption(caption: str, file: str) -> bool:
    """A sentence written for a reader: four words or more, capitalised, not the file name."""
    stem = Path(file).stem
    words = re.findall(r"[A-Za-z][\w'’-]*", caption)
    as_name = {stem, stem.replace("_", " "), Path(file).name}
    return (len(words) >= 4 and caption[:1].isupper() and caption.strip() not in as_name
            and not caption.lower().startswith(stem.replace("_", " ").lower()))


@pytest.mark.parametrize("name", REPORT_FIGURES)
def test_every_text_is_at_least_body_size_where_the_report_shows_it(drawn, name: str) -> None:
    fig, dpi, width = drawn[name]
    assert width <= report.FIGURE_MAX_PX, f"{name} is {width} px wide: the report shrinks it"
    assert not too_small(fig, dpi, width), (name, too_small(fig, dpi, width))


@pytest.mark.parametrize("name", REPORT_FIGURES)
def test_colour_that_encodes_a_value_has_a_colour_bar(drawn, name: str) -> None:
    assert not colour_without_bar(drawn[name][0]), (name, colour_without_bar(drawn[name][0]))


def test_the_rules_see_what_they_must(drawn) -> None:
    """The checks find faults where they are: small text, a heatmap and an overlay without a
    bar, a file-name caption."""
    fig, dpi, width = drawn["figures/eda/eda_counts.png"]
    assert too_small(fig, dpi, 2 * report.FIGURE_MAX_PX)  # the same PNG shown at half size
    bare, ax = plt.subplots()
    ax.imshow(np.random.default_rng(0).random((4, 4)), cmap="viridis")
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    ax.imshow(red)
    ax.imshow(np.zeros((4, 4)), cmap="gray")
    assert len(colour_without_bar(bare)) == 2
    assert not reader_caption("eda mean images", "eda_mean_images.png")
    assert not reader_caption("Eda mean images, s42", "eda_mean_images.png")
    assert reader_caption("Mean image of each class and its difference", "eda_mean_images.png")
    plt.close(bare)


def pipeline_figure_names() -> set[str]:
    """File names (under reports/; a model key as {model}, a configuration as {name}) the
    pipeline writes: each notebook's publish calls that pass a figures folder, and what
    lib.explain.figures.publish_figures saves (model_figures' names and the localisation plot)."""
    from tests.test_stage import notebook_source

    stage_folder = {"figures_dir": None, "history_dir": "training/{name}"}
    names = set()
    for nb in sorted((REPO / "notebooks").glob("0*.ipynb")):
        stage = {"01": "eda", "02": "augment", "05": "evaluate"}.get(nb.name[:2])
        for call in ast.walk(ast.parse(notebook_source(nb.name))):
            if not (isinstance(call, ast.Call) and ast.unparse(call.func).endswith(
                    ("publish", "publish_compact")) and len(call.args) >= 3):
                continue  # shown only, never saved
            name, folder = call.args[1], ast.unparse(call.args[2])
            stem = (name.value if isinstance(name, ast.Constant) else "".join(
                v.value if isinstance(v, ast.Constant) else "{model}" for v in name.values))
            where = stage_folder.get(folder) or f"figures/{stage}"
            names.add(f"{where}/{stem}.png")
    names |= {f"figures/explain/{k.replace(MODEL, '{model}')}.png" for k in model_figures()}
    return names | {"figures/explain/localisation.png"}


def test_every_figure_the_pipeline_writes_is_checked_and_captioned() -> None:
    written = pipeline_figure_names()
    assert len(written) >= 19, sorted(written)
    checked = {n.replace(MODEL, "{model}").replace("scratch_dropout_batchnorm", "{name}")
               for n in REPORT_FIGURES}
    assert written <= checked, f"not checked here: {sorted(written - checked)}"
    for name in written:
        file = name.replace("{model}", MODEL).replace("{name}", "transfer")
        caption = report.caption_for(file)
        assert caption and reader_caption(caption, file), (name, caption)


def test_every_committed_figure_has_a_caption_for_a_reader() -> None:
    """The figures of the committed run (when present) are all in the caption table."""
    files = sorted(p.relative_to(REPO / "reports").as_posix()
                   for folder in ("figures", "training") for p in
                   (REPO / "reports" / folder).rglob("*.png"))
    if not files:
        pytest.skip("no committed figures in reports/ (run dvc pull)")
    uncaptioned = [f for f in files if not reader_caption(report.caption_for(f) or "", f)]
    assert not uncaptioned, uncaptioned


# ---- the reviewer's defects ------------------------------------------------------------------
def class_colours(fig: Figure) -> tuple[dict[str, Any], dict[str, Any]]:
    """{class: RGBA} of the plotted markers and of the legend entries."""
    ax = fig.axes[0]
    points = {}
    for coll in ax.collections:
        if coll.get_label().startswith("_") or not len(coll.get_offsets()):
            continue
        colours = coll.get_facecolors() if coll.get_facecolors().size else coll.get_edgecolors()
        if not len(colours):
            colours = coll.get_edgecolors()
        assert len({tuple(c) for c in np.round(colours, 4)}) == 1, coll.get_label()
        points[coll.get_label()] = tuple(np.round(colours[0], 4))
    legend = {}
    if ax.get_legend() is not None:
        for handle, text in zip(ax.get_legend().legend_handles, ax.get_legend().get_texts(),
                                strict=True):
            fc = handle.get_facecolor()
            rgba = fc[0] if len(fc) and np.asarray(fc).ndim == 2 else fc
            if np.asarray(rgba).size == 0 or np.asarray(rgba)[..., 3].max() == 0:
                rgba = handle.get_edgecolor()[0]
            legend[text.get_text()] = tuple(np.round(np.asarray(rgba).ravel()[:4], 4))
    return points, legend


def test_image_sizes_show_real_sizes_in_the_colours_of_their_legend() -> None:
    """Constant sizes: one marker per class at 128 × 128 (no jitter, no fake spread); varied
    sizes: each marker at a real size, the legend in the markers' colours."""
    same = eda.size_scatter(stats_frame([(128, 128)]))
    ax = same.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["128 × 128"]
    assert "every image is 128 × 128 px" in ax.get_title()
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(offsets) == len(CLASSES) and set(offsets[:, 1]) == {0}
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    points, _ = class_colours(same)
    for coll in ax.collections:  # each class's marker above its own name
        assert ticks[int(coll.get_offsets()[0, 0])] == coll.get_label()
    assert len(set(points.values())) == len(CLASSES)
    sizes = [(w, h) for w in range(100, 260, 40) for h in range(120, 220, 25)]
    varied = eda.size_scatter(stats_frame(sizes))
    truth = set(sizes)
    for coll in varied.axes[0].collections:
        assert {tuple(o) for o in coll.get_offsets()} <= truth  # at real sizes only
    points, legend = class_colours(varied)
    assert points == legend and len(points) == len(CLASSES)
    plt.close("all")


def test_error_gallery_runs_most_confident_first_as_its_caption_says() -> None:
    rng = np.random.default_rng(3)
    confidence = rng.permutation(np.linspace(0.4, 0.95, 6))
    errors = pd.DataFrame({"true": "glioma", "predicted": "notumor", "confidence": confidence,
                           "p_true": 1 - confidence, "errors": 6, "mask": "",
                           "path": [f"g{i}.png" for i in range(6)]})
    (_, _, _, captions), = gallery_rows(errors)
    shown = [float(c.split()[0]) for c in captions]
    assert shown == sorted(shown, reverse=True)
    caption = report.caption_for(f"figures/evaluate/errors_{MODEL}.png")
    assert "most confident" in caption and "least confident" not in caption


def test_learning_curves_count_epochs_from_one_on_integer_ticks() -> None:
    hist = history(0, epochs=4)  # so few epochs that default ticks would fall at 1.5, 2.5, ...
    fig = trf.training_curves({"seed 0": hist}, "", "val_macro_f1")
    best = int(hist["epoch"][hist["val_macro_f1"].idxmax()])  # 0-based, as fit.py stores it
    for ax in fig.axes[:2]:
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert [list(d.get_xdata()) for d in dots] == [[best + 1]]
        assert min(ax.get_lines()[0].get_xdata()) == 1
    plt.close(fig)


def test_figure_sizes_agree_with_the_report_css(tmp_path: Path) -> None:
    """lib.figures designs for the body size and figure width the report's CSS sets."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    css = report.build(root=tmp_path).read_text()
    body = re.search(r"\bbody\s*\{[^}]*font-size:\s*(\d+)px", css)
    width = re.search(r"figure img\s*\{[^}]*max-width:\s*min\(100%,\s*calc\((\d+)px \+ 2px\)\)",
                      css)  # the image's width, plus its 1-px border
    assert body and int(body.group(1)) == report.BODY_FONT_PX == figures.REPORT_BODY_PX
    assert width and int(width.group(1)) == report.FIGURE_MAX_PX == figures.REPORT_FIGURE_PX
