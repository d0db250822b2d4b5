"""The report is one self-contained file that shows the metrics files' numbers, and nothing else.

Unit tests build it from a hand-written reports tree (`outputs` fixture: small metrics files as the
stages write them, tiny PNGs, executed-notebook stubs). `check_report` holds the invariants and is
reusable on a real run (tests/test_pipeline.py). The browser test loads the page in headless
Chromium: no console message, no network request, a screenshot that is not blank.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from bs4 import BeautifulSoup
from PIL import Image, ImageStat

from lib import stage
from lib.claims import build as build_claims
from lib.evaluate.metrics import BEST_MODEL_RULE
from lib.explain import scores as localise
from lib.report import build as report
from tests.conftest import REPO

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
KEYS = ["scratch_batchnorm_s42", "transfer_s42"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_BROWSER = ("no Chromium found: install it (Debian: `apt-get install chromium`) or set "
              "CHROMIUM=/path/to/chrome; .ci/run installs it so CI always runs this test")


# ---- a realistic reports tree ---------------------------------------------------------------
def png(path: Path, colour: tuple[int, int, int] = (40, 90, 160)) -> None:
    """A small non-blank PNG: a colour ramp, so each figure is a real image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (24, 16), colour)
    for x in range(24):
        img.putpixel((x, 8), (x * 10, 255 - x * 10, 128))
    img.save(path)


def dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def configuration(f1: list[float]) -> dict[str, Any]:
    """A configuration over two seeds as lib.evaluate.seeds writes it (made-up numbers)."""
    def stat(values: list[float]) -> dict[str, Any]:
        mean = round(sum(values) / len(values), 6)
        return {"mean": mean, "sd": 0.0098, "n": len(values), "values": values,
                "interval": [round(mean - 0.088, 6), round(mean + 0.088, 6)]}

    return {"seeds": [42, 43], "test_macro_f1": stat(f1),
            "test_accuracy": stat([v + 0.01 for v in f1]), "test_ece": stat([0.1, 0.12]),
            "val_macro_f1": stat([v + 0.02 for v in f1])}


def evaluate_json() -> dict[str, Any]:
    """Two models in the schema lib.evaluate writes (numbers made up, rounded to 6 digits)."""
    def model(name: str, f1: float, ece: float, null_auc: bool) -> dict[str, Any]:
        per = {c: {"precision": round(f1 + 0.01 * i, 6), "recall": round(f1 - 0.01 * i, 6),
                   "f1": round(f1 + 0.002 * i, 6), "support": 25} for i, c in enumerate(CLASSES)}
        auc = {c: 0.81234 + 0.01 * i for i, c in enumerate(CLASSES)}
        if null_auc:
            auc["notumor"] = None
        return {"model": name, "seed": 42, "accuracy": f1 + 0.0123, "balanced_accuracy": f1 + 0.01,
                "kappa": f1 - 0.2, "macro": {"precision": f1 + 0.02, "recall": f1 - 0.01, "f1": f1},
                "weighted": {"precision": f1 + 0.02, "recall": f1 - 0.01, "f1": f1 + 0.001},
                "per_class": per,
                "ci": {"accuracy": [f1 - 0.04, f1 + 0.05], "macro_f1": [f1 - 0.0514, f1 + 0.0487],
                       "f1": {c: [f1 - 0.1, f1 + 0.1] for c in CLASSES}},
                "roc_auc": {**auc, "macro": 0.834567}, "pr_auc": {**auc, "macro": 0.712345},
                "calibration": {"temperature": 1.734,
                                "before": {"ece": ece, "brier": 0.51, "nll": 1.2},
                                "after": {"ece": round(ece / 3, 6), "brier": 0.49, "nll": 1.05}},
                "confusion": [[20, 2, 2, 1], [3, 18, 2, 2], [2, 2, 19, 2], [1, 1, 1, 22]]}
    return {"split": "test", "n_images": 100, "classes": CLASSES,
            "bootstrap": {"resamples": 1000, "seed": 42, "level": 0.95},
            "models": {KEYS[0]: model("scratch_batchnorm", 0.581474, 0.123456, False),
                       KEYS[1]: model("transfer", 0.337183, 0.087654, True)},
            "configurations": {"scratch_batchnorm": configuration([0.581474, 0.601234]),
                               "transfer": configuration([0.337183, 0.351111])},
            "best_configuration": "scratch_batchnorm",
            "best_model_rule": BEST_MODEL_RULE,  # as lib.evaluate.summary writes it
            "alpha": 0.05,
            "comparisons": [{"a": "scratch_batchnorm", "b": "transfer", "metric": "test_macro_f1",
                             "mean_a": 0.591354, "mean_b": 0.344147, "estimate": 0.247207,
                             "interval": [0.151, 0.343], "p": 0.0021, "p_holm": 0.0021,
                             "df": 1.9, "test": "Welch t-test over seeds (2 vs 2)",
                             "holds": True}],
            "ensembles": {"transfer": {
                "members": ["transfer_s42", "transfer_s43"], "macro_f1": 0.36,
                "members_macro_f1": [0.337183, 0.351111], "best_member_macro_f1": 0.351111,
                "vs_members": {"estimate": 0.015853, "interval": [-0.01, 0.04],
                               "test": "paired bootstrap (made up)", "holds": False},
                "calibration": {"ensemble_ece": 0.05, "ensemble_ece_after_temperature": 0.04,
                                "members_ece": [0.09, 0.08],
                                "members_ece_after_temperature": [0.03, 0.035],
                                "vs_temperature_scaling": {
                                    "estimate": 0.0175, "interval": [-0.01, 0.045], "p": 0.2,
                                    "df": 1.0, "test": "paired t-test over seeds (n = 2)",
                                    "holds": False}}}},
            "mcnemar": [{"a": KEYS[0], "b": KEYS[1], "a_only_correct": 31, "b_only_correct": 7,
                         "p_value": 0.000104, "p_holm": 0.000104, "significant": True,
                         "better": KEYS[0], "accuracy_difference": 0.244}],
            "notes": ["pr_auc for notumor of transfer_s42 is null: made-up note for the test"],
            "best_model": KEYS[0]}


def explain_json() -> dict[str, Any]:
    """The schema lib.explain writes; the transfer model's shortcut control is skipped."""
    def scores(base: float) -> dict[str, Any]:
        s = {name: {"value": round(base - 0.05 * i, 6), "ci": [round(base - 0.05 * i - 0.08, 6),
                                                                 round(base - 0.05 * i + 0.07, 6)]}
             for i, name in enumerate(localise.SCORES)}
        per_class = {c: {k: v["value"] for k, v in s.items()} | {"n": 25}
                     for c in CLASSES if c != "notumor"}
        return {**s, "n": 75, "per_class": per_class}

    def model(layer: str, base: float, shortcut: dict[str, Any]) -> dict[str, Any]:
        return {"layer": layer, "layer_grid": [16, 16], "randomised_layers": ["predictions"],
                "layer_reason": "the map the head reads (16x16 >= min_grid 8)",
                "localisation": {"gradcam": scores(base), "hirescam": scores(base + 0.05),
                                 "occlusion": scores(base - 0.05)},
                "faithfulness": {
                    "gradcam": {"deletion_auc": 0.21, "insertion_auc": 0.55, "n": 48},
                    "occlusion": {"deletion_auc": 0.25, "insertion_auc": 0.5, "n": 48}},
                "sanity": {"gradcam": {"spearman": 0.12, "passed": True},
                           "occlusion": {"spearman": 0.93, "passed": False}},
                "shortcut": shortcut}
    def check(target: float, measured: Any, met: bool, **more: Any) -> dict[str, Any]:
        return {"target": target, "measured": measured, "met": met, **more}

    checks = {"headline_pointing_game": check(0.8, 0.692857, False, method="hirescam",
                                              note="made-up target note"),
              "gradcam_pointing_game": check(0.6, 0.642857, True, method="gradcam"),
              "shortcut_rate": check(0.1, 0.053333, True),
              "shortcut_excess": check(0.05, 0.02, True),
              "sanity": check(0.5, {"gradcam": 0.12, "hirescam": 0.2, "occlusion": 0.93}, False,
                              failed=["occlusion"])}
    return {"methods": ["gradcam", "hirescam", "occlusion"], "sample_size": 48,
            "n_tumour_images": 75, "min_grid": 8, "headline_method": "hirescam",
            "pointing_tolerance": {"fraction_of_side": 0.067, "image_sides": [128],
                                   "pixels": [8.5714], "reference": "made up"},
            "validation": {"split": "val", "model": KEYS[0], "n": 32, "layer": "block4_conv",
                           "criterion": "pointing_game", "headline_method": "hirescam",
                           "scores": {"gradcam": {"pointing_game": 0.59375,
                                                  "pointing_game_tol": 0.71875,
                                                  "sanity_spearman": 0.3, "sanity_passed": True},
                                      "hirescam": {"pointing_game": 0.65625,
                                                   "pointing_game_tol": 0.75,
                                                   "sanity_spearman": 0.1, "sanity_passed": True},
                                      "occlusion": {"pointing_game": 0.5,
                                                    "pointing_game_tol": 0.625}}},
            "models": {KEYS[0]: model("block4_conv", 0.642857, {
                "rate": 0.053333, "per_class": {"glioma": 0.08, "meningioma": 0.04,
                                                "pituitary": 0.04}, "n": 75}),
                KEYS[1]: model("activation_17", 0.413333,
                               {"skipped": "made-up reason for the test"})},
            "best_model": KEYS[0],
            "target": {"method": "hirescam", "pointing_game": 0.8, "gradcam_pointing_game": 0.6,
                       "shortcut_rate": 0.1, "shortcut_excess": 0.05,
                       "best_pointing_game": 0.692857, "best_shortcut_rate": 0.053333,
                       "checks": checks, "met": False,
                       "note": "made-up target note; the sanity check failed for occlusion"},
            "skipped": {"scorecam": "made-up reason for the test"},
            "best_configuration": "scratch_batchnorm",
            "configurations": {"scratch_batchnorm": {
                "seeds": [42, 43],
                "localisation": {m: {"pointing_game": {
                    "mean": v, "sd": 0.02, "n": 2, "values": [v - 0.014, v + 0.014],
                    "interval": [round(v - 0.18, 6), round(v + 0.18, 6)]}}
                    for m, v in (("gradcam", 0.642857), ("hirescam", 0.692857))},
                "shortcut": {"rate": {"mean": 0.053333, "sd": 0.01, "n": 2,
                                      "values": [0.046, 0.06], "interval": [-0.04, 0.15]}}}},
            "method_comparisons": [{"configuration": "scratch_batchnorm", "a": "hirescam",
                                    "b": "gradcam", "metric": "pointing_game",
                                    "estimate": 0.05, "interval": [0.01, 0.09], "p": 0.03,
                                    "df": 1.0, "test": "paired t-test over seeds (n = 2)",
                                    "holds": True}]}


def notebook(path: Path, seconds: float) -> None:
    """An executed-notebook stub with papermill's metadata, and its rendered HTML beside it."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# stub")])
    nb.metadata["papermill"] = {"duration": seconds, "end_time": "2026-11-23T13:18:07+00:00"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    path.with_suffix(".html").write_text("<html><body>stub</body></html>")


def write_outputs(root: Path, evaluate: bool = True, explain: bool = True) -> None:
    """What `dvc repro` leaves in a repository root, small; evaluate/explain optional."""
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    dump(root / "data" / "raw" / "phantom.json",
         {"generator": "lib.phantom", "config": {"seed": 7, "image_size": 64, "shortcut": "none"}})
    (root / "data.dvc").write_text(yaml.safe_dump({"outs": [
        {"md5": "0" * 32 + ".dir", "size": 1000, "nfiles": 4, "hash": "md5", "path": "data/raw"}]}))
    lock = {"schema": "2.0", "stages": {
        stage: {"cmd": "x", "outs": [{"path": out, "md5": "a" * 32, "size": 10}]}
        for stage, out in [("prepare", "data/processed/manifest.csv"), ("eda", "reports/eda"),
                           ("pretrain", "models/pretrain"),
                           ("train_scratch@batchnorm", "models/scratch_batchnorm"),
                           ("train_transfer", "models/transfer"),
                           ("report", "reports/index.html")]}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    reports = root / "reports"
    metrics = reports / "metrics"
    audit = {"classes": CLASSES,
             "counts": {"usable": {c: {"train": 34, "val": 6, "test": 25} for c in CLASSES},
                        "usable_total": {"train": 136, "val": 24, "test": 100},
                        "findings_by_kind": {"corrupt": 2}, "manifest_rows": 262,
                        "status": {"ok": 260, "warn": 0, "excluded": 2}},
             "duplicates": {"exact_duplicate_pairs": 0, "duplicate_pairs": 1,
                            "phash_max_distance": 4},
             "params": {"duplicates": "report", "val_fraction": 0.15},
             "findings": [{"kind": "corrupt", "path": f"Training/glioma/bad{i}.png",
                           "reason": "truncated image; excluded"} for i in range(2)]}
    dump(metrics / "data_audit.json", audit)
    dump(metrics / "eda.json", {"n_images": 260, "n_classes": 4, "lesion_share_of_head": {},
                                "kruskal_mean_intensity": {"H": 1.5, "p": 0.2, "epsilon2": 0.01,
                                                           "n": 260, "k": 4}})
    dump(metrics / "pretrain.json", {"backbone": "MobileNetV3Small", "n_train": 640,
                                     "task": "MRI sequence on a separate phantom",
                                     "val": {"accuracy": 0.7625, "macro_f1": 0.771444}})
    for name, extra in [("scratch_batchnorm", {"model": "scratch", "variant": "batchnorm"}),
                        ("transfer", {"model": "transfer", "backbone": "MobileNetV3Small",
                                      "weights": "pretrain", "weights_description":
                                      "weights from the pretrain stage (made up)"})]:
        dump(metrics / f"train_{name}.json", {
            **extra, "image_size": 64, "params": 1234, "seeds": [42],
            "per_seed": {"s42": {"best_epoch": 13, "epochs_run": 15}},
            "val_accuracy": {"mean": 0.8125, "sd": None, "n": 1},
            "val_macro_f1": {"mean": 0.7777, "sd": None, "n": 1}})
        png(reports / "training" / name / "training_curves.png")
    png(reports / "figures" / "eda" / "eda_counts.png")
    png(reports / "figures" / "eda" / "eda_samples.png", (200, 30, 30))
    png(reports / "figures" / "augment" / "augment_preview.png")
    notebook(reports / "notebooks" / "01_eda.ipynb", 7.25)
    notebook(reports / "notebooks" / "03_train_scratch_batchnorm.ipynb", 45.5)
    if evaluate:
        dump(metrics / "evaluate.json", evaluate_json())
        for key in KEYS:
            for kind in report.EVAL_FIGURES:
                png(reports / "figures" / "evaluate" / f"{kind}_{key}.png")
        png(reports / "figures" / "evaluate" / "comparison.png")
        notebook(reports / "notebooks" / "05_evaluate.ipynb", 31.0)
    if explain:
        dump(metrics / "explain.json", explain_json())
        for key in KEYS:
            for kind in ("gradcam", "methods", "faithfulness"):
                png(reports / "figures" / "explain" / f"{kind}_{key}.png")
        png(reports / "figures" / "explain" / f"blocks_{KEYS[0]}.png")
        png(reports / "figures" / "explain" / "localisation.png")
    if evaluate and explain:
        write_guided(root)
        write_fusion(root)
        claims_json = build_claims(evaluate_json(), explain_json())
        claims_json["claims"].append({  # what lib.claims.guidance_claims writes, made up
            "id": "target:guided_not_worse:guided_scratch_batchnorm", "kind": "target",
            "holds": True, "statement": "guided_scratch_batchnorm is not worse (made up)."})
        dump(metrics / "claims.json", claims_json)


def write_guided(root: Path) -> None:
    """The guided arm's outputs: one guided configuration and the shortcut test."""
    metrics, reports = root / "reports" / "metrics", root / "reports"
    dump(metrics / "train_guided_scratch_batchnorm.json", {
        "model": "guided", "base": "scratch_batchnorm", "layer": "block2_relu",
        "image_size": 64, "guide": {"lam": 0.1, "epochs": 8, "learning_rate": 5e-4,
                                    "mask_share": 1.0, "monitor": "val_guided_loss"},
        "annotated": {"train": 900, "val": 150}, "seeds": [42],
        "per_seed": {"s42": {"best_epoch": 6, "epochs_run": 8}},
        "val_accuracy": {"mean": 0.9, "sd": None, "n": 1},
        "val_macro_f1": {"mean": 0.9, "sd": None, "n": 1}})
    png(reports / "training" / "guided_scratch_batchnorm" / "plain_vs_guided.png")
    png(reports / "training" / "guided_scratch_batchnorm" / "training_curves.png")
    notebook(reports / "notebooks" / "04b_train_guided_scratch_batchnorm.ipynb", 22.75)
    stat = {"mean": 0.5, "sd": 0.1, "n": 3, "interval": [0.3, 0.7]}
    arm = {k: stat for k in ("f1_marked", "f1_clean", "drop", "gradcam_on_lesion",
                             "gradcam_on_marker", "hirescam_on_lesion", "hirescam_on_marker",
                             "twins_called_tumour")}
    dump(metrics / "shortcut.json", {
        "seeds": [42, 43, 44], "n_images": {"train_per_class": 200, "test_per_class": 50,
                                            "test_tumour": 150},
        "audit": {"flagged": [], "messages": {}}, "plain": arm, "guided": arm,
        "targets": {"plain_drop": 0.15, "guided_drop": 0.05}})
    png(reports / "figures" / "shortcut" / "shortcut_f1.png")
    sweep = reports / "sweeps"
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "guide_sweep.csv").write_text(
        "lam,mask_share,n_seeds,val_macro_f1,val_macro_f1_sd,gradcam_guided,gradcam_guided_sd,"
        "hirescam_guided,hirescam_guided_sd,gradcam_plain,hirescam_plain,experiment\n"
        "0.0,1.0,3,0.93,0.01,0.21,0.02,0.80,0.02,0.2,0.8,guide-lam0-share1\n"
        "0.1,1.0,3,0.94,0.01,0.91,0.02,0.88,0.02,0.2,0.8,workspace\n")
    png(sweep / "guide_sweep.png")


def write_fusion(root: Path) -> None:
    """The fusion stage's outputs (lib.evaluate.fusion's schema, made-up numbers)."""
    metrics, reports = root / "reports" / "metrics", root / "reports"

    def stat(mean: float) -> dict[str, Any]:
        return {"mean": mean, "sd": 0.01, "n": 3, "interval": [mean - 0.02, mean + 0.02],
                "per_seed": {}}

    def arm(mean: float) -> dict[str, Any]:
        return {"per_seed": {f"s{s}": {"macro_f1": mean} for s in (42, 43, 44)},
                "macro_f1": stat(mean)}

    audit = {"columns": {"age": {"message": "age alone predicts the class with balanced "
                                            "accuracy 0.34 (chance 0.25, p = 0.0099)",
                                 "finding": False}}, "findings": []}
    dump(metrics / "fusion.json", {
        "source": "phantom", "columns": {"age": "numeric", "sex": "categorical"},
        "seeds": [42, 43, 44], "chance_macro_f1": 0.25, "audit": audit,
        "metadata_only": arm(0.317), "caveat": "Metadata may be a confounder (made up).",
        "image_models": {"scratch_batchnorm": {
            "arms": {"image": arm(0.91), "image_head": arm(0.931), "fusion": arm(0.936)},
            "comparisons": [{"a": "fusion", "b": "image_head", "estimate": 0.005,
                             "interval": [-0.002, 0.013], "p": 0.1}]}}})
    png(reports / "figures" / "fusion" / "fusion_f1.png")


@pytest.fixture()
def outputs(tmp_path: Path) -> Path:
    write_outputs(tmp_path)
    return tmp_path


def soup_of(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(), "html.parser")


def text_of(tag: Any) -> str:
    """What a reader sees, with whitespace collapsed."""
    return " ".join(tag.get_text(" ").split())


# ---- invariants, reusable on a real run ------------------------------------------------------
def check_images(page: BeautifulSoup) -> int:
    """Every <img> carries its own decodable PNG/SVG; returns how many there are."""
    images = page.find_all("img")
    for img in images:
        match = re.fullmatch(r"data:image/(png|svg\+xml);base64,([A-Za-z0-9+/=]+)", img["src"])
        assert match, f"image without embedded data: {img['src'][:80]}"
        data = base64.b64decode(match.group(2), validate=True)
        if match.group(1) == "png":
            Image.open(io.BytesIO(data)).verify()
        else:
            assert b"<svg" in data
    return len(images)


def check_links(index: Path, page: BeautifulSoup) -> None:
    """Links are in-page anchors that exist or relative files inside the report's folder."""
    ids = {tag["id"] for tag in page.find_all(id=True)}
    folder = index.parent.resolve()
    for tag in page.find_all(["a", "link", "script", "iframe", "object", "embed", "source"]):
        ref = tag.get("href") or tag.get("src") or tag.get("data")
        assert tag.name == "a", f"<{tag.name}> has no place in a self-contained report: {tag}"
        if ref.startswith("#"):
            assert ref[1:] in ids, f"in-page link to a missing section: {ref}"
            continue
        assert not re.match(r"^([a-z][a-z0-9+.-]*:|/)", ref, re.I), f"absolute link: {ref}"
        target = (folder / ref).resolve()
        assert target.is_relative_to(folder) and target.is_file(), f"link outside/missing: {ref}"
    assert "url(" not in "".join(s.get_text() for s in page.find_all("style"))


def expected_headline(evaluate: dict[str, Any], explain: dict[str, Any] | None,
                      key: str) -> list[float]:
    """The numbers a headline row must show, in column order, straight from the json."""
    m = evaluate["models"][key]
    numbers = [m["macro"]["f1"], *m["ci"]["macro_f1"], m["calibration"]["before"]["ece"],
               m["calibration"]["after"]["ece"]]
    # a configuration's lowest seed is explained in full, its other seeds by the cheap methods
    expl = ((explain or {}).get("models", {}).get(key)
            or (explain or {}).get("seeds", {}).get(key, {}))
    method = (explain or {}).get("headline_method", "gradcam")
    pointing = expl.get("localisation", {}).get(method, {}).get("pointing_game", {})
    numbers += [pointing["value"]] if "value" in pointing else []
    rate = expl.get("shortcut", {}).get("rate")
    return [round(x, 3) for x in numbers + ([rate] if rate is not None else [])]


def check_headline(page: BeautifulSoup, evaluate: dict[str, Any],
                   explain: dict[str, Any] | None) -> None:
    """Every number in the summary table equals the metrics files' (to the 3 decimals shown)."""
    rows = page.find("table", id="headline").tbody.find_all("tr")
    assert len(rows) == len(evaluate["models"])
    for row, key in zip(rows, evaluate["models"], strict=True):
        cells = [text_of(td) for td in row.find_all("td")]
        assert cells[0].split()[0] == key
        shown = [float(x) for cell in cells[1:] for x in re.findall(r"\d+(?:\.\d+)?", cell)]
        assert shown == expected_headline(evaluate, explain, key), (key, cells)


def check_report(reports: Path) -> None:
    """The invariants of a built report: embedded images, internal links, headline = json."""
    index = reports / "index.html"
    page = soup_of(index)
    check_images(page)
    check_links(index, page)
    evaluate = report.read_json(reports / "metrics" / "evaluate.json")
    if evaluate:
        check_headline(page, evaluate, report.read_json(reports / "metrics" / "explain.json"))
    else:
        assert page.find("table", id="headline") is None


# ---- unit tests ----------------------------------------------------------------------------
def test_full_report_embeds_every_figure_and_links_only_inside(outputs: Path) -> None:
    index = report.build(root=outputs)
    page = soup_of(index)
    n_png = len(list((outputs / "reports").rglob("*.png")))
    assert check_images(page) == n_png == 27
    check_links(index, page)
    assert page.find("a", href="notebooks/05_evaluate.html")
    assert "not yet run" not in page.get_text().lower()


def test_headline_numbers_equal_the_metrics_json(outputs: Path) -> None:
    page = soup_of(report.build(root=outputs))
    check_headline(page, evaluate_json(), explain_json())
    best, other = page.find("table", id="headline").tbody.find_all("tr")
    assert "best" in best["class"] and "(stands for the best configuration)" in best.td.text
    assert "skipped" in other.get_text() and other.find("span", title=True)
    assert "0.581 0.530–0.630 0.123 → 0.041 0.693 0.053" in text_of(best)  # hirescam's
    header = text_of(page.find("table", id="headline").thead)
    assert "pointing game (hirescam)" in header


def test_summary_leads_with_the_claims_and_the_configurations(outputs: Path) -> None:
    """The first section a reviewer sees lists claims.json's statements, holding ones first,
    and a table of every configuration over its seeds, numbers as in evaluate.json."""
    page = soup_of(report.build(root=outputs))
    claims = json.loads((outputs / "reports" / "metrics" / "claims.json").read_text())
    lists = page.find_all("ul", class_="claims")
    first = [text_of(li) for li in lists[0].find_all("li")]
    holding = [c for c in claims["claims"] if c["holds"] and c["kind"] not in ("target",)]
    assert first[0].endswith(claims["claims"][0]["statement"])  # the best configuration
    assert all(any(t.endswith(c["statement"]) for t in first) for c in holding)
    assert "scratch_batchnorm beats transfer on test macro-F1" in " ".join(first)
    rest = [text_of(li) for li in lists[1].find_all("li")]
    assert any(t.startswith("No difference shown") for t in rest)  # the ensemble's
    assert page.find(id="conclusions").find_next("ul") is lists[0]
    rows = page.find("table", id="configurations").tbody.find_all("tr")
    assert [text_of(r.td) for r in rows] == ["scratch_batchnorm (best on validation)", "transfer"]
    assert "0.591 ± 0.010" in text_of(rows[0]) and "0.503–0.679" in text_of(rows[0])


def test_summary_says_which_configuration_is_best_and_why(outputs: Path) -> None:
    """The rule in lib.evaluate.metrics' own words, the validation score it compares, and the
    test score beside it (mean ± sd over seeds)."""
    page = soup_of(report.build(root=outputs))
    best = page.find(id="best-configuration")
    assert best.find_previous("h2")["id"] == "summary"
    assert best.find_next("h3")["id"] == "conclusions"  # before the claims
    text = text_of(best)
    assert text.startswith("Best configuration: scratch_batchnorm.")
    assert " ".join(BEST_MODEL_RULE.split()) in text
    assert "mean validation macro-F1 over 2 seeds is 0.611 ± 0.010" in text
    assert "its macro-F1 is 0.591 ± 0.010 (mean ± sd over seeds)" in text


def best_on_test(page: BeautifulSoup) -> list[str]:
    """Sentences that call a model best in the test-split section, or anywhere next to the test
    split, without saying it was chosen on validation."""
    def sentences(tag: Any) -> list[str]:
        return [x for x in re.split(r"(?<=[.;:])\s+", text_of(tag))
                if re.search(r"\bbest\b", x, re.I)]

    evaluation = page.find("h2", id="evaluation")
    section = []
    for tag in evaluation.find_next_siblings():
        if tag.name == "h2":
            break
        section += sentences(tag)
    nearby = [x for x in sentences(page) if re.search(r"\btest\b", x, re.I)]
    return [x for x in section + nearby if not re.search(r"validation|stands for", x, re.I)]


def test_no_model_is_called_best_on_the_test_split(outputs: Path) -> None:
    page = soup_of(report.build(root=outputs))
    assert not best_on_test(page), best_on_test(page)
    old = BeautifulSoup('<h2 id="evaluation">E</h2><p>100 test images. Every model was scored '
                        'once; the best model is m.</p><h2 id="x">X</h2>', "html.parser")
    assert best_on_test(old) == ["the best model is m."]


def test_epochs_are_counted_from_one_as_the_learning_curves_plot_them(outputs: Path) -> None:
    page = soup_of(report.build(root=outputs))
    table = page.find(string=re.compile("best epoch / epochs run")).find_parent("table")
    rows = [[text_of(td) for td in tr.find_all("td")] for tr in table.tbody.find_all("tr")]
    # best_epoch 13 is 0-based (the guided configuration's 6 of 8 likewise)
    assert sorted(r[-1] for r in rows) == ["14 / 15", "14 / 15", "7 / 8"]
    assert "Epochs are counted from 1" in text_of(table.caption)
    assert report.epoch(0) == "1" and report.epoch(-1) == report.epoch(None) == "–"


def test_every_embedded_figure_has_a_caption_for_a_reader(outputs: Path) -> None:
    from tests.test_figure_readability import reader_caption

    for name in ("eda_sizes", "eda_mean_images", "eda_intensity", "eda_lesion_share"):
        png(outputs / "reports" / "figures" / "eda" / f"{name}.png")
    page = soup_of(report.build(root=outputs))
    shown = page.find_all("figure")
    files = sorted((outputs / "reports").rglob("*.png"))
    assert len(shown) == len(files) == 31
    for fig in shown:
        caption = text_of(fig.figcaption)
        assert fig.img["alt"] == caption
        assert all(reader_caption(caption, f.name) for f in files), caption
    captions = [text_of(f.figcaption) for f in shown]
    assert "Number of usable images per class in the training, validation and test splits." \
        in captions
    assert any(c.startswith("Misclassified test images of transfer_s42") and
               "the most confident mistakes first" in c for c in captions)


def test_headline_check_notices_a_wrong_number(outputs: Path) -> None:
    page = soup_of(report.build(root=outputs))
    wrong = evaluate_json()
    wrong["models"][KEYS[1]]["calibration"]["after"]["ece"] = 0.5
    with pytest.raises(AssertionError):
        check_headline(page, wrong, explain_json())


def test_sections_show_evaluation_and_explanation_tables(outputs: Path) -> None:
    text = text_of(soup_of(report.build(root=outputs)))
    assert "transfer_s42 0.349 [0.297–0.387] 0.337 [0.286–0.386]" in text  # value [CI]
    assert "1.734 0.123 → 0.041" in text  # temperature, ECE before → after
    assert "31 7 0.244 < 0.001 < 0.001 A better" in text
    assert "FAILED: maps barely change" in text and "passed: maps change" in text
    assert "skipped: made-up reason for the test" in text
    assert "Skipped scorecam: made-up reason for the test" in text
    assert "not met" in text and "made-up note for the test" in text
    # explanations: the headline method chosen on validation, the targets one by one, tolerance
    assert "Headline method: hirescam , chosen on validation images, never on test" in text
    assert "hirescam 0.656 0.750 0.100 passed yes" in text and "occlusion 0.500 0.625" in text
    assert "gradcam 0.594 0.719 0.300 passed" in text  # an older json without sanity: blank
    assert "hirescam strict pointing game on test ≥ 0.80: measured 0.693: missed . Made-up " \
        "target note." in text
    assert "Grad-CAM strict pointing game on test ≥ 0.60: measured 0.643: met ." in text
    assert "excess over real healthy test scans ≤ 0.05: measured 0.020: met ." in text
    assert "(Spearman ρ < 0.50): failed: occlusion: missed ." in text
    assert "within 0.0670 of the image side of the mask (8.6 px at 128 px)" in text
    assert "the map the head reads (16x16 >= min_grid 8)" in text
    assert "block" in text and "He-normal" in text  # architecture line of the scratch model
    assert "weights from the pretrain stage (made up) — not ImageNet" in text


def test_explanations_without_masks_say_so(outputs: Path) -> None:
    explain = explain_json()
    explain["models"][KEYS[1]]["localisation"] = {"skipped": "no tumour masks in this dataset"}
    dump(outputs / "reports" / "metrics" / "explain.json", explain)
    page = soup_of(report.build(root=outputs))
    check_headline(page, evaluate_json(), explain)
    assert "transfer_s42 skipped: no tumour masks in this dataset" in text_of(page)
    assert "Made-up target note." in text_of(page)


def test_missing_stages_say_how_to_run_them(outputs: Path) -> None:
    shutil.rmtree(outputs / "reports")
    write_outputs(outputs, evaluate=False, explain=False)
    index = report.build(root=outputs)
    page = soup_of(index)
    text = text_of(page)
    assert text.count("Not yet run: dvc repro evaluate") == 2  # summary and evaluation
    assert "Not yet run: dvc repro explain" in text
    check_report(outputs / "reports")


def test_evaluation_without_explanations_shows_dashes(outputs: Path) -> None:
    (outputs / "reports" / "metrics" / "explain.json").unlink()
    index = report.build(root=outputs)
    page = soup_of(index)
    check_report(outputs / "reports")
    for row in page.find("table", id="headline").tbody.find_all("tr"):
        assert [td.text for td in row.find_all("td")][-2:] == ["–", "–"]
    assert "Explanation columns: not yet run" in text_of(page)


def test_nothing_run_yet_still_builds(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    index = report.build(root=tmp_path)
    text = text_of(soup_of(index))
    assert "No training stage has run yet" in text
    assert "The EDA stage has not run yet" in text
    assert "The prepare stage has not run yet" in text
    check_links(index, soup_of(index))


def test_corrupt_metrics_file_is_a_clear_error(outputs: Path) -> None:
    (outputs / "reports" / "metrics" / "evaluate.json").write_text("{not json")
    with pytest.raises(ValueError, match="evaluate.json is not valid JSON.*dvc repro"):
        report.build(root=outputs)


def claim_rows(index: Path) -> list[list[str]]:
    table = soup_of(index).find("table", id="claim-table")
    return [[text_of(td) for td in tr.find_all("td")]
            for tr in table.tbody.find_all("tr")]


def test_claim_checklist_lists_every_item_with_links(outputs: Path) -> None:
    items = yaml.safe_load(report.CLAIM_FILE.read_text())["items"]
    assert [i["id"] for i in items] == list(range(1, 43))
    rows = claim_rows(report.build(root=outputs))  # check_links above covers the anchors
    assert [int(r[0]) for r in rows] == list(range(1, 43))
    statuses = {r[3] for r in rows}
    assert statuses <= set(report.CLAIM_STATUSES) and "cannot answer" in statuses
    assert all(r[4] for r in rows), "every item says where it is answered"
    assert rows[31][3] == "cannot answer" and "external" in rows[31][2]


def test_claim_items_wait_for_their_stage_and_follow_the_data(outputs: Path) -> None:
    (outputs / "reports" / "metrics" / "evaluate.json").unlink()
    (outputs / "data" / "raw" / "phantom.json").unlink()
    index = report.build(root=outputs)
    rows = {int(r[0]): r for r in claim_rows(index)}
    assert rows[28][3] == "pending" and "dvc repro evaluate" in rows[28][2]
    assert rows[28][4] == "Evaluation"  # the section exists; its subsections do not yet
    assert rows[12][3] == "cannot answer"  # de-identification: the phantom needs none
    check_links(index, soup_of(index))


def test_claim_status_must_be_known(tmp_path: Path) -> None:
    bad = tmp_path / "claim.yaml"
    item = "  - {id: 1, part: x, item: y, status: %s, where: [%s]}\n"
    bad.write_text("sections: {summary: Summary}\nitems:\n" + item % ("done", "summary"))
    with pytest.raises(ValueError, match="status 'done'"):
        report.claim_checklist(set(), phantom=True, path=bad)
    bad.write_text("sections: {summary: Summary}\nitems:\n" + item % ("answered", "nowhere"))
    with pytest.raises(ValueError, match="nowhere"):
        report.claim_checklist(set(), phantom=True, path=bad)


def test_run_times_from_notebooks_and_timed_stages(outputs: Path) -> None:
    record = outputs / "reports" / "timings" / "prepare.json"
    assert stage.main(["timed", "prepare", str(record), "--", sys.executable, "-c", "1"]) == 0
    assert json.loads(record.read_text())["stage"] == "prepare"
    assert stage.main(["timed", "x", str(record.with_name("x.json")), "--", sys.executable,
                        "-c", "raise SystemExit(3)"]) == 3
    assert not record.with_name("x.json").exists()
    page = soup_of(report.build(root=outputs))
    times = text_of(page.find("h3", id="reproducibility-times").find_next("table"))
    assert "eda 7.2" in times and "train_scratch@batchnorm 45.5" in times
    assert "prepare" in times and "papermill metadata" in times
    assert "No timing recorded for: pretrain, train_transfer" in text_of(page)


def test_reproducibility_lists_hashes_seeds_and_versions(outputs: Path) -> None:
    text = text_of(soup_of(report.build(root=outputs)))
    assert f"data.dvc data/raw {'0' * 32}.dir 4 1000" in text
    assert "train_transfer models/transfer" in text
    assert "seed: bootstrap 42" in text and "jinja2" in text and "logical cores" in text
    assert ("instruction sets" in text) == bool(report.hardware().get("isa"))


def test_oversized_report_warns(outputs: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(report, "MAX_HTML_BYTES", 1000)
    report.build(root=outputs)
    assert "over the 0 MB budget" in capsys.readouterr().err


def test_rendered_notebook_fetches_nothing_from_a_cdn(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t $x^2$"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, tmp_path / "n.ipynb")
    html = stage.render_notebook(tmp_path / "n.ipynb").read_text()
    assert "<h1" in html
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    assert '<script src="">' not in html
    assert not re.search(r'import\(\s*["\']https?://', html), "a script still imports from a CDN"


# ---- in a real browser -----------------------------------------------------------------------
@dataclass
class Visit:
    console: list[str]  # every console message (the report has no script, so any is a fault)
    requests: list[str]  # network URLs the page asked for
    screenshot: Path


def find_browser() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next(filter(None, map(shutil.which, BROWSERS)), None)


@pytest.fixture(scope="module")
def browser() -> str:
    found = find_browser()
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(NO_BROWSER)
        pytest.skip(NO_BROWSER)
    return found


def visit(browser: str, page: Path, workdir: Path) -> Visit:
    """Load a file in headless Chromium with name resolution off; read its log and net log."""
    shot, netlog = workdir / "shot.png", workdir / "netlog.json"
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
           "--enable-logging=stderr", "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--disable-background-networking", "--no-first-run",
           f"--user-data-dir={workdir / 'profile'}", f"--log-net-log={netlog}",
           f"--screenshot={shot}", "--window-size=1280,2000", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"no screenshot ({proc.returncode}):\n{proc.stderr[-3000:]}"
    console = [line for line in proc.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
    events = json.loads(netlog.read_text()).get("events", []) if netlog.is_file() else []
    requests = sorted({e["params"]["url"] for e in events
                       if "file://" in str(e.get("params", {}).get("network_isolation_key"))
                       and re.match(r"(https?|wss?|ftp)://", e["params"].get("url", ""))})
    return Visit(console, requests, shot)


def test_browser_check_catches_errors_and_fetches(browser: str, tmp_path: Path) -> None:
    """The check itself must be able to fail: a script error and a CDN image are both seen."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="https://cdn.example.invalid/x.png">'
                   "<script>notDefined()</script></body></html>")
    seen = visit(browser, bad, tmp_path)
    assert any("notDefined" in line for line in seen.console), seen.console
    assert seen.requests == ["https://cdn.example.invalid/x.png"]


def test_report_opens_in_a_browser_without_errors(browser: str, outputs: Path) -> None:
    index = report.build(root=outputs)
    seen = visit(browser, index, outputs)
    assert seen.console == [] and seen.requests == []
    shot = ImageStat.Stat(Image.open(seen.screenshot).convert("L"))
    assert shot.var[0] > 100, "blank screenshot"
    assert shot.mean[0] < 250, "an almost all-white page"


def test_rendered_notebook_opens_offline(browser: str, tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t $x^2$"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, tmp_path / "n.ipynb")
    seen = visit(browser, stage.render_notebook(tmp_path / "n.ipynb"), tmp_path)
    assert seen.console == [] and seen.requests == []


# A script added to a copy of the report (the report itself has none): after layout, it lists
# every table wider than its .table-wrap (a column cut off, or hidden behind a scroll bar) and
# every figure shown at other than min(its width, the report's figure width).
LAYOUT_PROBE = """<script>
addEventListener('load', () => {
  const out = {body: getComputedStyle(document.body).fontSize, cut: [], figures: []};
  for (const wrap of document.querySelectorAll('.table-wrap')) {
    if (wrap.scrollWidth > wrap.clientWidth + 1) {
      const heading = wrap.closest('details') || wrap;
      out.cut.push(`${wrap.querySelector('table').id || heading.previousElementSibling?.textContent
                    .slice(0, 40)}: ${wrap.scrollWidth} > ${wrap.clientWidth} px`);
    }
  }
  for (const img of document.querySelectorAll('figure img')) {
    out.figures.push([img.naturalWidth, img.clientWidth]);  // less the border
  }
  const pre = document.createElement('pre');
  pre.id = 'layout-probe';
  pre.textContent = JSON.stringify(out);
  document.body.append(pre);
});
</script>"""


def layout(browser: str, index: Path, workdir: Path, width: int = 1280) -> dict[str, Any]:
    """What headless Chromium lays out for the report at a window `width` px wide."""
    probe = workdir / "layout_probe.html"
    probe.write_text(index.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--no-first-run",
           f"--user-data-dir={workdir / 'profile'}", f"--window-size={width},900",
           "--dump-dom", probe.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = BeautifulSoup(dom, "html.parser").find("pre", id="layout-probe")
    assert found, f"the layout probe did not run:\n{dom[-2000:]}"
    return json.loads(found.get_text())


def check_layout(seen: dict[str, Any]) -> None:
    """No table is cut; body text and figures are shown as lib.figures designs for."""
    assert seen["cut"] == [], seen["cut"]
    assert seen["body"] == f"{report.BODY_FONT_PX}px"
    for natural, shown in seen["figures"]:
        assert shown == min(natural, report.FIGURE_MAX_PX), (natural, shown)


def test_no_table_is_cut_and_figures_show_pixel_for_pixel_at_1280_px(browser: str,
                                                                      outputs: Path) -> None:
    check_layout(layout(browser, report.build(root=outputs), outputs))


def test_the_committed_report_lays_out_at_1280_px(browser: str, tmp_path: Path) -> None:
    """The same on the committed run's outputs (long model names, every table full)."""
    if not (REPO / "reports" / "metrics" / "evaluate.json").is_file():
        pytest.skip("no committed outputs in reports/ (run dvc pull)")
    seen = layout(browser, report.build(root=REPO, out=tmp_path / "index.html"), tmp_path)
    # every figure here is laid out: a full run has 40+, a fresh clone only the git-tracked
    # learning curves (the other figures are DVC outputs: `dvc pull` or `make repro`)
    pngs = [p for d in ("figures", "training") for p in (REPO / "reports" / d).rglob("*.png")]
    assert len(seen["figures"]) >= min(40, len(pngs)) > 0
    check_layout(seen)


def test_headline_method_is_read_never_assumed() -> None:
    from lib.report.build import headline_method

    assert headline_method(None) is None  # the explain stage has not run: nothing to name
    assert headline_method({"headline_method": "hirescam"}) == "hirescam"
    with pytest.raises(ValueError, match="names no headline_method"):
        headline_method({"models": {}})  # an old explain.json is not read as Grad-CAM


def test_the_guided_section_shows_cost_claims_and_the_shortcut_test(outputs: Path) -> None:
    """Guided configurations appear with their cost against the plain stage (papermill times),
    their guidance claims and the shortcut test's table and figures; before they ran, the
    section says how to run them."""
    metrics = outputs / "reports" / "metrics"
    claims_json = json.loads((metrics / "claims.json").read_text())
    claims_json["claims"].append({"id": "target:shortcut_test:plain_drop", "kind": "target",
                                  "holds": True, "statement": "The shortcut is real (made up)."})
    dump(metrics / "claims.json", claims_json)
    page = soup_of(report.build(root=outputs))
    section = page.find("h2", id="guided")
    text = " ".join(text_of(t) for t in section.find_all_next(["table", "li", "figcaption"],
                                                           limit=12))
    assert "guided_scratch_batchnorm" in text and "23 s" in text and "46 s" in text
    assert "0.50×" in text  # 22.75 s of fine-tuning over the plain stage's 45.5 s
    assert "The shortcut is real (made up)." in text
    assert "0.500 ± 0.100" in text
    sweep = text_of(page.find("h3", id="guided-sweep").find_next("table"))
    assert "guide-lam0-share1" in sweep and "0.910 ± 0.020" in sweep
    assert "scores 0.200 (Grad-CAM) and 0.800 (HiResCAM)" in sweep
    assert report.stage_of("04b_train_guided_transfer") == "train_guided@transfer"
    assert report.stage_of("03_train_scratch_none") == "train_scratch@none"
    assert "train_guided@scratch_batchnorm 22.8" in text_of(
        page.find("h3", id="reproducibility-times").find_next("table"))
    for path in (*metrics.glob("train_guided_*.json"), metrics / "shortcut.json"):
        path.unlink()
    page = soup_of(report.build(root=outputs))
    assert "dvc repro train_guided" in text_of(page.find("h2", id="guided").find_next("p"))


def test_the_fusion_section_shows_every_arm_the_audit_and_the_caveat(outputs: Path) -> None:
    page = soup_of(report.build(root=outputs))
    section = page.find("h2", id="fusion")
    text = " ".join(text_of(t) for t in section.find_all_next(["p", "table"], limit=4))
    assert "age alone predicts the class with balanced accuracy 0.34" in text
    assert "0.910 ± 0.010" in text and "0.936 ± 0.010" in text and "+0.005" in text
    assert "0.317 ± 0.010 (chance 0.25)" in text
    assert "Metadata may be a confounder (made up)." in text_of(section.find_next(
        "p", string=None).find_next("strong", string="What this means.").parent)
    assert page.find("a", href="#fusion")
    (outputs / "reports" / "metrics" / "fusion.json").unlink()
    page = soup_of(report.build(root=outputs))
    assert "dvc repro fusion" in text_of(page.find("h2", id="fusion").find_next("p"))
