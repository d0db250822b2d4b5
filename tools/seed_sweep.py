"""The seeds of one training stage as queued DVC experiments, one experiment per seed, in parallel.

    python -m tools.seed_sweep run [--stage train_scratch@batchnorm] [--jobs N] [--threads T]
    python -m tools.seed_sweep plan      # what `run` would do on this machine, nothing runs
    python -m tools.seed_sweep collect   # dvc exp show --json -> one row per seed
    python -m tools.seed_sweep models    # each experiment's model files, back from the cache

`make sweep` is `run`: one ``dvc exp run --queue --allow-missing -S 'train_seeds=[<seed>]'
<stage>`` per seed of ``train_seeds`` (each experiment reruns that stage alone in its own
temporary workspace; everything above it comes from the DVC cache, and ``--allow-missing``
keeps the git-ignored notebook and timing outputs from rerunning prepare: tools/guide_sweep.py),
then ``dvc queue start -j <jobs>`` with each worker's threads capped through the environment
(``thread_env``: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, TF_NUM_INTRAOP_THREADS,
TF_NUM_INTEROP_THREADS; the workers inherit it from `dvc queue start`, and so do the stage and its
notebook kernel: ``probe`` reads it back from the running processes), a wait on the queue's task
rows (tools/dvc_queue.py: ``dvc queue status`` does not show a starting worker, and
``dvc exp run --run-all`` is not used) and `collect`.

Workers and threads (``choose``): ``jobs = min(experiments, cores // threads)`` with
``threads = THREADS_PER_WORKER`` (1) unless given. On 2 cores (2026-12-05, another job sharing
the CPU in both runs), the 3 seeds of train_scratch@batchnorm as single-seed experiments took
254 s as 2 workers x 1 thread against 310 s as 1 worker x 2 threads, queueing included: one
experiment alone took 97 s at 1 thread and 82-106 s at 2 (the small CNN's steps and each
experiment's fixed part, DVC checkout, kernel start, TensorFlow import, notebook rendering, gain
little from a second thread), so two single-thread workers do nearly twice the work.
The thread count changes the floating-point results: at 2 threads (what `dvc repro` uses on
these 2 cores) each seed's validation macro-F1 equals the pipeline's to the last digit; at 1
thread it differs (seed 42: 0.9244 vs 0.9281) but is the same run after run. ``--jobs 1 --threads
<cores>`` reproduces the pipeline's numbers.

Known queue habits, handled: a worker started earlier keeps the environment it was started
with (and a finished queue leaves an idle worker for a few seconds), so `run` waits up to a
minute for ``dvc queue status`` to show no worker, then refuses (``dvc queue stop`` ends them);
an experiment that failed or was killed is listed by ``dvc exp show`` with its own params but
its parent's metrics (every seed of the committed run), so `collect` skips unfinished
experiments and keeps only the seeds of each experiment's own ``train_seeds``. Experiments are
named ``<prefix>-s<seed>`` (default prefix: the stage, e.g. ``scratch-batchnorm``); DVC refuses
a name that exists ("Experiment conflicts with existing experiment"), so a rerun needs
``dvc exp remove <names>`` (or ``dvc exp remove --queue`` for queued ones) or another --prefix.

Models: each experiment's ``dvc.lock`` names the stage's model folder in the cache; `models`
copies those files out to ``models/sweeps/<experiment>/`` (``dvc exp apply <name>`` restores one
experiment into the workspace instead, and ``dvc exp branch <name> <branch>`` keeps it as a git
branch; both replace the whole model folder, so only one seed at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tools.dvc_queue import exp_show, queue_status, runs, wait, workers

STAGE = "train_scratch@batchnorm"
THREADS_PER_WORKER = 1  # measured: 2 workers x 1 thread beat 1 worker x 2 threads on 2 cores
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
               "TF_NUM_INTEROP_THREADS")
OUT = Path("reports/sweeps")
COLUMNS = ("experiment", "seed", "val_macro_f1", "val_accuracy", "best_epoch", "epochs_run",
           "rev")


def slug(stage: str) -> str:
    """A stage name as an experiment-name prefix: train_scratch@batchnorm -> scratch-batchnorm."""
    name = stage.removeprefix("train_").replace("@", "-").replace("_", "-")
    return re.sub(r"[^A-Za-z0-9-]", "-", name)


def metrics_path(stage: str) -> str:
    """The stage's metrics file (dvc.yaml's convention: reports/metrics/<stage, @ -> _>.json)."""
    return f"reports/metrics/{stage.replace('@', '_')}.json"


def cores() -> int:
    """CPU cores this process may use (the affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose(n_cores: int, n_experiments: int, threads: int | None = None,
           jobs: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker): threads default THREADS_PER_WORKER, workers fill the
    cores (never more than the experiments); a given `jobs` alone gets the cores shared out."""
    n_cores, n_experiments = max(1, n_cores), max(1, n_experiments)
    if threads is None and jobs is not None:
        threads = max(1, n_cores // max(1, jobs))
    threads = max(1, threads or THREADS_PER_WORKER)
    if jobs is None:
        jobs = max(1, min(n_experiments, n_cores // threads))
    return max(1, jobs), threads


def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with every thread pool capped at `threads`."""
    env = dict(os.environ if base is None else base)
    env.update({name: str(threads) for name in THREAD_VARS})
    return env


def queue_commands(stage: str, seeds: Sequence[int], prefix: str | None = None,
                   dvc: str = "dvc") -> list[list[str]]:
    """One `dvc exp run --queue` per seed, named <prefix>-s<seed>."""
    prefix = prefix or slug(stage)
    return [[dvc, "exp", "run", "--queue", "--allow-missing", "--name", f"{prefix}-s{seed}",
             "-S", f"train_seeds=[{int(seed)}]", stage] for seed in seeds]


def start_command(jobs: int, dvc: str = "dvc") -> list[str]:
    return [dvc, "queue", "start", "-j", str(jobs)]


def default_seeds(params: Path = Path("params.yaml")) -> list[int]:
    return [int(s) for s in yaml.safe_load(params.read_text())["train_seeds"]]


def rows_from_show(show: Any, stage: str = STAGE, prefix: str | None = None
                   ) -> list[dict[str, Any]]:
    """One row per (experiment, seed) with the stage's validation numbers, from
    `dvc exp show --json`; with `prefix`, only experiments named <prefix>-s<seed>."""
    metrics_file = metrics_path(stage)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs(show):
        name = str(run["name"])
        if prefix is not None and not re.fullmatch(rf"{re.escape(prefix)}-s\d+", name):
            continue
        metrics = (run["metrics"].get(metrics_file) or {}).get("data") or {}
        own = ((run["params"].get("params.yaml") or {}).get("data") or {}).get("train_seeds")
        for key, seed_run in sorted((metrics.get("per_seed") or {}).items()):
            seed = int(str(key).lstrip("s"))
            if isinstance(own, list) and seed not in own:
                continue  # not this run's seed: metrics its parent left
            val = seed_run.get("val") or {}
            out.setdefault((name, seed), {
                "experiment": name, "seed": seed, "val_macro_f1": val.get("macro_f1"),
                "val_accuracy": val.get("accuracy"), "best_epoch": seed_run.get("best_epoch"),
                "epochs_run": seed_run.get("epochs_run"), "rev": run.get("rev")})
    return sorted(out.values(), key=lambda r: (r["seed"], r["experiment"]))


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd (n - 1) of the validation macro-F1 over the rows."""
    values = [float(r["val_macro_f1"]) for r in rows if r["val_macro_f1"] is not None]
    n = len(values)
    mean = sum(values) / n if n else None
    sd = ((sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5) if n > 1 else None
    return {"n": n, "val_macro_f1_mean": mean, "val_macro_f1_sd": sd}


def write(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def probe(root: Path = Path(".")) -> list[dict[str, Any]]:
    """The processes running in this repository's experiment workspaces (.dvc/tmp/exps): pid,
    command, thread count and the thread variables of their environment (Linux /proc)."""
    exps = (root / ".dvc" / "tmp" / "exps").resolve()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            if not cwd.is_relative_to(exps):
                continue
            raw = (proc / "environ").read_bytes().split(b"\0")
            env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (proc / "status").read_text()
        except OSError:  # gone, or not ours
            continue
        threads = re.search(r"^Threads:\s*(\d+)", status, re.M)
        found.append({"pid": int(proc.name), "cmd": cmd.strip()[:120],
                      "threads": int(threads.group(1)) if threads else None,
                      **{name: env.get(name) for name in THREAD_VARS}})
    return found


def stage_models(lock: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    """The stage's outs under models/ in a parsed dvc.lock (path and md5)."""
    return [out for out in lock.get("stages", {}).get(stage, {}).get("outs", [])
            if str(out.get("path", "")).startswith("models/")]


def cache_files(cache: Path, out: dict[str, Any]) -> list[tuple[str, Path]]:
    """(relative path, cache file) of one dvc.lock out (a folder's .dir listing or a file)."""
    def obj(md5: str) -> Path:
        return cache / "files" / "md5" / md5[:2] / md5[2:]

    md5 = str(out["md5"])
    if not md5.endswith(".dir"):
        return [(Path(out["path"]).name, obj(md5))]
    listing = json.loads(obj(md5).read_text())
    return [(entry["relpath"], obj(entry["md5"])) for entry in listing]


def gather_models(rows: Sequence[dict[str, Any]], stage: str, dest: Path, dvc: str = "dvc"
                  ) -> list[Path]:
    """Copy each experiment's model files from the DVC cache to dest/<experiment>/."""
    cache = Path(subprocess.run([dvc, "cache", "dir"], check=True, capture_output=True,
                                text=True).stdout.strip())
    written = []
    for rev, name in sorted({(r["rev"], r["experiment"]) for r in rows if r["rev"]}):
        lock = yaml.safe_load(subprocess.run(["git", "show", f"{rev}:dvc.lock"], check=True,
                                             capture_output=True, text=True).stdout)
        for out in stage_models(lock, stage):
            for rel, src in cache_files(cache, out):
                target = dest / name / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
                written.append(target)
    return written


def run(stage: str, seeds: Sequence[int], jobs: int, threads: int, prefix: str | None,
        dvc: str, out: Path, poll_s: float = 10.0, stall_s: float | None = None) -> int:
    """Queue, start, wait, collect; prints the wall time and the thread settings seen."""
    for _ in range(12):  # a finished queue leaves an idle worker for a few seconds
        active, idle = workers(queue_status(dvc))
        if not active + idle:
            break
        time.sleep(5)
    else:
        print(f"error: DVC queue workers already running ({active} active, {idle} idle); they "
              "keep the environment they were started with and would run these experiments "
              "with their thread settings. Wait for them or run `dvc queue stop`.",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    for cmd in queue_commands(stage, seeds, prefix, dvc):
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    env = thread_env(threads)
    print(" ".join(f"{k}={threads}" for k in THREAD_VARS), " ".join(start_command(jobs, dvc)),
          flush=True)
    subprocess.run(start_command(jobs, dvc), check=True, env=env)
    seen: dict[int, dict[str, Any]] = {}

    def status(dvc_: str) -> str:
        text = queue_status(dvc_)
        for proc in probe():
            if proc["pid"] not in seen and "python" in proc["cmd"]:
                seen[proc["pid"]] = proc
                print(f"  pid {proc['pid']}: {proc['threads']} threads, "
                      + ", ".join(f"{k}={proc[k]}" for k in THREAD_VARS)
                      + f"  ({proc['cmd'][:70]})", flush=True)
        return text

    def restart() -> None:
        print("the queue stopped with experiments left (treeverse/dvc#10562): starting it again",
              flush=True)
        subprocess.run(start_command(jobs, dvc), check=True, env=env)

    final = wait(dvc, poll_s=poll_s, stall_s=stall_s, status=status, restart=restart)
    wall = time.perf_counter() - start
    print(final)
    print(f"{len(seeds)} experiment(s), {jobs} worker(s) x {threads} thread(s): "
          f"{wall:.0f} s wall, queue to last result", flush=True)
    return collect(stage, prefix or slug(stage), dvc, out, expected=len(seeds), wall_s=wall,
                   setting={"jobs": jobs, "threads": threads})


def collect(stage: str, prefix: str | None, dvc: str, out: Path, expected: int | None = None,
            wall_s: float | None = None, setting: dict[str, int] | None = None) -> int:
    rows = rows_from_show(exp_show(dvc), stage, prefix)
    if not rows:
        print(f"no experiment named {prefix}-s<seed> has {metrics_path(stage)} yet",
              file=sys.stderr)
        return 2
    csv_path = write(rows, out / f"seed_sweep_{slug(stage)}.csv")
    for r in rows:
        print(f"  {r['experiment']:<28} seed {r['seed']:<5} val macro-F1 {r['val_macro_f1']}"
              f"  best epoch {r['best_epoch']}")
    stats = summary(rows)
    record = {"stage": stage, "rows": rows, **stats, "wall_s": wall_s, **(setting or {})}
    (out / f"seed_sweep_{slug(stage)}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{stats['n']} seed(s): val macro-F1 mean {stats['val_macro_f1_mean']}, "
          f"sd {stats['val_macro_f1_sd']} -> {csv_path}")
    if expected is not None and len(rows) < expected:
        print(f"error: {expected - len(rows)} experiment(s) have no metrics (failed?): "
              "`dvc queue status`, `dvc queue logs <name>`", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("plan", "run", "collect", "models", "probe"))
    parser.add_argument("--stage", default=STAGE)
    parser.add_argument("--seeds", default=None,
                        help="comma-separated (default: train_seeds of params.yaml)")
    parser.add_argument("--jobs", type=int, default=None, help="workers (default: from cores)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"threads per worker (default {THREADS_PER_WORKER}, or cores/jobs)")
    parser.add_argument("--prefix", default=None, help="experiment names <prefix>-s<seed>")
    parser.add_argument("--dvc", default="dvc")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between status polls")
    parser.add_argument("--stall-minutes", type=float, default=None,
                        help="give up when the queue status has not changed for this long")
    args = parser.parse_args(argv)
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds else default_seeds())
    jobs, threads = choose(cores(), len(seeds), args.threads, args.jobs)
    if args.command == "plan":
        for cmd in queue_commands(args.stage, seeds, args.prefix, args.dvc):
            print(" ".join(cmd))
        print(" ".join(f"{k}={threads}" for k in THREAD_VARS), " ".join(start_command(jobs,
                                                                                      args.dvc)))
        return 0
    if args.command == "probe":
        for proc in probe():
            print(json.dumps(proc))
        return 0
    if args.command == "collect":
        return collect(args.stage, args.prefix or slug(args.stage), args.dvc, args.out)
    if args.command == "models":
        rows = rows_from_show(exp_show(args.dvc), args.stage, args.prefix or slug(args.stage))
        written = gather_models(rows, args.stage, Path("models/sweeps"), args.dvc)
        print("\n".join(str(p) for p in written) or "no experiment models found")
        return 0 if written else 2
    stall = None if args.stall_minutes is None else 60 * args.stall_minutes
    return run(args.stage, seeds, jobs, threads, args.prefix, args.dvc, args.out,
               poll_s=args.poll, stall_s=stall)


if __name__ == "__main__":
    raise SystemExit(main())
