"""Seeds as the unit of evidence: configurations, their comparisons and their seed ensembles.

A *configuration* is one training recipe (a scratch variant, the transfer model); each trains
one model per seed (``train_seeds``). Training randomness (initial weights, data order,
augmentation, dropout) moves test macro-F1 by several points here, more than the bootstrap over
test images of one model shows, so every comparison treats seeds as the replicates:

- a configuration's score is its mean over seeds with a t-interval (``lib.stats.seed_interval``);
- two configurations differ when Welch's interval for the difference of their mean test macro-F1
  excludes zero, after Holm's correction over every pair (``compare_configurations``); per-seed
  McNemar tables stay in evaluate.json as detail, not as the basis of a claim;
- the best configuration is chosen on *validation*, averaged over seeds
  (``lib.evaluate.metrics.BEST_MODEL_RULE``);
- a configuration's seed ensemble (the mean of its members' probabilities) is evaluated like any
  model (``ensemble_predictions`` + ``lib.evaluate.metrics.evaluate_model``), and
  ``ensemble_report`` says whether it beats its members and how its calibration compares with
  temperature scaling. There is one ensemble per configuration, so its interval covers test
  sampling only (a paired bootstrap over test images), which the report says.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..stats import (
    CI_LEVEL,
    bootstrap_ci,
    holm,
    paired_difference,
    seed_interval,
    welch_difference,
)
from .metrics import (
    Evaluation,
    Predictions,
    best_configuration,
    evaluate_model,
    resampled_scores,
    validation_macro_f1,
)

ENSEMBLE_SEED = -1  # the seed field of an ensemble's Predictions: it has no seed of its own


def by_configuration(evaluations: dict[str, Evaluation]) -> dict[str, list[Evaluation]]:
    """{configuration: its seeds' evaluations, by seed}, configurations sorted by name."""
    groups: dict[str, list[Evaluation]] = {}
    for ev in evaluations.values():
        groups.setdefault(ev.pred.model, []).append(ev)
    return {name: sorted(groups[name], key=lambda ev: ev.pred.seed) for name in sorted(groups)}


def _val_f1(ev: Evaluation) -> float:
    return validation_macro_f1(ev.pred.val_labels, ev.pred.val_probs, len(ev.pred.classes))


def configuration_summary(groups: dict[str, list[Evaluation]], level: float = CI_LEVEL
                          ) -> dict[str, dict[str, Any]]:
    """Per configuration: seeds, and mean, sd and t-interval over seeds of test macro-F1,
    accuracy, ECE (before temperature scaling) and validation macro-F1, with the per-seed values."""
    out = {}
    for name, runs in groups.items():
        values = {
            "test_macro_f1": [ev.metrics["macro"]["f1"] for ev in runs],
            "test_accuracy": [ev.metrics["accuracy"] for ev in runs],
            "test_ece": [ev.metrics["calibration"]["before"]["ece"] for ev in runs],
            "val_macro_f1": [_val_f1(ev) for ev in runs],
        }
        out[name] = {"seeds": [ev.pred.seed for ev in runs],
                     **{k: {**seed_interval(v, level), "values": [float(x) for x in v]}
                        for k, v in values.items()}}
    return out


def compare_configurations(summary: dict[str, dict[str, Any]], metric: str = "test_macro_f1",
                           level: float = CI_LEVEL, alpha: float = 0.05
                           ) -> list[dict[str, Any]]:
    """Every pair of configurations: Welch's difference of mean `metric` over seeds, Holm over
    the pairs. `a` is the one with the higher mean; `holds` (a beats b) only when the Holm-
    adjusted p is below alpha, which implies the interval excludes zero."""
    pairs = []
    for x, y in itertools.combinations(sorted(summary), 2):
        if summary[x][metric]["mean"] < summary[y][metric]["mean"]:
            x, y = y, x
        diff = welch_difference(summary[x][metric]["values"], summary[y][metric]["values"], level)
        pairs.append({"a": x, "b": y, "metric": metric, "mean_a": summary[x][metric]["mean"],
                      "mean_b": summary[y][metric]["mean"], **diff})
    testable = [p for p in pairs if p["p"] is not None]
    for pair, adjusted in zip(testable, holm([p["p"] for p in testable]), strict=True):
        pair["p_holm"] = float(adjusted)
    for pair in pairs:
        pair.setdefault("p_holm", None)
        pair["holds"] = bool(pair["p_holm"] is not None and pair["p_holm"] < alpha
                             and pair["estimate"] > 0)
    return pairs


def excludes_zero(interval: Sequence[float] | None) -> bool:
    """Whether an interval shows a difference (in either direction)."""
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def ensemble_predictions(members: Sequence[Predictions]) -> Predictions:
    """The mean of the members' probabilities on test and val, as one model's Predictions."""
    first = members[0]
    for p in members[1:]:
        if p.model != first.model:
            raise ValueError(f"{p.key} is not a seed of {first.model}: an ensemble averages the "
                             "seeds of one configuration")
        if p.classes != first.classes or not np.array_equal(p.labels, first.labels) or \
                not np.array_equal(p.val_labels, first.val_labels) or \
                not np.array_equal(p.test["path"].to_numpy(), first.test["path"].to_numpy()):
            raise ValueError(f"{p.key} was scored on other images than {first.key}")
    name = f"{first.model}_ensemble"
    return replace(first, key=name, model=name, seed=ENSEMBLE_SEED,
                   probs=np.mean([p.probs for p in members], axis=0),
                   val_probs=np.mean([p.val_probs for p in members], axis=0))


def ensemble_report(members: Sequence[Evaluation], ensemble: Evaluation, *, resamples: int,
                    seed: int, level: float = CI_LEVEL) -> dict[str, Any]:
    """Does the ensemble beat its members, and is it better calibrated than temperature scaling?

    `vs_members`: ensemble macro-F1 minus the members' mean, with the paired t-interval of
    (ensemble - member) over the members' seeds: seed-aware like every other claim, though the
    ensemble itself is one model (its own training randomness is not sampled). Beside it,
    `test_sampling_interval`: a paired bootstrap over test images (the same resampled images for
    the ensemble and every member), which sees no training randomness: detail, not the basis
    of the claim (measured: a gain whose bootstrap interval excluded zero by 0.001 vanished on
    another oneDNN kernel family). `calibration`: the ensemble's ECE minus each member's ECE
    after temperature scaling, paired over the members. `holds`: the interval excludes zero, in
    either direction (the sign of the estimate says which way).
    """
    k = len(ensemble.pred.classes)
    labels = ensemble.pred.labels
    f1 = ensemble.metrics["macro"]["f1"]
    member_f1 = [ev.metrics["macro"]["f1"] for ev in members]

    def gain(idx: np.ndarray) -> np.ndarray:
        own = resampled_scores(labels, ensemble.pred.predicted, k, idx)["macro_f1"]
        others = [resampled_scores(labels, ev.pred.predicted, k, idx)["macro_f1"]
                  for ev in members]
        return own - np.mean(others, axis=0)

    lo, hi = bootstrap_ci(gain, len(labels), resamples, seed, level)
    vs_members = paired_difference([f1] * len(members), member_f1, level)
    ece = ensemble.metrics["calibration"]["before"]["ece"]
    member_after = [ev.metrics["calibration"]["after"]["ece"] for ev in members]
    calibration = paired_difference([ece] * len(members), member_after, level)
    return {
        "members": [ev.pred.key for ev in members],
        "macro_f1": f1, "members_macro_f1": member_f1,
        "best_member_macro_f1": float(max(member_f1)),
        "vs_members": {**vs_members, "holds": excludes_zero(vs_members["interval"]),
                       "test": f"{vs_members['test']}, ensemble minus each member",
                       "test_sampling_interval": [float(lo), float(hi)]},
        "calibration": {"ensemble_ece": ece,
                        "ensemble_ece_after_temperature":
                            ensemble.metrics["calibration"]["after"]["ece"],
                        "members_ece": [ev.metrics["calibration"]["before"]["ece"]
                                        for ev in members],
                        "members_ece_after_temperature": member_after,
                        "vs_temperature_scaling": {**calibration, "holds": excludes_zero(
                            calibration["interval"])}},
    }


def seed_evidence(evaluations: dict[str, Evaluation], *, resamples: int, seed: int,
                  level: float = CI_LEVEL, alpha: float = 0.05, bins: int = 15
                  ) -> dict[str, Any]:
    """The seed-aware part of evaluate.json: configurations, comparisons, best configuration
    and, for every configuration with two seeds or more, its seed ensemble."""
    groups = by_configuration(evaluations)
    summary = configuration_summary(groups, level)
    ensembles = {}
    for name, runs in groups.items():
        if len(runs) < 2:
            continue
        ens = evaluate_model(ensemble_predictions([ev.pred for ev in runs]), bins=bins,
                             resamples=resamples, seed=seed, level=level)
        ensembles[name] = {**ensemble_report(runs, ens, resamples=resamples, seed=seed,
                                             level=level),
                           "metrics": {k: ens.metrics[k] for k in
                                       ("accuracy", "macro", "ci", "calibration")}}
    return {
        "configurations": summary,
        "best_configuration": best_configuration({k: _val_f1(ev)
                                                  for k, ev in evaluations.items()}),
        "comparisons": compare_configurations(summary, "test_macro_f1", level, alpha),
        "ensembles": ensembles,
    }


def representatives(evaluations: dict[str, Evaluation]) -> dict[str, Evaluation]:
    """Each configuration's lowest seed: the model its per-model figures show."""
    return {runs[0].key: runs[0] for runs in by_configuration(evaluations).values()}
