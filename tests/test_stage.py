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
    """What `python -m lib.data.prepare` reads (its main(): the data: group and PrepareConfig)."""
    from lib.data.prepare import PrepareConfig

    return params["data"], PrepareConfig.from_params(params["prepare"], params["seed"])


def pretext_inputs(params: dict[str, Any]) -> Any:
    """What `python -m lib.data.phantom_sets pretext` reads (write_pretext and where it writes)."""
    from lib.data.phantom_sets import sequence_phantom

    pre = params["pretrain"]
    return (params["data"]["processed_dir"], sequence_phantom(params), pre["n_per_sequence"],
            pre["seed"])


def twins_inputs(params: dict[str, Any]) -> Any:
    """What `python -m lib.data.phantom_sets twins` reads (the data: and phantom: groups)."""
    from lib.data.phantom import PhantomConfig

    return params["data"], PhantomConfig.from_params(params["phantom"])


def pretrain_inputs(params: dict[str, Any]) -> Any:
    """What `python -m lib.train.pretrain` reads (lib.train.pretrain.pretrain's configs)."""
    from lib.train import pretrain

    cfg = pretrain.PretrainConfig.from_params(params["pretrain"],
                                              params["train_transfer"]["backbone"])
    return (cfg, pretrain.pretrain_train_config(params["train"], cfg), params["seed"],
            params["data"]["processed_dir"])


def shortcut_inputs(params: dict[str, Any]) -> Any:
    """What `python -m lib.explain.shortcut` reads (its Setup from params.yaml)."""
    from lib.explain.shortcut import Setup

    return Setup.from_params(params)


def fusion_inputs(params: dict[str, Any]) -> Any:
    """What `python -m lib.evaluate.fusion` reads (its Setup from params.yaml)."""
    from lib.evaluate.fusion import Setup

    return Setup.from_params(params, REPO)


def report_inputs(params: dict[str, Any]) -> Any:
    return params  # the report prints every parameter


def claims_inputs(params: dict[str, Any]) -> Any:
    return None  # `python -m lib.claims build` reads the metrics files, no parameter


MODULE_STAGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "prepare": prepare_inputs, "pretext": pretext_inputs, "twins": twins_inputs,
    "pretrain": pretrain_inputs, "report": report_inputs, "claims": claims_inputs,
    "shortcut": shortcut_inputs, "fusion": fusion_inputs}


def stage_inputs(name: str, params: dict[str, Any]) -> Any:
    if name in MODULE_STAGES:
        return MODULE_STAGES[name](params)
    item = ({"variant": PARAMS["variants"][0], "model": PARAMS["guide"]["models"][0]}
            [stage.STAGES[name].item] if stage.STAGES[name].item else None)
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
    assert "train_scratch.input_size" not in read_keys("train_transfer")
    assert "augment_preview.preview_n" not in read_keys("train_scratch")


def test_two_sources_of_one_name_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(stage.STAGES, "eda", stage.NotebookStage("01_eda.ipynb",
                                                                 groups=("eda",),
                                                                 keys=("seed", "eda")))
    with pytest.raises(ValueError, match="'eda' comes from both"):
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
        item = f"${{item.{spec.item}}}" if spec.item else None
        assert spec.output(item) in outs, f"{name}: dvc.yaml does not list {spec.output(item)}"


# ---- lib dependencies --------------------------------------------------------------------------
def module_file(module: str) -> str | None:
    """lib/<a>/<b>.py or lib/<a>/<b>/__init__.py of a dotted module, or None when neither exists."""
    path = module.replace(".", "/")
    for candidate in (f"{path}.py", f"{path}/__init__.py"):
        if (REPO / candidate).is_file():
            return candidate
    return None


def lib_imports(source: str, here: str = "lib.x") -> set[str]:
    """lib modules a source imports (anywhere in it; relative imports resolved from `here`).

    `from pkg import name` counts name as a module when it is one, else pkg; every package on
    the way is imported too (its __init__ runs), so it is part of the closure.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lib"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")[:-node.level]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "lib":
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if module_file(f"{base}.{alias.name}") else base)
    packages = {".".join(m.split(".")[:i]) for m in found for i in range(2, m.count(".") + 1)}
    return {m for m in found | packages if module_file(m)}


def closure(modules: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            path = module_file(module)
            here = f"{module}.__init__" if path and path.endswith("__init__.py") else module
            todo += lib_imports((REPO / path).read_text(), here) if path else []
    return seen


def standalone_branch(node: ast.AST) -> bool:
    """`if raw_dir is None:`: a notebook's run-on-its-own branch, which a stage never takes."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "raw_dir"
            and isinstance(node.test.ops[0], ast.Is))


def notebook_source(notebook: str) -> str:
    """The notebook's code as a stage runs it: magics and its standalone branches removed."""
    cells = json.loads((REPO / "notebooks" / notebook).read_text())["cells"]
    code = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse(re.sub(r"(?m)^\s*[%!].*$", "", "".join(cell["source"])))
        tree.body = [n for n in tree.body if not standalone_branch(n)]
        code.append(ast.unparse(tree))
    return "\n".join(code)


def entry_modules(cmd: str) -> set[str]:
    """`python -m lib.x.y` modules of a command (a package's __main__), and the notebook's imports
    for lib.stage notebook."""
    modules = set()
    for name in re.findall(r"python -m (lib[\w.]*\w)", cmd):
        modules.add(name if module_file(name) and not module_file(name).endswith("__init__.py")
                    else f"{name}.__main__")
        modules |= {".".join(name.split(".")[:i]) for i in range(2, name.count(".") + 1)}
    stage_name, _ = command_paths(cmd)
    if stage_name:
        modules |= lib_imports(notebook_source(stage.STAGES[stage_name].notebook), "notebooks.x")
    return modules


def needed_deps(name: str) -> set[str]:
    return {module_file(m) for m in closure(entry_modules(DVC[name]["cmd"]))
            if m != "lib" and module_file(m)}


@pytest.mark.parametrize("name", sorted(DVC))
def test_a_stage_depends_on_exactly_the_lib_modules_it_runs(name: str) -> None:
    listed = {d for d in DVC[name].get("deps", []) if d.startswith("lib/") and d.endswith(".py")}
    need = needed_deps(name)
    assert not need - listed, (f"stage {name} runs {sorted(need - listed)} but dvc.yaml does not "
                               "list them under deps: a change there would leave it stale")
    assert not listed - need, f"stage {name} lists {sorted(listed - need)}, which it never imports"


def test_the_import_closure_follows_relative_and_function_level_imports() -> None:
    source = "def f():\n    from .manifest import load_manifest\nfrom lib import figures\n"
    assert lib_imports(source, "lib.data.images") == {"lib.data.manifest", "lib.figures",
                                                     "lib.data"}
    assert "lib.config" in closure({"lib.data.prepare"})
    assert "lib/data/__init__.py" in needed_deps("prepare")


STAGES_THAT_MUST_NOT_READ_THE_PREPARE_SIDE = ("train_scratch", "pretrain", "train_transfer",
                                              "evaluate", "explain")


@pytest.mark.parametrize("name", STAGES_THAT_MUST_NOT_READ_THE_PREPARE_SIDE)
def test_models_evaluation_and_explanation_do_not_depend_on_the_prepare_side(name: str) -> None:
    """A change to the audit, the confounder checks or the generator retrains nothing."""
    prepare_side = {"lib/data/audit.py", "lib/data/confounders.py", "lib/data/phantom.py",
                    "lib/data/prepare.py", "lib/data/phantom_sets.py", "lib/tiny.py"}
    assert not needed_deps(name) & prepare_side


def test_the_standalone_branch_is_only_dropped_when_a_stage_always_passes_raw_dir() -> None:
    """Dropping `if raw_dir is None:` is sound because lib.stage gives every notebook raw_dir."""
    for name in stage.STAGES:
        assert "raw_dir" in stage.notebook_parameters(PARAMS, name, "x"), name
    source = "if raw_dir is None:\n    from lib.tiny import tiny_dataset\n"
    assert not standalone_branch(ast.parse(source).body[0].body[0])
    assert standalone_branch(ast.parse(source).body[0])


def test_the_import_graph_is_acyclic() -> None:
    modules = {str(p.relative_to(REPO))[:-3].replace("/", ".").removesuffix(".__init__")
               for p in (REPO / "lib").rglob("*.py")}
    graph = {m: lib_imports((REPO / module_file(m)).read_text(),
                            f"{m}.__init__" if module_file(m).endswith("__init__.py") else m)
             for m in modules if module_file(m)}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' -> '.join((*path, m))}"
        if m in done:
            return
        for n in graph.get(m, ()):
            if n != m and not m.startswith(f"{n}."):  # a package's own __init__ is not a cycle
                visit(n, (*path, m))
        done.add(m)

    for m in sorted(graph):
        visit(m, ())


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


def test_tidy_outputs_keeps_a_progress_bar_s_last_state_and_drops_the_banner(tmp_path: Any
                                                                              ) -> None:
    import nbformat

    from lib.stage import tidy_outputs

    cell = nbformat.v4.new_code_cell("run()")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="WARNING: All log messages before "
                               "absl::InitializeLog() is called are written to STDERR\n"),
        nbformat.v4.new_output("stream", name="stderr", text="work:  50%|#    | 1/2\r"),
        nbformat.v4.new_output("stream", name="stderr", text="work: 100%|#####| 2/2\n"),
        nbformat.v4.new_output("stream", name="stdout", text="epoch 1 loss 0.5\n"),
        nbformat.v4.new_output("display_data", data={"text/plain": "<Figure>"}),
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    tidy_outputs(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [o.get("text") for o in outputs] == ["work: 100%|#####| 2/2\n", "epoch 1 loss 0.5\n",
                                                None]


def test_timed_records_a_successful_command_only(tmp_path: Any) -> None:
    record = tmp_path / "t.json"
    assert stage.main(["timed", "s", str(record), "--", sys.executable, "-c", "1"]) == 0
    assert json.loads(record.read_text())["stage"] == "s"
    assert stage.main(["timed", "s", str(tmp_path / "u.json"), "--", sys.executable, "-c",
                       "raise SystemExit(3)"]) == 3
    assert not (tmp_path / "u.json").exists()


# What each part of lib may import (docs/architecture.md, "What may import what").
MAY_IMPORT: dict[str, set[str]] = {
    "shared": {"shared"},
    "data": {"shared", "data"},
    "eda": {"shared", "data", "eda"},
    "train": {"shared", "data", "train"},
    "evaluate": {"shared", "data", "train", "evaluate"},
    "explain": {"shared", "data", "train", "evaluate", "explain"},
    "report": {"shared", "report"},
    "serve": {"shared", "data", "train", "evaluate", "explain", "serve"},
}


def part(module: str) -> str:
    """The part of lib a module belongs to: its package, or 'shared' for a top-level module."""
    pieces = module.split(".")
    if len(pieces) > 2 or module_file(module) and module_file(module).endswith("__init__.py"):
        return pieces[1]
    return "tiny" if pieces[1] == "tiny" else "shared"


def forbidden_imports() -> list[str]:
    bad = []
    for path in (REPO / "lib").rglob("*.py"):
        module = str(path.relative_to(REPO))[:-3].replace("/", ".").removesuffix(".__init__")
        if module == "lib" or part(module) == "tiny":
            continue
        here = f"{module}.__init__" if path.name == "__init__.py" else module
        for imported in lib_imports(path.read_text(), here):
            if imported != "lib" and part(imported) not in MAY_IMPORT[part(module)]:
                bad.append(f"{module} imports {imported}")
    return bad


def test_each_part_of_lib_imports_only_what_it_may() -> None:
    assert not forbidden_imports(), "\n".join(forbidden_imports())


def test_the_layering_check_sees_an_upward_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MAY_IMPORT, "evaluate", {"shared", "data", "evaluate"})  # not train
    assert "lib.evaluate.predict imports lib.train.models" in forbidden_imports()
