"""The explain stage: every trained model explained and measured on the test split.

For each model (lib.evaluate.predict.find_models): its test predictions, saliency maps, their
localisation against the lesion masks, faithfulness and sanity scores (lib.explain.scores), the
healthy-twin shortcut control and what the figures need; ``lib.explain.verdict.summary`` turns
the results into ``reports/metrics/explain.json``.

Which models and images each part uses (seeds are the unit of evidence, so the cheap parts run on
every seed; the default profile stays within minutes on 2 cores):
- every seed's model (``explain_seed``): Grad-CAM, Grad-CAM++ and HiResCAM (cheap) on every
  tumour test image with a mask, test accuracy and the shortcut control, summarised per
  configuration over its seeds (``lib.explain.verdict.seed_summary``);
- each configuration's lowest seed (``explain_model``, ``representatives``) in full: also
  Score-CAM, SmoothGrad, occlusion and the faithfulness curves on a seeded sample of
  ``sample_size`` tumour images, stratified by class (every method's maps exist on the sample,
  so methods compare like with like there), the sanity check on ``sanity_size`` of them, and
  the figures;
- the headline method (``validate``): the best configuration (lib.evaluate.metrics's rule: the
  highest mean validation macro-F1 over its seeds, computed here) explained on *validation*
  tumour images: the cheap methods on all of them and every seed, averaged over the seeds; the
  expensive ones on the seeded validation sample of its lowest seed. The method with the highest
  strict pointing game, among the methods that pass the sanity check on that sample, is the
  headline (ties: the earlier, cheaper one in lib.explain.methods.METHODS). The test split is
  never used to choose it;
- the shortcut control: the healthy twin of every tumour test image (phantom data only): same
  anatomy, pose, sequence, bias and noise, no lesion. The share still called a tumour is the
  shortcut rate; beside it, the share of real healthy test scans called a tumour, the rate a
  lesion-reading model would also show on the twins (see ``shortcut_rate``).

The targets (``lib.explain.verdict.target_check``, for the model standing for the best
configuration, each met or missed with its number; lib.claims restates them over seeds): the
headline method's strict pointing game on test >= 0.80, Grad-CAM's >= 0.60, at most 10 % of
healthy twins called a tumour and at most 0.05 more than real healthy scans, and every method's
randomisation sanity check passed (failing methods named).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import check_int, from_group
from ..contracts import TWINS_JSON
from ..data.images import load_image, load_mask
from ..data.inputs import load_arrays, to_model_input
from ..data.manifest import DataError, class_names, load_manifest, split_frame
from ..evaluate.metrics import (
    BEST_MODEL_RULE,
    best_configuration,
    best_model,
    validation_macro_f1,
)
from ..forward import predict_probs
from ..seeding import seed_everything
from . import scores as localise
from .methods import (
    CHEAP_METHODS,
    METHODS,
    Explainer,
    SaliencyConfig,
    block_layers,
    block_maps,
    blur,
    parse_class_index,
    parse_methods,
    randomised_copy,
    resolve_targets,
)


@dataclass(frozen=True)
class ExplainConfig:
    """The notebook's parameters, checked (methods may be a comma string: DVC passes no lists)."""

    methods: tuple[str, ...] = METHODS
    gallery_method: str = "gradcam"  # the one shown in the per-class galleries
    layer: str = "auto"
    min_grid: int = 32  # "auto" layers: the fewest cells a side (methods.layer_choice)
    class_index: str | int = "predicted"  # predicted | true | a class number
    sample_size: int = 32
    sanity_size: int = 16  # images of the sample the sanity check re-explains
    iou_threshold: float = 0.5
    bootstrap_resamples: int = 1000
    sanity_layers: int = 3
    faithfulness_steps: int = 20
    gallery_per_class: int = 4
    seed: int = 42
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(parse_methods(self.methods)))
        if self.gallery_method not in METHODS:
            raise ValueError(f"gallery_method must be one of {', '.join(METHODS)}, "
                             f"got {self.gallery_method!r}")
        object.__setattr__(self, "class_index", parse_class_index(self.class_index))
        if not isinstance(self.layer, str) or not self.layer.strip():
            raise ValueError(f"layer must be 'auto' or a layer name, got {self.layer!r}")
        for name, low in (("sample_size", 1), ("sanity_size", 1), ("bootstrap_resamples", 1),
                          ("sanity_layers", 1), ("min_grid", 1),
                          ("faithfulness_steps", 2), ("gallery_per_class", 1), ("seed", 0)):
            check_int(name, getattr(self, name), low)
        t = self.iou_threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < 1:
            raise ValueError(f"iou_threshold must be a number in (0, 1), got {t!r}")

    @classmethod
    def from_params(cls, group: dict[str, Any], seed: int) -> ExplainConfig:
        """From the `explain:` group (its saliency keys make ``saliency``) and the study seed."""
        saliency = {f.name for f in fields(SaliencyConfig)} - {"seed", "batch_size"}
        return from_group(cls, {k: v for k, v in group.items() if k not in saliency}, "explain",
                          others=saliency, seed=seed,
                          saliency=SaliencyConfig(**{k: group[k] for k in saliency & set(group)},
                                                  seed=seed))


# --------------------------------------------------------------------------------------------
# The test (and validation) images, their masks and the sample
# --------------------------------------------------------------------------------------------
def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted positions of `size` items, classes taking turns (each shuffled with the seed)."""
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < min(size, len(labels)):
        for queue in queues:
            if queue and len(picked) < size:
                picked.append(int(queue.pop(0)))
    return np.sort(np.asarray(picked, dtype=np.int64))


@dataclass
class SplitImages:
    """One split (test, or val for the headline choice) as the explanations need it: pixels,
    masks, tumour rows and the sample."""

    frame: pd.DataFrame
    names: list[str]
    raw_dir: Path
    images: list[np.ndarray]  # uint8 at file size, for the figures
    masks: list[np.ndarray]  # bool at file size; all False without a lesion
    tumour: np.ndarray  # rows with a non-empty mask
    sample: np.ndarray  # rows of the seeded, stratified sample
    skipped: dict[str, str]
    _inputs: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    split: str = "test"

    @classmethod
    def load(cls, manifest_path: Path | str, raw_dir: Path | str, sample_size: int,
             seed: int, split: str = "test") -> SplitImages:
        manifest = load_manifest(Path(manifest_path))
        frame = split_frame(manifest, split)
        images = [load_image(Path(raw_dir), p) for p in frame["path"]]
        masks = [load_mask(Path(raw_dir), m, img.shape) for m, img in zip(frame["mask"], images,
                                                                           strict=True)]
        tumour = np.flatnonzero([m.any() for m in masks])
        skipped = {}
        if not len(tumour):
            skipped["localisation"] = (
                f"no {split} image has a non-empty lesion mask (<name>_mask.png or "
                "<name>_mask_<k>.png beside the image), so pointing game, energy-in-mask and "
                "IoU cannot be measured; "
                f"faithfulness, sanity and the galleries use all {split} images")
        pool = tumour if len(tumour) else np.arange(len(frame))
        sample = pool[stratified_sample(frame["label"].to_numpy()[pool], sample_size, seed)]
        return cls(frame, class_names(manifest), Path(raw_dir), images, masks, tumour, sample,
                   skipped, split=split)

    def inputs(self, size: int, channels: int) -> np.ndarray:
        """The exact model inputs (lib.data's pipeline), once per (size, channels)."""
        if (size, channels) not in self._inputs:
            self._inputs[(size, channels)] = load_arrays(
                self.frame, self.raw_dir, image_size=size, n_classes=len(self.names),
                channels=channels)[0]
        return self._inputs[(size, channels)]


def validation_images(manifest_path: Path | str, raw_dir: Path | str, sample_size: int,
                      seed: int) -> tuple[SplitImages | None, str | None]:
    """(the validation split with its tumour sample, None) or (None, why there is none)."""
    try:
        val = SplitImages.load(manifest_path, raw_dir, sample_size, seed, split="val")
    except DataError as err:
        return None, f"no validation images to choose the headline method on ({err})"
    if not len(val.tumour):
        return None, ("no validation image has a lesion mask, so the headline method cannot be "
                      "chosen by its pointing game")
    return val, None


# --------------------------------------------------------------------------------------------
# Shortcut control: the phantom's healthy twins
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Twins:
    """Healthy twins of the tumour test images (rows of SplitImages.frame) and the healthy class."""

    rows: np.ndarray
    images: list[np.ndarray]
    healthy: str


def healthy_twins(test: SplitImages, twins_dir: Path | str | None
                  ) -> tuple[Twins | None, str | None]:
    """(twins, None) from the twins stage's folder (lib.data.phantom_sets), or (None, why not).

    The twins stage writes them only when data/raw is the phantom of params.yaml; otherwise its
    twins.json holds the reason, which the shortcut control reports as its skip.
    """
    if twins_dir is None:
        return None, "no twins folder given (the twins stage writes data/processed/twins)"
    path = Path(twins_dir) / TWINS_JSON
    if not path.is_file():
        return None, f"{path} does not exist: run the twins stage (dvc repro twins)"
    payload = json.loads(path.read_text())
    if payload["reason"]:
        return None, payload["reason"]
    row_of = {p: i for i, p in enumerate(test.frame["path"])}
    missing = [p for p, _ in payload["twins"] if p not in row_of]
    if missing:
        return None, (f"{len(missing)} twin(s) belong to images that are not test images here "
                      f"(e.g. {missing[0]}): rerun the twins stage")
    rows = np.asarray([row_of[p] for p, _ in payload["twins"]], dtype=np.int64)
    images = [load_image(Path(twins_dir), f) for _, f in payload["twins"]]
    return Twins(rows, images, payload["healthy"]), None


def shortcut_rate(predicted: list[str], classes: list[str], healthy: str,
                  healthy_predicted: list[str] | None = None) -> dict[str, Any]:
    """Share of healthy twins called a tumour class, overall and by the original image's class.

    With `healthy_predicted` (the predictions for the real healthy test images) also the share
    of those called a tumour (`healthy_rate`) and the difference (`excess`). A model that reads
    the lesion calls a twin a tumour about as often as a real healthy scan, since both are
    lesion-free; one that reads a class-linked nuisance (slice level, image size) calls the
    twins, which keep their tumour class's nuisance, a tumour far more often.
    """
    called = np.asarray([p != healthy for p in predicted], dtype=float)
    frame = pd.DataFrame({"cls": classes, "called": called})
    rate = float(called.mean()) if len(called) else 0.0
    out: dict[str, Any] = {"rate": rate, "n": len(called),
                           "per_class": {str(c): float(g["called"].mean())
                                         for c, g in frame.groupby("cls", sort=True)}}
    if healthy_predicted:
        healthy_rate = float(np.mean([p != healthy for p in healthy_predicted]))
        out.update(healthy_rate=healthy_rate, n_healthy=len(healthy_predicted),
                   excess=rate - healthy_rate)
    return out


# --------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------
@dataclass
class ModelExplanation:
    """Everything measured for one model: `metrics` goes to the json, the rest to the figures."""

    key: str
    size: int  # model input side (pixels)
    layer: str
    accuracy: float
    metrics: dict[str, Any]
    predicted: np.ndarray
    probs: np.ndarray
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    gallery: list[tuple[int, bool, np.ndarray]]  # (row, correct, map) per class in turn
    showcase: np.ndarray  # rows shown under every method
    showcase_maps: dict[str, np.ndarray]
    blocks: dict[str, np.ndarray] | None
    seconds: float


def gallery_picks(labels: np.ndarray, predicted: np.ndarray, per_class: int, seed: int
                  ) -> list[tuple[int, bool]]:
    """Per class: up to half wrongly classified images, the rest correct (seeded choice)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        right = np.flatnonzero((labels == c) & (predicted == c))
        wrong = np.flatnonzero((labels == c) & (predicted != c))
        n_wrong = min(len(wrong), max(per_class // 2, per_class - len(right)))
        n_right = min(len(right), per_class - n_wrong)
        out += [(int(i), True) for i in np.sort(rng.choice(right, n_right, replace=False))]
        out += [(int(i), False) for i in np.sort(rng.choice(wrong, n_wrong, replace=False))]
    return out


def _faithfulness(model: Any, x: np.ndarray, targets: np.ndarray,
                  maps: dict[str, np.ndarray], steps: int
                  ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    baseline = blur(x)
    scores, curves = {}, {}
    for method, m in maps.items():
        deletion, insertion = localise.deletion_insertion(model, x, m, targets, baseline, steps)
        scores[method] = {"deletion_auc": float(localise.curve_auc(deletion).mean()),
                          "insertion_auc": float(localise.curve_auc(insertion).mean()),
                          "n": len(x)}
        curves[method] = (deletion.mean(axis=0), insertion.mean(axis=0))
    return scores, curves


def _maps_and_localisation(explainer: Explainer, x: np.ndarray, targets: np.ndarray,
                           test: SplitImages, cfg: ExplainConfig
                           ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every method's maps on the sample, and its localisation scores where masks exist."""
    classes = test.frame["class"].to_numpy()
    on_sample, localisation = {}, {}
    for method in cfg.methods:
        cheap = len(test.tumour) > 0 and method in CHEAP_METHODS
        rows = test.tumour if cheap else test.sample
        maps = explainer.maps(x[rows], targets[rows], method)
        on_sample[method] = maps[np.searchsorted(rows, test.sample)]
        if len(test.tumour):
            table = localise.score_maps(maps, [test.masks[i] for i in rows], cfg.iou_threshold)
            localisation[method] = localise.summarise(table, list(classes[rows]),
                                                      cfg.bootstrap_resamples, cfg.seed)
    return on_sample, localisation


def _sanity(explainer: Explainer, x: np.ndarray, targets: np.ndarray, labels: np.ndarray,
            on_sample: dict[str, np.ndarray], cfg: ExplainConfig
            ) -> tuple[dict[str, Any], list[str]]:
    """Trained vs top-layers-scrambled maps on `sanity_size` sample images (x etc. = sample)."""
    randomised, scrambled = randomised_copy(explainer.model, cfg.sanity_layers, cfg.seed)
    rand_explainer = Explainer(randomised, explainer.layer, cfg.saliency)
    few = stratified_sample(labels, cfg.sanity_size, cfg.seed)
    return {m: localise.sanity(maps[few], rand_explainer.maps(x[few], targets[few], m))
            for m, maps in on_sample.items()}, scrambled


def _shortcut(model: Any, test: SplitImages, predicted: np.ndarray, twins: Twins | None,
              twins_reason: str | None) -> dict[str, Any]:
    if twins is None:
        return {"skipped": twins_reason or "no healthy twins"}
    from ..evaluate.predict import input_spec

    names, classes = test.names, test.frame["class"].to_numpy()
    on_twins = predict_probs(model, to_model_input(twins.images, *input_spec(model)))
    return shortcut_rate([names[k] for k in on_twins.argmax(axis=1)], list(classes[twins.rows]),
                         twins.healthy, [names[k] for k in predicted[classes == twins.healthy]])


def explain_model(model: Any, key: str, test: SplitImages, cfg: ExplainConfig,
                  twins: Twins | None = None, twins_reason: str | None = None
                  ) -> ModelExplanation:
    """Predict, explain with every method, score the maps and run the controls for one model."""
    from ..evaluate.predict import input_spec

    start = time.perf_counter()
    seed_everything(cfg.seed)
    if int(model.output_shape[-1]) != len(test.names):
        raise DataError(f"{key} predicts {model.output_shape[-1]} classes but the manifest has "
                        f"{len(test.names)}; retrain it on this dataset")
    size, channels = input_spec(model)
    x = test.inputs(size, channels)
    probs = predict_probs(model, x)
    predicted, labels = probs.argmax(axis=1), test.frame["label"].to_numpy()
    targets = resolve_targets(cfg.class_index, labels, predicted, len(test.names))
    explainer = Explainer(model, cfg.layer, cfg.saliency, cfg.min_grid)
    on_sample, localisation = _maps_and_localisation(explainer, x, targets, test, cfg)
    s = test.sample
    faithfulness, curves = _faithfulness(model, x[s], targets[s], on_sample,
                                         cfg.faithfulness_steps)
    sanity, scrambled = _sanity(explainer, x[s], targets[s], labels[s], on_sample, cfg)

    gallery = gallery_picks(labels, predicted, cfg.gallery_per_class, cfg.seed)
    g_rows = np.asarray([r for r, _ in gallery], dtype=np.int64)
    g_maps = explainer.maps(x[g_rows], targets[g_rows], cfg.gallery_method)
    showcase = np.sort(pd.Series(s).groupby(labels[s]).first().to_numpy())  # one per class
    metrics = {
        "layer": explainer.layer, "layer_reason": explainer.layer_reason,
        "layer_grid": list(explainer.grid), "head": explainer.head,
        "accuracy": float((predicted == labels).mean()),
        "localisation": localisation or {"skipped": test.skipped.get("localisation", "")},
        "faithfulness": faithfulness, "sanity": sanity, "randomised_layers": scrambled,
        "shortcut": _shortcut(model, test, predicted, twins, twins_reason),
    }
    return ModelExplanation(
        key, size, explainer.layer, metrics["accuracy"], metrics, predicted, probs, curves,
        [(r, ok, m) for (r, ok), m in zip(gallery, g_maps, strict=True)], showcase,
        {m: v[np.searchsorted(s, showcase)] for m, v in on_sample.items()},
        block_maps(model, x[showcase]) if block_layers(model) else None,
        time.perf_counter() - start)


def explain_seed(model: Any, key: str, test: SplitImages, cfg: ExplainConfig,
                 twins: Twins | None = None, twins_reason: str | None = None) -> dict[str, Any]:
    """The part measured on every seed: test accuracy, the cheap methods' localisation on every
    tumour test image and the shortcut control. (The expensive methods, faithfulness, sanity and
    the figures run once per configuration, on its representative model: ``explain_all``.)"""
    from ..evaluate.predict import input_spec

    seed_everything(cfg.seed)
    x = test.inputs(*input_spec(model))
    probs = predict_probs(model, x)
    predicted, labels = probs.argmax(axis=1), test.frame["label"].to_numpy()
    localisation: dict[str, Any] = {"skipped": test.skipped.get("localisation", "")}
    if len(test.tumour):
        targets = resolve_targets(cfg.class_index, labels, predicted, len(test.names))
        explainer = Explainer(model, cfg.layer, cfg.saliency, cfg.min_grid)
        rows = test.tumour
        classes = test.frame["class"].to_numpy()[rows]
        localisation = {}
        for method in cheap_methods(cfg):
            table = localise.score_maps(explainer.maps(x[rows], targets[rows], method),
                                        [test.masks[i] for i in rows], cfg.iou_threshold)
            localisation[method] = localise.summarise(table, list(classes),
                                                      cfg.bootstrap_resamples, cfg.seed)
    return {"accuracy": float((predicted == labels).mean()), "localisation": localisation,
            "shortcut": _shortcut(model, test, predicted, twins, twins_reason)}


def cheap_methods(cfg: ExplainConfig) -> list[str]:
    """The configured methods cheap enough to run on every seed and every tumour image."""
    return [m for m in cfg.methods if m in CHEAP_METHODS]


def seed_part(metrics: dict[str, Any], cfg: ExplainConfig) -> dict[str, Any]:
    """``explain_seed``'s numbers, taken from a representative's full metrics."""
    loc = metrics["localisation"]
    return {"accuracy": metrics["accuracy"],
            "localisation": loc if "skipped" in loc else
            {m: loc[m] for m in cheap_methods(cfg) if m in loc},
            "shortcut": metrics["shortcut"]}


def representatives(models: list[Any]) -> set[str]:
    """The key of each configuration's lowest seed: the model explained in full."""
    firsts: dict[str, Any] = {}
    for tm in models:
        if tm.name not in firsts or tm.seed < firsts[tm.name].seed:
            firsts[tm.name] = tm
    return {tm.key for tm in firsts.values()}


def explain_all(models: list[Any], test: SplitImages, cfg: ExplainConfig,
                twins: Twins | None, twins_reason: str | None, progress: bool = True
                ) -> tuple[dict[str, ModelExplanation], dict[str, str], dict[str, dict[str, Any]]]:
    """Every model (lib.evaluate.predict.TrainedModel) explained: in full (every method, the
    faithfulness and sanity checks, the figures) for each configuration's lowest seed, and
    ``explain_seed`` for its other seeds. A model without the asked-for layer is skipped with
    the reason (an error when no model has it). Returns (full results, skipped, per-seed part of
    every model)."""
    from ..evaluate.predict import load

    full = representatives(models)
    iterator: Any = models
    if progress:
        from tqdm import tqdm

        iterator = tqdm(models, desc="explain", unit="model")
    results, skipped, per_seed = {}, {}, {}
    for tm in iterator:
        model = load(tm)
        try:
            if tm.key in full:
                results[tm.key] = explain_model(model, tm.key, test, cfg, twins, twins_reason)
                per_seed[tm.key] = seed_part(results[tm.key].metrics, cfg)
            else:
                per_seed[tm.key] = explain_seed(model, tm.key, test, cfg, twins, twins_reason)
        except ValueError as err:
            if cfg.layer == "auto" or f"named {cfg.layer!r}" not in str(err):
                raise
            skipped[tm.key] = str(err)
    if not results:
        raise ValueError(f"no model has a layer named {cfg.layer!r}: {skipped}")
    return results, skipped, per_seed


# --------------------------------------------------------------------------------------------
# The headline method, chosen on the validation split
# --------------------------------------------------------------------------------------------
NO_VALIDATION_RULE = (BEST_MODEL_RULE + "; without validation images every model ties, so the "
                      "first key is taken")


def pick_model(models: list[Any], skipped: dict[str, str], val: SplitImages | None
               ) -> dict[str, Any]:
    """The model the report heads with, by lib.evaluate's one rule (``best_model``): the best
    configuration by mean validation macro-F1 (``validation_macro_f1``) over its seeds, and its
    lowest seed; every model predicts every validation image here (the explain stage does not
    depend on the evaluate stage's output).
    """
    from ..evaluate.predict import input_spec, load

    keys = [tm.key for tm in models if tm.key not in skipped]
    if val is None:
        return {"best_model": min(keys), "best_model_rule": NO_VALIDATION_RULE,
                "val_macro_f1": None}
    labels = val.frame["label"].to_numpy()
    scores = {}
    for tm in models:
        if tm.key in keys:
            model = load(tm)
            probs = predict_probs(model, val.inputs(*input_spec(model)))
            scores[tm.key] = validation_macro_f1(labels, probs, len(val.names))
    return {"best_model": best_model(scores), "best_configuration": best_configuration(scores),
            "best_model_rule": BEST_MODEL_RULE, "val_macro_f1": scores}


def pick_headline(scores: dict[str, float]) -> str:
    """The method with the highest score; ties go to the earlier (cheaper) one in METHODS."""
    return max(sorted(scores, key=METHODS.index), key=lambda m: scores[m])


def fallback_headline(methods: tuple[str, ...] | list[str]) -> str:
    """Without a validation pass: the cheapest configured method (Grad-CAM when configured)."""
    return min(methods, key=METHODS.index)


def _val_pointing(model: Any, val: SplitImages, rows: np.ndarray, methods: list[str],
                  cfg: ExplainConfig) -> dict[str, dict[str, float]]:
    """Each method's strict and tolerant pointing game of `model` on validation `rows` (one
    prediction and one explainer for all of them)."""
    from ..evaluate.predict import input_spec

    x = val.inputs(*input_spec(model))[rows]
    labels = val.frame["label"].to_numpy()[rows]
    predicted = predict_probs(model, x).argmax(axis=1)
    targets = resolve_targets(cfg.class_index, labels, predicted, len(val.names))
    explainer = Explainer(model, cfg.layer, cfg.saliency, cfg.min_grid)
    masks = [val.masks[i] for i in rows]
    out = {}
    for method in methods:
        table = localise.score_maps(explainer.maps(x, targets, method), masks, cfg.iou_threshold)
        out[method] = {"pointing_game": float(table["pointing_game"].mean()),
                       "pointing_game_tol": float(table["pointing_game_tol"].mean())}
    return out


def choose_headline(model: Any, key: str, val: SplitImages | None, cfg: ExplainConfig,
                    reason: str | None = None, members: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Every configured method scored on validation tumour images by the strict pointing game.

    The cheap methods (Grad-CAM, Grad-CAM++, HiResCAM) on *every* validation tumour image and
    every seed of the best configuration (`members`: {key: model}, `model` among them),
    averaged over the seeds, so that one image or one seed does not swing the choice; the
    expensive ones on the seeded validation sample (``sample_size`` images) with `model` alone.
    The headline method is the argmax (``pick_headline``) over the methods that pass the
    randomisation sanity check (on ``sanity_size`` sample images of `model`): chosen on
    validation images so that the test numbers the report heads with are not the best of
    several tries on test, and never a method whose maps do not depend on the model.
    """
    from ..evaluate.predict import input_spec

    if val is None or not len(val.tumour):
        return {"skipped": reason or "no validation tumour images",
                "headline_method": fallback_headline(cfg.methods)}
    members = members or {key: model}
    seed_everything(cfg.seed)
    rows = val.sample  # tumour rows only, stratified by class, seeded
    x = val.inputs(*input_spec(model))[rows]
    labels = val.frame["label"].to_numpy()[rows]
    targets = resolve_targets(cfg.class_index, labels, predict_probs(model, x).argmax(axis=1),
                              len(val.names))
    explainer = Explainer(model, cfg.layer, cfg.saliency, cfg.min_grid)
    maps = {m: explainer.maps(x, targets, m) for m in cfg.methods}  # the sanity check's too
    cheap = cheap_methods(cfg)
    on_all = {k: _val_pointing(m, val, val.tumour, cheap, cfg) for k, m in sorted(members.items())}
    scores: dict[str, dict[str, Any]] = {}
    for method in cfg.methods:
        if method in cheap:
            per_seed = {k: v[method] for k, v in on_all.items()}
            scores[method] = {s: float(np.mean([v[s] for v in per_seed.values()]))
                              for s in ("pointing_game", "pointing_game_tol")}
            scores[method].update(n=len(val.tumour), models=sorted(per_seed),
                                  per_seed={k: v["pointing_game"] for k, v in per_seed.items()})
        else:
            table = localise.score_maps(maps[method], [val.masks[i] for i in rows],
                                        cfg.iou_threshold)
            scores[method] = {"pointing_game": float(table["pointing_game"].mean()),
                              "pointing_game_tol": float(table["pointing_game_tol"].mean()),
                              "n": len(rows), "models": [key]}
    # A method whose maps hardly change when the model is scrambled shows the image, not the
    # model (Adebayo et al. 2018): it may not head the report, however well it points.
    sanity, _ = _sanity(explainer, x, targets, labels, maps, cfg)
    for method, result in sanity.items():
        scores[method].update(sanity_spearman=result["spearman"], sanity_passed=result["passed"],
                              sanity_ci=result["ci"], sanity_settled=result["settled"])
    eligible = {m: v["pointing_game"] for m, v in scores.items() if v["sanity_passed"]}
    headline = pick_headline(eligible or {m: v["pointing_game"] for m, v in scores.items()})
    return {"split": val.split, "model": key, "n": len(rows), "n_tumour": len(val.tumour),
            "seeds": sorted(members), "layer": explainer.layer,
            "criterion": "pointing_game of the methods that pass the sanity check"
                         if eligible else "pointing_game (no method passed the sanity check)",
            "scores": scores, "headline_method": headline}


def validate(models: list[Any], skipped: dict[str, str], val: SplitImages | None,
             cfg: ExplainConfig, reason: str | None = None) -> dict[str, Any]:
    """The best model (``pick_model``, on validation) and ``choose_headline`` for it and its
    configuration's other seeds (lib.evaluate.predict.TrainedModel list)."""
    from ..evaluate.predict import load

    choice = pick_model(models, skipped, val)
    key = choice["best_model"]
    if val is None:
        return {**choose_headline(None, key, None, cfg, reason), **choice}
    name = next(tm.name for tm in models if tm.key == key)
    members = {tm.key: load(tm) for tm in models if tm.name == name and tm.key not in skipped}
    return {**choose_headline(members[key], key, val, cfg, reason, members), **choice}


# --------------------------------------------------------------------------------------------
# The metrics json
# --------------------------------------------------------------------------------------------














# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------








# --------------------------------------------------------------------------------------------
# Tables for the notebook
# --------------------------------------------------------------------------------------------
