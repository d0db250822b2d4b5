"""lib.evaluate.seeds: configurations over seeds, their Welch comparisons (Holm over the pairs),
seed ensembles and the seed-aware block of evaluate.json, on small hand-built predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from lib import claims
from lib.evaluate import metrics as ev
from lib.evaluate import seeds
from lib.stats import paired_difference, seed_interval, welch_difference

CLASSES = ["a", "b", "c"]
LABELS = np.repeat([0, 1, 2], 10)  # 30 test (and val) images, 10 per class
RESAMPLES = 60


def probs_with_errors(wrong: Sequence[int], labels: np.ndarray = LABELS,
                      confidence: float = 0.7) -> np.ndarray:
    """Predicts the true class except on the images `wrong` (there: the next class), with
    `confidence` on the predicted class and the rest spread evenly."""
    predicted = labels.copy()
    wrong = np.asarray(list(wrong), dtype=int)
    predicted[wrong] = (labels[wrong] + 1) % 3
    probs = np.full((len(labels), 3), (1 - confidence) / 2)
    probs[np.arange(len(labels)), predicted] = confidence
    return probs


def spread(n: int) -> list[int]:
    """n wrong images spread over the three classes."""
    return [(i % 3) * 10 + i // 3 for i in range(n)]


def make_pred(key: str, test_probs: np.ndarray, val_probs: np.ndarray | None = None,
              labels: np.ndarray = LABELS, val_labels: np.ndarray | None = None
              ) -> ev.Predictions:
    name, seed = ev.parse_key(key)
    test = pd.DataFrame({"path": [f"Testing/{CLASSES[y]}/img_{i:03d}.png"
                                  for i, y in enumerate(labels)],
                         "class": [CLASSES[y] for y in labels], "label": labels, "mask": ""})
    val_labels = labels if val_labels is None else val_labels
    val_probs = test_probs if val_probs is None else val_probs
    return ev.Predictions(key, name, seed, CLASSES, test, labels, test_probs, val_labels,
                          val_probs)


def evaluate(pred: ev.Predictions) -> ev.Evaluation:
    return ev.evaluate_model(pred, resamples=RESAMPLES, seed=0)


def model(key: str, test_wrong: int, val_wrong: int | None = None) -> ev.Evaluation:
    val = None if val_wrong is None else probs_with_errors(spread(val_wrong))
    return evaluate(make_pred(key, probs_with_errors(spread(test_wrong)), val))


def summary_of(values: dict[str, list[float]], metric: str = "test_macro_f1"
               ) -> dict[str, dict]:
    """What configuration_summary gives compare_configurations, for hand-picked per-seed scores."""
    return {name: {metric: {**seed_interval(v), "values": list(v)}} for name, v in values.items()}


# ------------------------------------------------------------------ grouping and summary
def test_by_configuration_groups_keys_and_sorts_seeds_numerically() -> None:
    evaluations = {k: model(k, i) for i, k in enumerate(["m_s10", "n_s1", "m_s2", "m_s1"])}
    groups = seeds.by_configuration(evaluations)
    assert list(groups) == ["m", "n"]
    assert [e.key for e in groups["m"]] == ["m_s1", "m_s2", "m_s10"]  # 2 before 10: numbers
    assert [e.pred.seed for e in groups["n"]] == [1]
    assert groups["m"][2] is evaluations["m_s10"]


def test_configuration_summary_is_the_mean_over_seeds_in_seed_order() -> None:
    evaluations = {"m_s3": model("m_s3", 6, 1), "m_s1": model("m_s1", 0, 3),
                   "m_s2": model("m_s2", 3, 0), "n_s7": model("n_s7", 9, 9)}
    summary = seeds.configuration_summary(seeds.by_configuration(evaluations))
    m = summary["m"]
    assert m["seeds"] == [1, 2, 3]
    ordered = [evaluations[k] for k in ("m_s1", "m_s2", "m_s3")]
    f1 = [e.metrics["macro"]["f1"] for e in ordered]
    assert len(set(f1)) == 3 and f1[0] == 1.0  # distinct scores, so order is visible
    assert m["test_macro_f1"]["values"] == f1
    assert m["test_macro_f1"]["mean"] == pytest.approx(np.mean(f1))
    assert m["test_macro_f1"]["sd"] == pytest.approx(np.std(f1, ddof=1))
    assert m["test_macro_f1"]["interval"] == pytest.approx(seed_interval(f1)["interval"])
    assert m["test_macro_f1"]["n"] == 3
    assert m["test_accuracy"]["values"] == [1.0, 27 / 30, 24 / 30]
    assert m["test_ece"]["values"] == [e.metrics["calibration"]["before"]["ece"] for e in ordered]
    val = [ev.validation_macro_f1(LABELS, probs_with_errors(spread(n)), 3) for n in (3, 0, 1)]
    assert m["val_macro_f1"]["values"] == pytest.approx(val)
    assert m["val_macro_f1"]["values"][1] == 1.0
    n = summary["n"]
    assert n["seeds"] == [7] and n["test_macro_f1"]["interval"] is None
    assert n["test_macro_f1"]["sd"] is None


# ------------------------------------------------------------------ comparisons
def test_compare_puts_the_higher_mean_first_and_estimates_its_lead() -> None:
    values = {"alpha": [0.80, 0.81, 0.82], "beta": [0.90, 0.91, 0.92]}
    [pair] = seeds.compare_configurations(summary_of(values))
    assert (pair["a"], pair["b"]) == ("beta", "alpha")  # not alphabetical: beta is higher
    assert pair["mean_a"] == pytest.approx(0.91) and pair["mean_b"] == pytest.approx(0.81)
    assert pair["estimate"] == pytest.approx(0.10)
    ref = welch_difference(values["beta"], values["alpha"])
    assert pair["p"] == pytest.approx(ref["p"]) and pair["interval"] == ref["interval"]
    assert pair["p_holm"] == pytest.approx(pair["p"])  # one pair: nothing to correct
    assert pair["metric"] == "test_macro_f1"
    assert pair["holds"] is True


def test_a_claim_flips_to_no_difference_when_the_interval_includes_zero() -> None:
    separated = {"A": [0.90, 0.91, 0.92], "B": [0.80, 0.81, 0.82]}
    [pair] = seeds.compare_configurations(summary_of(separated))
    assert pair["a"] == "A" and pair["interval"][0] > 0 and pair["holds"] is True
    claim = claims.comparison_claim(pair, "test macro-F1")
    assert claim["holds"] and claim["statement"].startswith("A beats B on test macro-F1")
    # the same means' order, but seed-to-seed spread wide enough to cover zero
    noisy = {"A": [0.80, 0.93, 0.98], "B": [0.70, 0.81, 0.92]}
    assert np.mean(noisy["A"]) > np.mean(noisy["B"])
    [pair] = seeds.compare_configurations(summary_of(noisy))
    lo, hi = pair["interval"]
    assert pair["a"] == "A" and pair["estimate"] > 0
    assert lo < 0 < hi
    assert pair["p_holm"] >= 0.05 and pair["holds"] is False
    claim = claims.comparison_claim(pair, "test macro-F1")
    assert claim["holds"] is False and claim["winner"] is None
    assert claim["statement"].startswith("No difference shown between A and B")
    assert "beats" not in claim["statement"]


def test_holm_is_applied_over_every_pair() -> None:
    values = {"x": [0.90, 0.92, 0.94], "y": [0.85, 0.87, 0.89], "z": [0.80, 0.82, 0.84]}
    pairs = seeds.compare_configurations(summary_of(values))
    assert [(p["a"], p["b"]) for p in pairs] == [("x", "y"), ("x", "z"), ("y", "z")]
    raw = [p["p"] for p in pairs]
    np.testing.assert_allclose([p["p_holm"] for p in pairs], ev.holm(raw))
    assert all(p["p_holm"] >= p["p"] for p in pairs)
    # x vs y: its own interval excludes zero (raw p < 0.05), but not after Holm over 3 pairs
    xy = pairs[0]
    assert xy["interval"][0] > 0 and xy["p"] < 0.05 <= xy["p_holm"]
    assert xy["holds"] is False
    assert pairs[1]["holds"] is True  # x vs z survives the correction


def test_one_seed_configurations_are_never_shown_different() -> None:
    one = {"A": [0.95], "B": [0.60]}
    [pair] = seeds.compare_configurations(summary_of(one))
    assert pair["estimate"] == pytest.approx(0.35)
    assert pair["p"] is None and pair["p_holm"] is None and pair["interval"] is None
    assert pair["holds"] is False
    # untestable pairs do not count towards Holm's number of tests
    mixed = {"A": [0.95], "B": [0.80, 0.81, 0.82], "C": [0.90, 0.91, 0.92]}
    pairs = {(p["a"], p["b"]): p for p in seeds.compare_configurations(summary_of(mixed))}
    assert pairs[("A", "B")]["p_holm"] is None and pairs[("A", "C")]["p_holm"] is None
    assert pairs[("C", "B")]["p_holm"] == pytest.approx(pairs[("C", "B")]["p"])
    assert pairs[("C", "B")]["holds"] is True


def test_compare_on_another_metric() -> None:
    values = {"A": [0.1, 0.2, 0.15], "B": [0.3, 0.35, 0.32]}
    [pair] = seeds.compare_configurations(summary_of(values, "val_macro_f1"), "val_macro_f1")
    assert pair["metric"] == "val_macro_f1" and pair["a"] == "B"


# ------------------------------------------------------------------ seed ensembles
def test_ensemble_averages_test_and_val_probabilities() -> None:
    rng = np.random.default_rng(0)
    members = [make_pred(f"m_s{s}", rng.dirichlet(np.ones(3), 30), rng.dirichlet(np.ones(3), 30))
               for s in (1, 2, 3)]
    ens = seeds.ensemble_predictions(members)
    np.testing.assert_allclose(ens.probs, (members[0].probs + members[1].probs
                                           + members[2].probs) / 3)
    np.testing.assert_allclose(ens.val_probs, np.mean([p.val_probs for p in members], axis=0))
    assert not np.allclose(ens.probs, ens.val_probs)
    assert (ens.key, ens.model, ens.seed) == ("m_ensemble", "m_ensemble", seeds.ENSEMBLE_SEED)
    np.testing.assert_array_equal(ens.labels, LABELS)
    assert ens.classes == CLASSES and ens.test.equals(members[0].test)


def test_ensemble_refuses_members_scored_on_other_images() -> None:
    probs = probs_with_errors([])
    base = make_pred("m_s1", probs)
    shuffled = np.roll(LABELS, 1)
    with pytest.raises(ValueError, match="other images"):
        seeds.ensemble_predictions([base, make_pred("m_s2", probs, labels=shuffled)])
    with pytest.raises(ValueError, match="m_s2 was scored on other images than m_s1"):
        seeds.ensemble_predictions([base, make_pred("m_s2", probs, val_labels=shuffled)])
    fewer = make_pred("m_s3", probs[:20], labels=LABELS[:20])
    with pytest.raises(ValueError, match="other images"):
        seeds.ensemble_predictions([base, fewer])
    other_classes = make_pred("m_s4", probs)
    other_classes = ev.Predictions(**{**other_classes.__dict__, "classes": ["x", "y", "z"]})
    with pytest.raises(ValueError, match="other images"):
        seeds.ensemble_predictions([base, other_classes])
    moved = make_pred("m_s5", probs)
    moved.test.loc[0, "path"] = "Testing/glioma/elsewhere.png"
    with pytest.raises(ValueError, match="other images"):
        seeds.ensemble_predictions([base, moved])
    with pytest.raises(ValueError, match="not a seed of m"):
        seeds.ensemble_predictions([base, make_pred("other_s1", probs)])


def ensemble_of(members: list[ev.Evaluation]) -> ev.Evaluation:
    return evaluate(seeds.ensemble_predictions([m.pred for m in members]))


def test_ensemble_of_complementary_members_beats_them() -> None:
    # each member is wrong (confidently) on a different third of the images; averaged, two
    # right members outvote the wrong one everywhere
    members = [evaluate(make_pred(f"m_s{s}", probs_with_errors(
        [c * 10 + i for c in range(3) for i in range(s * 3, s * 3 + 3)], confidence=0.6)))
        for s in (0, 1, 2)]
    ens = ensemble_of(members)
    assert ens.metrics["accuracy"] == 1.0
    report = seeds.ensemble_report(members, ens, resamples=RESAMPLES, seed=0)
    member_f1 = [m.metrics["macro"]["f1"] for m in members]
    assert report["members"] == ["m_s0", "m_s1", "m_s2"]
    assert report["macro_f1"] == 1.0 and report["members_macro_f1"] == member_f1
    assert report["best_member_macro_f1"] == max(member_f1) < 1.0
    vs = report["vs_members"]
    assert vs["estimate"] == pytest.approx(1.0 - np.mean(member_f1))
    # seed-aware: the paired t-interval of (ensemble - member) over the members' seeds
    ref = paired_difference([1.0] * 3, member_f1)
    assert vs["interval"] == pytest.approx(ref["interval"]) and vs["p"] == pytest.approx(ref["p"])
    assert vs["holds"] == (vs["interval"][0] > 0) and "paired t-test over seeds" in vs["test"]
    assert vs["test_sampling_interval"][0] > 0  # the bootstrap over test images, as detail


def test_ensemble_of_identical_members_gains_nothing() -> None:
    members = [model(f"m_s{s}", 6) for s in (1, 2)]
    report = seeds.ensemble_report(members, ensemble_of(members), resamples=RESAMPLES, seed=0)
    vs = report["vs_members"]
    assert vs["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert vs["interval"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert vs["holds"] is False  # holds only when the interval excludes zero
    assert vs["test_sampling_interval"] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_ensemble_calibration_is_compared_with_temperature_scaled_members() -> None:
    rng = np.random.default_rng(4)
    members = []
    for s in (1, 2, 3):
        test = probs_with_errors(spread(4 + s), confidence=0.95)
        val = probs_with_errors(rng.choice(30, 5, replace=False), confidence=0.95)
        members.append(evaluate(make_pred(f"m_s{s}", test, val)))
    ens = ensemble_of(members)
    cal = seeds.ensemble_report(members, ens, resamples=RESAMPLES, seed=0)["calibration"]
    after = [m.metrics["calibration"]["after"]["ece"] for m in members]
    before = [m.metrics["calibration"]["before"]["ece"] for m in members]
    assert cal["members_ece_after_temperature"] == after
    assert cal["members_ece"] == before
    assert after != before  # temperature scaling did move them
    assert cal["ensemble_ece"] == ens.metrics["calibration"]["before"]["ece"]
    assert cal["ensemble_ece_after_temperature"] == ens.metrics["calibration"]["after"]["ece"]
    vs = cal["vs_temperature_scaling"]
    ref = paired_difference([cal["ensemble_ece"]] * 3, after)
    assert vs["estimate"] == pytest.approx(cal["ensemble_ece"] - np.mean(after))
    assert vs["interval"] == pytest.approx(ref["interval"]) and vs["p"] == pytest.approx(ref["p"])
    assert vs["holds"] == (vs["interval"][1] < 0 or vs["interval"][0] > 0)


def test_ensemble_calibration_holds_only_when_the_whole_interval_is_below_zero() -> None:
    # an ensemble with ECE 0 against members still at 0.20-0.22 after scaling: holds
    members = [model(f"m_s{s}", 0) for s in (1, 2, 3)]
    for m, after in zip(members, (0.20, 0.21, 0.22), strict=True):
        m.metrics["calibration"] = {"before": {"ece": 0.3}, "after": {"ece": after}}
    ens = ensemble_of(members)
    ens.metrics["calibration"] = {"before": {"ece": 0.0}, "after": {"ece": 0.0}}

    def versus() -> dict:
        return seeds.ensemble_report(members, ens, resamples=RESAMPLES, seed=0)["calibration"][
            "vs_temperature_scaling"]

    vs = versus()
    assert vs["estimate"] == pytest.approx(-0.21)
    assert vs["interval"][1] < 0 and vs["holds"] is True
    # one member scaled to below the ensemble: the paired interval now covers zero
    members[2].metrics["calibration"] = {"before": {"ece": 0.3}, "after": {"ece": 0.0}}
    members[1].metrics["calibration"] = {"before": {"ece": 0.3}, "after": {"ece": 0.0}}
    vs = versus()
    assert vs["interval"][0] < 0 < vs["interval"][1] and vs["holds"] is False


# ------------------------------------------------------------------ representatives, evidence
def test_representatives_are_each_configurations_lowest_seed() -> None:
    evaluations = {k: model(k, 3) for k in ("b_s7", "b_s3", "a_s42", "b_s10")}
    reps = seeds.representatives(evaluations)
    assert sorted(reps) == ["a_s42", "b_s3"]
    assert reps["b_s3"] is evaluations["b_s3"]


def test_seed_evidence_chooses_on_validation_and_ensembles_multi_seed_configurations() -> None:
    # A is the better configuration on test, B on validation; C has one seed
    plan = {"A_s1": (0, 9), "A_s2": (1, 8), "A_s3": (2, 9),
            "B_s1": (6, 0), "B_s2": (7, 1),
            "C_s1": (3, 3)}
    evaluations = {k: model(k, t, v) for k, (t, v) in plan.items()}
    out = seeds.seed_evidence(evaluations, resamples=RESAMPLES, seed=0)
    assert set(out) == {"configurations", "best_configuration", "comparisons", "ensembles"}
    conf = out["configurations"]
    assert list(conf) == ["A", "B", "C"]
    assert conf["A"]["test_macro_f1"]["mean"] > conf["B"]["test_macro_f1"]["mean"]
    assert conf["B"]["val_macro_f1"]["mean"] > conf["A"]["val_macro_f1"]["mean"]
    assert out["best_configuration"] == "B"  # validation, never test
    assert conf["A"]["seeds"] == [1, 2, 3] and conf["C"]["seeds"] == [1]
    pairs = {(p["a"], p["b"]) for p in out["comparisons"]}
    assert pairs == {("A", "B"), ("A", "C"), ("C", "B")}
    assert [p["p"] is None for p in out["comparisons"]].count(True) == 2  # both with C
    assert sorted(out["ensembles"]) == ["A", "B"]  # C has a single seed
    ens = out["ensembles"]["A"]
    assert ens["members"] == ["A_s1", "A_s2", "A_s3"]
    assert set(ens["metrics"]) == {"accuracy", "macro", "ci", "calibration"}
    assert ens["macro_f1"] == ens["metrics"]["macro"]["f1"]
    assert ens["members_macro_f1"] == conf["A"]["test_macro_f1"]["values"]


def test_seed_evidence_best_configuration_averages_seeds() -> None:
    # B has the single best validation seed, A the better mean: the mean decides
    plan = {"A_s1": (3, 1), "A_s2": (3, 1), "B_s1": (3, 0), "B_s2": (3, 6)}
    evaluations = {k: model(k, t, v) for k, (t, v) in plan.items()}
    val = {k: seeds._val_f1(e) for k, e in evaluations.items()}
    assert max(val, key=val.get) == "B_s1"
    out = seeds.seed_evidence(evaluations, resamples=RESAMPLES, seed=0)
    assert out["best_configuration"] == "A"
