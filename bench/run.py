"""Speed and memory budgets as measured figures: `make bench` prints each with its ratio to budget.

Runs in a temp copy of the checkout at the default profile of params.yaml, so it measures what
`make repro` does on a fresh clone without touching this working tree: every stage is timed on its
own (`dvc repro --single-item`, under GNU time for its peak memory), so the slowest is obvious.
Then the input-pipeline throughput ratio (bench/throughput.py) runs on the same copy.
Ratios below 1 are in budget.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import run  # noqa: E402
from tests.test_pipeline import copy_checkout  # noqa: E402

TRAINING = ("augmentation", "train_scratch@none", "train_scratch@dropout",
            "train_scratch@batchnorm", "train_scratch@dropout_batchnorm", "pretrain",
            "train_transfer")
STAGES = ("prepare", "eda", *TRAINING, "evaluate", "explain", "report")
BUDGETS_S = {"generate phantom": 60, "prepare": 60, "dvc repro (issue-2 stages)": 180,
             "dvc repro (issue-3 stages)": 480, "stage evaluate": 60, "stage explain": 180,
             "make report": 20, "dvc repro (all stages)": 600, "no-op dvc repro": 5,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--with-tests", action="store_true", help="also time the test suite")
    parser.add_argument("--keep", action="store_true", help="keep the temp copy")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="brain-mri-bench-"))
    results: dict[str, float] = {}
    peaks: dict[str, float] = {}
    try:
        copy_checkout(work)
        run(["git", "init", "-q"], work)
        print(f"benchmark copy: {work}")
        timed("generate phantom", [sys.executable, "-m", "lib.phantom", "--params", "params.yaml",
                                   "--out", "data/raw"], work, results)
        for stage in STAGES:
            timed(f"stage {stage}", ["dvc", "repro", "--single-item", stage], work, results,
                  peaks)
        results["prepare"] = results["stage prepare"]
        results["dvc repro (issue-2 stages)"] = sum(results[f"stage {s}"]
                                                     for s in ("prepare", "eda", "report"))
        results["dvc repro (issue-3 stages)"] = sum(results[f"stage {s}"] for s in TRAINING)
        results["dvc repro (all stages)"] = sum(results[f"stage {s}"] for s in STAGES)
        timed("no-op dvc repro", ["dvc", "repro"], work, results)
        timed("make report", ["dvc", "repro", "--force", "--single-item", "report"], work,
              results)
        report_mb = (work / "reports" / "index.html").stat().st_size / 1e6
        print("\ninput pipeline (bench/throughput.py):", flush=True)
        subprocess.run([sys.executable, "bench/throughput.py"], cwd=work, check=False)
        print("\nGrad-CAM (bench/gradcam.py):", flush=True)
        subprocess.run([sys.executable, "bench/gradcam.py"], cwd=work, check=False)
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
        label, peak = max(((k, v) for k, v in peaks.items()
                           if k.removeprefix("stage ") in TRAINING), key=lambda kv: kv[1])
        ratio = peak / MEMORY_BUDGET_GIB
        failed |= ratio > 1
        print(f"{'peak memory, training stage':<32} {peak:7.2f}G {MEMORY_BUDGET_GIB:5.1f}G "
              f"{ratio:6.2f}  ({label})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
