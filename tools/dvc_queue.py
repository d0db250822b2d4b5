"""What the queued-experiment tools share: reading `dvc exp show --json`, and waiting on the queue.

Used by tools/guide_sweep.py (the guided arm's lam sweep) and tools/seed_sweep.py (one queued
experiment per seed). Two DVC 3 queue habits shape this module:

- ``dvc queue status`` does not list a worker that is still starting up (its "Worker status"
  line says 0 active for a few seconds after ``dvc queue start``), so waiting on the workers
  would end at once; :func:`busy` waits on the task rows instead (Queued or Running);
- ``dvc exp run --run-all`` (start the queue and block until it is empty) can run one or two
  experiments and then hang (treeverse/dvc#8165, #10398, open for DVC 3.50), and a worker can
  exit with experiments still queued (#10562), so the tools never use it: ``dvc queue start -j
  N``, then :func:`wait` polls ``dvc queue status``, starts the queue again when it has stopped
  with tasks left, and can give up after a stall, saying which logs to read.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

BUSY = re.compile(r"\b(Queued|Running)\b")
WORKERS = re.compile(r"Worker status:\s*(\d+)\s+active,\s*(\d+)\s+idle")


# An experiment that failed (or is still queued or running) is listed with its own params but
# its parent commit's metrics (measured: a killed single-seed run showed the baseline's 3 seeds).
UNFINISHED = frozenset({"failed", "queued", "running"})


def runs(node: Any) -> Iterator[dict[str, Any]]:
    """Every record of `dvc exp show --json` output that has params and metrics data: the
    workspace, the commits and each finished experiment (those in UNFINISHED are skipped, and so
    is any record with an error). Each record carries its name and, for experiments, its
    executor's ``state``."""
    if isinstance(node, dict):
        if "revs" in node and isinstance(node.get("executor"), dict):
            state = node["executor"].get("state")
            if state in UNFINISHED:
                return
            for rev in node["revs"]:
                for record in runs(rev):
                    yield {**record, "state": state}
            return
        data = node.get("data")
        if isinstance(data, dict) and "params" in data and "metrics" in data:
            if not node.get("error"):
                yield {"name": node.get("name") or data.get("name") or node.get("rev"), **data}
        for value in node.values():
            yield from runs(value)
    elif isinstance(node, list):
        for value in node:
            yield from runs(value)


def exp_show(dvc: str = "dvc") -> Any:
    """`dvc exp show --json` of the repository in the current directory, parsed."""
    out = subprocess.run([dvc, "exp", "show", "--json", "--no-pager"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def queue_status(dvc: str = "dvc") -> str:
    """The text of `dvc queue status` (task rows, then the "Worker status" line)."""
    return subprocess.run([dvc, "queue", "status"], check=True, capture_output=True,
                          text=True).stdout


def busy(status: str) -> bool:
    """Whether a `dvc queue status` text still has a Queued or Running task."""
    return any(BUSY.search(line) for line in status.splitlines()
               if not line.startswith("Worker status"))


def workers(status: str) -> tuple[int, int]:
    """(active, idle) workers from a `dvc queue status` text; (0, 0) if the line is absent."""
    found = WORKERS.search(status)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def orphaned(status: str) -> bool:
    """Tasks Queued, none Running and no worker at all: the queue has stopped by itself."""
    lines = [line for line in status.splitlines() if not line.startswith("Worker status")]
    return (any(re.search(r"\bQueued\b", line) for line in lines)
            and not any(re.search(r"\bRunning\b", line) for line in lines)
            and workers(status) == (0, 0))


def wait(dvc: str = "dvc", poll_s: float = 10.0, stall_s: float | None = None,
         status: Callable[[str], str] = queue_status,
         sleep: Callable[[float], None] = time.sleep,
         restart: Callable[[], None] | None = None, orphan_polls: int = 3) -> str:
    """Block until no task is Queued or Running; return the last status text.

    `restart`: called when the queue has stopped with tasks left (``orphaned`` on
    `orphan_polls` polls in a row: a worker that exits with experiments still queued,
    treeverse/dvc#10562); it should run ``dvc queue start`` again. Several polls, because a
    worker that is starting is not listed yet (treeverse/dvc#10427).
    `stall_s`: give up (RuntimeError) when the status text has not changed for that long (a
    worker that died without marking its task stays Running forever; choose it longer than one
    experiment takes); `dvc queue logs <name>` says what happened and
    `dvc queue kill`/`dvc queue remove` clears it.
    """
    last, since, idle = "", time.monotonic(), 0
    while True:
        text = status(dvc)
        if not busy(text):
            return text
        idle = idle + 1 if orphaned(text) else 0
        if restart is not None and idle >= orphan_polls:
            restart()
            idle = 0
        if text != last:
            last, since = text, time.monotonic()
        elif stall_s is not None and time.monotonic() - since > stall_s:
            raise RuntimeError(f"the DVC queue has not moved for {stall_s:.0f} s:\n{text}\n"
                               "read `dvc queue logs <name>`; `dvc queue kill <name>` ends a "
                               "stuck task")
        sleep(poll_s)
