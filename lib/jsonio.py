"""Metrics JSON: the one way a stage writes its numbers, and the one rounding rule they follow.

(Named jsonio, not io, so that it never shadows the standard library's io module.)

The rule: every float a stage writes is rounded to a fixed number of *decimal places* (NaN ->
null, numpy scalars -> plain numbers, keys -> strings), ``STAGE_DIGITS[stage]`` of them:

- train (train_*.json, pretrain.json) and evaluate (evaluate.json): 6 decimals, finer than one
  image in a thousand moves an accuracy, so rounding never hides a difference between models;
- explain (explain.json): 4 decimals; its scores are means over tens to hundreds of images whose
  95 % CIs are wider than 0.01, and 4 decimals keep the file short.

Statistics spanning many orders of magnitude (test statistics and p-values: eda.json's
Kruskal-Wallis) keep ``SIGNIFICANT`` significant digits instead (``significant``), since a
p-value of 1e-16 rounded to 6 decimals would read 0. The EDA's descriptive numbers are rounded
field by field to the decimals they are read at (``round_floats(x, 2)`` etc.) in lib.eda.

``write_json`` writes sorted, indented JSON with a final newline: stable bytes for DVC and diffs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

DIGITS = 6  # the default: decimals of every metric in [0, 1] (and of temperatures, NLL, ...)
STAGE_DIGITS: dict[str, int] = {"train": DIGITS, "evaluate": DIGITS, "explain": 4}
SIGNIFICANT = 6  # significant digits of test statistics and p-values


def round_floats(value: Any, digits: int = DIGITS) -> Any:
    """Floats rounded to `digits` decimals (NaN -> None) all the way down; dict keys as strings,
    tuples as lists, numpy integers and booleans as Python ones; everything else as it is."""
    if isinstance(value, dict):
        return {str(k): round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(v, digits) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else round(float(value), digits)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def significant(value: float, digits: int = SIGNIFICANT) -> float:
    """A float to `digits` significant digits (1.23456789e-16 -> 1.23457e-16)."""
    return float(f"{float(value):.{digits}g}")


def dumps(payload: Any) -> str:
    """The exact text ``write_json`` writes: sorted keys, two-space indent, final newline."""
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


def write_json(path: Path | str | None, payload: Any, digits: int | None = None) -> None:
    """Write `payload` (rounded by ``round_floats(payload, digits)`` when digits is given);
    nothing when path is empty, so a notebook run without a metrics path writes nothing."""
    if not path:
        return
    if digits is not None:
        payload = round_floats(payload, digits)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(payload), encoding="utf-8")
