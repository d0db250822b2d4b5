"""What the study says about the models it serves: which is best and why, which saliency method it
trusts, what the models were trained on and what they are not for (the model card).

Everything here is read from the study's own outputs, never typed by hand:

* the best model: ``lib.evaluate.metrics.best_model`` (``BEST_MODEL_RULE``: highest mean
  *validation* macro-F1 over a configuration's seeds, its lowest seed stands for it) applied to
  the per-seed validation scores of reports/metrics/evaluate.json (``configurations``); each model
  is labelled with that same quantity, so "best" and the number beside it agree;
* the headline saliency method: ``headline_method`` of reports/metrics/explain.json (chosen on
  validation by the explain stage); when the file or the key is missing the app says so and
  picks nothing;
* the model card: the training data from data/raw/phantom.json and the prepare stage's manifest,
  the test macro-F1 over seeds from evaluate.json, and what the models are not for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evaluate.metrics import BEST_MODEL_RULE, best_configuration, best_model, parse_key
from ..explain.methods import METHODS

EVALUATE_JSON = Path("reports/metrics/evaluate.json")
EXPLAIN_JSON = Path("reports/metrics/explain.json")
PHANTOM_JSON = "phantom.json"  # written by lib.data.phantom next to the images it generates

# A one-off check by hand (not a pipeline metric): the served transfer model on real MRI JPEGs
# of the public Kaggle brain-tumour set.
REAL_SCAN_CHECK = ("on 11 real MRI JPEGs of the public Kaggle brain-tumour set, the transfer "
                   "model was right on 5 and called a healthy scan glioma with probability 0.96 "
                   "(a one-off check by hand on the build of 2026-12-03, commit 4df50d6, not a "
                   "pipeline metric)")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None when the file is absent."""
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------- headline method


@dataclass(frozen=True)
class Headline:
    """The study's headline saliency method, or None with the reason there is none."""

    method: str | None
    message: str


def headline_method(root: Path) -> Headline:
    """explain.json's ``headline_method``; None (and why) when the file, the key or the method
    is missing: the app then asks the user to choose instead of silently picking one."""
    path = root / EXPLAIN_JSON
    explain = read_json(path)
    if explain is None:
        return Headline(None, f"no headline saliency method: {EXPLAIN_JSON} is missing (run "
                              "`make repro`: the explain stage chooses it on validation); "
                              "choose a method yourself")
    method = explain.get("headline_method")
    if not method:
        return Headline(None, f"no headline saliency method: {EXPLAIN_JSON} has no "
                              "`headline_method` (written before the explain stage chose one; "
                              "rerun `make repro`); choose a method yourself")
    if method not in METHODS:
        return Headline(None, f"{EXPLAIN_JSON} names {method!r} as the headline saliency method, "
                              f"which the app does not know ({', '.join(METHODS)}); choose one")
    validation = explain.get("validation") or {}
    on = validation.get("model") or explain.get("best_model")
    where = f" of {on}" if on else ""
    return Headline(method, f"{method}: the study's headline saliency method, chosen by its "
                            f"pointing game on validation tumour images{where} ({EXPLAIN_JSON})")


# ----------------------------------------------------------------------------- the best model


@dataclass(frozen=True)
class Configuration:
    """One configuration's scores over its seeds, from evaluate.json's ``configurations``."""

    name: str
    seeds: tuple[int, ...]
    val_macro_f1: dict[str, float]      # model key -> validation macro-F1 (BEST_MODEL_RULE's)
    val_macro_f1_mean: float | None
    test_macro_f1_mean: float | None
    test_macro_f1_sd: float | None


@dataclass(frozen=True)
class Ranking:
    """The study's best model by ``BEST_MODEL_RULE``, computed by ``lib.evaluate.metrics``."""

    rule: str
    best_model: str | None
    best_configuration: str | None
    configurations: dict[str, Configuration] = field(default_factory=dict)
    note: str | None = None  # why the ranking could not be computed, or a disagreement

    def configuration_of(self, key: str) -> Configuration | None:
        try:
            return self.configurations.get(parse_key(key)[0])
        except ValueError:
            return None


def _stat(block: Any, name: str) -> float | None:
    value = (block or {}).get(name)
    return float(value) if isinstance(value, int | float) else None


def ranking(evaluate: dict[str, Any] | None) -> Ranking:
    """Which model is best, by the rule applied to evaluate.json's per-seed validation scores.

    Without them (an evaluate.json written before configurations existed) the evaluate stage's
    own ``best_model`` stands, and ``note`` says so; when both exist and disagree, the rule wins
    and ``note`` says evaluate.json is stale.
    """
    evaluate = evaluate or {}
    recorded = evaluate.get("best_model")
    configs: dict[str, Configuration] = {}
    for name, c in sorted((evaluate.get("configurations") or {}).items()):
        seeds = tuple(int(s) for s in c.get("seeds", ()))
        values = (c.get("val_macro_f1") or {}).get("values") or []
        val = {f"{name}_s{s}": float(v) for s, v in zip(seeds, values, strict=False)}
        test = c.get("test_macro_f1")
        configs[name] = Configuration(name, seeds, val, _stat(c.get("val_macro_f1"), "mean"),
                                      _stat(test, "mean"), _stat(test, "sd"))
    val_all = {k: v for c in configs.values() for k, v in c.val_macro_f1.items()}
    if not val_all:
        note = (f"{EVALUATE_JSON} has no per-seed validation macro-F1 (`configurations`): the best "
                "model is the one it names, and no validation score is shown; rerun `make repro`")
        if not recorded:
            note = f"{EVALUATE_JSON} names no best model and has no validation scores"
        return Ranking(BEST_MODEL_RULE, recorded, evaluate.get("best_configuration"), configs,
                       note)
    best, name = best_model(val_all), best_configuration(val_all)
    note = None
    if recorded and recorded != best:
        note = (f"{EVALUATE_JSON} names {recorded} as best but its own validation scores rank "
                f"{best} first by the rule: it is stale, rerun `make repro`")
    return Ranking(BEST_MODEL_RULE, best, name, configs, note)


def rule_label(configuration: Configuration | None, best: bool) -> str:
    """How a model is labelled: the rule's own quantity, and whether the rule picks it."""
    notes = []
    if configuration is not None and configuration.val_macro_f1_mean is not None:
        n = len(configuration.val_macro_f1) or len(configuration.seeds)
        notes.append(f"val macro-F1 {configuration.val_macro_f1_mean:.3f}, mean of {n} "
                     f"seed{'s' if n != 1 else ''}")
    if best:
        notes.append("best by the study's rule")
    return "; ".join(notes)


# ----------------------------------------------------------------------------- training data


@dataclass(frozen=True)
class TrainingData:
    """What the models were trained on, as the data's own files say."""

    source: str                    # "phantom", or "data/raw as found"
    description: str
    classes: tuple[str, ...]
    image_size: int | None         # side of the generated images (phantom), pixels
    splits: dict[str, int]         # usable images per split of the manifest: train, val, test
    synthetic: bool


def training_data(raw_dir: Path, manifest: Path, classes: list[str]) -> TrainingData:
    """The phantom's description (data/raw/phantom.json) and the manifest's split counts."""
    splits: dict[str, int] = {}
    if manifest.is_file():
        import pandas as pd

        frame = pd.read_csv(manifest, keep_default_na=False)
        usable = frame[frame.get("status", "") != "excluded"] if "status" in frame else frame
        splits = {str(k): int(v) for k, v in usable["split"].value_counts().items() if k}
    phantom = read_json(raw_dir / PHANTOM_JSON)
    if phantom is not None and str(phantom.get("generator", "")).endswith("phantom"):
        cfg = phantom.get("config", {})
        size = cfg.get("image_size")
        sequences = [s for s, share in (cfg.get("sequences") or {}).items() if share]
        counts = phantom.get("counts", {})
        n_raw = {part: sum(c.values()) for part, c in counts.items()}
        text = (f"a synthetic phantom: {size}×{size} px axial slices ({', '.join(sequences)}) "
                "generated by lib.data.phantom from the MNI152 (2009) brain template, lesions "
                f"drawn in; {n_raw.get('Training', '?')} training and {n_raw.get('Testing', '?')} "
                "test images, four classes")
        return TrainingData("phantom", text, tuple(classes), size, splits, True)
    text = (f"the images under {raw_dir.name}/ as found: no {PHANTOM_JSON} says how they were "
            "made, so this card cannot say more about them")
    return TrainingData("data/raw as found", text, tuple(classes), None, splits, False)


def not_for(data: TrainingData) -> list[str]:
    """What the models are not for, given what they were trained on."""
    items = ["Not a medical device: not for diagnosis, triage or any decision about a patient."]
    if data.synthetic:
        items += ["Not validated on real scans: every image it was trained, chosen and tested on "
                  "is synthetic (the phantom), so its predictions and maps on real MRI are not "
                  "meaningful.",
                  f"Measured: {REAL_SCAN_CHECK}."]
    else:
        items.append("Not validated clinically: its test scores say how it does on this study's "
                     "own test split, nothing more.")
    items.append("Its calibrated probabilities are fitted on this study's validation split only; "
                 "on any other data they are not probabilities of anything.")
    return items
