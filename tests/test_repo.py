"""The repository's own promises: pinned environment, stripped notebooks, CI entry point."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)$")


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: not pinned with ==: {line!r}"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_lock_pins_every_package_and_has_the_core_stack() -> None:
    pins = lock_pins(REPO / "requirements.txt")
    assert len(pins) > 100  # transitive packages too, not only the top level
    for name in ("tensorflow-cpu", "keras", "tf-keras-vis", "dvc", "papermill", "nbval", "nilearn"):
        assert name in pins, f"{name} missing from requirements.txt"
    assert pins["tensorflow-cpu"] == "2.21.0" and pins["tf-keras-vis"] == "0.8.7"


def test_every_top_level_requirement_is_in_the_lock() -> None:
    pins = lock_pins(REPO / "requirements.txt")
    for raw in (REPO / "requirements.in").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[=<>\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")
            assert name in pins, f"requirements.in names {name}, the lock does not"


def test_environment_yml_names_the_same_pins_as_the_lock() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    conda_pins = {}
    for line in pip_section:
        name, version = line.split("==")
        conda_pins[name.lower().replace("_", "-")] = version
    assert conda_pins == lock_pins(REPO / "requirements.txt")


def test_notebooks_are_committed_without_outputs_and_with_parameters() -> None:
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    for path in notebooks:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") for c in code), f"{path.name} has outputs committed"
        assert all(c.get("execution_count") is None for c in code), f"{path.name} has counts"
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
        assert nb["metadata"]["kernelspec"]["name"] == "brain-mri-study"


def test_notebooks_on_disk_are_what_git_stores() -> None:
    """The nbstripout filter rewrites a notebook when it is committed (outputs, cell ids, key
    order), so a notebook saved by an editor can differ on disk from its committed blob while
    `git status` says clean. dvc.lock then records the on-disk file, and every clean checkout
    (CI included) sees a stale lock. Checked here, before a commit lands."""
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))

    def stripped(paths: list[Path]) -> str:  # the filter itself, one process for all of them
        return subprocess.run([sys.executable, "-m", "nbstripout", "--textconv",
                               *map(str, paths)], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout

    if stripped(notebooks) != "".join(p.read_text() for p in notebooks):
        differ = [p.name for p in notebooks if stripped([p]) != p.read_text()]
        raise AssertionError(f"{differ} on disk are not in the form the nbstripout filter "
                             "commits; run `python -m nbstripout notebooks/<name>`, then "
                             "`dvc repro`")


def test_ci_runs_make_test_and_make_installs_before_testing() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: setup\b", makefile, re.M)
    assert re.search(r"^repro: data\b", makefile, re.M)
    assert "pip install" in makefile and "-r requirements.txt" in makefile


def test_dvc_stages_declare_the_params_they_template() -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        # the matrix: makes the stages; a value it expands is not an input of any one of them
        body = {k: v for k, v in stage.items() if k != "matrix"}
        used = set(re.findall(r"\$\{([\w.]+)\}", json.dumps(body)))
        used = {u for u in used if not u.startswith("item.")}  # matrix values, not params
        declared = {p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])}
        missing = {u for u in used if not any(u == d or u.startswith(d + ".") for d in declared)}
        assert not missing, f"stage {name} templates {missing} without declaring them in params:"


def test_ruff_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", str(REPO)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_repository_tracks_no_environment_data_or_large_files() -> None:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split("\0")
    tracked = [t for t in tracked if t]
    assert not [t for t in tracked if t.startswith((".venv/", "data/raw/", ".dvc/cache/"))]
    large = [t for t in tracked if (REPO / t).is_file() and (REPO / t).stat().st_size > 2**21]
    assert not large, f"files over 2 MiB belong in DVC, not git: {large}"
