"""Readable tables of evaluate.json for the notebook, and the DVC plot files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .metrics import DIGITS, Evaluation, Predictions


def write_plot_data(plots_dir: Path | str | None, ev: Evaluation) -> list[Path]:
    """DVC plot files for one model, each kind in its own folder (one dvc.yaml entry per kind).

    `confusion/confusion_<key>.csv` (actual, predicted: one row per test image, for DVC's
    confusion template), `roc/roc_<key>.csv` (class, fpr, tpr), `pr/pr_<key>.csv`
    (class, recall, precision).
    """
    if not plots_dir:
        return []
    names = np.asarray(ev.pred.classes)
    tables = {
        "confusion": pd.DataFrame({"actual": names[ev.pred.labels],
                                   "predicted": names[ev.pred.predicted]}),
        "roc": ev.curves.roc.round(DIGITS),
        "pr": ev.curves.pr.round(DIGITS),
    }
    written = []
    for kind, table in tables.items():
        path = Path(plots_dir) / kind / f"{kind}_{ev.key}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False, lineterminator="\n")
        written.append(path)
    return written


def _ci(value: float, interval: Sequence[float] | None) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def metrics_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per model: the headline numbers with their bootstrap CIs, best macro-F1 first."""
    rows = {}
    for key, m in report["models"].items():
        cal = m["calibration"]
        rows[key] = {
            "accuracy [95% CI]": _ci(m["accuracy"], m["ci"]["accuracy"]),
            "macro-F1 [95% CI]": _ci(m["macro"]["f1"], m["ci"]["macro_f1"]),
            "balanced acc.": _num(m["balanced_accuracy"]), "kappa": _num(m["kappa"]),
            "ROC AUC": _num(m["roc_auc"]["macro"]), "PR AUC": _num(m["pr_auc"]["macro"]),
            "ECE → after T": f"{cal['before']['ece']:.3f} → {cal['after']['ece']:.3f}",
            "NLL → after T": f"{cal['before']['nll']:.3f} → {cal['after']['nll']:.3f}",
            "T": f"{cal['temperature']:.2f}",
            "_sort": m["macro"]["f1"],
        }
    table = pd.DataFrame.from_dict(rows, orient="index").sort_values("_sort", ascending=False)
    table.index.name = "model"
    return table.drop(columns="_sort")


def per_class_table(report: dict[str, Any], key: str) -> pd.DataFrame:
    """Precision, recall, F1 (with CI), support and AUCs per class for one model."""
    m = report["models"][key]
    rows = {}
    for cls, v in m["per_class"].items():
        rows[cls] = {"precision": _num(v["precision"]), "recall": _num(v["recall"]),
                     "F1 [95% CI]": _ci(v["f1"], m["ci"]["f1"][cls]),
                     "support": v["support"], "ROC AUC": _num(m["roc_auc"][cls]),
                     "PR AUC": _num(m["pr_auc"][cls])}
    for avg in ("macro", "weighted"):
        v = m[avg]
        rows[f"{avg} avg"] = {"precision": _num(v["precision"]), "recall": _num(v["recall"]),
                              "F1 [95% CI]": (_ci(v["f1"], m["ci"]["macro_f1"])
                                              if avg == "macro" else _num(v["f1"])),
                              "support": report["n_images"],
                              "ROC AUC": _num(m["roc_auc"]["macro"]) if avg == "macro" else "",
                              "PR AUC": _num(m["pr_auc"]["macro"]) if avg == "macro" else ""}
    return pd.DataFrame.from_dict(rows, orient="index")


def configurations_table(report: dict[str, Any]) -> pd.DataFrame:
    """Per configuration over its seeds: test macro-F1, accuracy and validation macro-F1 as
    mean ± sd with the t-interval of the test macro-F1 (sd and interval blank for one seed)."""
    def fmt(s: dict[str, Any]) -> str:
        return f"{s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if s["sd"] is not None else "")

    return pd.DataFrame({name: {
        "seeds": ", ".join(map(str, c["seeds"])),
        "test macro-F1": fmt(c["test_macro_f1"]),
        "95 % CI over seeds": _ci(c["test_macro_f1"]["mean"], c["test_macro_f1"]["interval"]),
        "test accuracy": fmt(c["test_accuracy"]), "val macro-F1": fmt(c["val_macro_f1"]),
        "best (on val)": name == report["best_configuration"]}
        for name, c in report["configurations"].items()}).T


def ensembles_table(report: dict[str, Any]) -> pd.DataFrame:
    """Each seed ensemble: its macro-F1 beside its members', the gain with its interval over
    the members' seeds (and, as detail, over test images) and its ECE beside the members' ECE
    after temperature scaling."""
    rows = {}
    for name, e in report.get("ensembles", {}).items():
        vs, cal = e["vs_members"], e["calibration"]
        rows[name] = {"ensemble macro-F1": f"{e['macro_f1']:.3f}",
                      "members": ", ".join(f"{v:.3f}" for v in e["members_macro_f1"]),
                      "gain (95 % CI over seeds)": _ci(vs["estimate"], vs["interval"]),
                      "(CI over test images)": _ci(vs["estimate"],
                                                   vs.get("test_sampling_interval")),
                      "ECE ensemble": f"{cal['ensemble_ece']:.3f}",
                      "ECE members after T": ", ".join(
                          f"{v:.3f}" for v in cal["members_ece_after_temperature"])}
    return pd.DataFrame(rows).T


def mcnemar_table(report: dict[str, Any]) -> pd.DataFrame:
    """Every pair of models in words: who is better, by how much, and whether it is significant."""
    alpha = report.get("alpha", 0.05)
    rows = []
    for p in report["mcnemar"]:
        diff = 100 * p["accuracy_difference"]
        if p["better"] is None:
            verdict = "no difference in accuracy"
        else:
            worse = p["b"] if p["better"] == p["a"] else p["a"]
            verdict = (f"{p['better']} beats {worse} by {abs(diff):.1f} points"
                       + ("" if p["significant"] else " (not significant)"))
        rows.append({"model A": p["a"], "model B": p["b"], "A−B accuracy (points)": round(diff, 1),
                     "only A right": p["a_only_correct"], "only B right": p["b_only_correct"],
                     "p (exact)": _p(p["p_value"]), "p (Holm)": _p(p["p_holm"]),
                     f"significant at {alpha:g}": "yes" if p["significant"] else "no",
                     "verdict": verdict})
    return pd.DataFrame(rows)


def comparison_frame(report: dict[str, Any]) -> pd.DataFrame:
    """Long table (metric, model, value, lo, hi) for the forest plot, best macro-F1 first."""
    order = sorted(report["models"], key=lambda k: -report["models"][k]["macro"]["f1"])
    rows = []
    for label, value, ci in (("accuracy", lambda m: m["accuracy"], "accuracy"),
                             ("macro-F1", lambda m: m["macro"]["f1"], "macro_f1")):
        for key in order:
            m = report["models"][key]
            lo, hi = m["ci"][ci]
            rows.append({"metric": label, "model": key, "value": value(m), "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def prevalence(pred: Predictions) -> dict[str, float]:
    """Share of each class among the test images: the chance level of its PR curve."""
    counts = np.bincount(pred.labels, minlength=len(pred.classes)) / len(pred.labels)
    return dict(zip(pred.classes, counts.tolist(), strict=True))
