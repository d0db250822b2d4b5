"""The committed dvc.lock describes the committed code and params (no stale lock).

A stage whose recorded code md5 or params differ from the working tree would be rerun by a
collaborator who pulls the outputs, and nobody could tell which code made the committed
results. Data and outputs are not checked here (a fresh clone has neither): only what git holds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

LOCK = yaml.safe_load((REPO / "dvc.lock").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
CODE_ROOTS = ("lib/", "notebooks/", "bench/", "tools/")


def _code_deps(lock: dict[str, Any] = LOCK) -> list[tuple[str, str, str]]:
    """(stage, path, recorded md5) for every single-file code dependency in a lock."""
    rows = []
    for stage, entry in lock["stages"].items():
        for dep in entry.get("deps", []):
            path = dep["path"]
            if path.startswith(CODE_ROOTS) and not dep["md5"].endswith(".dir"):
                rows.append((stage, path, dep["md5"]))
    return rows


def _stale_code(lock: dict[str, Any], root: Path) -> list[str]:
    """Why the lock is stale for root's code files: one line per file missing or changed."""
    stale = []
    for stage, path, md5 in _code_deps(lock):
        if not (root / path).is_file():
            stale.append(f"stage {stage} records {path}, which does not exist")
            continue
        actual = hashlib.md5((root / path).read_bytes()).hexdigest()
        if actual != md5:
            stale.append(f"stage {stage} records {path} as {md5}, the file is {actual}")
    return stale


def _stale_params(lock: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Why the lock is stale for these params: one line per recorded value params now differ in."""
    stale = []
    for stage, entry in lock["stages"].items():
        for key, value in entry.get("params", {}).get("params.yaml", {}).items():
            try:
                now = _lookup(params, key)
            except (KeyError, TypeError):
                stale.append(f"stage {stage} ran with {key}={value!r}, params.yaml has no {key}")
                continue
            if not _same(now, value):
                stale.append(f"stage {stage} ran with {key}={value!r}, params.yaml now says "
                              f"{now!r}")
    return stale


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


def _one_stage(stage: str) -> dict[str, Any]:
    return {"stages": {stage: LOCK["stages"][stage]}}


@pytest.mark.parametrize(("stage", "path", "md5"), _code_deps(),
                         ids=[f"{s}:{p}" for s, p, _ in _code_deps()])
def test_recorded_code_md5_is_the_committed_file(stage: str, path: str, md5: str) -> None:
    stale = _stale_code({"stages": {stage: {"deps": [{"path": path, "md5": md5}]}}}, REPO)
    assert stale == [], (f"dvc.lock is stale: {stale[0]}; run `dvc repro` (or `dvc commit "
                         f"{stage}` when only comments changed) and commit dvc.lock")


def test_every_stage_of_dvc_yaml_is_locked() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    expected = set()
    for name, stage in stages.items():
        if "matrix" in stage:  # one matrix key, whose values are a params.yaml list
            (key, values), = stage["matrix"].items()
            items = PARAMS
            for part in values.strip("${}").split("."):
                items = items[part]
            expected |= {f"{name}@{v}" for v in items}
        else:
            expected.add(name)
    assert expected <= set(LOCK["stages"]), sorted(expected - set(LOCK["stages"]))


@pytest.mark.parametrize("stage", sorted(LOCK["stages"]))
def test_recorded_params_are_the_committed_params(stage: str) -> None:
    stale = _stale_params(_one_stage(stage), PARAMS)
    assert stale == [], f"dvc.lock is stale: {stale}; run `dvc repro` and commit dvc.lock"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The same checks, run on a lock whose files and params are copied into tmp_path: an
    unchanged copy passes, a copy with one changed byte and a changed param are reported."""
    # a dependency that exists (a stale lock may name files since moved or removed)
    stage, path, _ = next((s, p, m) for s, p, m in _code_deps() if (REPO / p).is_file())
    original = (REPO / path).read_bytes()
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_bytes(original)
    lock = {"stages": {stage: {
        "deps": [{"path": path, "md5": hashlib.md5(original).hexdigest()},
                 {"path": "data/raw", "md5": "0" * 32 + ".dir"}],  # data: not checked here
        "params": {"params.yaml": {"train.batch_size": 32, "optimizer.min_lr": "1e-06"}}}}}
    assert _code_deps(lock) == [(stage, path, hashlib.md5(original).hexdigest())]
    assert _stale_code(lock, tmp_path) == []
    (tmp_path / path).write_bytes(original.replace(b"\n", b"\n ", 1))  # one byte more
    [line] = _stale_code(lock, tmp_path)
    assert line.startswith(f"stage {stage} records {path} as ")
    (tmp_path / path).unlink()
    assert _stale_code(lock, tmp_path) == [f"stage {stage} records {path}, which does not exist"]

    params = {"train": {"batch_size": 32}, "optimizer": {"min_lr": 1e-06}}
    assert _stale_params(lock, params) == []
    params["train"]["batch_size"] = 64
    assert _stale_params(lock, params) == [
        f"stage {stage} ran with train.batch_size=32, params.yaml now says 64"]
    del params["optimizer"]
    assert _stale_params(lock, params)[1].endswith("params.yaml has no optimizer.min_lr")
    assert _same({"min_lr": 1e-06}, {"min_lr": "1e-06"}) and not _same(0.001, "1e-06")
    assert not _same({"a": 1}, {"a": 1, "b": 2}) and not _same(True, 1.0)
