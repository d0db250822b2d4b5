"""Where things live and how parameters are read, in one place so stages and notebooks agree."""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import yaml

ROOT_ENV = "BRAIN_STUDY_ROOT"


def repo_root(start: Path | None = None) -> Path:
    """The folder holding params.yaml: $BRAIN_STUDY_ROOT, else the nearest parent of `start`/cwd."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder
    # Installed lib used from outside a checkout: fall back to the source tree it came from.
    return Path(__file__).resolve().parent.parent


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """Read params.yaml; a missing file is an error that says where we looked."""
    path = Path(path) if path else repo_root() / "params.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"params file not found: {path}. Run from the repository root or pass --params."
        )
    with path.open() as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a mapping of parameter groups, got {type(params)}")
    return params


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """One parameter group, with a clear error when it is missing."""
    if name not in params or not isinstance(params[name], dict):
        raise KeyError(f"params.yaml has no '{name}:' group; see the committed params.yaml")
    return params[name]


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise a ValueError naming the parameter unless `value` is an integer >= `minimum`.

    numpy integers count (they register as numbers.Integral); booleans do not.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
