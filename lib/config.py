"""Where things live and how parameters are read, in one place so stages and notebooks agree."""

from __future__ import annotations

import numbers
import os
from dataclasses import fields as dataclass_fields
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
    check_renamed(params)
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


# Keys renamed since an earlier release: (group or None for a top-level key, old) -> new name.
# A params.yaml that still uses an old name stops with the new one in the message.
RENAMED: dict[tuple[str | None, str], str] = {
    (None, "seeds"): "train_seeds",
    (None, "augmentation"): "augment_preview",
    ("explain", "method"): "gallery_method",
    ("train_scratch", "image_size"): "input_size",
    ("train_transfer", "image_size"): "input_size",
    ("pretrain", "image_size"): "input_size",
}


def check_renamed(params: dict[str, Any]) -> None:
    """Refuse a params.yaml that uses a key under its old name, saying the new one."""
    for (group, old), new in RENAMED.items():
        tree = params if group is None else params.get(group)
        if isinstance(tree, dict) and old in tree and new not in tree:
            where = f"'{group}.{old}'" if group else f"'{old}:'"
            raise ValueError(f"params.yaml: {where} was renamed to "
                             f"'{f'{group}.{new}' if group else new}'; rename it in your params")


def check_keys(group: Any, name: str, known: Any) -> None:
    """Raise a ValueError naming every unknown key, its group and the keys the group knows.

    A typo in params.yaml must stop the stage, not silently fall back to a default.
    """
    if not isinstance(group, dict):
        raise ValueError(f"params.yaml '{name}:' must be a mapping of keys, got {group!r}")
    known = sorted(known)
    unknown = sorted(set(group) - set(known))
    if unknown:
        moved = [f"'{k}' is now '{RENAMED[(name, k)]}'" for k in unknown if (name, k) in RENAMED]
        raise ValueError(f"params.yaml '{name}:' has unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(known)}" + (f" ({'; '.join(moved)})" if moved else ""))


def from_group(cls: Any, group: Any, name: str, *, others: Any = (), **values: Any) -> Any:
    """`cls` from one params.yaml group: its fields from the group, `values` from elsewhere.

    `others` are keys of the same group that another reader consumes (e.g. a stage's input size
    beside the model's architecture); every other key must be a field of `cls`. The one
    `from_params` convention of every config.
    """
    names = {f.name for f in dataclass_fields(cls)}
    check_keys(group, name, (names - set(values)) | set(others))
    return cls(**{k: v for k, v in group.items() if k in names}, **values)
