"""Speed budgets as measured figures: `make bench` prints each one with its ratio to the budget.

Runs in a temp copy of the checkout at the default profile of params.yaml, so it measures what
`make repro` does on a fresh clone without touching this working tree. Ratios below 1 are in budget.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import run  # noqa: E402
from tests.test_pipeline import copy_checkout  # noqa: E402

STAGES = ("prepare", "eda", "report")
BUDGETS_S = {"generate phantom": 60, "prepare": 60, "dvc repro (issue-2 stages)": 180,
             "no-op dvc repro": 5, "make test": 360}


def timed(label: str, cmd: list[str], cwd: Path, results: dict[str, float]) -> None:
    start = time.perf_counter()
    run(cmd, cwd)
    results[label] = time.perf_counter() - start
    print(f"  {label:<32} {results[label]:7.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--with-tests", action="store_true", help="also time the test suite")
    parser.add_argument("--keep", action="store_true", help="keep the temp copy")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="brain-mri-bench-"))
    results: dict[str, float] = {}
    try:
        copy_checkout(work)
        run(["git", "init", "-q"], work)
        print(f"benchmark copy: {work}")
        timed("generate phantom", [sys.executable, "-m", "lib.phantom", "--params", "params.yaml",
                                   "--out", "data/raw"], work, results)
        for stage in STAGES:
            timed(f"stage {stage}", ["dvc", "repro", "--single-item", stage], work, results)
        results["prepare"] = results["stage prepare"]
        results["dvc repro (issue-2 stages)"] = sum(results[f"stage {s}"] for s in STAGES)
        timed("no-op dvc repro", ["dvc", "repro"], work, results)
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
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
