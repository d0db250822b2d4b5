"""The app as its own process, the way `make serve` runs it: for scripts, the bench and the tests.

    with running(root, feedback_dir=tmp / "fb", log=tmp / "server.log") as server:
        httpx.post(f"{server.url}/predict", files={"file": open("scan.png", "rb")})

``running`` starts ``python -m lib.serve`` on a free localhost port, waits until ``/health`` says
the models are loaded (``started_s`` is how long that took) and always stops the process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "GRADIO_ANALYTICS_ENABLED": "False",
       "GIT_OPTIONAL_LOCKS": "0"}


@dataclass(frozen=True)
class Server:
    url: str
    proc: subprocess.Popen
    started_s: float  # from the process start until /health answered with the models loaded


def free_port() -> int:
    """A localhost port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(root: Path | str, port: int, *extra: str) -> list[str]:
    """The command `make serve` runs, for the study under root."""
    return [sys.executable, "-m", "lib.serve", "--root", str(root), "--port", str(port), *extra]


def start(root: Path | str, port: int, *extra: str, log: Path | None = None
          ) -> subprocess.Popen:
    """Start the server; its output goes to log (else to a pipe the caller reads)."""
    env = {**os.environ, **ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                        f"{os.environ.get('PATH', '')}"}
    out = log.open("w") if log is not None else subprocess.PIPE
    try:
        return subprocess.Popen(command(root, port, *extra), cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    finally:
        if log is not None:
            out.close()


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate, then kill if it does not exit in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running(root: Path | str, feedback_dir: Path, log: Path, *extra: str,
            timeout: float = 120) -> Iterator[Server]:
    """A started, ready server; RuntimeError with the log's tail if it exits or never answers."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = start(root, port, "--feedback-dir", str(feedback_dir), *extra, log=log)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}):\n"
                                   f"{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).json().get("status") == "ok":
                    break
            except (httpx.TransportError, ValueError):
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"the server did not answer /health in {timeout:.0f} s:\n"
                                   f"{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield Server(url, proc, time.perf_counter() - t0)
    finally:
        stop(proc)

