"""Cross-machine check: do the study's conclusions survive other oneDNN kernels?

The study is bit-identical on one CPU kind, but TensorFlow's oneDNN picks its kernels by the CPU's
instruction set (AVX2, AVX-512, AMX) and each sums in its own order, so another CPU trains other
models, as another seed would. What must hold across CPUs is not the bytes but the claims. This
tool reruns the study in a temporary copy of the checkout with another kernel family
(ONEDNN_MAX_CPU_ISA=AVX2 by default), without touching this working tree, and compares the two
runs' reports/metrics/claims.json against two targets:

- every claim the same on both runs (holds or not, and the same winner when it holds);
- no metric drifts outside its seed-aware interval (run B's mean inside the interval run A
  states; whether run A's mean is also inside run B's is reported beside it, as `mutual`).

It writes reports/crosscheck.md (the tables) and reports/crosscheck.json (the comparison) and
exits 0 when both targets pass, 1 otherwise, 2 when there is nothing to compare with yet.
The rerun is a whole `dvc repro --force` of the claims stage and everything upstream, so it
takes about as long as `make repro`, plus the 25-40 % a capped ISA costs.
`--compare-only OTHER` skips the rerun and compares two claims files (say, from two machines).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLAIMS = Path("reports") / "metrics" / "claims.json"
RAW = Path("data") / "raw"
TARGET_CLAIMS = "every claim the same on both runs"
TARGET_METRICS = "no metric drifts outside its seed-aware interval"


# ---------------------------------------------------------------------------------- comparison


def _by_id(rows: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Rows keyed by id, in file order (a dict keeps it), so tables read like claims.json."""
    return {row["id"]: row for row in rows or []}


def _verdict(claim: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a claim that is its conclusion: whether it holds and who wins."""
    if claim is None:
        return None
    return {"holds": bool(claim.get("holds")), "winner": claim.get("winner")}


def _claim_row(cid: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    """One claim on both runs; `why` names the difference, so the table needs no second look."""
    va, vb = _verdict(a), _verdict(b)
    if va is None or vb is None:
        why = "only in run A" if vb is None else "only in run B"
    elif va["holds"] != vb["holds"]:
        why = (f"holds flips: {'holds' if va['holds'] else 'does not hold'} in run A, "
               f"{'holds' if vb['holds'] else 'does not hold'} in run B")
    elif va["holds"] and va["winner"] != vb["winner"]:
        why = f"winner changes: {va['winner']} in run A, {vb['winner']} in run B"
    else:
        why = ""
    statement = (a or b or {}).get("statement", "")
    return {"id": cid, "statement": statement, "a": va, "b": vb, "same": not why, "why": why}


def _within(x: float, interval: list[float]) -> bool:
    low, high = interval
    return low <= x <= high


def _metric_row(mid: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    """One metric on both runs: drift, whether run B's mean lies in run A's stated interval (the
    target: the reference run's interval is the one the report states), whether run A's mean
    also lies in run B's (`mutual`, reported beside it: with 3 seeds one run's interval can be
    narrow by chance), and the drift in units of run A's half-width."""
    label = (a or b or {}).get("label", mid)
    row: dict[str, Any] = {"id": mid, "label": label,
                           "mean_a": a.get("mean") if a else None,
                           "mean_b": b.get("mean") if b else None,
                           "interval_a": a.get("interval") if a else None,
                           "interval_b": b.get("interval") if b else None,
                           "drift": None, "ratio": None}
    if a is None or b is None:
        # a metric one run lacks cannot be shown to stay inside: the runs are not comparable
        return {**row, "inside": False, "mutual": False,
                "why": "only in run A" if b is None else "only in run B"}
    mean_a, mean_b = float(a["mean"]), float(b["mean"])
    ia, ib = a.get("interval"), b.get("interval")
    drift = mean_b - mean_a
    if ia is None or ib is None:
        # n < 2: no spread to be inside of, so only an unchanged mean is inside
        inside = mutual = mean_a == mean_b
        why = "" if inside else "no interval (n < 2) and the means differ"
    else:
        inside, mutual = _within(mean_b, ia), _within(mean_b, ia) and _within(mean_a, ib)
        why = "" if inside else "mean B outside interval A"
    half = (ia[1] - ia[0]) / 2 if ia is not None else 0.0
    ratio = abs(drift) / half if half > 0 else (0.0 if drift == 0 else None)
    return {**row, "drift": drift, "ratio": ratio, "inside": inside, "mutual": mutual,
            "why": why}


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Compare two parsed claims.json payloads (run A: the reference, run B: the rerun).

    Pure: no files, no clock, so the tests pin every rule on synthetic payloads.
    """
    claims_a, claims_b = _by_id(a.get("claims")), _by_id(b.get("claims"))
    claims = [_claim_row(cid, claims_a.get(cid), claims_b.get(cid))
              for cid in [*claims_a, *(c for c in claims_b if c not in claims_a)]]
    metrics_a, metrics_b = _by_id(a.get("metrics")), _by_id(b.get("metrics"))
    metrics = [_metric_row(mid, metrics_a.get(mid), metrics_b.get(mid))
               for mid in [*metrics_a, *(m for m in metrics_b if m not in metrics_a)]]
    drifts = [abs(m["drift"]) for m in metrics if m["drift"] is not None]
    ratios = [m["ratio"] for m in metrics if m["ratio"] is not None]
    return {
        "claims_same": all(c["same"] for c in claims),
        "metrics_inside": all(m["inside"] for m in metrics),
        "passed": all(c["same"] for c in claims) and all(m["inside"] for m in metrics),
        "claims": claims,
        "metrics": metrics,
        "n_claims": len(claims),
        "n_claims_differ": sum(not c["same"] for c in claims),
        "n_metrics": len(metrics),
        "n_metrics_outside": sum(not m["inside"] for m in metrics),
        "n_metrics_not_mutual": sum(not m["mutual"] for m in metrics),
        "max_drift": max(drifts, default=0.0),
        "max_ratio": max(ratios, default=None),
        "level": {"a": a.get("level"), "b": b.get("level")},
        "alpha": {"a": a.get("alpha"), "b": b.get("alpha")},
    }


# ---------------------------------------------------------------------------------- rendering


def _cell(text: Any) -> str:
    """Markdown table cell: claim ids hold '|' (pairs), which would split the row."""
    return str(text).replace("|", "\\|")


def _verdict_text(v: dict[str, Any] | None) -> str:
    if v is None:
        return "(absent)"
    if not v["holds"]:
        return "does not hold"
    return f"holds, winner {v['winner']}" if v["winner"] is not None else "holds"


def _num(x: float | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _interval(iv: list[float] | None) -> str:
    return "none (n < 2)" if iv is None else f"[{iv[0]:.4f}, {iv[1]:.4f}]"


def headline(result: dict[str, Any]) -> str:
    """The one line a reader needs: each target, PASS or FAIL, with its count."""
    claims = (f"{'PASS' if result['claims_same'] else 'FAIL'}: {TARGET_CLAIMS} "
              f"({result['n_claims'] - result['n_claims_differ']} of {result['n_claims']} "
              "the same)")
    metrics = (f"{'PASS' if result['metrics_inside'] else 'FAIL'}: {TARGET_METRICS} "
               f"({result['n_metrics'] - result['n_metrics_outside']} of {result['n_metrics']} "
               f"inside; largest drift {result['max_drift']:.4f})")
    return f"{claims}; {metrics}"


def render(result: dict[str, Any]) -> str:
    """The comparison as markdown: the PASS/FAIL line first, then one table per target."""
    runs = result.get("runs", {})
    lines = [headline(result), "", "# Cross-machine check", ""]
    lines += [f"- run A: {runs.get('a', 'reference')}", f"- run B: {runs.get('b', 'rerun')}"]
    if result.get("host"):
        lines.append(f"- machine: {result['host']}")
    if result.get("seconds") is not None:
        lines.append(f"- rerun took {result['seconds'] / 60:.1f} min")
    for key in ("level", "alpha"):
        pair = result.get(key) or {}
        if pair.get("a") != pair.get("b"):
            lines.append(f"- warning: the runs used different {key}s ({pair.get('a')} vs "
                         f"{pair.get('b')}); their claims are not the same tests")
    lines += ["", f"## Claims: {TARGET_CLAIMS}", "",
              "| claim | run A | run B | same |", "| --- | --- | --- | --- |"]
    for row in result["claims"]:
        same = "yes" if row["same"] else f"**no**: {row['why']}"
        lines.append(f"| {_cell(row['id'])} | {_cell(_verdict_text(row['a']))} | "
                     f"{_cell(_verdict_text(row['b']))} | {_cell(same)} |")
    if not result["claims"]:
        lines.append("| (no claims in either run) | | | |")
    lines += ["", f"## Metrics: {TARGET_METRICS}", "",
              "Inside (the target): run B's mean lies in run A's interval, the one the reference "
              "run states. Mutual: run A's mean also lies in run B's interval (with 3 seeds a "
              "run's interval can be narrow by chance). Drift / half-width: the drift in units "
              "of run A's half-width (1 = at the edge).",
              "", "| metric | mean A | mean B | drift | interval A | interval B | "
              "drift / half-width | inside | mutual |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["metrics"]:
        inside = "yes" if row["inside"] else f"**no**: {row['why']}"
        lines.append(f"| {_cell(row['id'])} | {_num(row['mean_a'])} | {_num(row['mean_b'])} | "
                     f"{_num(row['drift'], signed=True)} | {_interval(row['interval_a'])} | "
                     f"{_interval(row['interval_b'])} | {_ratio(row['ratio'])} | "
                     f"{_cell(inside)} | {'yes' if row.get('mutual') else 'no'} |")
    if not result["metrics"]:
        lines.append("| (no metrics in either run) | | | | | | | | |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- the rerun


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags (empty where /proc/cpuinfo is absent)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return set()
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_model() -> str:
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return "unknown CPU"


def same_kernels_warning(isa: str, flags: set[str]) -> str | None:
    """Capping at AVX2 on a CPU without AVX-512 or AMX changes nothing: say so, since a pass
    would then compare a run with itself (unless the reference came from another machine)."""
    if isa.upper() == "AVX2" and flags and not flags & {"avx512f", "amx_tile"}:
        return ("warning: this CPU has no AVX-512 or AMX, so ONEDNN_MAX_CPU_ISA=AVX2 picks the "
                "kernels it already uses; the rerun is the reference run again unless the "
                "reference came from another machine")
    return None


def stage_names(dvc_yaml: Path) -> set[str]:
    """Stage names of a dvc.yaml (matrix stages by their base name, which dvc repro accepts)."""
    import yaml

    return set((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}))


def rerun_env(isa: str) -> dict[str, str]:
    """The Makefile's environment for the stages, the venv's tools first, the ISA capped.

    BRAIN_STUDY_ROOT is dropped: it would point the copy's stages back at this checkout.
    """
    venv_bin = REPO / ".venv" / "bin"
    bin_dir = venv_bin if venv_bin.is_dir() else Path(sys.executable).parent
    env = dict(os.environ)
    env.pop("BRAIN_STUDY_ROOT", None)
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1", "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2",
        "MPLBACKEND": "Agg", "ONEDNN_MAX_CPU_ISA": isa,
        "GIT_AUTHOR_NAME": "crosscheck", "GIT_AUTHOR_EMAIL": "crosscheck@example.invalid",
        "GIT_COMMITTER_NAME": "crosscheck", "GIT_COMMITTER_EMAIL": "crosscheck@example.invalid",
    })
    return env


@contextmanager
def workspace(keep: Path | None) -> Iterator[Path]:
    """Where the rerun happens: `keep` (left in place), else a temp dir removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    work = Path(tempfile.mkdtemp(prefix="brain-mri-crosscheck-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prepare_copy(dest: Path, env: dict[str, str]) -> None:
    """A runnable copy, made the way tests/test_pipeline.py makes one: the files a clone of the
    working tree would hold, this working tree's data/raw (the data the reference ran on), and
    a git repository of its own, since dvc will not run outside one."""
    from tests.test_pipeline import copy_checkout

    copy_checkout(dest)
    shutil.copytree(REPO / RAW, dest / RAW, symlinks=True)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-q", "-m", "crosscheck copy"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, stdout=subprocess.DEVNULL)


def rerun(dest: Path, stage: str, isa: str) -> tuple[int, float]:
    """`dvc repro --force <stage>` in the copy with the ISA capped, its output streamed.

    --force: the copy holds the committed cache: false outputs (reports/metrics/...), and a stage
    whose outputs and deps looked unchanged would be skipped, leaving the reference's numbers.
    """
    env = rerun_env(isa)
    print(f"copying the checkout to {dest}", flush=True)
    prepare_copy(dest, env)
    # only a claims.json the rerun writes counts, never the reference's copied along
    (dest / CLAIMS).unlink(missing_ok=True)
    cmd = ["dvc", "repro", "--force", stage]
    print(f"running ONEDNN_MAX_CPU_ISA={isa} {' '.join(cmd)} in {dest}", flush=True)
    start = time.perf_counter()
    code = subprocess.run(cmd, cwd=dest, env=env, check=False).returncode
    seconds = time.perf_counter() - start
    print(f"rerun finished (exit {code}) in {seconds / 60:.1f} min", flush=True)
    return code, seconds


# ---------------------------------------------------------------------------------- the command


def write_outputs(result: dict[str, Any], out: Path) -> Path:
    """The markdown at `out` and the comparison as JSON beside it (same name, .json)."""
    from lib.jsonio import dumps, round_floats

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(result))
    json_path = out.with_suffix(".json")
    json_path.write_text(dumps(round_floats(result)))
    return json_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.crosscheck", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, default=REPO / CLAIMS,
                        help="run A: the claims.json you already have from `make repro` "
                             "(default: %(default)s)")
    parser.add_argument("--isa", default="AVX2",
                        help="ONEDNN_MAX_CPU_ISA for the rerun (default: %(default)s)")
    parser.add_argument("--stage", default="claims",
                        help="the dvc stage that writes claims.json; the rerun reproduces it "
                             "and everything upstream (default: %(default)s)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="rerun in this folder (empty or new, outside the checkout) and keep "
                             "it, instead of a temp dir that is removed")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "crosscheck.md",
                        help="the markdown tables; the comparison goes to the same name with "
                             ".json (default: %(default)s)")
    parser.add_argument("--compare-only", type=Path, default=None, metavar="OTHER_CLAIMS_JSON",
                        help="no rerun: compare the reference with this claims.json (run B)")
    args = parser.parse_args(argv)
    if args.keep is not None:
        keep = args.keep.resolve()
        if keep == REPO or REPO in keep.parents:
            parser.error("--keep must be outside the checkout (the copy is made from its files)")
        if keep.exists() and any(keep.iterdir()):
            parser.error(f"--keep {args.keep} is not empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reference: Path = args.reference
    if not reference.is_file():
        print(f"error: no reference claims at {reference}: run `make repro` first (it writes "
              f"{CLAIMS.as_posix()}), or pass --reference", file=sys.stderr)
        return 2
    result_meta: dict[str, Any] = {"runs": {"a": f"reference, {reference}"}}
    if args.compare_only is not None:
        other: Path = args.compare_only
        if not other.is_file():
            print(f"error: no claims file at {other}", file=sys.stderr)
            return 2
        payload_b = json.loads(other.read_text())
        result_meta["runs"]["b"] = str(other)
    else:
        if args.stage not in stage_names(REPO / "dvc.yaml"):
            print(f"error: dvc.yaml has no stage '{args.stage}' (the stage that writes "
                  f"{CLAIMS.as_posix()}); pass --stage", file=sys.stderr)
            return 2
        if not (REPO / RAW).is_dir():
            print(f"error: no {RAW.as_posix()} to rerun on: run `make data` (or `make repro`) "
                  "first", file=sys.stderr)
            return 2
        warning = same_kernels_warning(args.isa, cpu_flags())
        if warning:
            print(warning, file=sys.stderr)
        with workspace(args.keep) as dest:
            code, seconds = rerun(dest, args.stage, args.isa)
            claims_b = dest / CLAIMS
            if code != 0 or not claims_b.is_file():
                print(f"error: the rerun failed (dvc repro exit {code}) or wrote no "
                      f"{CLAIMS.as_posix()}; nothing to compare", file=sys.stderr)
                return 1
            payload_b = json.loads(claims_b.read_text())
        where = args.keep if args.keep is not None else "a temp copy, removed"
        result_meta["runs"]["b"] = f"rerun with ONEDNN_MAX_CPU_ISA={args.isa} in {where}"
        isa_flags = ", ".join(sorted(cpu_flags() & {"avx2", "avx512f", "amx_tile"}))
        result_meta.update(host=f"{cpu_model()} ({isa_flags or 'no ISA flags found'})",
                           seconds=seconds, isa=args.isa)
    result = {**compare(json.loads(reference.read_text()), payload_b), **result_meta}
    json_path = write_outputs(result, args.out)
    print(render(result))
    print(f"wrote {args.out} and {json_path}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
