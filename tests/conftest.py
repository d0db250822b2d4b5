"""Shared test helpers: the repository root and a subprocess runner with the project's env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with the venv on PATH, analytics off and a fixed git identity."""
    env = dict(os.environ)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
    })
    env.pop("BRAIN_STUDY_ROOT", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


LONGEST = "test_pipeline.py"  # the real tiny `dvc repro`: about half of make test's work


def pytest_collection_modifyitems(items: list) -> None:
    """The longest file first, then the other slow ones and the notebooks (tens of seconds
    each), then the quick files: with `-n 2 --dist loadfile --no-loadscope-reorder` (make test)
    the tiny `dvc repro` starts at once on one worker while the other takes everything else, and
    the run ends on short files that fill both workers, not on a notebook running alone.
    (xdist's default reorder, by number of tests per file, would undo this order.)"""
    def long(item: Any) -> bool:
        return item.get_closest_marker("slow") is not None or item.path.suffix == ".ipynb"

    items.sort(key=lambda item: (item.path.name != LONGEST, not long(item)))
