"""The committed dvc.lock describes the committed code and params (issue 12: no stale lock).

A stage whose recorded code md5 or params differ from the working tree would be rerun by a
collaborator who pulls the outputs, and nobody could tell which code made the committed
results. Data and outputs are not checked here (a fresh clone has neither): only what git holds.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

LOCK = yaml.safe_load((REPO / "dvc.lock").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
CODE_ROOTS = ("lib/", "notebooks/", "bench/", "tools/")


def _code_deps() -> list[tuple[str, str, str]]:
    """(stage, path, recorded md5) for every single-file code dependency in dvc.lock."""
    rows = []
    for stage, entry in LOCK["stages"].items():
        for dep in entry.get("deps", []):
            path = dep["path"]
            if path.startswith(CODE_ROOTS) and not dep["md5"].endswith(".dir"):
                rows.append((stage, path, dep["md5"]))
    return rows


def _same(a: Any, b: Any) -> bool:
    """Equal as YAML values: DVC writes 0.000001 as 1e-06, which PyYAML reads back as a string."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _lookup(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree[key]
    return tree


@pytest.mark.parametrize(("stage", "path", "md5"), _code_deps(),
                         ids=[f"{s}:{p}" for s, p, _ in _code_deps()])
def test_recorded_code_md5_is_the_committed_file(stage: str, path: str, md5: str) -> None:
    actual = hashlib.md5((REPO / path).read_bytes()).hexdigest()
    assert actual == md5, (f"dvc.lock is stale: stage {stage} records {path} as {md5}, the file "
                           f"is {actual}; run `dvc repro` (or `dvc commit {stage}` when only "
                           "comments changed) and commit dvc.lock")


def test_every_stage_of_dvc_yaml_is_locked() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    expected = set()
    for name, stage in stages.items():
        if "matrix" in stage:
            expected |= {f"{name}@{v}" for v in PARAMS["variants"]}
        else:
            expected.add(name)
    assert expected <= set(LOCK["stages"]), sorted(expected - set(LOCK["stages"]))


@pytest.mark.parametrize("stage", sorted(LOCK["stages"]))
def test_recorded_params_are_the_committed_params(stage: str) -> None:
    recorded = LOCK["stages"][stage].get("params", {}).get("params.yaml", {})
    for key, value in recorded.items():
        assert _same(_lookup(PARAMS, key), value), (
            f"dvc.lock is stale: stage {stage} ran with {key}={value!r}, params.yaml now says "
            f"{_lookup(PARAMS, key)!r}; run `dvc repro` and commit dvc.lock")


def test_the_checks_can_fail() -> None:
    """A changed byte changes the md5 the lock is compared with, and a changed param is seen."""
    assert _code_deps(), "no code dependency found in dvc.lock"
    _, path, md5 = _code_deps()[0]
    changed = (REPO / path).read_bytes() + b"\n# edited\n"
    assert hashlib.md5(changed).hexdigest() != md5
    assert _same({"min_lr": 1e-06}, {"min_lr": "1e-06"}) and not _same(0.001, "1e-06")
    assert not _same({"a": 1}, {"a": 1, "b": 2}) and not _same(True, 1.0)
