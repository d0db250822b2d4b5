"""lib.evaluate: every metric against a hand-checked example, calibration, bootstrap, McNemar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy.special import softmax

from lib import figures, stats
from lib.evaluate import figures as evf
from lib.evaluate import metrics as ev
from lib.evaluate import tables as evt
from lib.evaluate.predict import write_predictions
from lib.evaluate.summary import summarise
from lib.jsonio import write_json

CLASSES = ["a", "b", "c"]
# Hand-checked: confusion rows (true) [[1,1,0],[0,2,0],[1,0,1]]
LABELS = np.array([0, 0, 1, 1, 2, 2])
PREDICTED = np.array([0, 1, 1, 1, 2, 0])


def one_hot(predicted: np.ndarray, k: int = 3, confidence: float = 1.0) -> np.ndarray:
    probs = np.full((len(predicted), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def make_pred(key: str, labels: np.ndarray, probs: np.ndarray,
              val: tuple[np.ndarray, np.ndarray] | None = None,
              classes: list[str] | None = None) -> ev.Predictions:
    classes = classes or CLASSES
    name, seed = ev.parse_key(key)
    test = pd.DataFrame({"path": [f"Testing/{classes[y]}/img_{i:03d}.png"
                                  for i, y in enumerate(labels)],
                         "class": [classes[y] for y in labels], "label": labels, "mask": ""})
    val_labels, val_probs = val if val is not None else (labels, probs)
    return ev.Predictions(key, name, seed, classes, test, np.asarray(labels), probs,
                          np.asarray(val_labels), val_probs)


def synthetic(n: int, k: int = 4, seed: int = 0, sharpen: float = 1.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z): those probabilities are perfectly calibrated;
    softmax(sharpen * z) with sharpen > 1 is the same ranking, over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, k))
    true_p = softmax(z, axis=1)
    labels = (rng.random((n, 1)) > np.cumsum(true_p, axis=1)).sum(axis=1)
    return labels, softmax(sharpen * z, axis=1)


# ------------------------------------------------------------------ classification metrics
def test_metrics_match_the_hand_computed_example() -> None:
    m = ev.classification_metrics(LABELS, PREDICTED, CLASSES)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["kappa"] == pytest.approx(0.5)  # po 2/3, pe 12/36
    pc = m["per_class"]
    assert [pc[c]["precision"] for c in CLASSES] == pytest.approx([1 / 2, 2 / 3, 1])
    assert [pc[c]["recall"] for c in CLASSES] == pytest.approx([1 / 2, 1, 1 / 2])
    assert [pc[c]["f1"] for c in CLASSES] == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    assert [pc[c]["support"] for c in CLASSES] == [2, 2, 2]
    assert m["macro"]["f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["macro"]["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["weighted"]["f1"] == pytest.approx(m["macro"]["f1"])  # equal supports


def test_weighted_average_uses_support() -> None:
    labels, predicted = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])
    m = ev.classification_metrics(labels, predicted, ["x", "y"])
    # f1(x) = 2*3/(2*3+1) = 6/7, f1(y) = 0; weighted by supports 3 and 1
    assert m["weighted"]["f1"] == pytest.approx(0.75 * 6 / 7)
    assert m["macro"]["f1"] == pytest.approx(0.5 * 6 / 7)


def test_perfect_classifier_scores_one_everywhere() -> None:
    m = ev.classification_metrics(LABELS, LABELS, CLASSES)
    assert m["accuracy"] == m["balanced_accuracy"] == m["kappa"] == 1.0
    assert m["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert np.array_equal(m["confusion"], np.diag([2, 2, 2]))
    curves = ev.ovr_curves(LABELS, one_hot(LABELS), CLASSES)
    assert curves.roc_auc == {"a": 1.0, "b": 1.0, "c": 1.0, "macro": 1.0}
    assert curves.pr_auc["macro"] == 1.0
    cal = ev.calibration_scores(LABELS, one_hot(LABELS))
    assert cal["ece"] == 0.0 and cal["brier"] == 0.0 and cal["nll"] < 1e-9


def test_always_one_class_gets_no_credit_for_the_others() -> None:
    always = np.zeros_like(LABELS)
    m = ev.classification_metrics(LABELS, always, CLASSES)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)
    assert m["kappa"] == pytest.approx(0.0)
    assert m["per_class"]["a"] == {"precision": pytest.approx(1 / 3), "recall": 1.0,
                                   "f1": pytest.approx(0.5), "support": 2}
    assert m["per_class"]["b"]["f1"] == m["per_class"]["c"]["f1"] == 0.0
    assert m["macro"]["f1"] == pytest.approx(0.5 / 3)
    assert m["confusion"] == [[2, 0, 0], [2, 0, 0], [2, 0, 0]]
    # constant scores cannot rank: every one-vs-rest AUC is chance
    assert ev.ovr_curves(LABELS, np.full((6, 3), 1 / 3), CLASSES).roc_auc["macro"] == 0.5


def test_vectorised_scores_agree_with_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    labels, predicted = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    predicted[:100] = labels[:100]
    predicted[predicted == 3] = 2  # class 3 never predicted: F1 0, not NaN
    s = ev.scores_from_confusion(ev.confusion(labels, predicted, 4))
    assert s["f1"] == pytest.approx(f1_score(labels, predicted, labels=range(4), average=None,
                                             zero_division=0))
    assert s["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro",
                                                   zero_division=0))
    assert s["accuracy"] == pytest.approx(np.mean(labels == predicted))


# ------------------------------------------------------------------ ROC / PR
def test_class_without_positives_gets_null_auc_and_a_note() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1]])
    curves = ev.ovr_curves(labels, probs, CLASSES)
    assert curves.roc_auc["c"] is None and curves.pr_auc["c"] is None
    assert curves.roc_auc["a"] == 1.0 and curves.roc_auc["macro"] == 1.0
    assert len(curves.notes) == 1 and "'c'" in curves.notes[0]
    assert set(curves.roc["class"]) == {"a", "b"}
    assert list(curves.roc.columns) == ["class", "fpr", "tpr"]
    assert list(curves.pr.columns) == ["class", "recall", "precision"]


def test_auc_of_a_hand_ranked_example() -> None:
    # class a positives score 0.9, 0.4; negatives 0.5, 0.1 -> 3 of 4 pairs ranked right
    labels = np.array([0, 0, 1, 1])
    pa = np.array([0.9, 0.4, 0.5, 0.1])
    probs = np.stack([pa, 1 - pa], axis=1)
    curves = ev.ovr_curves(labels, probs, ["a", "b"])
    assert curves.roc_auc["a"] == pytest.approx(0.75)
    # average precision for a: ranks 0.9(+) 0.5(-) 0.4(+): (1 * 1/2) + (2/3 * 1/2)
    assert curves.pr_auc["a"] == pytest.approx(0.5 + 1 / 3)


# ------------------------------------------------------------------ calibration
def test_ece_hand_example_and_bins() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # bin of 0.9: accuracy 1/2 vs 0.9; bin of 0.6: accuracy 1 vs 0.6 -> both gaps 0.4
    assert ev.ece(labels, probs, bins=15) == pytest.approx(0.4)
    table = ev.reliability_table(labels, probs, bins=15)
    assert len(table) == 15 and table["count"].sum() == 4
    assert table.loc[13, "count"] == 2 and table.loc[8, "count"] == 2  # (13/15,14/15], (8/15,9/15]
    top = ev.reliability_table(np.array([0]), np.array([[1.0, 0.0]]), bins=15)
    assert top["count"].iloc[-1] == 1  # confidence 1 lands in the last bin


def test_ece_of_a_perfectly_calibrated_model_is_near_zero() -> None:
    labels, probs = synthetic(200_000, seed=1)
    assert ev.ece(labels, probs, bins=15) < 0.005
    labels, sharp = synthetic(200_000, seed=1, sharpen=3.0)
    assert ev.ece(labels, sharp, bins=15) > 0.1  # the same test catches over-confidence


def test_brier_and_nll_by_hand() -> None:
    labels = np.array([0, 1])
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert ev.brier(labels, probs) == pytest.approx((0 + 0.25 + 0.25) / 2)
    assert ev.nll(labels, probs) == pytest.approx(-(math.log(1) + math.log(0.5)) / 2)


def test_temperature_scaling_fixes_an_over_confident_model() -> None:
    val_labels, val_probs = synthetic(5000, seed=2, sharpen=3.0)
    labels, probs = synthetic(5000, seed=3, sharpen=3.0)
    t = ev.fit_temperature(val_labels, val_probs)
    assert t == pytest.approx(3.0, rel=0.1)  # undoes the sharpening
    after = ev.apply_temperature(probs, t)
    assert ev.nll(labels, after) < ev.nll(labels, probs) - 0.1
    assert ev.ece(labels, after) < ev.ece(labels, probs) / 3
    assert np.array_equal(after.argmax(1), probs.argmax(1))  # accuracy unchanged
    np.testing.assert_allclose(ev.apply_temperature(probs, 1.0), probs, atol=1e-9)
    with pytest.raises(ValueError, match="temperature"):
        ev.apply_temperature(probs, 0.0)


def test_temperature_sharpens_an_under_confident_model() -> None:
    labels, probs = synthetic(5000, seed=4, sharpen=0.4)
    assert ev.fit_temperature(labels, probs) == pytest.approx(0.4, rel=0.1)


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_images() -> None:
    rng = np.random.default_rng(5)
    widths = []
    for n in (100, 1600):
        labels = rng.integers(0, 3, n)
        predicted = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 3, n))
        point = ev.scores_from_confusion(ev.confusion(labels, predicted, 3))
        ci = ev.classification_cis(labels, predicted, 3, resamples=1000, seed=42)
        assert ci["accuracy"][0] <= point["accuracy"] <= ci["accuracy"][1]
        assert ci["macro_f1"][0] <= point["macro_f1"] <= ci["macro_f1"][1]
        for (lo, hi), f in zip(ci["f1"], point["f1"], strict=True):
            assert lo <= f <= hi
        widths.append(ci["accuracy"][1] - ci["accuracy"][0])
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(16) = 1/4 in theory


def test_bootstrap_is_seeded_and_degenerate_for_a_perfect_model() -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 200)
    predicted = np.where(rng.random(200) < 0.6, labels, 0)
    ci = ev.classification_cis
    assert ci(labels, predicted, 3, seed=1) == ci(labels, predicted, 3, seed=1)
    assert ci(labels, predicted, 3, seed=1) != ci(labels, predicted, 3, seed=2)
    perfect = ev.classification_cis(labels, labels, 3, resamples=200)
    assert perfect["accuracy"] == [1.0, 1.0] and perfect["macro_f1"] == [1.0, 1.0]


def test_bootstrap_is_vectorised() -> None:
    rng = np.random.default_rng(7)
    labels, predicted = rng.integers(0, 4, 2000), rng.integers(0, 4, 2000)
    start = time.perf_counter()
    ev.classification_cis(labels, predicted, 4, resamples=1000)
    assert time.perf_counter() - start < 3.0  # ~0.1 s; a loop over sklearn takes ~10 s


def test_bootstrap_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="resamples"):
        ev.classification_cis(LABELS, PREDICTED, 3, resamples=0)
    with pytest.raises(ValueError, match="level"):
        ev.classification_cis(LABELS, PREDICTED, 3, level=95)


# ------------------------------------------------------------------ McNemar and Holm
def paired(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_against_a_hand_computed_table() -> None:
    # discordant 1 vs 9: two-sided p = 2 * P(X <= 1 | 10, 1/2) = 2 * 11 / 1024
    result = ev.mcnemar_exact(*paired(50, 1, 9, 40))
    assert result["a_only_correct"] == 1 and result["b_only_correct"] == 9
    assert result["p_value"] == pytest.approx(22 / 1024)
    # 5 vs 5 is no evidence at all; no discordant pair is p = 1, not an error
    assert ev.mcnemar_exact(*paired(10, 5, 5, 0))["p_value"] == pytest.approx(1.0)
    assert ev.mcnemar_exact(*paired(10, 0, 0, 3))["p_value"] == 1.0


def test_holm_against_a_hand_example() -> None:
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert ev.holm([0.6, 0.9]).tolist() == [1.0, 1.0]  # capped at 1
    assert ev.holm([]).size == 0


def test_compare_models_says_who_is_better_and_whether_it_counts() -> None:
    n = 60
    truth = np.ones(n, bool)
    good = truth.copy()
    good[:3] = False  # 57/60
    bad = truth.copy()
    bad[:25] = False  # 35/60
    same_as_bad = bad.copy()
    pairs = ev.compare_models({"m_good": good, "m_bad": bad, "m_twin": same_as_bad}, alpha=0.05)
    assert [(p["a"], p["b"]) for p in pairs] == [("m_bad", "m_good"), ("m_bad", "m_twin"),
                                                 ("m_good", "m_twin")]
    bad_good = pairs[0]
    assert bad_good["better"] == "m_good" and bad_good["significant"]
    assert bad_good["accuracy_difference"] == pytest.approx((35 - 57) / 60)
    assert bad_good["a_only_correct"] == 0 and bad_good["b_only_correct"] == 22
    # the (good, twin) pair ties for the smallest p: Holm gives both 3p (3 tests, running max)
    assert pairs[2]["p_value"] == bad_good["p_value"]
    assert bad_good["p_holm"] == pytest.approx(3 * bad_good["p_value"])
    twins = pairs[1]
    assert twins["better"] is None and not twins["significant"] and twins["p_holm"] == 1.0


# ------------------------------------------------------------------ one model, then the study
def test_evaluate_model_fills_every_field() -> None:
    labels, probs = synthetic(300, k=3, seed=8, sharpen=2.5)
    val = synthetic(300, k=3, seed=9, sharpen=2.5)
    result = ev.evaluate_model(make_pred("scratch_none_s1", labels, probs, val),
                               resamples=200, seed=0)
    m = result.metrics
    assert m["model"] == "scratch_none" and m["seed"] == 1
    assert set(m) == {"model", "seed", "accuracy", "balanced_accuracy", "kappa", "macro",
                      "weighted", "per_class", "ci", "roc_auc", "pr_auc", "calibration",
                      "confusion"}
    assert set(m["ci"]["f1"]) == set(CLASSES)
    cal = m["calibration"]
    assert cal["temperature"] > 1.5  # fitted on val, over-confident by construction
    assert cal["after"]["nll"] < cal["before"]["nll"]
    assert set(result.reliability) == {"before", "after"}


def write_csv(folder: Path, key: str, labels: np.ndarray, probs: np.ndarray) -> Path:
    n = len(labels)
    frame = pd.DataFrame({
        "path": [f"Testing/{CLASSES[y]}/img_{i:03d}.png" for i, y in enumerate(labels)]
        + [f"Training/{CLASSES[y]}/v_{i:03d}.png" for i, y in enumerate(labels)],
        "split": ["test"] * n + ["val"] * n, "class": [CLASSES[y] for y in labels] * 2,
        "label": np.concatenate([labels, labels]), "mask": "",
    })
    return write_predictions(folder / f"{key}.csv", frame, np.concatenate([probs, probs]),
                             CLASSES)


def test_summary_json_has_the_documented_schema(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    labels = np.repeat([0, 1], 30)  # class c has no test images
    paths = {}
    for key, skill in (("scratch_none_s1", 0.9), ("scratch_none_s2", 0.7),
                       ("transfer_s1", 0.5)):
        predicted = np.where(rng.random(60) < skill, labels, 1 - labels)
        probs = 0.8 * one_hot(predicted) + 0.2 * rng.dirichlet(np.ones(3), 60)
        paths[key] = write_csv(tmp_path, key, labels, probs)
    evaluations = ev.evaluate_all(paths, resamples=100, seed=3)
    report = summarise(evaluations, resamples=100, seed=3, level=0.95, alpha=0.05)
    assert report["split"] == "test" and report["n_images"] == 60
    assert report["classes"] == CLASSES
    assert report["bootstrap"] == {"resamples": 100, "seed": 3, "level": 0.95}
    assert sorted(report["models"]) == sorted(paths)
    assert report["models"]["scratch_none_s1"]["roc_auc"]["c"] is None
    assert any("'c'" in note for note in report["notes"])
    configs = report["configurations"]
    assert configs["scratch_none"]["seeds"] == [1, 2] and configs["transfer"]["seeds"] == [1]
    assert configs["scratch_none"]["test_accuracy"]["n"] == 2
    assert configs["scratch_none"]["test_accuracy"]["sd"] is not None
    assert configs["transfer"]["test_macro_f1"]["sd"] is None
    assert configs["transfer"]["test_macro_f1"]["interval"] is None
    assert report["best_configuration"] == "scratch_none"
    assert [(c["a"], c["b"]) for c in report["comparisons"]] == [("scratch_none", "transfer")]
    assert report["comparisons"][0]["p"] is None  # one transfer seed: nothing to test against
    assert not report["comparisons"][0]["holds"]
    assert list(report["ensembles"]) == ["scratch_none"]  # only configurations with 2+ seeds
    assert len(report["mcnemar"]) == 3
    assert set(report["mcnemar"][0]) == {"a", "b", "a_only_correct", "b_only_correct",
                                         "p_value", "p_holm", "significant", "better",
                                         "accuracy_difference"}
    assert report["best_model"] == "scratch_none_s1"  # val scores = test scores here
    assert report["best_model_rule"] == ev.BEST_MODEL_RULE
    write_json(tmp_path / "evaluate.json", report)
    text = (tmp_path / "evaluate.json").read_text()
    assert json.loads(text) == report  # plain json: no numpy types, no NaN
    digits = [len(t.split(".")[1]) for t in text.replace(",", " ").split()
              if t.replace(".", "").replace("-", "").isdigit() and "." in t]
    assert max(digits) <= 6
    tables = (evt.metrics_table(report), evt.per_class_table(report, "transfer_s1"),
              evt.configurations_table(report), evt.mcnemar_table(report),
              evt.ensembles_table(report))
    assert [len(t) for t in tables] == [3, 5, 2, 3, 1]
    assert "beats" in " ".join(evt.mcnemar_table(report)["verdict"])


def test_models_scored_on_different_images_are_refused(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 0])
    a = make_pred("m_s1", labels, one_hot(labels))
    b = make_pred("n_s1", labels, one_hot(labels))
    b.test.loc[0, "path"] = "Testing/a/other.png"
    evaluations = {p.key: ev.evaluate_model(p, resamples=10) for p in (a, b)}
    with pytest.raises(ValueError, match="other test images"):
        summarise(evaluations, resamples=10, seed=0)


def test_bad_scores_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="logits"):
        ev.check_probs(np.array([0, 1]), np.array([[2.0, -1.0], [0.5, 3.0]]))
    with pytest.raises(ValueError, match="labels"):
        ev.check_probs(np.array([0, 5]), one_hot(np.array([0, 1])))
    with pytest.raises(ValueError, match="empty"):
        ev.check_probs(np.array([], int), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="_s<seed>"):
        ev.parse_key("no_seed_here")
    only_test = write_csv(tmp_path, "x_s1", LABELS, one_hot(PREDICTED))
    frame = pd.read_csv(only_test)
    frame[frame["split"] == "test"].to_csv(only_test, index=False)
    with pytest.raises(ValueError, match="no 'val' rows"):
        ev.load_predictions(only_test)


def test_load_predictions_reads_what_predict_all_writes(tmp_path: Path) -> None:
    probs = one_hot(PREDICTED, confidence=0.8)
    pred = ev.load_predictions(write_csv(tmp_path, "scratch_batchnorm_s42", LABELS, probs))
    assert (pred.key, pred.model, pred.seed) == ("scratch_batchnorm_s42", "scratch_batchnorm", 42)
    assert pred.classes == CLASSES and len(pred.test) == 6
    np.testing.assert_array_equal(pred.predicted, PREDICTED)
    np.testing.assert_allclose(pred.val_probs, probs)


def test_plot_data_files_for_dvc(tmp_path: Path) -> None:
    result = ev.evaluate_model(make_pred("m_s1", LABELS, one_hot(PREDICTED, confidence=0.7)),
                               resamples=10)
    written = evt.write_plot_data(tmp_path, result)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    assert names == ["confusion/confusion_m_s1.csv", "pr/pr_m_s1.csv", "roc/roc_m_s1.csv"]
    cm = pd.read_csv(tmp_path / "confusion" / "confusion_m_s1.csv")
    assert list(cm.columns) == ["actual", "predicted"] and len(cm) == 6
    assert cm.iloc[1].tolist() == ["a", "b"]
    assert list(pd.read_csv(tmp_path / "roc" / "roc_m_s1.csv").columns) == ["class", "fpr", "tpr"]
    assert evt.write_plot_data(None, result) == []


# ------------------------------------------------------------------ errors gallery and figures
def test_misclassified_puts_the_most_confident_mistakes_first() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array([[0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1],
                      [0.1, 0.9, 0.0], [0.5, 0.4, 0.1], [0.0, 0.1, 0.9]])
    errors = ev.misclassified(make_pred("m_s1", labels, probs), per_pair=2)
    assert errors[["true", "predicted"]].values.tolist() == [["a", "b"], ["a", "b"], ["b", "a"]]
    assert errors["confidence"].tolist() == [0.8, 0.7, 0.5]  # 0.6 cut by per_pair
    assert errors["errors"].tolist() == [3, 3, 1]
    none = ev.misclassified(make_pred("m_s1", LABELS, one_hot(LABELS)))
    assert none.empty and "errors" in none


def test_evaluation_figures_draw_and_stay_small(tmp_path: Path) -> None:
    labels, probs = synthetic(400, k=3, seed=11, sharpen=2.0)
    result = ev.evaluate_model(make_pred("m_s1", labels, probs), resamples=50)
    m, cal = result.metrics, result.metrics["calibration"]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (128, 96), dtype=np.uint8)
    mask = np.zeros((128, 96), bool)
    mask[40:60, 30:50] = True
    rows = [(f"true a\n→ b ({i})", [image] * 6, [mask, None] * 3, ["p 0.9"] * 6)
            for i in range(12)]
    report = {"models": {"m_s1": m, "n_s1": m}}
    drawn = {
        "confusion": evf.confusion_matrices(m["confusion"], CLASSES, "m"),
        "roc_pr": evf.roc_pr_curves(result.curves.roc, result.curves.pr,
                                      result.curves.roc_auc, result.curves.pr_auc,
                                      evt.prevalence(result.pred), "m"),
        "reliability": evf.reliability_diagram(result.reliability,
                                                 {"before": cal["before"],
                                                  "after": cal["after"]}, "m"),
        "errors": evf.error_gallery(rows, 6, "m"),
        "no_errors": evf.error_gallery([], 6, "m"),
        "comparison": evf.model_comparison(evt.comparison_frame(report)),
    }
    for name, fig in drawn.items():
        assert isinstance(fig, Figure)
        path = figures.save_compact(fig, tmp_path / f"{name}.png")
        assert 1_000 < path.stat().st_size < 150_000, name
    again = figures.save_compact(drawn["errors"], tmp_path / "again.png")
    assert again.read_bytes() == (tmp_path / "errors.png").read_bytes()  # reproducible bytes
    plt.close("all")


def test_temperature_at_its_bound_is_noted() -> None:
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 3, 500)
    noise = softmax(rng.normal(0, 1, (500, 3)), axis=1)  # scores unrelated to the labels
    result = ev.evaluate_model(make_pred("m_s1", labels, noise), resamples=10)
    assert result.metrics["calibration"]["temperature"] > 19
    assert any("search bound" in note for note in result.notes)
    labels, probs = synthetic(500, k=3, seed=13, sharpen=2.0)
    assert ev.evaluate_model(make_pred("m_s1", labels, probs), resamples=10).notes == []


def test_best_model_is_chosen_on_validation_never_on_test(tmp_path: Path) -> None:
    """Model a is better on test, model b on validation: the rule names b."""
    rng = np.random.default_rng(12)
    labels = np.repeat([0, 1, 2], 20)
    wrong = (labels + 1) % 3

    def probs(skill: float) -> np.ndarray:
        predicted = np.where(rng.random(60) < skill, labels, wrong)
        return 0.8 * one_hot(predicted) + 0.2 * rng.dirichlet(np.ones(3), 60)

    paths = {}
    for key, test_skill, val_skill in (("a_s1", 0.95, 0.5), ("b_s1", 0.6, 0.9)):
        n = len(labels)
        frame = pd.DataFrame({
            "path": [f"Testing/{CLASSES[y]}/t{i}.png" for i, y in enumerate(labels)]
            + [f"Training/{CLASSES[y]}/v{i}.png" for i, y in enumerate(labels)],
            "split": ["test"] * n + ["val"] * n, "class": [CLASSES[y] for y in labels] * 2,
            "label": np.concatenate([labels, labels]), "mask": ""})
        paths[key] = write_predictions(tmp_path / f"{key}.csv", frame,
                                       np.concatenate([probs(test_skill), probs(val_skill)]),
                                       CLASSES)
    evaluations = ev.evaluate_all(paths, resamples=50, seed=0)
    test_f1 = {k: e.metrics["macro"]["f1"] for k, e in evaluations.items()}
    assert test_f1["a_s1"] > test_f1["b_s1"]
    report = summarise(evaluations, resamples=50, seed=0)
    assert report["best_model"] == "b_s1"
    assert "validation" in report["best_model_rule"]


def test_best_model_rule_averages_seeds_breaks_ties_by_name_and_scores_every_class() -> None:
    # a has the best single seed, b the best mean over seeds: b is chosen, by its lowest seed
    seeds = {"a_s1": 0.9, "a_s2": 0.5, "b_s9": 0.8, "b_s3": 0.75}
    assert ev.best_configuration(seeds) == "b"
    assert ev.best_model(seeds) == "b_s3"
    assert ev.best_model({"b_s1": 0.8, "a_s1": 0.8, "c_s1": 0.7}) == "a_s1"
    with pytest.raises(ValueError, match="no models"):
        ev.best_model({})
    with pytest.raises(ValueError, match="is not '<name>_s<seed>'"):
        ev.best_model({"a": 0.8})
    # class 2 is never predicted nor present: it still counts (scores 0) in the macro average
    labels = np.array([0, 0, 1, 1])
    assert ev.validation_macro_f1(labels, one_hot(labels), 3) == pytest.approx(2 / 3)
