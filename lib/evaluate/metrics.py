"""Evaluation on the held-out test split: every number the study reports about its classifiers.

Everything here works on the cached softmax scores of `lib.evaluate.predict` (no model is run
again), so
one model's evaluation takes well under a second:
- classification metrics from scikit-learn (per class, macro, weighted; accuracy, balanced
  accuracy, Cohen's kappa; the confusion matrix);
- one-vs-rest ROC and precision-recall curves (AUC, and average precision as the PR area);
- calibration: ECE, Brier score and NLL before and after temperature scaling fitted on the
  *validation* split;
- uncertainty: percentile bootstrap CIs, vectorised as one (B x n) resample index matrix whose
  confusion counts come from a single `np.bincount` (no Python loop over resamples);
- comparison: the exact McNemar test for every pair of models on the same test images, with
  Holm's step-down correction for the number of pairs.

`evaluate_model` bundles these for one model and `summarise` writes the study's
`reports/metrics/evaluate.json` (schema in `notebooks/05_evaluate.ipynb`).
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import check_int, from_group
from ..jsonio import STAGE_DIGITS
from ..splits import TEST, VAL
from ..stats import bootstrap_ci, holm

KEY = re.compile(r"^(?P<name>.+)_s(?P<seed>\d+)$")
LOGIT_FLOOR = 1e-12  # log(0) would make a temperature meaningless; softmax outputs never reach it
DIGITS = STAGE_DIGITS["evaluate"]  # evaluate.json and the DVC plot tables


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate:` group and the study's seed (the bootstrap's)."""

    bootstrap_resamples: int = 1000  # seeded resamples of the percentile CIs
    ece_bins: int = 15
    alpha: float = 0.05  # CI level 1 - alpha; McNemar (Holm) significance
    gallery_per_pair: int = 6  # misclassified images shown per (true, predicted) pair
    seed: int = 42

    def __post_init__(self) -> None:
        for key, low in (("bootstrap_resamples", 1), ("ece_bins", 1), ("gallery_per_pair", 1),
                         ("seed", 0)):
            check_int(f"evaluate.{key}", getattr(self, key), low)
        if not 0 < self.alpha < 1:
            raise ValueError(f"evaluate.alpha must be in (0, 1), got {self.alpha!r}")

    @classmethod
    def from_params(cls, group: dict[str, Any], seed: int) -> EvaluateConfig:
        return from_group(cls, group, "evaluate", seed=seed)

    @property
    def level(self) -> float:
        """The confidence level of every interval, 1 - alpha."""
        return 1 - self.alpha


# --------------------------------------------------------------------------------------------
# Inputs: one model's cached scores
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictions:
    """One model's scores on the test split (evaluated) and the val split (to fit temperature)."""

    key: str
    model: str
    seed: int
    classes: list[str]
    test: pd.DataFrame  # one row per test image: path, class, label, mask, ...
    labels: np.ndarray
    probs: np.ndarray
    val_labels: np.ndarray
    val_probs: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


def parse_key(key: str) -> tuple[str, int]:
    """`scratch_batchnorm_s42` -> ("scratch_batchnorm", 42), the naming of lib.evaluate.predict."""
    match = KEY.match(key)
    if not match:
        raise ValueError(f"model key {key!r} is not '<name>_s<seed>' as "
                         "lib.evaluate.predict writes it")
    return match.group("name"), int(match.group("seed"))


def check_probs(labels: np.ndarray, probs: np.ndarray, n_classes: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels and row-normalised probabilities, or a ValueError saying what is wrong.

    Saved scores are rounded to 8 digits, so rows are renormalised (a change below 1e-7).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0] or labels.ndim != 1:
        raise ValueError(f"expected labels (n,) and probabilities (n, classes); got "
                         f"{labels.shape} and {probs.shape}")
    k = probs.shape[1] if n_classes is None else n_classes
    if probs.shape[1] != k:
        raise ValueError(f"probabilities have {probs.shape[1]} columns, expected {k} classes")
    if len(labels) == 0:
        raise ValueError("no images to evaluate: the split is empty")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must be integers in 0..{k - 1}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probabilities must be finite and non-negative: pass softmax outputs, "
                         "not logits")
    sums = probs.sum(axis=1, keepdims=True)
    if (np.abs(sums - 1) > 1e-3).any():
        raise ValueError("probability rows do not sum to 1; pass softmax outputs, not logits")
    return labels.astype(np.int64), probs / sums


def load_predictions(path: Path | str, key: str | None = None) -> Predictions:
    """A predictions csv of `lib.evaluate.predict.predict_all` as test and val arrays."""
    from .predict import read_predictions

    path = Path(path)
    key = key or path.stem
    name, seed = parse_key(key)
    frame, scores, classes = read_predictions(path)
    parts = {}
    for split in (TEST, VAL):
        rows = frame["split"] == split
        if not rows.any():
            raise ValueError(f"{path} has no '{split}' rows; rerun "
                             "lib.evaluate.predict.predict_all "
                             "with splits=('val', 'test')")
        labels, probs = check_probs(frame.loc[rows, "label"].to_numpy(), scores[rows.to_numpy()],
                                    len(classes))
        parts[split] = (frame[rows].reset_index(drop=True), labels, probs)
    return Predictions(key, name, seed, classes, parts["test"][0], parts["test"][1],
                       parts["test"][2], parts["val"][1], parts["val"][2])


# --------------------------------------------------------------------------------------------
# Classification metrics
# --------------------------------------------------------------------------------------------
def confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class (every class present, even if empty)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, predicted, labels=list(range(n_classes)))


def classification_metrics(labels: np.ndarray, predicted: np.ndarray,
                           classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, kappa, macro/weighted and per-class P/R/F1, confusion counts.

    A class that is never predicted (or never present) scores 0 rather than a warning, so an
    always-one-class model gets the low macro-F1 it deserves.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        precision_recall_fscore_support,
    )

    ids = list(range(len(classes)))
    prf = {avg: precision_recall_fscore_support(labels, predicted, labels=ids, average=avg,
                                                zero_division=0)
           for avg in (None, "macro", "weighted")}
    with warnings.catch_warnings():  # a class absent from the split: sklearn warns, we report it
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        balanced = balanced_accuracy_score(labels, predicted)
        kappa = cohen_kappa_score(labels, predicted, labels=ids)
    p, r, f, s = prf[None]
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced),
        "kappa": float(kappa),
        "macro": dict(zip(("precision", "recall", "f1"), map(float, prf["macro"][:3]),
                          strict=True)),
        "weighted": dict(zip(("precision", "recall", "f1"), map(float, prf["weighted"][:3]),
                             strict=True)),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                          "support": int(s[i])} for i, c in enumerate(classes)},
        "confusion": confusion(labels, predicted, len(classes)).tolist(),
    }


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, per-class F1 and macro-F1 from confusion counts of shape (..., k, k).

    The vectorised twin of scikit-learn's numbers (zero_division=0), used on the bootstrap's
    thousand confusion matrices at once; a test checks it agrees with scikit-learn.
    """
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    denom = cm.sum(axis=-1) + cm.sum(axis=-2)  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"accuracy": tp.sum(axis=-1) / cm.sum(axis=(-2, -1)), "f1": f1,
            "macro_f1": f1.mean(axis=-1)}


# --------------------------------------------------------------------------------------------
# ROC and precision-recall, one class against the rest
# --------------------------------------------------------------------------------------------
@dataclass
class Curves:
    """Per-class curve points (long tables for DVC and figures) and their areas."""

    roc: pd.DataFrame  # class, fpr, tpr
    pr: pd.DataFrame  # class, recall, precision
    roc_auc: dict[str, float | None]
    pr_auc: dict[str, float | None]
    notes: list[str] = field(default_factory=list)


def _macro(values: dict[str, float | None]) -> float | None:
    defined = [v for v in values.values() if v is not None]
    return float(np.mean(defined)) if defined else None


def ovr_curves(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> Curves:
    """ROC and PR curves per class; the PR area is average precision (scikit-learn's estimator).

    A class with no positives (or no negatives) in the split has no ROC curve: its AUC is None
    and a note says why, instead of a crash or a silent NaN. Macro = mean over defined classes.
    """
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    roc_rows, pr_rows, roc_auc, pr_auc, notes = [], [], {}, {}, []
    for i, name in enumerate(classes):
        truth = labels == i
        if truth.all() or not truth.any():
            missing = "negatives" if truth.all() else "positives"
            notes.append(f"class '{name}' has no {missing} in the test split: its ROC and PR "
                         "AUC are null and it is left out of their macro average")
            roc_auc[name] = pr_auc[name] = None
            continue
        fpr, tpr, _ = roc_curve(truth, probs[:, i])
        precision, recall, _ = precision_recall_curve(truth, probs[:, i])
        roc_rows.append(pd.DataFrame({"class": name, "fpr": fpr, "tpr": tpr}))
        pr_rows.append(pd.DataFrame({"class": name, "recall": recall, "precision": precision}))
        roc_auc[name] = float(roc_auc_score(truth, probs[:, i]))
        pr_auc[name] = float(average_precision_score(truth, probs[:, i]))
    roc_auc["macro"], pr_auc["macro"] = _macro(roc_auc), _macro(pr_auc)

    def frame(rows: list[pd.DataFrame], cols: list[str]) -> pd.DataFrame:
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)

    return Curves(frame(roc_rows, ["class", "fpr", "tpr"]),
                  frame(pr_rows, ["class", "recall", "precision"]), roc_auc, pr_auc, notes)


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------
def reliability_table(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Top-label confidence in equal-width bins: images, mean confidence and accuracy per bin.

    Bins are right-closed, (0, 1/B], ..., ((B-1)/B, 1]; empty bins have count 0 and NaN means.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, confidence, minlength=bins) / count
        acc = np.bincount(index, correct, minlength=bins) / count
    edges = np.linspace(0, 1, bins + 1)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "count": count,
                         "confidence": conf, "accuracy": acc})


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over bins."""
    table = reliability_table(labels, probs, bins)
    used = table[table["count"] > 0]
    gap = (used["accuracy"] - used["confidence"]).abs()
    return float((gap * used["count"]).sum() / table["count"].sum())


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    """Multiclass Brier score: mean over images of sum_k (p_k - y_k)^2 (0 best, 2 worst)."""
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(labels, probs, labels=list(range(probs.shape[1])),
                                  scale_by_half=False))


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (cross-entropy, natural log)."""
    from sklearn.metrics import log_loss

    return float(log_loss(labels, probs, labels=list(range(probs.shape[1]))))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): log-probabilities are logits up to a per-row constant softmax ignores."""
    from scipy.special import softmax

    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return softmax(np.log(np.clip(probs, LOGIT_FLOOR, 1.0)) / temperature, axis=1)


TEMPERATURE_BOUNDS = (0.05, 20.0)


def fit_temperature(labels: np.ndarray, probs: np.ndarray,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The single T > 0 that minimises NLL on these (validation) scores; T > 1 softens."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = np.log(np.clip(probs, LOGIT_FLOOR, 1.0))
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        return float(-log_softmax(logits / math.exp(log_t), axis=1)[rows, labels].mean())

    result = minimize_scalar(loss, bounds=(math.log(bounds[0]), math.log(bounds[1])),
                             method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


def calibration_scores(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict[str, float]:
    return {"ece": ece(labels, probs, bins), "brier": brier(labels, probs),
            "nll": nll(labels, probs)}


# --------------------------------------------------------------------------------------------
# Uncertainty: bootstrap over test images
# --------------------------------------------------------------------------------------------
def resampled_scores(labels: np.ndarray, predicted: np.ndarray, n_classes: int,
                     idx: np.ndarray) -> dict[str, np.ndarray]:
    """``scores_from_confusion`` of every resample (rows of the index matrix `idx`) at once.

    Each resample's confusion counts come from one bincount over
    `resample * k^2 + true * k + predicted`, so B = 1000 resamples cost milliseconds.
    """
    k = n_classes
    cell = np.asarray(labels) * k + np.asarray(predicted)
    b = len(idx)
    flat = (np.arange(b)[:, None] * (k * k) + cell[idx]).ravel()
    return scores_from_confusion(np.bincount(flat, minlength=b * k * k).reshape(b, k, k))


def classification_cis(labels: np.ndarray, predicted: np.ndarray, n_classes: int,
                       resamples: int = 1000, seed: int = 42, level: float = 0.95
                       ) -> dict[str, Any]:
    """Percentile CIs for accuracy, macro-F1 and per-class F1 from resampled test images.

    lib.stats.bootstrap_ci draws one (B x n) index matrix; ``resampled_scores`` scores all of it.
    """
    def scores(idx: np.ndarray) -> np.ndarray:
        s = resampled_scores(labels, predicted, n_classes, idx)
        return np.column_stack([s["accuracy"], s["macro_f1"], s["f1"]])

    ci = bootstrap_ci(scores, len(labels), resamples, seed, level)
    return {"accuracy": ci[:, 0].tolist(), "macro_f1": ci[:, 1].tolist(),
            "f1": ci[:, 2:].T.tolist()}


# --------------------------------------------------------------------------------------------
# Comparison: exact McNemar with Holm's correction
# --------------------------------------------------------------------------------------------
def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """Exact (binomial) McNemar test on paired correctness of two models on the same images.

    Only the discordant images count: b = a right and b wrong, c = a wrong and b right; under
    the null hypothesis of equal accuracy b ~ Binomial(b + c, 1/2). No discordant pair: p = 1.
    """
    from scipy.stats import binomtest

    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError("McNemar needs both models scored on the same images")
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_only_correct": b, "b_only_correct": c, "p_value": min(p, 1.0)}


def compare_models(correct: dict[str, np.ndarray], alpha: float = 0.05) -> list[dict[str, Any]]:
    """McNemar for every pair of models (sorted keys), Holm-corrected over all pairs.

    `better` is the model right on more of the discordant images (the one with the higher
    accuracy on these images), None on a tie; `significant` says whether that holds at alpha
    after Holm's correction.
    """
    keys = sorted(correct)
    pairs = []
    for a, b in itertools.combinations(keys, 2):
        test = mcnemar_exact(correct[a], correct[b])
        n = len(correct[a])
        diff = (test["a_only_correct"] - test["b_only_correct"]) / n
        better = a if diff > 0 else b if diff < 0 else None
        pairs.append({"a": a, "b": b, **test, "better": better, "accuracy_difference": diff})
    for pair, adjusted in zip(pairs, holm([p["p_value"] for p in pairs]), strict=True):
        pair["p_holm"] = float(adjusted)
        pair["significant"] = bool(adjusted < alpha)
    return pairs


# --------------------------------------------------------------------------------------------
# Misclassified images
# --------------------------------------------------------------------------------------------
def misclassified(pred: Predictions, per_pair: int = 6) -> pd.DataFrame:
    """The most confidently wrong test images of each (true, predicted) pair.

    Pairs are ordered by how often they happen; within a pair, the highest confidence in the
    wrong class comes first (the worst mistakes). Columns: path, mask, true, predicted,
    confidence, p_true, errors (images of that pair in total).
    """
    wrong = np.flatnonzero(pred.predicted != pred.labels)
    names = np.asarray(pred.classes)
    frame = pd.DataFrame({
        "path": pred.test["path"].to_numpy()[wrong],
        "mask": pred.test["mask"].to_numpy()[wrong] if "mask" in pred.test else "",
        "true": names[pred.labels[wrong]], "predicted": names[pred.predicted[wrong]],
        "confidence": pred.probs[wrong, pred.predicted[wrong]],
        "p_true": pred.probs[wrong, pred.labels[wrong]],
    })
    if frame.empty:
        return frame.assign(errors=pd.Series(dtype=int))
    frame["errors"] = frame.groupby(["true", "predicted"])["path"].transform("size")
    frame = frame.sort_values(["errors", "true", "predicted", "confidence"],
                              ascending=[False, True, True, False], kind="stable")
    return frame.groupby(["true", "predicted"], sort=False).head(per_pair).reset_index(drop=True)




# --------------------------------------------------------------------------------------------
# One model, then the whole study
# --------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """Everything measured for one model: the json block and the tables figures are drawn from."""

    pred: Predictions
    metrics: dict[str, Any]
    curves: Curves
    reliability: dict[str, pd.DataFrame]  # "before" and "after" temperature scaling
    calibrated_probs: np.ndarray
    notes: list[str] = field(default_factory=list)  # why a number is null or to be read with care

    @property
    def key(self) -> str:
        return self.pred.key

    @property
    def correct(self) -> np.ndarray:
        return self.pred.predicted == self.pred.labels


def evaluate_model(pred: Predictions, *, bins: int = 15, resamples: int = 1000, seed: int = 42,
                   level: float = 0.95) -> Evaluation:
    """All metrics of one model on its test scores; temperature is fitted on its val scores."""
    classes = pred.classes
    metrics: dict[str, Any] = {"model": pred.model, "seed": pred.seed,
                               **classification_metrics(pred.labels, pred.predicted, classes)}
    ci = classification_cis(pred.labels, pred.predicted, len(classes), resamples, seed,
                            level)
    metrics["ci"] = {"accuracy": ci["accuracy"], "macro_f1": ci["macro_f1"],
                     "f1": dict(zip(classes, ci["f1"], strict=True))}
    curves = ovr_curves(pred.labels, pred.probs, classes)
    metrics["roc_auc"], metrics["pr_auc"] = curves.roc_auc, curves.pr_auc
    temperature = fit_temperature(pred.val_labels, pred.val_probs)
    calibrated = apply_temperature(pred.probs, temperature)
    metrics["calibration"] = {
        "temperature": temperature,
        "before": calibration_scores(pred.labels, pred.probs, bins),
        "after": calibration_scores(pred.labels, calibrated, bins),
    }
    reliability = {"before": reliability_table(pred.labels, pred.probs, bins),
                   "after": reliability_table(pred.labels, calibrated, bins)}
    notes = list(curves.notes)
    if not TEMPERATURE_BOUNDS[0] * 1.01 < temperature < TEMPERATURE_BOUNDS[1] * 0.99:
        notes.append(f"{pred.key}: the fitted temperature ({temperature:.2f}) is at its search "
                     f"bound {TEMPERATURE_BOUNDS}: the validation scores barely rank the "
                     "classes, so scaling can only flatten (or sharpen) them")
    return Evaluation(pred, metrics, curves, reliability, calibrated, notes)


def evaluate_all(paths: dict[str, Path], **kwargs: Any) -> dict[str, Evaluation]:
    """evaluate_model for every predictions csv ({key: path}, as predict_all returns it)."""
    return {key: evaluate_model(load_predictions(path, key), **kwargs)
            for key, path in sorted(paths.items())}


def check_same_images(evaluations: dict[str, Evaluation]) -> None:
    first = next(iter(evaluations.values())).pred
    for ev in evaluations.values():
        if ev.pred.classes != first.classes or not np.array_equal(
                ev.pred.test["path"].to_numpy(), first.test["path"].to_numpy()):
            raise ValueError(f"{ev.key} was scored on other test images or classes than "
                             f"{first.key}; rerun lib.evaluate.predict.predict_all for every model")


BEST_MODEL_RULE = ("highest mean validation macro-F1 over the configuration's seeds (the test "
                   "split is never used to choose; ties: the first name in alphabetical order); "
                   "where one model must stand for it (galleries, the app), its lowest seed")


def validation_macro_f1(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> float:
    """Macro-F1 of the argmax predictions over all n_classes (an absent class scores 0): the
    score ``best_model`` compares, computed the same way by the evaluate and explain stages."""
    cm = confusion(np.asarray(labels), np.asarray(probs).argmax(axis=1), n_classes)
    return float(scores_from_confusion(cm)["macro_f1"])


def best_configuration(val_macro_f1: dict[str, float]) -> str:
    """The study's best configuration by ``BEST_MODEL_RULE``: {model key `<name>_s<seed>`:
    validation macro-F1} -> name. Averaged over seeds, so one lucky seed does not choose it."""
    if not val_macro_f1:
        raise ValueError("no models to choose from")
    groups: dict[str, list[float]] = {}
    for key, value in val_macro_f1.items():
        groups.setdefault(parse_key(key)[0], []).append(value)
    return min(groups, key=lambda name: (-float(np.mean(groups[name])), name))


def best_model(val_macro_f1: dict[str, float]) -> str:
    """The model that stands for the best configuration: its lowest seed (``BEST_MODEL_RULE``).

    One rule for the report, the explanations and the app, so all name the same model; chosen
    on validation so that the test numbers reported for it are not the best of several tries.
    """
    name = best_configuration(val_macro_f1)
    return min((k for k in val_macro_f1 if parse_key(k)[0] == name), key=lambda k: parse_key(k)[1])


# --------------------------------------------------------------------------------------------
# DVC plot data and readable tables
# --------------------------------------------------------------------------------------------


















