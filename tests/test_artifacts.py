"""dvc.yaml's model artifacts are exactly the classifiers the stages write: the app serves them.

The app's registry (lib.serve.registry) lists the `artifacts:` of dvc.yaml and `dvc artifacts get`
reads the same list, so a variant added to params.yaml without an artifact (or an artifact whose
stage is gone) would make the app and the study disagree about which models exist.
"""

from __future__ import annotations

import pytest
import yaml

from lib.config import load_params
from lib.data.manifest import DataError
from lib.serve import registry
from tests.conftest import REPO

PARAMS = load_params(REPO / "params.yaml")
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())


def trained_by_stages() -> set[str]:
    """The model standing for each configuration the default profile trains: its lowest seed
    (lib.evaluate.metrics.BEST_MODEL_RULE), the one the app serves."""
    seed = min(PARAMS["train_seeds"])
    scratch = {f"models/scratch_{v}/seed{seed}.keras" for v in PARAMS["variants"]}
    guided = {f"models/guided_{m}/seed{seed}.keras" for m in PARAMS["guide"]["models"]}
    return scratch | guided | {f"models/transfer/seed{seed}.keras"}


def stage_outs() -> set[str]:
    """Every output path of dvc.yaml's stages, as DVC resolves them (matrix items expanded)."""
    from dvc.repo import Repo

    return {out.def_path for out in Repo(str(REPO)).index.outs}


def test_artifacts_are_the_trained_classifiers() -> None:
    declared = registry.declared_artifacts(REPO)
    assert {a["path"] for a in declared.values()} == trained_by_stages()
    outs = stage_outs()
    for name, artifact in declared.items():
        folder = artifact["path"].rsplit("/", 1)[0]
        assert folder in outs, f"{name}: {folder} is no stage's output"
        assert artifact["desc"] and artifact["labels"], name


def test_dvc_reads_the_same_artifacts() -> None:
    from dvc.repo import Repo

    read = Repo(str(REPO)).artifacts.read()["dvc.yaml"]
    assert {n: a.path for n, a in read.items()} == \
        {n: a["path"] for n, a in registry.declared_artifacts(REPO).items()}


def test_model_key_matches_the_metrics_files() -> None:
    assert registry.model_key("models/scratch_dropout/seed43.keras") == "scratch_dropout_s43"
    with pytest.raises(DataError, match="not models/<name>/seed<N>.keras"):
        registry.model_key("models/transfer/best.keras")


def test_the_check_sees_a_missing_variant() -> None:
    """Adding a variant to params.yaml without an artifact must fail the first test."""
    declared = {a["path"] for a in registry.declared_artifacts(REPO).values()}
    PARAMS["variants"] = [*PARAMS["variants"], "wider"]
    try:
        assert declared != trained_by_stages()
    finally:
        PARAMS["variants"] = PARAMS["variants"][:-1]
