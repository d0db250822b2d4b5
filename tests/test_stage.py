"""DVC reruns exactly what a change affects: each stage lists the params and lib modules it reads.

- params: every leaf of params.yaml is changed in turn; a stage's inputs (what its notebook or
  module is given) must change exactly for the keys the stage lists under `params:`;
- deps: a stage's lib modules are its entry point's imports, closed over `lib/` (imports inside
  functions count: they run too); `deps:` must list exactly those;
- every name a stage gives its notebook is declared in the notebook's `parameters` cell
  (papermill only warns about an unknown one and runs on the tiny default).
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from lib import stage
from lib.config import load_params
from tests.conftest import REPO

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS = load_params(REPO / "params.yaml")


# ---- params ----------------------------------------------------------------------------------
def leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of params.yaml's values (a list is one value)."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{path}.")
        else:
            yield path


def changed(value: Any) -> Any:
    """A different value of the same kind (an invalid one is fine: reading it then fails)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, value[-1]] if value else [1]
    return "changed"


def with_change(params: dict[str, Any], dotted: str) -> dict[str, Any]:
    out = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = out
    for part in parents:
        node = node[part]
    node[last] = changed(node[last])
    return out


def prepare_inputs(params: dict[str, Any]) -> Any:
    """What `python -m lib.data` reads (its main(): the data: group and PrepareConfig)."""
    from lib.data import PrepareConfig

    return params["data"], PrepareConfig.from_params(params)


def pretrain_inputs(params: dict[str, Any]) -> Any:
    """What `python -m lib.pretrain` reads (lib.pretrain.pretrain's configs)."""
    from lib import pretrain

    cfg = pretrain.PretrainConfig.from_params(params)
    return (cfg, pretrain.pretrain_train_config(params, cfg), params["seed"],
            pretrain.sequence_phantom(params, cfg))


def report_inputs(params: dict[str, Any]) -> Any:
    return params  # the report prints every parameter


MODULE_STAGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "prepare": prepare_inputs, "pretrain": pretrain_inputs, "report": report_inputs}


def stage_inputs(name: str, params: dict[str, Any]) -> Any:
    if name in MODULE_STAGES:
        return MODULE_STAGES[name](params)
    item = PARAMS["variants"][0] if stage.STAGES[name].item else None
    return stage.notebook_parameters(params, name, item)


def read_keys(name: str) -> set[str]:
    """The params.yaml leaves whose change changes the stage's inputs (or makes them invalid)."""
    base = repr(stage_inputs(name, PARAMS))
    read = set()
    for dotted in leaves(PARAMS):
        try:
            now = repr(stage_inputs(name, with_change(PARAMS, dotted)))
        except (KeyError, ValueError, TypeError):
            now = "refused"
        if now != base:
            read.add(dotted)
    return read


def declared_keys(name: str) -> set[str]:
    keys: set[str] = set()
    for entry in DVC[name].get("params", []):
        if isinstance(entry, dict):  # {params.yaml: null}: every key of the file
            return set(leaves(PARAMS))
        keys |= {k for k in leaves(PARAMS) if k == entry or k.startswith(f"{entry}.")}
    return keys


@pytest.mark.parametrize("name", sorted(DVC))
def test_a_stage_lists_exactly_the_params_it_reads(name: str) -> None:
    read, declared = read_keys(name), declared_keys(name)
    assert not read - declared, (f"stage {name} reads {sorted(read - declared)} but dvc.yaml does "
                                 "not list them: changing them would not rerun it")
    assert not declared - read, (f"stage {name} lists {sorted(declared - read)} but never reads "
                                 "them: changing them would rerun it for nothing")


def test_every_stage_is_covered() -> None:
    assert set(DVC) == set(MODULE_STAGES) | set(stage.STAGES)


def test_the_params_check_sees_an_unlisted_key() -> None:
    assert "train_scratch.epochs" in read_keys("train_scratch")
    assert "train_scratch.epochs" not in read_keys("train_transfer")
    assert "train_scratch.image_size" not in read_keys("train_transfer")
    assert "augmentation.preview_n" not in read_keys("train_scratch")


def test_two_sources_of_one_name_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(stage.STAGES, "eda", stage.NotebookStage("01_eda.ipynb",
                                                                 groups=("eda",), keys=("seed",
                                                                 "eda.samples_per_class")))
    with pytest.raises(ValueError, match="samples_per_class.*both"):
        stage.notebook_parameters(PARAMS, "eda")


def test_a_matrix_stage_needs_its_item_and_an_unknown_stage_is_named() -> None:
    with pytest.raises(ValueError, match="--item <variant>"):
        stage.notebook_parameters(PARAMS, "train_scratch")
    with pytest.raises(KeyError, match="unknown notebook stage 'nope'"):
        stage.notebook_parameters(PARAMS, "nope")


# ---- notebook parameters -----------------------------------------------------------------------
def declared_parameters(notebook: str) -> set[str]:
    """Names assigned in the notebook's cell tagged `parameters`."""
    cells = json.loads((REPO / "notebooks" / notebook).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{notebook} needs exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(tagged[0]["source"]))
    return {t.id for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def command_paths(cmd: str) -> tuple[str | None, list[str]]:
    """(stage, -p names) of a `python -m lib.stage notebook` command."""
    words = shlex.split(cmd)
    if words[:4] != ["python", "-m", "lib.stage", "notebook"]:
        return None, []
    return words[4], [v for flag, v in zip(words, words[1:], strict=False) if flag == "-p"]


@pytest.mark.parametrize("name", sorted(stage.STAGES))
def test_a_notebook_declares_every_parameter_its_stage_gives(name: str) -> None:
    spec = stage.STAGES[name]
    given = set(stage.notebook_parameters(PARAMS, name, "x" if spec.item else None))
    cmd_stage, paths = command_paths(DVC[name]["cmd"])
    assert cmd_stage == name, f"dvc.yaml stage {name} does not run `lib.stage notebook {name}`"
    unknown = sorted((given | set(paths)) - declared_parameters(spec.notebook))
    assert not unknown, (f"stage {name} gives {spec.notebook} {unknown}, which its parameters "
                         "cell does not declare (papermill would only warn)")


def test_the_parameter_check_sees_an_undeclared_name() -> None:
    assert command_paths("python -m lib.stage notebook eda -p a b -p c 'd e'") == ("eda",
                                                                                   ["a", "c"])
    assert "no_such_param" not in declared_parameters("03_train_scratch.ipynb")


def test_outputs_listed_in_dvc_yaml_are_the_runner_s() -> None:
    for name, spec in stage.STAGES.items():
        outs = {next(iter(o)) if isinstance(o, dict) else o for o in DVC[name]["outs"]}
        item = "${item.variant}" if spec.item else None
        assert spec.output(item) in outs, f"{name}: dvc.yaml does not list {spec.output(item)}"


# ---- lib dependencies --------------------------------------------------------------------------
def lib_imports(source: str) -> set[str]:
    """lib modules a source file imports (anywhere in it, relative imports resolved in lib/)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lib"}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            base = ("lib" + (f".{module}" if module else "")) if node.level else module
            if base == "lib":
                found |= {f"lib.{a.name}" for a in node.names}
            elif base.split(".")[0] == "lib":
                found.add(base)
    return {m for m in found if (REPO / f"{m.replace('.', '/')}.py").is_file()}


def closure(modules: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += lib_imports((REPO / f"{module.replace('.', '/')}.py").read_text())
    return seen


def notebook_source(notebook: str) -> str:
    cells = json.loads((REPO / "notebooks" / notebook).read_text())["cells"]
    return "\n".join(re.sub(r"(?m)^\s*[%!].*$", "", "".join(c["source"]))
                     for c in cells if c["cell_type"] == "code")


def entry_modules(cmd: str) -> set[str]:
    """`python -m lib.x` modules of a command, and the notebook's imports for lib.stage notebook."""
    modules = set(re.findall(r"python -m (lib\.\w+)", cmd))
    name, _ = command_paths(cmd)
    if name:
        modules |= lib_imports(notebook_source(stage.STAGES[name].notebook))
    return modules


def needed_deps(name: str) -> set[str]:
    return {f"{m.replace('.', '/')}.py" for m in closure(entry_modules(DVC[name]["cmd"]))
            if m != "lib"}


@pytest.mark.parametrize("name", sorted(DVC))
def test_a_stage_depends_on_exactly_the_lib_modules_it_runs(name: str) -> None:
    listed = {d for d in DVC[name].get("deps", []) if d.startswith("lib/") and d.endswith(".py")}
    need = needed_deps(name)
    assert not need - listed, (f"stage {name} runs {sorted(need - listed)} but dvc.yaml does not "
                               "list them under deps: a change there would leave it stale")
    assert not listed - need, f"stage {name} lists {sorted(listed - need)}, which it never imports"


def test_the_import_closure_follows_relative_and_function_level_imports() -> None:
    source = "def f():\n    from .data import load_manifest\nfrom lib import plots\n"
    assert lib_imports(source) == {"lib.data", "lib.plots"}
    assert "lib.config" in closure({"lib.data"})


# ---- running ----------------------------------------------------------------------------------
def test_kernel_noise_is_dropped_and_everything_else_kept() -> None:
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
             "STDERR\nE0000 00:00:1.2 2125 node_def_util.cc:682] NodeDef mentions attribute "
             "use_unbounded_threadpool which is not in the op definition\n")
    script = ("import sys\nfrom lib.stage import filtered_stderr\nwith filtered_stderr():\n"
              f"    sys.stderr.write({noise!r} + 'a real error\\n')\n")
    err = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, check=True).stderr
    assert err == "a real error\n"


def test_timed_records_a_successful_command_only(tmp_path: Any) -> None:
    record = tmp_path / "t.json"
    assert stage.main(["timed", "s", str(record), "--", sys.executable, "-c", "1"]) == 0
    assert json.loads(record.read_text())["stage"] == "s"
    assert stage.main(["timed", "s", str(tmp_path / "u.json"), "--", sys.executable, "-c",
                       "raise SystemExit(3)"]) == 3
    assert not (tmp_path / "u.json").exists()
