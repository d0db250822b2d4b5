"""The one rounding rule of the metrics JSON files (lib.jsonio), pinned."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lib import jsonio
from tests.conftest import REPO

METRICS = REPO / "reports" / "metrics"
# which rule each committed metrics file follows: decimals, or None (eda: rounded per field)
FILE_DIGITS = {"evaluate.json": jsonio.STAGE_DIGITS["evaluate"],
               "explain.json": jsonio.STAGE_DIGITS["explain"],
               "pretrain.json": jsonio.STAGE_DIGITS["train"],
               "eda.json": None, "data_audit.json": None}


def test_the_rule() -> None:
    assert jsonio.STAGE_DIGITS == {"train": 6, "evaluate": 6, "explain": 4}
    payload = {"a": 0.123456789, "b": [np.float32(0.5), (np.float64(1 / 3), math.nan)],
               1: {"n": np.int64(7), "ok": np.bool_(True), "s": "x", "none": None, "i": 3}}
    assert jsonio.round_floats(payload, 4) == {
        "a": 0.1235, "b": [0.5, [0.3333, None]],
        "1": {"n": 7, "ok": True, "s": "x", "none": None, "i": 3}}
    assert jsonio.round_floats(2 / 3) == 0.666667  # 6 decimals by default
    assert jsonio.significant(1.2143456789e-16) == 1.21435e-16
    assert jsonio.significant(123.456789) == 123.457
    assert type(jsonio.round_floats(np.int64(3))) is int


def test_numpy_scalars_become_python_types() -> None:
    """Types, not values: np.True_ == True and np.int64(7) == 7, so == cannot tell them apart
    (and json.dumps refuses numpy booleans)."""
    out = jsonio.round_floats({"ok": np.bool_(True), "no": np.False_, "n": np.int32(7),
                               "x": np.float32(0.5), "deep": [{"flag": np.bool_(False)},
                                                              (np.bool_(True), np.uint8(2))]})
    types = {"ok": bool, "no": bool, "n": int, "x": float}
    assert {k: type(out[k]) for k in types} == types
    assert type(out["deep"][0]["flag"]) is bool
    assert [type(v) for v in out["deep"][1]] == [bool, int]
    assert out == {"ok": True, "no": False, "n": 7, "x": 0.5,
                   "deep": [{"flag": False}, [True, 2]]}
    assert json.loads(jsonio.dumps(out)) == out


def test_rounding_is_idempotent() -> None:
    rng = np.random.default_rng(0)
    for x in rng.random(2000) * 10.0 ** rng.integers(-3, 3, 2000):
        for d in (2, 3, 4, 6):
            once = jsonio.round_floats(float(x), d)
            assert jsonio.round_floats(once, d) == once


def test_write_json(tmp_path) -> None:
    path = tmp_path / "deep" / "m.json"
    jsonio.write_json(path, {"b": 1 / 3, "a": [np.float64(0.25)]}, digits=6)
    assert path.read_text() == '{\n  "a": [\n    0.25\n  ],\n  "b": 0.333333\n}\n'
    jsonio.write_json(None, {"a": 1})  # no path: nothing written, no error
    jsonio.write_json(path, {"x": 0.123456789})  # digits None: written as given
    assert json.loads(path.read_text()) == {"x": 0.123456789}


@pytest.mark.parametrize("name", sorted(FILE_DIGITS) + ["train_*.json"])
def test_committed_metrics_follow_the_rule(name: str) -> None:
    """Re-writing a committed metrics file by the rule changes no byte: the numbers it holds are
    exactly what the rule prints (so moving the writers onto lib.jsonio changed none)."""
    paths = sorted(METRICS.glob(name))
    if not paths:
        pytest.skip(f"no {name} in reports/metrics (stage not run)")
    digits = jsonio.STAGE_DIGITS["train"] if name.startswith("train_") else FILE_DIGITS[name]
    for path in paths:
        text = path.read_text(encoding="utf-8")
        payload = json.loads(text)
        rewritten = payload if digits is None else jsonio.round_floats(payload, digits)
        assert jsonio.dumps(rewritten) == text, path.name
