"""The reviewer's report: one self-contained HTML file built from the pipeline's outputs.

Everything is embedded (figures as base64 PNG/SVG; no CDN, fonts or scripts from elsewhere) so the
file opens offline; the only links are in-page anchors and the executed notebooks beside it.
Sections are filled from the files that exist: a stage not yet run says so, never a made-up number.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from jinja2 import ChainableUndefined, Environment, FileSystemLoader, Undefined, select_autoescape
from markupsafe import Markup, escape

from ..config import load_params, repo_root
from ..contracts import PHANTOM_GENERATOR, SCORES
from ..figures import REPORT_BODY_PX, REPORT_FIGURE_PX
from ..splits import SPLITS

TEMPLATES = Path(__file__).parent / "templates"
CLAIM_FILE = TEMPLATES / "claim.yaml"
CLAIM_STATUSES = ("answered", "partly", "not applicable", "cannot answer")
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")
KEY_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "tf-keras-vis", "scikit-learn", "numpy",
                "scipy", "pandas", "pillow", "matplotlib", "seaborn", "nilearn", "dvc",
                "papermill", "nbconvert", "jinja2")
MAX_HTML_BYTES = 15 * 2**20  # the report's size budget at the default profile (make bench)
EVAL_FIGURES = ("confusion", "roc_pr", "reliability", "errors")
EXPLAIN_FIGURES = ("gradcam", "methods", "blocks", "faithfulness")


# ---- files ---------------------------------------------------------------------------------
def data_uri(path: Path) -> str:
    """A PNG or SVG file as a data: URI, so the report carries its own figures."""
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def read_json(path: Path) -> dict[str, Any] | None:
    """A stage's metrics, or None when the stage has not run; a corrupt file is an error."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun the stage that writes it "
                         f"(dvc repro --force <stage>)") from None


# What the report's CSS sets (templates/report.html.j2 reads them): body text and the widest a
# figure is shown, one image pixel per CSS pixel. Their one home is lib.figures, which designs
# every figure for them.
BODY_FONT_PX = REPORT_BODY_PX
FIGURE_MAX_PX = REPORT_FIGURE_PX

# One caption per figure the pipeline writes, by its path under reports/; {name}: a training
# configuration, {model}: a model key, {method}: a saliency method. First match wins.
FIGURE_CAPTIONS: dict[str, str] = {
    "figures/eda/eda_counts.png":
        "Number of usable images per class in the training, validation and test splits.",
    "figures/eda/eda_sizes.png":
        "Image sizes per class: one marker per distinct size, its area growing with the number "
        "of images of that size (no jitter). A class with a size of its own would be a shortcut.",
    "figures/eda/eda_intensity.png":
        "Per-image mean and spread of intensity inside the head, per class: a class that "
        "differs here could be told apart without looking at the lesion.",
    "figures/eda/eda_samples_plain.png":
        "Sample slices as a reader meets them: can you find each tumour?",
    "figures/eda/eda_samples.png": "The same slices with the tumour mask outlined in red.",
    "figures/eda/eda_conspicuity.png":
        "Lesion conspicuity |mean(lesion) − mean(ring)| / sd(ring) per class and sequence; "
        "below the dashed line (1) a reader cannot see the lesion.",
    "figures/eda/eda_mean_images.png":
        "Mean image of each class on one grey scale (top) and its difference from the mean of "
        "all classes (bottom; red brighter, blue darker): where the classes differ on average.",
    "figures/eda/eda_lesion_share.png":
        "Lesion area as a share of the head area in each tumour class.",
    "figures/augment/augment_preview.png":
        "Augmentation preview: one training image per class (rows), unchanged and after random "
        "augmentations; the red outline is the tumour mask, transformed with its image.",
    "training/{name}/training_curves.png":
        "Learning curves of {name}: loss and macro-F1 per epoch (counted from 1), and for a "
        "guided model its localisation term, one colour per seed, validation solid and training "
        "dashed; the dot marks the epoch whose weights were kept.",
    "training/{name}/plain_vs_guided.png":
        "Grad-CAM of the plain model (top) and of its guided twin (bottom) on validation tumour "
        "images of the first seed, the lesion outlined in cyan: the guided model's maps should "
        "sit on the lesion.",
    "figures/shortcut/shortcut_maps.png":
        "Shortcut test: Grad-CAM of the plain and the guided model (first seed) on test tumour "
        "images with their class's marker burned into a corner, the lesion outlined in cyan. A "
        "model that reads the marker lights up the corner box.",
    "figures/shortcut/shortcut_f1.png":
        "Shortcut test: test macro-F1 of each arm with the class marker burned in (as in "
        "training) and on the clean test split, one dot per seed, the bar at the mean.",
    "figures/fusion/fusion_f1.png":
        "Image + metadata: test macro-F1 of the image model as trained, a new head on its frozen "
        "features, the same head with the metadata branch, and the metadata alone; one dot per "
        "seed, the bar at the mean, the dotted line at chance.",
    "sweeps/guide_sweep.png":
        "The guided scratch CNN's sweep (queued DVC experiments): validation pointing game of "
        "Grad-CAM and HiResCAM and validation macro-F1 against the weight λ of the localisation "
        "term (left; λ = 0 is the same fine-tuning without it) and the share of tumour images "
        "whose mask is used (right), mean ± sd over seeds; dotted: the plain model.",
    "figures/evaluate/comparison.png":
        "Test accuracy and macro-F1 of every model, with 95 % bootstrap confidence intervals "
        "over the test images.",
    "figures/evaluate/confusion_{model}.png":
        "Confusion matrix of {model} on the test split: image counts (left) and the share of "
        "each true class (right; the diagonal is the recall).",
    "figures/evaluate/roc_pr_{model}.png":
        "One-vs-rest ROC and precision–recall curves of {model} on the test split; dotted lines "
        "show chance.",
    "figures/evaluate/reliability_{model}.png":
        "Reliability diagram of {model}: accuracy against confidence before and after "
        "temperature scaling, and how the confidences are spread.",
    "figures/evaluate/errors_{model}.png":
        "Misclassified test images of {model}, one row per true → predicted pair (the most "
        "frequent first), the most confident mistakes first; above each image the probability "
        "of the predicted class vs the true class.",
    "figures/explain/localisation.png":
        "Strict pointing game of every saliency method and model on the tumour test images, "
        "with 95 % confidence intervals; dotted: a random point, dashed: the target.",
    "figures/explain/methods_{model}.png":
        "One test image per class under every saliency method for {model}, the lesion mask "
        "outlined in cyan; the colour bar reads the map.",
    "figures/explain/blocks_{model}.png":
        "Mean activation of each convolutional block of {model} on the same images: what each "
        "depth responds to.",
    "figures/explain/faithfulness_{model}.png":
        "Deletion and insertion curves of {model}: the target-class probability as the most "
        "salient pixels are removed or restored.",
    "figures/explain/{method}_{model}.png":
        "Saliency maps ({method}) of {model} for test images of each class: each pair shows the "
        "scan with its lesion mask (cyan), then the map; correct predictions first, then "
        "mistakes.",
}
_FIELDS = {"name": r"[^/]+", "model": r"[^/]+", "method": r"[a-z0-9]+"}


def caption_for(file: str) -> str | None:
    """The caption of a figure by its path under reports/ (`figures/eda/eda_counts.png`), or
    None when FIGURE_CAPTIONS has none."""
    for pattern, caption in FIGURE_CAPTIONS.items():
        regex = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>{_FIELDS[m.group(1)]})",
                       re.escape(pattern))
        found = re.fullmatch(regex, file)
        if found:
            fields = found.groupdict()
            if "method" in fields:  # file names spell '+' as 'p' (gradcam++ -> gradcampp)
                fields["method"] = re.sub(r"pp$", "++", fields["method"])
            return caption.format(**fields)
    return None


def figure(path: Path, caption: str = "", file: str = "") -> dict[str, str] | None:
    """One embedded figure, or None when the file does not exist. Captioned by `caption`, else
    by FIGURE_CAPTIONS for `file` (its path under reports/), else by its name."""
    if not path.is_file():
        return None
    caption = caption or (caption_for(file) if file else None) or path.stem.replace("_", " ")
    return {"name": path.stem, "caption": caption, "src": data_uri(path)}


def figures(folder: Path, exclude: set[str] = frozenset(), under: str = ""
            ) -> list[dict[str, str]]:
    """Every PNG/SVG in a folder (less `exclude`, by file name), embedded, captioned from
    FIGURE_CAPTIONS by `under` + file name (the folder's path under reports/), else by name."""
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir()
                   if p.suffix in {".png", ".svg"} and p.name not in exclude)
    return [figure(p, file=f"{under}/{p.name}" if under else "") for p in files]


# The notebook's reading order: raw samples before the same slices outlined, then conspicuity.
EDA_FIGURES = ("eda_counts", "eda_sizes", "eda_intensity", "eda_samples_plain", "eda_samples",
               "eda_conspicuity", "eda_mean_images", "eda_lesion_share")


def eda_figures(folder: Path) -> list[dict[str, str]]:
    """The EDA figures in EDA_FIGURES order (any others after, by name), so a reader sees the
    plain samples before the outlined ones; captions from FIGURE_CAPTIONS."""
    rank = {name: k for k, name in enumerate(EDA_FIGURES)}
    return sorted(figures(folder, under="figures/eda"),
                  key=lambda f: (rank.get(f["name"], len(rank)), f["name"]))


def per_model_figures(folder: Path, key: str, kinds: tuple[str, ...]) -> list[dict[str, str]]:
    """The `<kind>_<key>.png` figures of one model that exist, in `kinds` order."""
    under = f"figures/{folder.name}"
    found = (figure(folder / f"{kind}_{key}.png", file=f"{under}/{kind}_{key}.png")
             for kind in kinds)
    return [f for f in found if f]


# ---- sections ------------------------------------------------------------------------------
def data_source(root: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Where the images came from: the phantom (with its provenance file) or the user's data."""
    raw_dir = params.get("data", {}).get("raw_dir", "data/raw")
    provenance = read_json(root / raw_dir / "phantom.json") or {}
    is_phantom = provenance.get("generator") == PHANTOM_GENERATOR
    return {"raw_dir": raw_dir, "phantom": is_phantom,
            "config": provenance.get("config", {}) if is_phantom else {}}


def trained_models(reports: Path, params: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per training stage's metrics (validation only), with architecture and curves."""
    rows = []
    for path in sorted((reports / "metrics").glob("train_*.json")):
        metrics = read_json(path) or {}
        name = path.stem.removeprefix("train_")
        per_seed = [{"seed": seed.removeprefix("s"), **run}
                    for seed, run in sorted(metrics.get("per_seed", {}).items())]
        rows.append({"name": name, "metrics": metrics, "per_seed": per_seed,
                     "architecture": architecture(metrics, params),
                     "curves": figure(reports / "training" / name / "training_curves.png",
                                      file=f"training/{name}/training_curves.png")})
    return rows


def architecture(metrics: dict[str, Any], params: dict[str, Any]) -> str:
    """One line a reader can check against lib.train.models, from the params the stage ran with."""
    size = metrics.get("image_size", "?")
    if metrics.get("model") == "scratch":
        p = params.get("train_scratch", {})
        variant = metrics.get("variant", "")
        blocks, filters = p.get("blocks", 0), p.get("filters", 0)
        bn = " → BatchNorm" if "batchnorm" in variant else ""
        drop = f" → dropout {p.get('dropout')}" if "dropout" in variant else ""
        dense = f" → dense {p['dense_units']} ReLU{drop}" if p.get("dense_units") else ""
        return (f"{size}×{size}×1 input → rescale"
                f"{' → per-image standardisation' if p.get('standardize') else ''} → {blocks} × "
                f"[conv {p.get('kernel_size')}×{p.get('kernel_size')} "
                f"({filters}…{filters * 2 ** max(blocks - 1, 0)} filters, He-normal){bn} → ReLU → "
                f"max-pool 2×2] → global {p.get('pooling')} pooling{drop}{dense} → softmax")
    if metrics.get("model") == "guided":
        g = metrics.get("guide", {})
        return (f"the {metrics.get('base')} model of each seed, fine-tuned {g.get('epochs')} "
                f"epochs at lr {g.get('learning_rate')} on cross-entropy + {g.get('lam')} × the "
                f"localisation term at {metrics.get('layer')} (masks of {g.get('mask_share'):.0%} "
                f"of the tumour images; kept epoch: lowest {g.get('monitor')})")
    if metrics.get("model") == "transfer":
        p = params.get("train_transfer", {})
        head = f" → dropout {p.get('head_dropout')}" if p.get("head_dropout") else ""
        dense = f" → dense {p['dense_units']} ReLU" if p.get("dense_units") else ""
        return (f"{size}×{size}×3 input → {metrics.get('backbone')} preprocessing → "
                f"{metrics.get('backbone')} without top → global average pooling{head}{dense} → "
                f"softmax. Phase 1: head only, {p.get('phase1_epochs')} epochs at lr "
                f"{p.get('phase1_learning_rate')}; phase 2: top {p.get('fine_tune_layers')} layers "
                f"unfrozen (BatchNorm {'learning' if p.get('train_bn') else 'frozen'}), "
                f"{p.get('phase2_epochs')} epochs at lr "
                f"{p.get('phase2_learning_rate')}")
    return ""


def headline(evaluate: dict[str, Any] | None,
             explain: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The summary table: one row per evaluated model, every number copied from the metrics."""
    if not evaluate:
        return []
    explained = (explain or {}).get("models", {})
    method = headline_method(explain)
    rows = []
    for key, m in evaluate.get("models", {}).items():
        calib = m.get("calibration", {})
        expl = explained.get(key) or (explain or {}).get("seeds", {}).get(key, {})
        shortcut = expl.get("shortcut", {})
        rows.append({
            "key": key, "best": key == evaluate.get("best_model"),
            "macro_f1": m.get("macro", {}).get("f1"),
            "macro_f1_ci": m.get("ci", {}).get("macro_f1"),
            "ece_before": calib.get("before", {}).get("ece"),
            "ece_after": calib.get("after", {}).get("ece"),
            "pointing_game": (expl.get("localisation", {}).get(method, {})
                              .get("pointing_game", {}).get("value")),
            "shortcut_rate": shortcut.get("rate"),
            "shortcut_skipped": shortcut.get("skipped"),
        })
    return rows


def configurations(evaluate: dict[str, Any] | None, explain: dict[str, Any] | None
                   ) -> list[dict[str, Any]]:
    """One row per configuration, over its seeds: the summary table (numbers copied from the
    metrics files: lib.evaluate.seeds and lib.explain.verdict made them)."""
    if not evaluate or "configurations" not in evaluate:
        return []
    method = headline_method(explain)
    explained = (explain or {}).get("configurations", {})
    rows = []
    for name, c in evaluate["configurations"].items():
        ex = explained.get(name, {})
        ens = evaluate.get("ensembles", {}).get(name, {})
        rows.append({
            "name": name, "best": name == evaluate.get("best_configuration"),
            "seeds": c["seeds"], "test_macro_f1": c["test_macro_f1"],
            "val_macro_f1": c["val_macro_f1"], "test_ece": c["test_ece"],
            "ensemble_macro_f1": ens.get("macro_f1"),
            "pointing_game": ex.get("localisation", {}).get(method, {}).get("pointing_game"),
            "shortcut_rate": ex.get("shortcut", {}).get("rate"),
        })
    return rows


def best_configuration(evaluate: dict[str, Any] | None) -> dict[str, Any] | None:
    """Which configuration is best and why, for the summary: its name, the rule that chose it
    (evaluate.json's ``best_model_rule``: lib.evaluate.metrics.BEST_MODEL_RULE, word for word;
    lib.report may not import lib.evaluate), its mean validation macro-F1 over seeds (what the
    rule compares) and its test macro-F1 mean ± sd; None before the evaluate stage."""
    name = (evaluate or {}).get("best_configuration")
    config = (evaluate or {}).get("configurations", {}).get(name)
    if not config:
        return None
    return {"name": name, "rule": evaluate.get("best_model_rule"),
            "n_seeds": len(config.get("seeds", [])), "val_macro_f1": config.get("val_macro_f1"),
            "test_macro_f1": config.get("test_macro_f1"), "model": evaluate.get("best_model")}


def claims(reports: Path) -> dict[str, Any] | None:
    """claims.json split the way the summary reads it: what holds first, then what did not."""
    payload = read_json(reports / "metrics" / "claims.json")
    if payload is None:
        return None
    from ..claims import headline_claims

    first = headline_claims(payload)
    rest = [c for c in payload["claims"] if c not in first]
    return {**payload, "first": first, "rest": rest}


def evaluation(reports: Path) -> dict[str, Any] | None:
    """Test-split metrics and figures per model, or None when the evaluate stage has not run."""
    return stage_section(reports, "evaluate", EVAL_FIGURES, "comparison", "comparison.png")


def stage_section(reports: Path, stage: str, kinds: tuple[str, ...], summary_key: str,
                  summary_file: str) -> dict[str, Any] | None:
    """A stage's metrics json with its figures: per model (`<kind>_<key>.png`), one summary
    figure, and any other figure in its folder, captioned from FIGURE_CAPTIONS; None when the
    stage has not run."""
    metrics = read_json(reports / "metrics" / f"{stage}.json")
    if metrics is None:
        return None
    folder = reports / "figures" / stage
    models = metrics.get("models") or {}
    named = {f"{kind}_{key}.png" for kind in kinds for key in models} | {summary_file}
    return {**metrics, "models": models, "per_model_figures": {
        key: per_model_figures(folder, key, kinds) for key in models},
        summary_key: figure(folder / summary_file, file=f"figures/{stage}/{summary_file}"),
        "other_figures": figures(folder, exclude=named, under=f"figures/{stage}")}


def headline_method(explain: dict[str, Any] | None) -> str | None:
    """The saliency method the summary reports, chosen on validation by the explain stage; None
    when that stage has not run. An explain.json without one is refused, not read as Grad-CAM."""
    if not explain:
        return None
    if not explain.get("headline_method"):
        raise ValueError("reports/metrics/explain.json names no headline_method (an explain "
                         "stage older than the validation choice wrote it): run `dvc repro "
                         "explain`")
    return str(explain["headline_method"])


def explanations(reports: Path) -> dict[str, Any] | None:
    """Saliency scores and figures per model, or None when the explain stage has not run."""
    section = stage_section(reports, "explain", EXPLAIN_FIGURES, "localisation_figure",
                            "localisation.png")
    if section is None:
        return None
    return {**section, "headline_method": headline_method(section),
            "scores": SCORES}


def stage_of(notebook: str) -> str:
    """DVC stage that executed a notebook: `03_train_scratch_dropout` → `train_scratch@dropout`,
    `04b_train_guided_transfer` → `train_guided@transfer`."""
    name = re.sub(r"^\d+[a-z]?_", "", notebook)
    for matrix in ("train_scratch", "train_guided"):
        if name.startswith(f"{matrix}_"):
            return f"{matrix}@" + name.removeprefix(f"{matrix}_")
    return name


def plain_stage(base: str) -> str:
    """The training stage of a plain configuration: scratch_<v> → train_scratch@<v>."""
    return ("train_scratch@" + base.removeprefix("scratch_") if base.startswith("scratch_")
            else f"train_{base}")


def guidance(reports: Path, executed: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The guided arm: each guided configuration's settings, cost and figure, the guidance
    claims, and the shortcut test (its numbers, claims and figures); None before it ran."""
    rows = []
    seconds = {nb["stage"]: nb["seconds"] for nb in executed}
    for path in sorted((reports / "metrics").glob("train_guided_*.json")):
        metrics = read_json(path) or {}
        name = path.stem.removeprefix("train_")
        base = metrics.get("base", name.removeprefix("guided_"))
        guided_s, plain_s = seconds.get(f"train_guided@{base}"), seconds.get(plain_stage(base))
        rows.append({"name": name, "base": base, "metrics": metrics,
                     "guided_seconds": guided_s, "plain_seconds": plain_s,
                     "cost": guided_s / plain_s if guided_s and plain_s else None,
                     "figure": figure(reports / "training" / name / "plain_vs_guided.png",
                                      file=f"training/{name}/plain_vs_guided.png")})
    payload = read_json(reports / "metrics" / "claims.json") or {}
    found = payload.get("claims", [])
    shortcut = read_json(reports / "metrics" / "shortcut.json")
    if not rows and not shortcut:
        return None
    return {
        "rows": rows,
        # the targets and the comparisons that hold first; the others behind a fold
        "claims": ([c for c in found if c["id"].startswith("target:guided_")]
                   + [c for c in found if c["kind"] == "guidance" and c["holds"]]),
        "claims_rest": [c for c in found if c["kind"] == "guidance" and not c["holds"]],
        "shortcut": shortcut,
        "shortcut_claims": [c for c in found if c["kind"] == "shortcut"
                            or c["id"].startswith("target:shortcut_test")],
        "shortcut_figures": figures(reports / "figures" / "shortcut",
                                    under="figures/shortcut"),
        "sweep": sweep_rows(reports / "sweeps" / "guide_sweep.csv"),
        "sweep_figure": figure(reports / "sweeps" / "guide_sweep.png",
                               file="sweeps/guide_sweep.png"),
    }


def fusion(reports: Path) -> dict[str, Any] | None:
    """The fusion stage: its numbers, its claims and its figure; None before it ran."""
    result = read_json(reports / "metrics" / "fusion.json")
    if not result:
        return None
    found = (read_json(reports / "metrics" / "claims.json") or {}).get("claims", [])
    return {"result": result, "claims": [c for c in found if c["kind"] == "fusion"],
            "figures": figures(reports / "figures" / "fusion", under="figures/fusion")}


def sweep_rows(path: Path) -> list[dict[str, Any]]:
    """The guided sweep's points (tools/guide_sweep.py collect), or [] before it ran."""
    if not path.is_file():
        return []
    import csv

    with path.open(newline="") as fh:
        return [{k: (float(v) if v not in ("", None) and k != "experiment" else v)
                 for k, v in r.items()} for r in csv.DictReader(fh)]


def notebooks(reports: Path) -> list[dict[str, Any]]:
    """Executed notebooks: a relative link to their HTML and papermill's run time."""
    folder = reports / "notebooks"
    stems = sorted({p.stem for p in folder.glob("*.ipynb")} | {p.stem for p in
                                                               folder.glob("*.html")})
    rows = []
    for stem in stems:
        ipynb, html = folder / f"{stem}.ipynb", folder / f"{stem}.html"
        papermill = (read_json(ipynb) or {}).get("metadata", {}).get("papermill", {})
        rows.append({"name": stem, "stage": stage_of(stem),
                     "href": f"notebooks/{html.name}" if html.is_file() else None,
                     "seconds": papermill.get("duration"), "ended": papermill.get("end_time")})
    return rows


def run_times(root: Path, executed: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per stage: papermill's for notebooks, reports/timings/*.json for wrapped ones."""
    rows = [{"stage": nb["stage"], "seconds": nb["seconds"], "source": "papermill metadata"}
            for nb in executed if nb["seconds"] is not None]
    for path in sorted((root / "reports" / "timings").glob("*.json")):
        timing = read_json(path) or {}
        rows.append({"stage": timing.get("stage", path.stem), "seconds": timing.get("seconds"),
                     "source": f"reports/timings/{path.name}"})
    timed = {r["stage"] for r in rows}
    lock = _yaml(root / "dvc.lock")
    untimed = [s for s in lock.get("stages", {}) if s not in timed and s != "report"]
    total = sum(r["seconds"] or 0 for r in rows)
    return {"rows": sorted(rows, key=lambda r: r["stage"]), "untimed": sorted(untimed),
            "total": total}


def _yaml(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
        return out.stdout.rstrip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def hardware() -> dict[str, Any]:
    """The machine building the report (the stages' machine, unless outputs were copied)."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "cpu": platform.processor() or platform.machine(), "memory_gb": None,
                            "gpu": "none found (nvidia-smi absent)"}
    cpuinfo, meminfo = Path("/proc/cpuinfo"), Path("/proc/meminfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        info["cpu"] = model.group(1).strip() if model else info["cpu"]
        flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        # oneDNN picks its kernels by these, so trained weights differ between CPUs that differ here
        info["isa"] = ", ".join(f for f in ISA_FLAGS if flags and f in flags.group(1).split())
    if meminfo.is_file():
        total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo.read_text(), re.M)
        info["memory_gb"] = round(int(total.group(1)) / 2**20, 1) if total else None
    if shutil.which("nvidia-smi"):
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        info["gpu"] = "; ".join(gpus.strip().splitlines()) or "nvidia-smi lists none"
    return info


def reproducibility(root: Path, params: dict[str, Any],
                    evaluate: dict[str, Any] | None) -> dict[str, Any]:
    """What a reader needs to rerun this exact study: code, data and model hashes, environment."""
    commit = _git(root, "rev-parse", "HEAD") or "not a git checkout"
    dirty = [line[3:] for line in _git(root, "status", "--porcelain", "--untracked-files=no")
             .splitlines() if line.strip()]
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        commit += f" (uncommitted changes: {shown})"
    hashes = [{"stage": "data.dvc", **out} for out in _yaml(root / "data.dvc").get("outs", [])]
    for stage, entry in sorted(_yaml(root / "dvc.lock").get("stages", {}).items()):
        hashes += [{"stage": stage, **out} for out in entry.get("outs", [])]
    rows = [{"stage": h["stage"], "path": h["path"], "md5": h.get("md5", ""),
             "size": h.get("size"), "nfiles": h.get("nfiles")} for h in hashes]
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "commit": commit,
        "data_models": [r for r in rows if r["path"].startswith(("data", "models"))],
        "other_outputs": [r for r in rows if not r["path"].startswith(("data", "models"))],
        "versions": versions,
        "python": platform.python_version(),
        "hardware": hardware(),
        "seeds": {"study (`seed`: validation split, samples, previews)": params.get("seed"),
                  "training (`train_seeds`: one model per seed)":
                      ", ".join(map(str, params.get("train_seeds", []))),
                  "phantom": params.get("phantom", {}).get("seed"),
                  "pretrain source-task phantom": params.get("pretrain", {}).get("seed"),
                  "bootstrap": (evaluate or {}).get("bootstrap", {}).get("seed")},
        "params_yaml": yaml.safe_dump(params, sort_keys=False),
    }


def claim_checklist(stages_run: set[str], phantom: bool,
                    path: Path = CLAIM_FILE) -> list[dict[str, Any]]:
    """The CLAIM items with their status here; items needing a stage not yet run are pending."""
    table = yaml.safe_load(path.read_text()) or {}
    labels = table.get("sections", {})
    rows = []
    for item in table.get("items", []):
        row = {**item, **(item.get("real", {}) if not phantom else {})}
        if row.get("status") not in CLAIM_STATUSES:
            raise ValueError(f"{path}: item {item.get('id')} has status {row.get('status')!r}; "
                             f"use one of {CLAIM_STATUSES}")
        where = item.get("where", [])
        unknown = [w for w in where if w not in labels]
        if unknown:
            raise ValueError(f"{path}: item {item.get('id')} names {unknown}, not under sections:")
        missing = [s for s in item.get("needs", []) if s not in stages_run]
        if missing:
            row["status"] = "pending"
            row["note"] = f"not yet run: dvc repro {' '.join(missing)}"
            where = list(dict.fromkeys(w.split("-")[0] for w in where))
        row["where"] = [{"anchor": w, "label": labels.get(w, w)} for w in where]
        rows.append(row)
    return rows


def context(root: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Everything the template shows, read from the pipeline's outputs."""
    reports = root / "reports"
    audit = read_json(reports / "metrics" / "data_audit.json")
    counts = (audit or {}).get("counts", {})
    kinds = counts.get("findings_by_kind", {})
    ev, ex = evaluation(reports), explanations(reports)
    source = data_source(root, params)
    executed = notebooks(reports)
    stages_run = {name for name, found in (("evaluate", ev), ("explain", ex)) if found}
    return {
        "title": "Brain-tumour classification on MRI: a reproducible, explainable study",
        "source": source,
        "audit": audit,
        "audit_counts": counts.get("usable", {}),
        "audit_splits": [s for s in SPLITS if s in counts.get("usable_total", {})],
        "audit_kinds": kinds,
        "audit_total": sum(kinds.values()),
        "eda": read_json(reports / "metrics" / "eda.json"),
        "eda_figures": eda_figures(reports / "figures" / "eda"),
        "augment_figures": figures(reports / "figures" / "augment", under="figures/augment"),
        "augment": params.get("augment", {}),
        "models": trained_models(reports, params),
        "pretrain": read_json(reports / "metrics" / "pretrain.json"),
        "train": params.get("train", {}),
        "evaluation": ev,
        "explanations": ex,
        "headline": headline(ev, ex),
        "configurations": configurations(ev, ex),
        "best": best_configuration(ev),
        "layout": {"body_px": BODY_FONT_PX, "figure_px": FIGURE_MAX_PX},
        "claims": claims(reports),
        "claim": claim_checklist(stages_run, source["phantom"]),
        "guidance": guidance(reports, executed),
        "fusion": fusion(reports),
        "notebooks": executed,
        "times": run_times(root, executed),
        "repro": reproducibility(root, params, ev),
    }


# ---- rendering -----------------------------------------------------------------------------
def breakable(name: Any) -> Markup:
    """A long identifier (`04b_train_guided_scratch_batchnorm`) that a narrow table cell may
    wrap after its underscores and @, never inside a word."""
    return Markup(str(escape(str(name))).replace("_", "_<wbr>").replace("@", "@<wbr>"))


def num(value: Any, digits: int = 3) -> str:
    """A metric as the report shows it everywhere: fixed decimals, an en dash when absent."""
    if value is None or isinstance(value, Undefined):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def interval(bounds: Any, digits: int = 3, around: str = "") -> str:
    """A [lo, hi] confidence interval as `lo–hi`, inside the two characters of `around` ("[]")
    when given, or an en dash. In a span that a table cell never wraps inside (a cell may wrap
    between a value and its interval, never at the en dash)."""
    if isinstance(bounds, Undefined) or not bounds or len(bounds) != 2:
        return "–"
    opening, closing = (around[0], around[1]) if len(around) == 2 else ("", "")
    return Markup('<span class="nb">{}{}–{}{}</span>').format(
        opening, num(bounds[0], digits), num(bounds[1], digits), closing)


def mean_sd(stat: Any, digits: int = 3) -> str:
    """'0.921 ± 0.012' from a seed summary (mean, sd), or the mean alone for one seed."""
    if not isinstance(stat, dict) or stat.get("mean") is None:
        return "–"
    sd = stat.get("sd")  # a narrow table cell may wrap after the ±, never before it
    return num(stat["mean"], digits) + (f"\u00a0± {num(sd, digits)}" if sd is not None else "")


def epoch(value: Any) -> str:
    """A 0-based epoch index as a reader counts epochs (from 1, as Keras prints them and the
    learning curves plot them), or an en dash."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return "–"
    return str(value + 1)


def pvalue(value: Any) -> str:
    if value is None or isinstance(value, Undefined):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True, undefined=ChainableUndefined)
    env.filters.update(num=num, interval=interval, pvalue=pvalue, mean_sd=mean_sd, epoch=epoch,
                       breakable=breakable)
    return env


def build(root: Path | None = None, params_path: Path | None = None,
          out: Path | None = None) -> Path:
    """Render reports/index.html from whatever the pipeline has produced so far."""
    root = root or repo_root()
    params = load_params(params_path or root / "params.yaml")
    html = environment().get_template("report.html.j2").render(**context(root, params))
    out = out or root / "reports" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    size = out.stat().st_size
    if size > MAX_HTML_BYTES:
        print(f"warning: {out} is {size / 2**20:.1f} MB, over the {MAX_HTML_BYTES / 2**20:.0f} MB "
              "budget; shrink the largest figures (dpi, number of panels)", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.report", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="render reports/index.html")
    b.add_argument("--params", type=Path, default=None)
    b.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "build":
        print(f"wrote {build(params_path=args.params, out=args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
