"""A small study the app can serve, built in seconds: the app's tests share it.

Two tiny scratch CNNs trained on a tiny phantom, declared as DVC artifacts in a dvc.yaml, with an
evaluate.json that gives them test scores and temperatures, and the repository's params.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from lib.tiny import tiny_dataset, tiny_models
from tests.conftest import REPO

VARIANTS = ("none", "batchnorm")
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
TEMPERATURES = {"none": 1.5, "batchnorm": 0.8}


def build_served_study(root: Path) -> Path:
    """root/{dvc.yaml, params.yaml, raw/, models/, reports/metrics/evaluate.json}; returns root."""
    dataset = tiny_dataset(per_class=6, image_size=64, seed=3, workdir=root)
    tiny_models(dataset, root / "models", variants=VARIANTS, image_size=32, epochs=1, seeds=(0,))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(raw_dir="raw", processed_dir="processed")  # where tiny_dataset wrote
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    artifacts = {f"scratch-{v}": {"path": f"models/scratch_{v}/seed0.keras", "type": "model",
                                  "desc": f"tiny scratch CNN ({v})", "labels": ["test", v]}
                 for v in VARIANTS}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {}, "artifacts": artifacts}))
    models = {f"scratch_{v}_s0": {"macro": {"f1": 0.5 + i / 10},
                                  "calibration": {"temperature": TEMPERATURES[v],
                                                  "before": {"ece": 0.2}, "after": {"ece": 0.1}}}
              for i, v in enumerate(VARIANTS)}
    evaluate = {"classes": CLASSES, "models": models, "best_model": "scratch_batchnorm_s0"}
    (root / "reports" / "metrics").mkdir(parents=True, exist_ok=True)
    (root / "reports" / "metrics" / "evaluate.json").write_text(json.dumps(evaluate, indent=2))
    return root


def shared_served_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One served study per test session, shared by the app's test files across xdist workers
    (built once under a file lock, then read-only: each test file writes in its own folders)."""
    base = tmp_path_factory.getbasetemp()
    if base.name.startswith("popen-gw"):  # an xdist worker: its parent is the session's folder
        base = base.parent
    root = base / "served-study"
    with FileLock(str(root) + ".lock"):
        if not (root / "reports" / "metrics" / "evaluate.json").is_file():
            root.mkdir(exist_ok=True)
            build_served_study(root)
    return root
