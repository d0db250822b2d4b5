"""Each papermill `-p NAME` (or `-y "NAME: …"`) in dvc.yaml names a declared notebook parameter.

Papermill only warns about an unknown parameter and runs the notebook on its default, so a typo
in dvc.yaml would silently run a stage on tiny notebook defaults (issue 12).
"""

from __future__ import annotations

import ast
import json
import re
import shlex

import pytest
import yaml

from tests.conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def notebook_parameters(path: str) -> set[str]:
    """Names assigned in the notebook's cell tagged `parameters`."""
    cells = json.loads((REPO / path).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path} needs exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(tagged[0]["source"]))
    return {t.id for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def papermill_calls(cmd: str) -> list[tuple[str, list[str]]]:
    """(notebook, parameter names) of each papermill call in a stage command."""
    calls = []
    for part in re.split(r"&&", cmd):
        words = shlex.split(part)
        if not words or words[0] != "papermill":
            continue
        names = []
        for flag, value in zip(words, words[1:], strict=False):
            if flag == "-p":
                names.append(value)
            elif flag == "-y":
                names.extend(yaml.safe_load(value.replace("${", "x").replace("}", "")) or {})
        calls.append((words[1], names))
    return calls


CALLS = [(stage, nb, names) for stage, spec in STAGES.items()
         for nb, names in papermill_calls(spec["cmd"])]


def test_every_notebook_stage_is_found() -> None:
    assert {nb for _, nb, _ in CALLS} >= {f"notebooks/{n}.ipynb" for n in (
        "01_eda", "02_augmentation", "03_train_scratch", "04_train_transfer", "05_evaluate",
        "06_explain")}


@pytest.mark.parametrize(("stage", "notebook", "names"), CALLS, ids=[c[0] for c in CALLS])
def test_dvc_passes_only_declared_parameters(stage: str, notebook: str, names: list[str]) -> None:
    unknown = sorted(set(names) - notebook_parameters(notebook))
    assert not unknown, (f"stage {stage} passes {unknown} to {notebook}, which does not declare "
                         "them in its parameters cell (papermill would only warn)")


def test_the_check_sees_an_undeclared_name() -> None:
    _, names = papermill_calls("papermill nb.ipynb out.ipynb -p epochs 3 -y \"train_bn: x\"")[0]
    assert names == ["epochs", "train_bn"]
    assert "no_such_param" not in notebook_parameters("notebooks/03_train_scratch.ipynb")
