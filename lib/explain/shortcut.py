"""The shortcut test of the guided arm: does teaching a model where to look stop a shortcut?

A phantom variant (``phantom.shortcut: marker``, lib.data.phantom) burns a class-coded box into
a corner of every *Training* image, the way burned-in hospital tokens and laterality markers
leaked into chest-radiograph classifiers (Zech et al. 2018; DeGrave et al. 2021); its Testing
images carry none. On that set this stage trains, per seed, the plain scratch CNN of the study
and its mask-guided twin (lib.train.guided, warm-started from it, as the train_guided stage
does), then measures on the test images, once with their class's marker burned in (the shortcut
present, as in training) and once clean:

- macro-F1 with and without the marker, and the drop between them: a model that reads the
  marker loses it all on clean images;
- where Grad-CAM and HiResCAM point on marked tumour images: inside the lesion, or on the marker
  (the map's maximum within the pointing game's tolerance of the box);
- the healthy-twin control on marked images (the lesion removed, the marker kept): how often a
  tumour is still called;
- whether the prepare stage's confounder audit flags the marked set.

Every number is per seed, summarised over seeds (lib.stats); guided minus plain is paired by
seed (the guided model of seed s starts from the plain model of seed s). Run as the `shortcut`
DVC stage: ``python -m lib.explain.shortcut --params params.yaml``. Its work (the generated
set, the models) lives in ``.cache/shortcut`` and resumes after an interruption.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import check_int, from_group, load_params, repo_root, section
from ..data.inputs import to_model_input
from ..data.phantom import PhantomConfig, burn_marker, generate, healthy_twin, marker_box
from ..data.prepare import PrepareConfig, prepare
from ..figures import SAVE_DPI, readable
from ..forward import predict_probs
from ..jsonio import write_json
from ..seeding import seed_everything
from ..splits import TESTING
from ..stats import paired_difference, seed_interval
from ..train import fit, guided
from ..train.augment import AugmentConfig, AugmentPolicy
from ..train.models import ScratchConfig, build_scratch
from . import scores
from .methods import Explainer
from .study import SplitImages

WORK = Path(".cache") / "shortcut"
METHODS = ("gradcam", "hirescam")
# The targets of the guided arm's shortcut test (issue 22): the shortcut must be real (the plain
# model loses at least this much macro-F1 without the marker) and guidance must stop it.
PLAIN_DROP_TARGET = 0.15
GUIDED_DROP_TARGET = 0.05


@dataclass(frozen=True)
class ShortcutConfig:
    """The `shortcut_test:` group: the marked set's size and which scratch variant is tested."""

    n_train_per_class: int = 200
    n_test_per_class: int = 50
    variant: str = "batchnorm"

    def __post_init__(self) -> None:
        check_int("shortcut_test.n_train_per_class", self.n_train_per_class, 10)
        check_int("shortcut_test.n_test_per_class", self.n_test_per_class, 5)

    @classmethod
    def from_params(cls, group: dict[str, Any]) -> ShortcutConfig:
        return from_group(cls, group, "shortcut_test")


@dataclass(frozen=True)
class Setup:
    """Everything the stage reads from params.yaml, as configs."""

    test: ShortcutConfig
    phantom: PhantomConfig
    prepare: PrepareConfig
    seeds: list[int]
    train: fit.TrainConfig
    model: ScratchConfig
    input_size: int
    augment: AugmentConfig
    guide: guided.GuideConfig
    guide_train: fit.TrainConfig
    layer: str
    min_grid: int
    seed: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Setup:
        test = ShortcutConfig.from_params(section(params, "shortcut_test"))
        phantom = replace(PhantomConfig.from_params(section(params, "phantom")),
                          shortcut="marker", n_train_per_class=test.n_train_per_class,
                          n_test_per_class=test.n_test_per_class)
        scratch = section(params, "train_scratch")
        guide = guided.GuideConfig.from_params(section(params, "guide"))
        return cls(
            test, phantom, PrepareConfig.from_params(section(params, "prepare"), params["seed"]),
            [int(s) for s in params["train_seeds"]],
            fit.TrainConfig.from_params(section(params, "train"), epochs=scratch["epochs"],
                                        learning_rate=scratch["learning_rate"]),
            ScratchConfig.from_params(scratch, test.variant), int(scratch["input_size"]),
            AugmentConfig.from_params(section(params, "augment")), guide,
            fit.TrainConfig.from_params(section(params, "train"), epochs=guide.epochs,
                                        learning_rate=guide.learning_rate, monitor=guide.monitor),
            str(section(params, "explain")["layer"]), int(section(params, "explain")["min_grid"]),
            int(params["seed"]))


# --------------------------------------------------------------------------------------------
# The marked set and the two arms
# --------------------------------------------------------------------------------------------
def make_set(setup: Setup, work: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Generate the marked phantom and prepare it: (raw dir, manifest, the confounder audit)."""
    import json

    raw = work / "raw"
    generate(setup.phantom, raw, progress=False)
    prepare(raw, work / "processed", work / "reports", setup.prepare, progress=False)
    audit = json.loads((work / "reports" / "metrics" / "data_audit.json").read_text())
    return raw, work / "processed" / "manifest.csv", audit.get("confounders") or {}


def layer_of(model: Any, setup: Setup) -> str:
    """The layer the explain stage's rule picks in this model (names can differ by seed)."""
    return Explainer(model, setup.layer, min_grid=setup.min_grid).layer


def train_arms(setup: Setup, data: fit.TrainingData, work: Path) -> str:
    """Train the plain CNN and its guided twin for every seed (resumable); returns the layer."""
    key = (vars(setup.model), vars(setup.train), vars(setup.augment), data.fingerprint)
    fit.train_seeds(data, setup.seeds,
                    lambda: build_scratch(data.input_shape(1), data.n_classes, setup.model),
                    setup.train, stage="shortcut_plain", key=key,
                    augment=lambda s: AugmentPolicy(setup.augment, s),
                    models_dir=work / "models" / "plain", resume_root=work, verbose=0)
    import keras

    first = keras.models.load_model(work / "models" / "plain" / f"seed{setup.seeds[0]}.keras")
    layer = layer_of(first, setup)
    masked = guided.with_masks(data, setup.guide.mask_share, setup.seed)

    def warm_start(seed: int) -> Any:
        plain = keras.models.load_model(work / "models" / "plain" / f"seed{seed}.keras")
        return guided.GuidedClassifier(plain, layer_of(plain, setup), setup.guide.lam,
                                       setup.guide.temperature)

    fit.train_seeds(masked, setup.seeds, None, setup.guide_train, stage="shortcut_guided",
                    key=(*key, vars(setup.guide), layer), warm_start=warm_start,
                    augment=lambda s: AugmentPolicy(setup.augment, s),
                    models_dir=work / "models" / "guided", resume_root=work, verbose=0)
    return layer


# --------------------------------------------------------------------------------------------
# What each model does with and without the marker
# --------------------------------------------------------------------------------------------
@dataclass
class TestViews:
    """The test split three ways, as uint8 images at file size: clean, marked (each image with
    its class's marker) and the marked healthy twins of the tumour images."""

    test: SplitImages
    marked: list[np.ndarray]
    twins: list[np.ndarray]
    classes: list[str]

    @classmethod
    def load(cls, manifest: Path, raw: Path, phantom: PhantomConfig) -> TestViews:
        test = SplitImages.load(manifest, raw, 1, 0, split="test")
        names = list(test.frame["class"])
        marked = [burn_marker(img, c) for img, c in zip(test.images, names, strict=True)]
        twins = []
        for row in test.tumour:
            path = Path(test.frame["path"].iloc[row])
            index = int(path.stem.rsplit("_", 1)[1])
            twins.append(burn_marker(healthy_twin(phantom, TESTING, names[row], index),
                                     names[row]))
        return cls(test, marked, twins, test.names)


def _macro_f1(labels: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, probs.argmax(axis=1), average="macro"))


def _where(maps: np.ndarray, masks: Sequence[np.ndarray], boxes: Sequence[tuple[slice, slice]]
           ) -> tuple[float, float]:
    """(share of maps whose maximum is inside the lesion, share whose maximum is on the marker:
    within the pointing game's tolerance of its box), maps upsampled to the image size."""
    from scipy import ndimage as ndi

    from .methods import upsample

    lesion = marker = 0
    for saliency, mask, box in zip(maps, masks, boxes, strict=True):
        full = upsample(saliency[None], mask.shape)[0]
        lesion += scores.pointing_game(full, mask)
        on_box = np.zeros(mask.shape, bool)
        on_box[box] = True
        near = ndi.distance_transform_edt(~on_box) <= scores.tolerance_px(mask.shape)
        marker += full.max() > full.min() and bool(near.ravel()[int(np.argmax(full))])
    return lesion / len(maps), marker / len(maps)


def score_model(model: Any, layer: str, views: TestViews) -> dict[str, float]:
    """One model's macro-F1 with and without the marker, where its maps point on marked tumour
    images, and how often it calls a marked healthy twin a tumour."""
    size, channels = int(model.input_shape[1]), int(model.input_shape[3])
    labels = views.test.frame["label"].to_numpy()
    clean = predict_probs(model, to_model_input(views.test.images, size, channels))
    marked_x = to_model_input(views.marked, size, channels)
    marked = predict_probs(model, marked_x)
    out = {"f1_marked": _macro_f1(labels, marked), "f1_clean": _macro_f1(labels, clean)}
    out["drop"] = out["f1_marked"] - out["f1_clean"]
    rows = views.test.tumour
    boxes = [marker_box(views.marked[r].shape[0], views.test.frame["class"].iloc[r])
             for r in rows]
    explainer = Explainer(model, layer)
    for method in METHODS:
        maps = explainer.maps(marked_x[rows], labels[rows], method)
        out[f"{method}_on_lesion"], out[f"{method}_on_marker"] = _where(
            maps, [views.test.masks[r] for r in rows], boxes)
    healthy = views.classes.index("notumor")
    twin_pred = predict_probs(model, to_model_input(views.twins, size, channels)).argmax(axis=1)
    out["twins_called_tumour"] = float(np.mean(twin_pred != healthy))
    return {k: round(v, 4) for k, v in out.items()}


def summarise(per_seed: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    """Per arm: each score over seeds; guided minus plain, paired by seed."""
    out: dict[str, Any] = {}
    for arm, seeds in per_seed.items():
        keys = next(iter(seeds.values())).keys()
        out[arm] = {"per_seed": {f"s{s}": v for s, v in seeds.items()},
                    **{k: seed_interval([seeds[s][k] for s in sorted(seeds)]) for k in keys}}
    common = sorted(set(per_seed["plain"]) & set(per_seed["guided"]))
    out["guided_minus_plain"] = {
        k: paired_difference([per_seed["guided"][s][k] for s in common],
                             [per_seed["plain"][s][k] for s in common])
        for k in ("f1_clean", "drop", "gradcam_on_marker", "hirescam_on_marker")}
    return out


def audit_summary(confounders: dict[str, Any]) -> dict[str, Any]:
    """What the confounder audit said about the marked set: flagged families and every message."""
    families = confounders.get("families", {})
    return {"flagged": sorted(f for f, r in families.items() if r.get("finding")),
            "messages": {f: r.get("message", r.get("status", "")) for f, r in families.items()}}


@readable(SAVE_DPI)
def f1_figure(per_seed: dict[str, dict[int, dict[str, float]]]) -> Any:
    """Macro-F1 on the marked and on the clean test images, per arm, one dot per seed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, seeds in enumerate(per_seed.values()):
        for j, (key, label) in enumerate((("f1_marked", "with the marker"),
                                          ("f1_clean", "clean test"))):
            values = [v[key] for v in seeds.values()]
            ax.scatter(np.full(len(values), 2 * i + j), values, color=f"C{j}", zorder=3,
                       label=label if i == 0 else None)
            ax.hlines(np.mean(values), 2 * i + j - 0.3, 2 * i + j + 0.3, color=f"C{j}")
    ax.set_xticks([0.5, 2.5], list(per_seed))
    ax.set_ylabel("test macro-F1 (dot: a seed)")
    ax.set_ylim(0, 1.02)
    ax.legend(frameon=False, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def figures(views: TestViews, models: dict[str, Any], layer: str, per_seed: dict[str, Any],
            figures_dir: Path) -> None:
    """Where the first seed's plain and guided models look on marked test tumours, and macro-F1
    with and without the marker for every seed."""
    import matplotlib.pyplot as plt

    from ..figures import EVAL_DPI, save
    from .figures import saliency_mosaic

    rows = views.test.tumour[:: max(1, len(views.test.tumour) // 6)][:6]
    mosaic = []
    for arm, model in models.items():
        size, channels = int(model.input_shape[1]), int(model.input_shape[3])
        x = to_model_input([views.marked[r] for r in rows], size, channels)
        maps = Explainer(model, layer).maps(x, views.test.frame["label"].to_numpy()[rows],
                                            "gradcam")
        mosaic.append((arm, [(views.marked[r], maps[k], views.test.masks[r],
                              views.test.frame["class"].iloc[r]) for k, r in enumerate(rows)]))
    fig = saliency_mosaic(mosaic, title=f"Grad-CAM at {layer} on marked test images")
    save(fig, figures_dir / "shortcut_maps.png", dpi=EVAL_DPI)
    plt.close(fig)
    fig = f1_figure(per_seed)
    save(fig, figures_dir / "shortcut_f1.png")
    plt.close(fig)


def run(params: dict[str, Any], root: Path, metrics_path: Path, figures_dir: Path
        ) -> dict[str, Any]:
    import keras

    setup = Setup.from_params(params)
    work = root / WORK
    seed_everything(setup.seed)
    raw, manifest, confounders = make_set(setup, work)
    data = fit.TrainingData.from_manifest(manifest, raw, setup.input_size)
    layer = train_arms(setup, data, work)
    views = TestViews.load(manifest, raw, setup.phantom)
    per_seed: dict[str, dict[int, dict[str, float]]] = {"plain": {}, "guided": {}}
    firsts = {}
    for arm in per_seed:
        for seed in setup.seeds:
            model = keras.models.load_model(work / "models" / arm / f"seed{seed}.keras")
            per_seed[arm][seed] = score_model(model, layer_of(model, setup), views)
            firsts.setdefault(arm, model)
    figures(views, firsts, layer, per_seed, figures_dir)
    payload = {"kind": "marker", "layer": layer, "seeds": setup.seeds,
               "n_images": {"train_per_class": setup.test.n_train_per_class,
                            "test_per_class": setup.test.n_test_per_class,
                            "test_tumour": len(views.test.tumour)},
               "targets": {"plain_drop": PLAIN_DROP_TARGET, "guided_drop": GUIDED_DROP_TARGET},
               "audit": audit_summary(confounders), **summarise(per_seed)}
    write_json(metrics_path, payload, digits=4)
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.explain.shortcut",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--metrics", type=Path, default=Path("reports/metrics/shortcut.json"))
    parser.add_argument("--figures", type=Path, default=Path("reports/figures/shortcut"))
    args = parser.parse_args(argv)
    params_path = args.params or repo_root() / "params.yaml"
    try:
        params = load_params(params_path)
        root = Path(params_path).resolve().parent
        payload = run(params, root, root / args.metrics, root / args.figures)
    except (KeyError, ValueError) as exc:
        print(f"shortcut: bad configuration: {exc}", file=sys.stderr)
        return 2
    for arm in ("plain", "guided"):
        a = payload[arm]
        print(f"shortcut: {arm}: macro-F1 {a['f1_marked']['mean']:.3f} with the marker, "
              f"{a['f1_clean']['mean']:.3f} without (drop {a['drop']['mean']:+.3f}); Grad-CAM on "
              f"the marker {a['gradcam_on_marker']['mean']:.0%}, in the lesion "
              f"{a['gradcam_on_lesion']['mean']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
