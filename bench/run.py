"""Speed and memory budgets as measured figures: `make bench` prints each with its ratio to budget.

Runs in a temp copy of the checkout at the default profile of params.yaml, so it measures what
`make repro` does on a fresh clone without touching this working tree: one `dvc repro` of every
stage, under GNU time for the peak memory of its largest process. Each stage's own time comes
from the run's records (papermill's per-notebook clock, reports/timings/*.json for the python
stages: lib.report.build.run_times, the table the report shows), so the slowest is obvious; the
difference to the total is DVC's and the kernels' start-up. Then each training stage's step
throughput against its compute bound (bench/throughput.py), the Grad-CAM figures
(bench/gradcam.py), the app's latency, throughput and start time (bench/serve.py: a real
uvicorn over the trained models) and a peer side by side
(bench/peer.py: the keras-io from-scratch recipe for the same seconds as our best scratch
variant, test macro-F1 ratio ours / peer, target >= 1) run on the same copy.
Ratios below 1 are in budget (the peer ratio is a target, printed apart).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import run
from tests.test_pipeline import copy_checkout

REPO = Path(__file__).resolve().parent.parent


TRAINING = ("augmentation", "train_scratch@none", "train_scratch@dropout",
            "train_scratch@batchnorm", "train_scratch@dropout_batchnorm", "pretext", "pretrain",
            "train_transfer")
DATA_STAGES = ("prepare", "eda")
# The default profile trains every configuration on 3 seeds (issue: "seeds are the unit"):
# make repro <= 20 min on 2 cores, explain <= 90 s; the training stages get what is left.
BUDGETS_S = {"generate phantom": 60, "stage prepare": 60, "data stages": 180,
             "training stages": 900, "stage evaluate": 60, "stage explain": 90,
             "make report": 20, "dvc repro (all stages)": 1200, "no-op dvc repro": 5,
             "make test": 360}
MEMORY_BUDGET_GIB = 4.0
REPORT_BUDGET_MB = 15.0
GNU_TIME = Path("/usr/bin/time")


def timed(label: str, cmd: list[str], cwd: Path, results: dict[str, float],
          peaks: dict[str, float] | None = None) -> None:
    """Run and time one command; with `peaks`, also record its peak RSS (GiB) via GNU time."""
    start = time.perf_counter()
    if peaks is not None and GNU_TIME.is_file():
        proc = run([str(GNU_TIME), "-v", *cmd], cwd)
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if found:
            peaks[label] = int(found.group(1)) / 2**20
    else:
        run(cmd, cwd)
    results[label] = time.perf_counter() - start
    peak = f"  peak {peaks[label]:.2f} GiB" if peaks and label in peaks else ""
    print(f"  {label:<40} {results[label]:7.1f} s{peak}", flush=True)


def stage_times(work: Path) -> dict[str, float]:
    """Each stage's own seconds, from the records the report reads (papermill, timings json)."""
    from lib.report.build import notebooks, run_times

    times = run_times(work, notebooks(work / "reports"))
    for stage in times["rows"]:
        print(f"    {stage['stage']:<38} {stage['seconds']:7.1f} s  ({stage['source']})")
    if times["untimed"]:
        print(f"    no record for: {', '.join(times['untimed'])}")
    return {f"stage {row['stage']}": float(row["seconds"]) for row in times["rows"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--with-tests", action="store_true", help="also time the test suite")
    parser.add_argument("--keep", action="store_true", help="keep the temp copy")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="brain-mri-bench-"))
    results: dict[str, float] = {}
    peaks: dict[str, float] = {}
    peer: dict | None = None
    try:
        copy_checkout(work)
        run(["git", "init", "-q"], work)
        print(f"benchmark copy: {work}")
        timed("generate phantom", [sys.executable, "-m", "lib.data.phantom", "--params",
                                   "params.yaml", "--out", "data/raw"], work, results)
        timed("dvc repro (all stages)", ["dvc", "repro"], work, results, peaks)
        results.update(stage_times(work))
        results["data stages"] = sum(results.get(f"stage {s}", 0) for s in DATA_STAGES)
        results["training stages"] = sum(results.get(f"stage {s}", 0) for s in TRAINING)
        timed("no-op dvc repro", ["dvc", "repro"], work, results)
        timed("make report", ["dvc", "repro", "--force", "--single-item", "report"], work,
              results)
        report_mb = (work / "reports" / "index.html").stat().st_size / 1e6
        print("\nstep throughput vs compute bound (bench/throughput.py):", flush=True)
        subprocess.run([sys.executable, "bench/throughput.py"], cwd=work, check=False)
        print("\nGrad-CAM (bench/gradcam.py):", flush=True)
        subprocess.run([sys.executable, "bench/gradcam.py"], cwd=work, check=False)
        print("\nthe app (bench/serve.py):", flush=True)
        subprocess.run([sys.executable, "bench/serve.py", "--root", str(work)], cwd=work,
                       check=False)
        print("\npeer side by side (bench/peer.py):", flush=True)
        peer_json = work / "bench_peer.json"
        subprocess.run([sys.executable, "bench/peer.py", "--params", "params.yaml",
                        "--variant", "best", "--out", str(peer_json)], cwd=work, check=False)
        peer = json.loads(peer_json.read_text()) if peer_json.is_file() else None
        if args.with_tests:
            timed("make test", ["make", "test"], REPO, results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    slowest = max((k for k in results if k.startswith("stage ")), key=results.get)
    print(f"\nslowest stage: {slowest} ({results[slowest]:.1f} s)\n")
    print(f"{'budget':<32} {'measured':>9} {'limit':>7} {'ratio':>6}")
    failed = False
    for label, limit in BUDGETS_S.items():
        if label in results:
            ratio = results[label] / limit
            failed |= ratio > 1
            flag = "" if ratio <= 1 else "  OVER BUDGET"
            print(f"{label:<32} {results[label]:8.1f}s {limit:6d}s {ratio:6.2f}{flag}")
    if "make report" in results:
        ratio = report_mb / REPORT_BUDGET_MB
        failed |= ratio > 1
        print(f"{'report size, index.html':<32} {report_mb:7.2f}M {REPORT_BUDGET_MB:5.1f}M "
              f"{ratio:6.2f}")
    if peaks:
        peak = peaks["dvc repro (all stages)"]
        ratio = peak / MEMORY_BUDGET_GIB
        failed |= ratio > 1
        print(f"{'peak memory, largest process':<32} {peak:7.2f}G {MEMORY_BUDGET_GIB:5.1f}G "
              f"{ratio:6.2f}  (any stage, training included)")
    if peer:
        ours, other = peer["ours"], peer["peer"]
        peer_ratio = "n/a" if peer["ratio"] is None else f"{peer['ratio']:.2f}"
        print(f"\npeer, same split and {peer['budget_s']:.0f} s of training: test macro-F1 "
              f"{ours['model']} {ours['macro_f1']:.3f} ({ours['epochs']} epochs), "
              f"{other['model']} {other['macro_f1']:.3f} ({other['epochs']} epochs); "
              f"ratio ours / peer {peer_ratio} (target >= 1: "
              f"{'met' if peer['target_met'] else 'NOT met'})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
