"""A real `dvc repro` of the whole pipeline on a tiny dataset, the way a researcher brings data.

In a temp copy of the repository: generate a tiny dataset into data/raw, `dvc add` it, push it to a
local DVC remote, commit, clone fresh, `dvc pull`, `dvc repro`. Then `dvc status` must be clean and
a second `dvc repro` must run nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run

pytestmark = pytest.mark.slow
TINY = {"n_train_per_class": 6, "n_test_per_class": 3, "image_size": 64}


def tree_digest(folder: Path) -> str:
    digest = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def copy_checkout(dest: Path) -> None:
    """Tracked and not-ignored files only: what a clone of the working tree would hold."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not rel.startswith("data/raw"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pipeline")
    origin, remote, clone = base / "origin", base / "remote", base / "clone"
    origin.mkdir()
    copy_checkout(origin)
    params = yaml.safe_load((origin / "params.yaml").read_text())
    params["phantom"].update(TINY)
    params["eda"]["samples_per_class"] = 2
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], origin)
    run(["python", "-m", "lib.phantom", "--params", "params.yaml", "--out", "data/raw"], origin)
    raw_digest = tree_digest(origin / "data" / "raw")
    run(["dvc", "add", "-q", "data/raw"], origin)
    run(["dvc", "remote", "add", "-d", "local", str(remote)], origin)
    run(["dvc", "push", "-q"], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-q", "-m", "tiny study"], origin)

    run(["git", "clone", "-q", str(origin), str(clone)], base)
    assert not (clone / "data" / "raw").exists()
    run(["dvc", "pull", "-q", "data.dvc"], clone)
    repro = run(["dvc", "repro"], clone)
    return {"clone": clone, "raw_digest": raw_digest, "repro": repro.stdout}


def test_pulled_data_equals_pushed_data(study: dict) -> None:
    assert tree_digest(study["clone"] / "data" / "raw") == study["raw_digest"]


def test_repro_runs_every_stage_and_writes_outputs(study: dict) -> None:
    clone = study["clone"]
    for stage in ("prepare", "eda", "report"):
        assert f"Running stage '{stage}'" in study["repro"]
    manifest = (clone / "data" / "processed" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 4 * (TINY["n_train_per_class"] + TINY["n_test_per_class"])
    eda = json.loads((clone / "reports" / "metrics" / "eda.json").read_text())
    assert eda["n_classes"] == 4
    assert eda["n_images"] == 4 * (TINY["n_train_per_class"] + TINY["n_test_per_class"])
    figures = sorted(p.name for p in (clone / "reports" / "figures" / "eda").glob("*.png"))
    assert {"eda_counts.png", "eda_samples.png", "eda_mean_images.png"} <= set(figures)
    html = (clone / "reports" / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= len(figures)
    assert (clone / "reports" / "notebooks" / "01_eda.html").is_file()


def test_metrics_are_visible_to_dvc(study: dict) -> None:
    out = run(["dvc", "metrics", "show", "--json"], study["clone"]).stdout
    assert "eda.json" in out and "n_images" in out


def test_status_is_clean_and_second_repro_runs_nothing(study: dict) -> None:
    clone = study["clone"]
    status = run(["dvc", "status"], clone).stdout
    assert "up to date" in status, status
    again = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in again, again
    assert "didn't change" in again or "up to date" in again
