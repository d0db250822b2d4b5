"""bench/scale.py: the grid, the subsets, the child protocol, and the ratios and tables it prints.

The measurements run in `make bench`; here every function runs at a tiny size (a few dozen
64 px images), and only the shape of the output and the arithmetic of the ratios are checked:
speed targets live in the benchmark, not in tests.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO


def _load_scale() -> ModuleType:
    """bench/ is not a package: load the script as a module."""
    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "bench" / "scale.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = module
    spec.loader.exec_module(module)
    return module


scale = _load_scale()


def _row(sweep: str, n: int, side: int, inp: int, ms: float, mib: float) -> dict:
    stages = {s: {"seconds": ms * n / 1000, "images": n, "peak_mib": mib} for s in scale.STAGES}
    stages["train"]["load_seconds"] = 0.001 * n
    return {"sweep": sweep, "n": n, "side": side, "input": inp, "stages": stages}


def test_counts_keep_the_four_to_one_split() -> None:
    assert scale.phantom_counts(1000) == (200, 50)
    assert scale.phantom_counts(8000) == (1600, 400)
    n_train, n_test = scale.phantom_counts(40)
    assert 4 * (n_train + n_test) == 40 and n_test >= 1


def test_grid_has_the_n_side_and_input_sweeps() -> None:
    points = scale.grid(input_size=64)
    assert [p["n"] for p in points if p["sweep"] == "n"] == list(scale.NS)
    assert [p["side"] for p in points if p["sweep"] == "side"] == list(scale.SIDES)
    assert [p["input"] for p in points if p["sweep"] == "input"] == list(scale.INPUTS)


def test_ratios_flag_growth_per_image_and_in_memory() -> None:
    rows = [_row("n", 1000, 128, 64, 2.0, 1000.0), _row("n", 8000, 128, 64, 3.0, 1400.0),
            _row("side", 1000, 256, 64, 4.0, 1100.0)]
    r = scale.ratios(rows)
    assert set(r) == set(scale.STAGES)
    assert r["train"]["per_image_growth"] == pytest.approx(1.5)
    assert r["train"]["per_image_ratio"] == pytest.approx(1.5 / scale.FLAT)
    assert r["prepare"]["memory_ratio"] == pytest.approx(1.4 / scale.FLAT)
    assert r["prepare"]["memory_mib_per_1k_images"] == pytest.approx(400 / 7)
    assert "memory_ratio" not in r["explain"]  # memory targets: prepare and train only
    result = {"rows": rows, "ratios": r, "extrapolated": scale.extrapolate(rows),
              "duplicate_search": {"points": [], "exponent": 2.0}}
    assert set(scale.missed(result)) >= {"train per-image cost", "prepare peak memory",
                                         "near-duplicate search is not sub-quadratic"}
    (e,) = result["extrapolated"]
    assert e["side"] == 256 and e["n"] == scale.EXTRAPOLATE_N
    assert e["prepare_s"] == pytest.approx(0.004 * scale.EXTRAPOLATE_N)
    scale.print_tables(result)


def test_exponent_of_the_duplicate_search_is_computed() -> None:
    dup = scale.duplicate_search_scaling(ns=(300, 600, 1200))
    assert [p["n"] for p in dup["points"]] == [300, 600, 1200]
    assert isinstance(dup["exponent"], float)  # its value is a timing: not checked here
    assert scale.exponent([{"n": 1, "s": 1.0}, {"n": 2, "s": 4.0}], "n", "s") == pytest.approx(2)


@pytest.mark.slow  # about 25 s: TensorFlow, two tiny fits, Grad-CAM
def test_tiny_grid_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two tiny sets (40 and 80 images of 64 px, the second generated, the first a subset),
    every stage in this process (a 5-permutation confounder audit, not params.yaml's 100);
    then the prepare stage once as a real child process."""
    points = scale.grid(ns=(40, 80), side=64, sides=(), inputs=(), input_size=64)
    fewer = {"prepare": {"confounder_permutations": 5}}
    result = scale.measure(points, tmp_path, in_process=True, overrides=fewer)
    assert [r["n"] for r in result["rows"]] == [40, 80]
    assert (tmp_path / "raw64_40" / "Training").is_dir()  # the hard-linked subset
    for row in result["rows"]:
        assert set(row["stages"]) == set(scale.STAGES)
        for rec in row["stages"].values():
            assert rec["seconds"] > 0 and rec["images"] > 0 and rec["peak_mib"] > 0
    assert result["rows"][0]["stages"]["prepare"]["images"] == 40
    assert set(result["rows"][1]["stages"]["prepare"]["parts"]) == {
        "inspect", "duplicate_search", "confounder_audit"}
    r = scale.ratios(result["rows"])
    assert r["train"]["per_image_ratio"] is not None and "memory_ratio" in r["prepare"]
    child = scale.run_stage("prepare", raw=str(tmp_path / "raw64_40"),
                            work=str(tmp_path / "child"), overrides=fewer)
    assert child["images"] == 40 and child["peak_mib"] > 0
    json.dumps(result)  # what bench/results/scale.json gets
