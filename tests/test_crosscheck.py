"""The cross-machine check's comparison (tools/crosscheck.py) on synthetic claims.json payloads.

The real check reruns the whole study (`make crosscheck`); here every rule of the comparison is
pinned without a rerun: what makes a claim differ, when a metric is inside its interval, what
the report says, and the exit codes of `--compare-only`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tools.crosscheck import compare, main, render, same_kernels_warning

PAIR = "compare:test_macro_f1:scratch_batchnorm|transfer"


def payload() -> dict[str, Any]:
    return {
        "level": 0.95, "alpha": 0.05,
        "claims": [
            {"id": PAIR, "kind": "comparison", "statement": "transfer beats scratch_batchnorm",
             "holds": True, "winner": "transfer", "estimate": 0.031, "interval": [0.01, 0.05],
             "test": "Welch t-test over seeds", "p": 0.01, "p_holm": 0.03},
            {"id": "compare:test_macro_f1:scratch_none|scratch_dropout", "kind": "comparison",
             "statement": "no difference", "holds": False, "winner": None, "estimate": 0.002,
             "interval": [-0.02, 0.024], "test": "Welch t-test over seeds", "p": 0.7,
             "p_holm": 1.0},
            {"id": "select:best_configuration", "kind": "selection", "statement": "best",
             "holds": True, "winner": "transfer"},
        ],
        "metrics": [
            {"id": "test_macro_f1:transfer", "label": "test macro-F1, transfer", "mean": 0.93,
             "sd": 0.01, "n": 3, "interval": [0.90, 0.96]},
            {"id": "test_macro_f1:scratch_none", "label": "test macro-F1, scratch_none",
             "mean": 0.89, "sd": 0.02, "n": 3, "interval": [0.84, 0.94]},
        ],
    }


def claim(p: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in p["claims"] if c["id"] == cid)


def metric(p: dict[str, Any], mid: str) -> dict[str, Any]:
    return next(m for m in p["metrics"] if m["id"] == mid)


def row(result: dict[str, Any], key: str, rid: str) -> dict[str, Any]:
    return next(r for r in result[key] if r["id"] == rid)


def test_identical_runs_pass_both_targets() -> None:
    result = compare(payload(), payload())
    assert result["claims_same"] and result["metrics_inside"] and result["passed"]
    assert result["n_claims"] == 3 and result["n_claims_differ"] == 0
    assert result["n_metrics"] == 2 and result["n_metrics_outside"] == 0
    assert result["max_drift"] == 0.0
    assert all(r["same"] and r["why"] == "" for r in result["claims"])


def test_a_claim_that_flips_is_a_difference_and_says_which_way() -> None:
    b = payload()
    claim(b, PAIR).update(holds=False, winner=None)
    result = compare(payload(), b)
    assert not result["claims_same"] and not result["passed"]
    assert result["metrics_inside"]  # the other target is judged on its own
    flipped = row(result, "claims", PAIR)
    assert not flipped["same"]
    assert flipped["why"] == "holds flips: holds in run A, does not hold in run B"
    assert flipped["a"] == {"holds": True, "winner": "transfer"}
    assert flipped["b"] == {"holds": False, "winner": None}
    assert result["n_claims_differ"] == 1


def test_a_new_winner_is_a_difference_but_not_when_the_claim_does_not_hold() -> None:
    b = payload()
    claim(b, "select:best_configuration")["winner"] = "scratch_batchnorm"
    result = compare(payload(), b)
    changed = row(result, "claims", "select:best_configuration")
    assert not result["claims_same"] and not changed["same"]
    assert "winner changes: transfer in run A, scratch_batchnorm in run B" == changed["why"]
    # a claim that holds on neither run has no winner to agree on
    b = payload()
    claim(b, "compare:test_macro_f1:scratch_none|scratch_dropout")["winner"] = "scratch_none"
    assert compare(payload(), b)["claims_same"]


def test_a_claim_in_only_one_run_is_a_difference() -> None:
    b = payload()
    b["claims"] = [c for c in b["claims"] if c["id"] != PAIR]
    b["claims"].append({"id": "select:new", "kind": "selection", "statement": "new",
                        "holds": True, "winner": "x"})
    result = compare(payload(), b)
    assert not result["claims_same"] and result["n_claims"] == 4
    assert row(result, "claims", PAIR)["why"] == "only in run A"
    assert row(result, "claims", PAIR)["b"] is None
    assert row(result, "claims", "select:new")["why"] == "only in run B"
    assert [r["id"] for r in result["claims"]][-1] == "select:new"  # A's order, then B's extras


def test_a_metric_outside_its_interval_fails_the_metric_target() -> None:
    b = payload()
    metric(b, "test_macro_f1:transfer").update(mean=0.97, interval=[0.95, 0.99])
    result = compare(payload(), b)
    assert result["claims_same"] and not result["metrics_inside"] and not result["passed"]
    moved = row(result, "metrics", "test_macro_f1:transfer")
    assert not moved["inside"] and moved["why"] == "mean B outside interval A"
    assert not moved["mutual"]
    assert moved["drift"] == pytest.approx(0.04)
    assert moved["ratio"] == pytest.approx(0.04 / 0.03)
    assert result["max_drift"] == pytest.approx(0.04)
    assert result["n_metrics_outside"] == 1


def test_inside_is_judged_on_the_reference_interval_and_mutual_on_both() -> None:
    b = payload()
    # B's mean is inside A's wide (stated) interval, but B's tight interval misses A's mean
    metric(b, "test_macro_f1:scratch_none").update(mean=0.92, interval=[0.91, 0.93])
    result = compare(payload(), b)
    moved = row(result, "metrics", "test_macro_f1:scratch_none")
    assert moved["inside"] and not moved["mutual"] and moved["why"] == ""
    assert result["metrics_inside"] and result["n_metrics_not_mutual"] == 1
    # a drift within both intervals is inside, with its ratio to A's half-width
    b = payload()
    metric(b, "test_macro_f1:scratch_none").update(mean=0.90, interval=[0.86, 0.94])
    kept = row(compare(payload(), b), "metrics", "test_macro_f1:scratch_none")
    assert kept["inside"] and kept["ratio"] == pytest.approx(0.01 / 0.05)


def test_a_null_interval_is_inside_only_for_an_equal_mean() -> None:
    a, b = payload(), payload()
    metric(a, "test_macro_f1:transfer").update(n=1, sd=None, interval=None)
    metric(b, "test_macro_f1:transfer").update(n=1, sd=None, interval=None)
    same = row(compare(a, b), "metrics", "test_macro_f1:transfer")
    assert same["inside"] and same["ratio"] == 0.0
    metric(b, "test_macro_f1:transfer")["mean"] = 0.931
    moved = compare(a, b)
    assert not moved["metrics_inside"]
    drifted = row(moved, "metrics", "test_macro_f1:transfer")
    assert not drifted["inside"] and drifted["ratio"] is None and "n < 2" in drifted["why"]
    # one run with an interval, the other without: still only an equal mean is inside
    b = payload()
    metric(b, "test_macro_f1:transfer")["mean"] = 0.931
    assert not row(compare(a, b), "metrics", "test_macro_f1:transfer")["inside"]


def test_a_metric_in_only_one_run_fails_the_metric_target() -> None:
    b = payload()
    b["metrics"] = b["metrics"][:1]
    result = compare(payload(), b)
    assert not result["metrics_inside"]
    assert row(result, "metrics", "test_macro_f1:scratch_none")["why"] == "only in run A"


def test_render_says_pass_or_fail_for_each_target_first() -> None:
    good = render(compare(payload(), payload()))
    first = good.splitlines()[0]
    assert first.startswith("PASS: every claim the same on both runs")
    assert "PASS: no metric drifts outside its seed-aware interval" in first
    b = payload()
    claim(b, PAIR)["holds"] = False
    metric(b, "test_macro_f1:transfer").update(mean=0.80, interval=[0.78, 0.82])
    bad = render(compare(payload(), b))
    first = bad.splitlines()[0]
    assert first.startswith("FAIL: every claim the same on both runs (2 of 3 the same)")
    assert "FAIL: no metric drifts outside its seed-aware interval (1 of 2 inside" in first
    assert "**no**: holds flips" in bad and "-0.1300" in bad and "[0.9000, 0.9600]" in bad
    # the pair id's '|' is escaped, so every claims row keeps its four cells
    pair_row = next(line for line in bad.splitlines() if "scratch_batchnorm" in line)
    assert "scratch_batchnorm\\|transfer" in pair_row
    assert pair_row.replace("\\|", "").count("|") == 5


def write(path: Path, p: dict[str, Any]) -> Path:
    path.write_text(json.dumps(p))
    return path


def test_compare_only_exits_0_and_writes_markdown_and_json(tmp_path: Path) -> None:
    a, b = write(tmp_path / "a.json", payload()), write(tmp_path / "b.json", payload())
    out = tmp_path / "x.md"
    assert main(["--compare-only", str(b), "--reference", str(a), "--out", str(out)]) == 0
    assert out.read_text().startswith("PASS: every claim")
    saved = json.loads((tmp_path / "x.json").read_text())
    assert saved["passed"] is True and saved["n_claims"] == 3
    assert saved["runs"]["b"] == str(b)


def test_compare_only_exits_1_when_a_target_fails(tmp_path: Path) -> None:
    other = copy.deepcopy(payload())
    claim(other, "select:best_configuration")["winner"] = "scratch_none"
    a, b = write(tmp_path / "a.json", payload()), write(tmp_path / "b.json", other)
    out = tmp_path / "x.md"
    assert main(["--compare-only", str(b), "--reference", str(a), "--out", str(out)]) == 1
    assert out.read_text().startswith("FAIL: every claim")
    saved = json.loads((tmp_path / "x.json").read_text())
    assert saved["passed"] is False and saved["claims_same"] is False
    assert saved["metrics_inside"] is True


def test_a_missing_reference_exits_2_and_says_to_run_make_repro(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = write(tmp_path / "b.json", payload())
    out = tmp_path / "x.md"
    code = main(["--compare-only", str(b), "--reference", str(tmp_path / "none.json"),
                 "--out", str(out)])
    assert code == 2
    assert "run `make repro` first" in capsys.readouterr().err
    assert not out.exists()


def test_capping_at_avx2_warns_only_where_it_changes_nothing() -> None:
    assert same_kernels_warning("AVX2", {"avx2", "fma"}) is not None
    assert same_kernels_warning("AVX2", {"avx2", "avx512f"}) is None
    assert same_kernels_warning("AVX512_CORE", {"avx2"}) is None
