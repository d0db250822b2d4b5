"""Run one DVC stage: which params.yaml keys it reads, its notebook under papermill, its clock.

`params.yaml` is the one home of every value. A notebook stage's command in `dvc.yaml` names only
where the stage writes; `notebook_parameters` gives the notebook everything else from
params.yaml, so the executed notebook's injected-parameters cell shows each value the stage used,
and `tests/test_stage.py` proves that `dvc.yaml` lists exactly the keys a stage reads.

    python -m lib.stage notebook train_scratch --item dropout -p models_dir models/scratch_dropout
    python -m lib.stage timed pretrain reports/timings/pretrain.json -- \\
        python -m lib.train.pretrain --params params.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import load_params, repo_root, section

KERNEL = "brain-mri-study"
# What every stage's process (and its kernel) runs with, whether started by `make repro` or by a
# bare `dvc repro`: hash order fixed, TensorFlow's C++ INFO/WARNING lines off, no display needed.
RUN_ENV = {"PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
# nbconvert's lab template leaves an empty require.js tag and CDN module scripts: a rendered
# notebook must open offline and fetch nothing.
EMPTY_SCRIPT = re.compile(r'<script src="">\s*</script>')
CDN_SCRIPT = re.compile(r'<script type="module">(?:(?!</script>).)*?https?://(?:(?!</script>).)*'
                        r'</script>', re.S)


@dataclass(frozen=True)
class NotebookStage:
    """What a notebook stage takes from params.yaml (every name is a notebook parameter)."""

    notebook: str                       # file under notebooks/
    groups: tuple[str, ...] = ()        # whole groups, each one dict parameter of the group's name
    keys: tuple[str, ...] = ()          # single dotted keys; the parameter is the last part
    item: str | None = None             # the DVC matrix key, passed as a parameter of that name
    data: bool = True                   # raw_dir and manifest_path from the data: group

    def output(self, item: str | None = None) -> str:
        """The executed copy, reports/notebooks/<notebook>[_<item>].ipynb."""
        stem = Path(self.notebook).stem
        return f"reports/notebooks/{stem}{f'_{item}' if item else ''}.ipynb"


# The study's notebook stages, in pipeline order. Each gets its params.yaml groups as dicts, which
# the notebook turns into its configs with `Config.from_params(group)`; the executed notebook's
# injected-parameters cell records every value. The training stages share `train:` and
# `augment:`; each model family keeps its own input size in its own group, so changing the
# scratch CNN's size does not retrain the transfer model.
STAGES: dict[str, NotebookStage] = {
    "eda": NotebookStage("01_eda.ipynb", groups=("eda",), keys=("seed",)),
    "augmentation": NotebookStage("02_augmentation.ipynb", groups=("augment", "augment_preview"),
                                  keys=("seed", "train_scratch.input_size")),
    "train_scratch": NotebookStage("03_train_scratch.ipynb",
                                   groups=("augment", "train", "train_scratch"),
                                   keys=("train_seeds",), item="variant"),
    "train_transfer": NotebookStage("04_train_transfer.ipynb",
                                    groups=("augment", "train", "train_transfer"),
                                    keys=("train_seeds",)),
    "train_guided": NotebookStage("04b_train_guided.ipynb", groups=("augment", "train", "guide"),
                                  keys=("train_seeds", "seed", "explain.layer",
                                        "explain.min_grid"), item="model"),
    "evaluate": NotebookStage("05_evaluate.ipynb", groups=("evaluate",), keys=("seed",)),
    "explain": NotebookStage("06_explain.ipynb", groups=("explain",), keys=("seed",)),
}


def lookup(params: dict[str, Any], dotted: str) -> Any:
    """params['a']['b'] for 'a.b', with an error that names the missing key."""
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"params.yaml has no '{dotted}'; see the committed params.yaml")
        value = value[part]
    return value


def notebook_parameters(params: dict[str, Any], stage: str,
                        item: str | None = None) -> dict[str, Any]:
    """Every notebook parameter the stage takes from params.yaml, by notebook name.

    Two sources giving the same name is an error: one value must not silently shadow another.
    """
    if stage not in STAGES:
        raise KeyError(f"unknown notebook stage {stage!r}; one of {', '.join(STAGES)}")
    spec = STAGES[stage]
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def put(name: str, value: Any, source: str) -> None:
        if name in values:
            raise ValueError(f"stage {stage}: parameter {name!r} comes from both "
                             f"{origin[name]} and {source}; rename one of them in params.yaml")
        values[name], origin[name] = value, source

    if spec.data:
        data = section(params, "data")
        put("raw_dir", str(data["raw_dir"]), "data.raw_dir")
        put("manifest_path", f"{data['processed_dir']}/manifest.csv", "data.processed_dir")
    for group in spec.groups:
        put(group, dict(section(params, group)), group)
    for dotted in spec.keys:
        put(dotted.rsplit(".", 1)[-1], lookup(params, dotted), dotted)
    if spec.item:
        if item is None:
            raise ValueError(f"stage {stage} is a DVC matrix: give --item <{spec.item}>")
        put(spec.item, item, "the DVC matrix item")
    return values


# ---- quiet kernels ---------------------------------------------------------------------------
# Lines a kernel writes to stderr that say nothing to a person running the study. Each is a known,
# benign message (matched exactly enough not to hide anything else):
NOISE = re.compile("|".join((
    # TF's C++ logger announcing itself, and its oneDNN notice (the numerics are the ones the lock
    # records; turning oneDNN off would change them)
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^I0000 .*port\.cc:\d+\] oneDNN custom operations are on",
    # tf.data graphs written by a newer TF op registry than the runtime: ignored attribute
    r"^E0000 .*node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool",
    # ipykernel on the loopback interface: papermill's own kernel, never exposed
    r"^\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption",
)))


def is_noise(line: str) -> bool:
    return bool(NOISE.search(line))


@contextmanager
def filtered_stderr() -> Iterator[None]:
    """Drop the NOISE lines from this process's stderr and its children's (the kernel's)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. under pytest capture)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    read, write = os.pipe()
    os.dup2(write, fd)
    os.close(write)

    sink_fd = os.dup(saved)  # before the thread starts: `saved` may be closed by then

    def pump() -> None:
        with os.fdopen(read, "rb") as source, os.fdopen(sink_fd, "wb") as sink:
            for line in source:
                if not is_noise(line.decode("utf-8", "replace")):
                    sink.write(line)
                    sink.flush()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)  # closes the pipe's last write end once the kernel has exited
        os.close(saved)
        thread.join(timeout=5)


def tidy_outputs(ipynb: Path) -> None:
    """The executed notebook as a reader should get it: each cell's stream outputs merged with
    carriage returns applied (a progress bar ends as its last line, not one line per update;
    nbconvert's CoalesceStreamsPreprocessor) and the NOISE lines dropped. The terminal saw them
    live; the notebook and its HTML keep what a person reads."""
    import nbformat
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = nbformat.read(ipynb, as_version=4)
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                output.text = "".join(line for line in output.text.splitlines(keepends=True)
                                      if not is_noise(line))
                if not output.text:
                    continue
            kept.append(output)
        if cell.cell_type == "code":
            cell.outputs = kept
    nbformat.write(nb, ipynb)


def render_notebook(ipynb: Path, html: Path | None = None) -> Path:
    """Executed notebook → standalone HTML with no MathJax/require.js fetched from a CDN."""
    import nbformat
    from nbconvert import HTMLExporter

    html = html or ipynb.with_suffix(".html")
    exporter = HTMLExporter(template_name="lab", mathjax_url="", require_js_url="",
                            embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    html.write_text(CDN_SCRIPT.sub("", EMPTY_SCRIPT.sub("", body)))
    return html


# ---- running -----------------------------------------------------------------------------------
def run_notebook(stage: str, item: str | None = None, paths: dict[str, str] | None = None,
                 params_path: Path | None = None, root: Path | None = None) -> Path:
    """Execute the stage's notebook with its params.yaml values and `paths`, then render HTML.

    Cell outputs stream to the terminal as they come (per-epoch lines, progress bars), so a person
    waiting on a long stage sees it work.
    """
    import papermill

    root = root or repo_root()
    params = load_params(params_path or root / "params.yaml")
    spec = STAGES[stage]
    parameters = {**notebook_parameters(params, stage, item), **(paths or {})}
    out = root / spec.output(item)
    out.parent.mkdir(parents=True, exist_ok=True)
    for key, value in RUN_ENV.items():
        os.environ.setdefault(key, value)
    print(f"{stage}: notebooks/{spec.notebook} -> {spec.output(item)}", flush=True)
    with filtered_stderr():
        papermill.execute_notebook(root / "notebooks" / spec.notebook, out, parameters=parameters,
                                   kernel_name=KERNEL, cwd=str(root), progress_bar=False,
                                   stdout_file=sys.stdout, stderr_file=sys.stderr)
    tidy_outputs(out)
    html = render_notebook(out)
    print(f"wrote {out.relative_to(root)} and {html.relative_to(root)}")
    return out


def timed(record: Path, stage: str, command: list[str]) -> int:
    """Run a stage's command and record its wall time (python stages have no papermill clock)."""
    start = time.perf_counter()
    with filtered_stderr():
        code = subprocess.run(command, env={**RUN_ENV, **os.environ}).returncode
    if code == 0:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({
            "stage": stage, "seconds": round(time.perf_counter() - start, 3),
            "ended": datetime.now(UTC).isoformat(timespec="seconds")}, indent=2) + "\n")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.stage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    n = sub.add_parser("notebook", help="run a notebook stage with its params.yaml values")
    n.add_argument("stage", choices=sorted(STAGES))
    n.add_argument("--item", default=None, help="the DVC matrix item (train_scratch: variant)")
    n.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a path parameter (where the stage reads or writes)")
    n.add_argument("--params", type=Path, default=None)
    r = sub.add_parser("render", help="render an executed notebook to self-contained HTML")
    r.add_argument("ipynb", type=Path)
    r.add_argument("html", type=Path, nargs="?")
    t = sub.add_parser("timed", help="run a command and write its run time for the report")
    t.add_argument("stage")
    t.add_argument("record", type=Path, help="e.g. reports/timings/<stage>.json")
    t.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the stage's command")
    args = parser.parse_args(argv)
    if args.command == "notebook":
        run_notebook(args.stage, args.item, dict(args.p), args.params)
        return 0
    if args.command == "render":
        print(f"wrote {render_notebook(args.ipynb, args.html)}")
        return 0
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        parser.error("timed: give the command after --")
    return timed(args.record, args.stage, command)


if __name__ == "__main__":
    sys.exit(main())
