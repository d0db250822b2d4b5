"""The explain stage: every trained model explained and measured on the test split.

For each model (lib.predict.find_models): its test predictions, saliency maps by every method
(lib.explain), their localisation against the lesion masks, faithfulness and sanity scores
(lib.localise), the healthy-twin shortcut control and what the figures need; ``summary`` turns
the results into ``reports/metrics/explain.json``.

Which images each part uses (sized so that the default profile stays within minutes on 2 cores):
- Grad-CAM, Grad-CAM++ and HiResCAM (cheap): every tumour test image with a mask;
- Score-CAM, SmoothGrad, occlusion and the faithfulness curves: a seeded sample of
  ``sample_size`` of those images, stratified by class; every method's maps exist on the sample,
  so methods compare like with like there; the sanity check re-explains ``sanity_size`` of them;
- the headline method (``validate``): the best model (lib.evaluate.best_model: highest
  validation macro-F1, the evaluate stage's rule, computed here) explained by every
  method on a seeded, class-stratified sample of ``sample_size`` *validation* tumour images; the
  method with the highest strict pointing game there, among the methods that pass the sanity
  check on the same images, is the headline (ties: the earlier, cheaper one in
  lib.explain.METHODS). The test split is never used to choose it;
- the shortcut control: the healthy twin of every tumour test image (phantom data only): same
  anatomy, pose, sequence, bias and noise, no lesion. The share still called a tumour is the
  shortcut rate; beside it, the share of real healthy test scans called a tumour, the rate a
  lesion-reading model would also show on the twins (see ``shortcut_rate``).

The targets (``target_check``, for the best model, each reported met or missed with its number):
the headline method's strict pointing game on test >= 0.80, Grad-CAM's >= 0.60, at most 10 % of
healthy twins called a tumour and at most 0.05 more than real healthy scans, and every method's
randomisation sanity check passed (failing methods named).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import localise
from .config import check_int
from .data import (
    DataError,
    class_names,
    load_arrays,
    load_image,
    load_manifest,
    load_mask,
    split_frame,
)
from .evaluate import BEST_MODEL_RULE, best_model, validation_macro_f1
from .explain import (
    CHEAP_METHODS,
    METHODS,
    MIN_GRID,
    Explainer,
    SaliencyConfig,
    block_layers,
    block_maps,
    blur,
    parse_class_index,
    parse_methods,
    predict_probs,
    randomised_copy,
    resolve_targets,
    to_model_input,
)
from .jsonio import STAGE_DIGITS, round_floats

TARGET_POINTING_GAME = 0.8  # the headline method's strict pointing game on test
TARGET_GRADCAM_POINTING_GAME = 0.6  # Grad-CAM's own, whichever method heads the report
TARGET_SHORTCUT_RATE = 0.1
EXCESS_MARGIN = 0.05  # twins called a tumour this much more often than healthy scans: a shortcut


@dataclass(frozen=True)
class ExplainConfig:
    """The notebook's parameters, checked (methods may be a comma string: DVC passes no lists)."""

    methods: tuple[str, ...] = METHODS
    method: str = "gradcam"  # the one shown in the per-class galleries
    layer: str = "auto"
    min_grid: int = MIN_GRID  # "auto" layers: the fewest cells a side (lib.explain.layer_choice)
    class_index: str | int = "predicted"  # predicted | true | a class number
    sample_size: int = 48
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
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
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


def _twin_index(path: str) -> int:
    stem = Path(path).stem
    try:
        return int(stem.rsplit("_", 1)[1])
    except (IndexError, ValueError) as err:
        raise DataError(f"{path}: not a phantom file name (<class>_<index>.png)") from err


def twin_check(test: SplitImages, expected: Any) -> str | None:
    """Why healthy twins cannot be made for this data (None when they can).

    Twins are only the test images' twins when data/raw is the phantom generated with exactly
    these parameters: its phantom.json must record them, and one tumour image must regenerate
    bit for bit (the generator's code has not changed since).
    """
    from .phantom import CLASSES, MANIFEST, TUMOUR_CLASSES, render_case

    if expected is None:
        return "no phantom parameters given (params_path is None): twins need them"
    provenance = test.raw_dir / MANIFEST
    if not provenance.is_file():
        return (f"{provenance} does not exist: the data is not the phantom, and real scans have "
                "no healthy twins")
    recorded = json.loads(provenance.read_text()).get("config", {})
    wanted = {**asdict(expected), "lesion_fraction": list(expected.lesion_fraction)}
    differ = sorted(k for k in wanted if recorded.get(k) != wanted[k])
    if differ:
        pairs = ", ".join(f"{k}={recorded.get(k)!r} (params: {wanted[k]!r})" for k in differ)
        return f"{provenance} was generated with other parameters: {pairs}"
    if set(test.names) - set(CLASSES):
        return f"classes {test.names} are not the phantom's {list(CLASSES)}"
    rows = [i for i, c in enumerate(test.frame["class"]) if c in TUMOUR_CLASSES]
    if not rows:
        return "no tumour test images"
    row = test.frame.iloc[rows[0]]
    image = render_case(expected, row["source_split"], row["class"], _twin_index(row["path"]))[0]
    if image.shape != test.images[rows[0]].shape or not np.array_equal(image,
                                                                     test.images[rows[0]]):
        return (f"{row['path']} does not regenerate bit for bit from the phantom parameters "
                "(lib.phantom changed since data/raw was generated): twins would not match")
    return None


def healthy_twins(test: SplitImages, expected: Any) -> tuple[Twins | None, str | None]:
    """(twins, None), or (None, the reason they cannot be made)."""
    from .phantom import CLASSES, TUMOUR_CLASSES, healthy_twin

    reason = twin_check(test, expected)
    if reason:
        return None, reason
    rows = np.flatnonzero(test.frame["class"].isin(TUMOUR_CLASSES).to_numpy())
    images = [healthy_twin(expected, test.frame.iloc[i]["source_split"],
                           test.frame.iloc[i]["class"], _twin_index(test.frame.iloc[i]["path"]))
              for i in rows]
    healthy = next(c for c in CLASSES if c not in TUMOUR_CLASSES)
    return Twins(rows, images, healthy), None


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
    from .predict import input_spec

    names, classes = test.names, test.frame["class"].to_numpy()
    on_twins = predict_probs(model, to_model_input(twins.images, *input_spec(model)))
    return shortcut_rate([names[k] for k in on_twins.argmax(axis=1)], list(classes[twins.rows]),
                         twins.healthy, [names[k] for k in predicted[classes == twins.healthy]])


def explain_model(model: Any, key: str, test: SplitImages, cfg: ExplainConfig,
                  twins: Twins | None = None, twins_reason: str | None = None
                  ) -> ModelExplanation:
    """Predict, explain with every method, score the maps and run the controls for one model."""
    from .predict import input_spec
    from .train import seed_everything

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
    g_maps = explainer.maps(x[g_rows], targets[g_rows], cfg.method)
    showcase = np.sort(pd.Series(s).groupby(labels[s]).first().to_numpy())  # one per class
    metrics = {
        "layer": explainer.layer, "layer_reason": explainer.layer_reason,
        "layer_grid": list(explainer.grid),
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


def explain_all(models: list[Any], test: SplitImages, cfg: ExplainConfig,
                twins: Twins | None, twins_reason: str | None, progress: bool = True
                ) -> tuple[dict[str, ModelExplanation], dict[str, str]]:
    """Every model (lib.predict.TrainedModel) explained; a model without the asked-for layer is
    skipped with the reason (an error when no model has it)."""
    from .predict import load

    iterator: Any = models
    if progress:
        from tqdm import tqdm

        iterator = tqdm(models, desc="explain", unit="model")
    results, skipped = {}, {}
    for tm in iterator:
        model = load(tm)
        try:
            results[tm.key] = explain_model(model, tm.key, test, cfg, twins, twins_reason)
        except ValueError as err:
            if cfg.layer == "auto" or f"named {cfg.layer!r}" not in str(err):
                raise
            skipped[tm.key] = str(err)
    if not results:
        raise ValueError(f"no model has a layer named {cfg.layer!r}: {skipped}")
    return results, skipped


# --------------------------------------------------------------------------------------------
# The headline method, chosen on the validation split
# --------------------------------------------------------------------------------------------
NO_VALIDATION_RULE = (BEST_MODEL_RULE + "; without validation images every model ties, so the "
                      "first key is taken")


def pick_model(models: list[Any], results: dict[str, ModelExplanation],
               val: SplitImages | None) -> dict[str, Any]:
    """The model the report heads with, by lib.evaluate's one rule (``best_model``): the highest
    validation macro-F1 (``validation_macro_f1``) over the explained models, each predicting every
    validation image here (the explain stage does not depend on the evaluate stage's output).
    """
    from .predict import input_spec, load

    if val is None:
        return {"best_model": min(results), "best_model_rule": NO_VALIDATION_RULE,
                "val_macro_f1": None}
    labels = val.frame["label"].to_numpy()
    scores = {}
    for tm in models:
        if tm.key in results:
            model = load(tm)
            probs = predict_probs(model, val.inputs(*input_spec(model)))
            scores[tm.key] = validation_macro_f1(labels, probs, len(val.names))
    return {"best_model": best_model(scores), "best_model_rule": BEST_MODEL_RULE,
            "val_macro_f1": scores}


def pick_headline(scores: dict[str, float]) -> str:
    """The method with the highest score; ties go to the earlier (cheaper) one in METHODS."""
    return max(sorted(scores, key=METHODS.index), key=lambda m: scores[m])


def fallback_headline(methods: tuple[str, ...] | list[str]) -> str:
    """Without a validation pass: the cheapest configured method (Grad-CAM when configured)."""
    return min(methods, key=METHODS.index)


def choose_headline(model: Any, key: str, val: SplitImages | None, cfg: ExplainConfig,
                    reason: str | None = None) -> dict[str, Any]:
    """Every configured method on the validation sample, scored by the strict pointing game.

    The headline method is the argmax (``pick_headline``) over the methods that pass the
    randomisation sanity check on the same images: chosen on validation images so that the test
    numbers the report heads with are not the best of several tries on test, and never a method
    whose maps do not depend on the model.
    """
    from .predict import input_spec
    from .train import seed_everything

    if val is None or not len(val.tumour):
        return {"skipped": reason or "no validation tumour images",
                "headline_method": fallback_headline(cfg.methods)}
    seed_everything(cfg.seed)
    rows = val.sample  # tumour rows only, stratified by class, seeded
    x = val.inputs(*input_spec(model))[rows]
    labels = val.frame["label"].to_numpy()[rows]
    predicted = predict_probs(model, x).argmax(axis=1)
    targets = resolve_targets(cfg.class_index, labels, predicted, len(val.names))
    explainer = Explainer(model, cfg.layer, cfg.saliency, cfg.min_grid)
    masks = [val.masks[i] for i in rows]
    scores: dict[str, dict[str, Any]] = {}
    maps: dict[str, np.ndarray] = {}
    for method in cfg.methods:
        maps[method] = explainer.maps(x, targets, method)
        table = localise.score_maps(maps[method], masks, cfg.iou_threshold)
        scores[method] = {"pointing_game": float(table["pointing_game"].mean()),
                          "pointing_game_tol": float(table["pointing_game_tol"].mean())}
    # A method whose maps hardly change when the model is scrambled shows the image, not the
    # model (Adebayo et al. 2018): it may not head the report, however well it points.
    sanity, _ = _sanity(explainer, x, targets, labels, maps, cfg)
    for method, result in sanity.items():
        scores[method].update(sanity_spearman=result["spearman"], sanity_passed=result["passed"])
    eligible = {m: v["pointing_game"] for m, v in scores.items() if v["sanity_passed"]}
    headline = pick_headline(eligible or {m: v["pointing_game"] for m, v in scores.items()})
    return {"split": val.split, "model": key, "n": len(rows), "layer": explainer.layer,
            "criterion": "pointing_game of the methods that pass the sanity check"
                         if eligible else "pointing_game (no method passed the sanity check)",
            "scores": scores, "headline_method": headline}


def validate(models: list[Any], results: dict[str, ModelExplanation], val: SplitImages | None,
             cfg: ExplainConfig, reason: str | None = None) -> dict[str, Any]:
    """The best model (``pick_model``, on validation) and ``choose_headline`` for it
    (lib.predict.TrainedModel list)."""
    from .predict import load

    choice = pick_model(models, results, val)
    key = choice["best_model"]
    if val is None:
        return {**choose_headline(None, key, None, cfg, reason), **choice}
    found = next(tm for tm in models if tm.key == key)
    return {**choose_headline(load(found), key, val, cfg, reason), **choice}


# --------------------------------------------------------------------------------------------
# The metrics json
# --------------------------------------------------------------------------------------------
def _pointing(best: ModelExplanation, method: str) -> tuple[float | None, str | None]:
    """(strict pointing game on test, None) or (None, why it was not measured)."""
    loc = best.metrics["localisation"]
    if "skipped" in loc:
        return None, loc["skipped"] or "localisation was skipped"
    if method not in loc:
        return None, f"{method} is not among the methods"
    return float(loc[method]["pointing_game"]["value"]), None


def _pointing_check(best: ModelExplanation, method: str, target: float) -> dict[str, Any]:
    pg, why = _pointing(best, method)
    check: dict[str, Any] = {"method": method, "target": target, "measured": pg,
                             "met": pg is not None and pg >= target}
    if pg is None:
        check["note"] = f"{method}'s pointing game was not measured ({why})"
    elif not check["met"]:
        h, w = best.metrics["layer_grid"]
        sanity = best.metrics.get("sanity", {})  # a method that ignores the model proves nothing
        others = {m: v["pointing_game"]["value"] for m, v in best.metrics["localisation"].items()
                  if m != method and isinstance(v, dict) and "pointing_game" in v
                  and sanity.get(m, {}).get("passed", True)}
        leader = max(others, key=others.get) if others else None
        if leader is not None and others[leader] >= target:
            # the model does point at the lesion: the method, not the model, misses
            why = (f"{leader} reaches {others[leader]:.0%} on the same model, so the lesion "
                   f"drives the model and {method} misses it")
            if method == "gradcam":
                why += ("; Grad-CAM averages each channel's gradient over the grid, and behind a "
                        "global max-pooling head those gradients exist only at each channel's "
                        "maximum")
        else:
            why = ("lesions cover 1-10 % of the brain; a model that has not learnt to rely on "
                   "the lesion cannot point at it either")
        check["note"] = (
            f"{method}'s maximum falls inside the lesion on {pg:.0%} of tumour test images "
            f"(target {target:.0%}); the best model (test accuracy {best.accuracy:.2f}) is "
            f"explained at {best.layer}, a grid of {h}x{w} cells of {best.size // max(h, 1)} "
            f"pixels; {why}")
    return check


def _shortcut_checks(shortcut: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rate, healthy = shortcut.get("rate"), shortcut.get("healthy_rate")
    excess = shortcut.get("excess")
    twins: dict[str, Any] = {"target": TARGET_SHORTCUT_RATE, "measured": rate,
                             "met": rate is not None and rate <= TARGET_SHORTCUT_RATE}
    over: dict[str, Any] = {"target": EXCESS_MARGIN, "measured": excess,
                            "met": excess is not None and excess <= EXCESS_MARGIN}
    if rate is None:
        twins["note"] = over["note"] = (f"the shortcut control was skipped "
                                        f"({shortcut.get('skipped', 'no healthy twins')})")
        return twins, over
    if not twins["met"]:
        twins["note"] = (f"{rate:.0%} of healthy twins are still called a tumour (target <= "
                         f"{TARGET_SHORTCUT_RATE:.0%})")
        if healthy is not None and rate - healthy <= EXCESS_MARGIN:
            twins["note"] += (f", about as many as real healthy test scans ({healthy:.0%}): the "
                              "model rarely recognises a healthy brain, rather than reading a "
                              "shortcut")
    if excess is None:
        over["note"] = "no real healthy test scans to compare the twins with"
    elif not over["met"]:
        over["note"] = (f"twins are called a tumour {100 * excess:.0f} percentage points more "
                        f"often than real healthy test scans ({healthy:.0%}; target <= "
                        f"{100 * EXCESS_MARGIN:.0f}): the model reads something other than the "
                        "lesion (a shortcut)")
    return twins, over


def _sanity_check(sanity: dict[str, Any]) -> dict[str, Any]:
    failed = [m for m, v in sanity.items() if not v["passed"]]
    check: dict[str, Any] = {"target": localise.SANITY_MAX_SPEARMAN,
                             "measured": {m: v["spearman"] for m, v in sanity.items()},
                             "failed": failed, "met": bool(sanity) and not failed}
    if failed:
        rho = ", ".join(f"{m} (rho {sanity[m]['spearman']:.2f})" for m in failed)
        check["note"] = (f"the randomisation sanity check failed for {rho}: their maps barely "
                         "change when the top layers are scrambled")
    elif not sanity:
        check["note"] = "no sanity check was run"
    return check


def target_check(best: ModelExplanation, headline: str = "gradcam") -> dict[str, Any]:
    """The study's targets for the best model, each met or missed, with the numbers and why.

    `checks`: the headline method's strict pointing game on test (>= TARGET_POINTING_GAME),
    Grad-CAM's (>= TARGET_GRADCAM_POINTING_GAME), the shortcut rate (<= TARGET_SHORTCUT_RATE),
    its excess over real healthy scans (<= EXCESS_MARGIN) and every method's sanity check;
    `met` when all are.
    """
    twins, over = _shortcut_checks(best.metrics["shortcut"])
    checks = {
        "headline_pointing_game": _pointing_check(best, headline, TARGET_POINTING_GAME),
        "gradcam_pointing_game": _pointing_check(best, "gradcam", TARGET_GRADCAM_POINTING_GAME),
        "shortcut_rate": twins, "shortcut_excess": over,
        "sanity": _sanity_check(best.metrics.get("sanity", {})),
    }
    for check in checks.values():
        check["met"] = bool(check["met"])
    notes = [c["note"] for c in checks.values() if not c["met"] and c.get("note")]
    return {"method": headline, "pointing_game": TARGET_POINTING_GAME,
            "gradcam_pointing_game": TARGET_GRADCAM_POINTING_GAME,
            "shortcut_rate": TARGET_SHORTCUT_RATE, "shortcut_excess": EXCESS_MARGIN,
            "best_pointing_game": checks["headline_pointing_game"]["measured"],
            "best_shortcut_rate": twins["measured"], "checks": checks,
            "met": all(c["met"] for c in checks.values()),
            "note": "; ".join(notes) if notes else "met"}


def pointing_tolerance(test: SplitImages) -> dict[str, Any]:
    """The tolerant pointing game's tolerance, as the report states it."""
    sides = sorted({max(test.masks[i].shape) for i in test.tumour})
    return {"fraction_of_side": localise.TOLERANCE_FRACTION, "image_sides": sides,
            "pixels": [localise.tolerance_px((side, side)) for side in sides],
            "reference": "Zhang et al. 2016: 15 px on 224 px inputs, scaled to the image side"}


def summary(results: dict[str, ModelExplanation], test: SplitImages, cfg: ExplainConfig,
            skipped: dict[str, str], twins_reason: str | None = None,
            validation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The explain.json payload, floats rounded by lib.jsonio's rule (its write_json sorts keys).

    `validation`: what ``validate`` returned (the best model and the headline method, both
    chosen on validation); without it the headline method is the cheapest configured one, the
    best model the first key, and the json says the validation pass was skipped.
    """
    validation = validation or {"skipped": "no validation pass was run",
                                "headline_method": fallback_headline(cfg.methods)}
    best = validation.get("best_model") or min(results)
    headline = validation["headline_method"]
    skipped = {**test.skipped, **skipped}
    if twins_reason:
        skipped["shortcut"] = twins_reason
    if "skipped" in validation:
        skipped["validation"] = validation["skipped"]
    payload = {
        "methods": list(cfg.methods), "method": cfg.method, "layer": cfg.layer,
        "min_grid": cfg.min_grid, "class_index": cfg.class_index,
        "sample_size": len(test.sample), "sanity_size": min(cfg.sanity_size, len(test.sample)),
        "n_tumour_images": len(test.tumour),
        "pointing_tolerance": pointing_tolerance(test) if len(test.tumour) else None,
        "models": {k: r.metrics for k, r in results.items()},
        "best_model": best,
        "best_model_rule": validation.get("best_model_rule", NO_VALIDATION_RULE),
        "headline_method": headline,
        "validation": validation,
        "target": target_check(results[best], headline),
        "skipped": skipped,
    }
    return round_floats(payload, STAGE_DIGITS["explain"])


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _target_words(cfg: ExplainConfig, names: list[str]) -> str:
    if cfg.class_index in ("predicted", "true"):
        return f"the {cfg.class_index} class"
    return f"class '{names[int(cfg.class_index)]}'"


def model_figures(res: ModelExplanation, test: SplitImages, cfg: ExplainConfig
                  ) -> dict[str, Any]:
    """{file stem: Figure} for one model: gallery, methods, blocks (scratch) and faithfulness."""
    from . import plots

    names, labels = test.names, test.frame["label"].to_numpy()
    rows = []
    for c, cls in enumerate(names):
        tiles = []
        for r, ok, saliency in res.gallery:
            if labels[r] != c:
                continue
            p = int(res.predicted[r])
            caption = f"ok {res.probs[r, p]:.2f}" if ok else f"as {names[p]} {res.probs[r, p]:.2f}"
            tiles += [(test.images[r], None, None, caption),
                      (test.images[r], None, test.masks[r], "mask"),
                      (test.images[r], saliency, test.masks[r], cfg.method)]
        rows.append((cls, tiles))
    target = _target_words(cfg, names)
    figures = {f"{cfg.method.replace('+', 'p')}_{res.key}": plots.saliency_mosaic(
        rows, title=f"{res.key}: {cfg.method} of {target} at {res.layer}; per image: scan, "
                    "lesion mask (cyan), map. Correct first, then wrong")}
    show = [(test.images[r], test.masks[r]) for r in res.showcase]
    showcase_names = [names[labels[r]] for r in res.showcase]
    methods = list(res.showcase_maps)
    figures[f"methods_{res.key}"] = plots.saliency_mosaic(
        [(cls, [(img, None, mask, "")] + [(img, res.showcase_maps[m][k], mask, "")
                                          for m in methods])
         for k, (cls, (img, mask)) in enumerate(zip(showcase_names, show, strict=True))],
        col_titles=["scan", *methods], title=f"{res.key}: every method, {target}")
    if res.blocks:
        figures[f"blocks_{res.key}"] = plots.saliency_mosaic(
            [(cls, [(img, None, mask, "")] + [(img, maps[k], mask, "")
                                              for maps in res.blocks.values()])
             for k, (cls, (img, mask)) in enumerate(zip(showcase_names, show, strict=True))],
            col_titles=["scan", *res.blocks], title=f"{res.key}: mean activation per block")
    faith = res.metrics["faithfulness"]
    figures[f"faithfulness_{res.key}"] = plots.faithfulness_curves(
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

    from . import plots

    written = []
    for key, res in results.items():
        for name, fig in model_figures(res, test, cfg).items():
            if key == show:
                plots.publish_compact(fig, name, figures_dir)
            else:
                if figures_dir:
                    plots.save_compact(fig, Path(figures_dir) / f"{name}.png")
                plt.close(fig)
            written.append(name)
    table = localisation_table(results)
    if len(table):
        chance = float(np.mean([test.masks[i].mean() for i in test.tumour]))
        plots.publish_compact(plots.localisation_scores(table, chance=chance,
                                                        target=TARGET_POINTING_GAME),
                              "localisation", figures_dir)
        written.append("localisation")
    return written


# --------------------------------------------------------------------------------------------
# Tables for the notebook
# --------------------------------------------------------------------------------------------
def tables(results: dict[str, ModelExplanation], validation: dict[str, Any] | None = None
           ) -> dict[str, pd.DataFrame]:
    """Overview, localisation, faithfulness, sanity and shortcut tables (rows: model, method),
    and the validation scores that chose the headline method (rows: method)."""
    headline = (validation or {}).get("headline_method", "gradcam")
    overview, loc, faith, sanity, shortcut = [], [], [], [], []
    for key, r in results.items():
        m = r.metrics
        pg = {method: m["localisation"].get(method, {}).get("pointing_game", {}).get("value")
              for method in dict.fromkeys((headline, "gradcam"))}
        overview.append({"model": key, "test accuracy": r.accuracy, "layer": r.layer,
                         "grid": "x".join(map(str, m["layer_grid"])),
                         **{f"{method} pointing game" + (" (headline)" if method == headline
                                                         else ""): v for method, v in pg.items()},
                         "shortcut rate": m["shortcut"].get("rate"),
                         "seconds": round(r.seconds, 1)})
        for method, s in m["localisation"].items():
            if method != "skipped":
                loc.append({"model": key, "method": method, "n": s["n"],
                            **{k: f"{s[k]['value']:.3f} [{s[k]['ci'][0]:.3f}, "
                                  f"{s[k]['ci'][1]:.3f}]" for k in localise.SCORES}})
        faith += [{"model": key, "method": k, **v} for k, v in m["faithfulness"].items()]
        sanity += [{"model": key, "method": k, **v} for k, v in m["sanity"].items()]
        shortcut.append({"model": key, **{k: v for k, v in m["shortcut"].items()
                                          if k != "per_class"},
                         **m["shortcut"].get("per_class", {})})
    index = ["model", "method"]
    scores = (validation or {}).get("scores", {})
    chosen = pd.DataFrame([{"method": k, **v, "headline": k == headline}
                           for k, v in scores.items()],
                          columns=["method", *localise.SCORES[:2], "sanity_spearman",
                                   "sanity_passed", "headline"]).set_index("method")
    return {"overview": pd.DataFrame(overview).set_index("model"), "validation": chosen,
            "localisation": pd.DataFrame(loc).set_index(index) if loc else pd.DataFrame(),
            "faithfulness": pd.DataFrame(faith).set_index(index),
            "sanity": pd.DataFrame(sanity).set_index(index),
            "shortcut": pd.DataFrame(shortcut).set_index("model")}
