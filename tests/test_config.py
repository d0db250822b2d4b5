"""params.yaml is the only home of a default: every config's defaults equal it, one key check.

A dataclass default that differs from params.yaml is a second, silent home of a setting: code
that builds the config without params (a test, a notebook run on its own, the app) would use
another value than the study. Each config is built from its group by one convention,
``Config.from_params(group, ...)`` (lib.config.from_group), whose unknown-key error names the key,
its group and the keys the group knows.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

import pytest

from lib.config import RENAMED, check_keys, check_renamed, load_params
from lib.data.phantom import PhantomConfig
from lib.data.prepare import PrepareConfig
from lib.eda.analysis import EdaConfig
from lib.evaluate.metrics import EvaluateConfig
from lib.explain.methods import SaliencyConfig, parse_methods
from lib.explain.study import ExplainConfig
from lib.train.augment import AugmentConfig, PreviewConfig
from lib.train.fit import TrainConfig, TransferConfig
from lib.train.models import ScratchConfig
from lib.train.pretrain import PretrainConfig
from tests.conftest import REPO

PARAMS = load_params(REPO / "params.yaml")
# config class -> its params.yaml group; fields that come from elsewhere ("seed": the top-level
# seed) are compared with their source below.
CONFIGS: dict[type, str] = {
    PrepareConfig: "prepare", PhantomConfig: "phantom", EdaConfig: "eda",
    AugmentConfig: "augment", PreviewConfig: "augment_preview", TrainConfig: "train",
    ScratchConfig: "train_scratch", TransferConfig: "train_transfer", PretrainConfig: "pretrain",
    EvaluateConfig: "evaluate", ExplainConfig: "explain", SaliencyConfig: "explain",
}
TOP_LEVEL = {"seed"}  # a config field of this name without a group key is params.yaml's seed:
# Fields set by code, never by params.yaml: a variant's switches, the backbone of pretrain (from
# train_transfer:), the nested saliency config and tf-keras-vis's batch (an implementation knob).
NOT_PARAMS = {(ScratchConfig, "use_dropout"), (ScratchConfig, "use_batchnorm"),
              (PretrainConfig, "backbone"), (ExplainConfig, "saliency"),
              (SaliencyConfig, "batch_size")}


def default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def normal(cls: type, name: str, value: Any) -> Any:
    """params.yaml's spelling of a value, as the config stores it."""
    if (cls, name) == (ExplainConfig, "methods"):
        return tuple(parse_methods(value))
    if (cls, name) == (PhantomConfig, "lesion_fraction"):
        return tuple(value)
    if (cls, name) == (PhantomConfig, "sequences"):
        return {k: float(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("cls", list(CONFIGS), ids=lambda c: c.__name__)
def test_every_default_is_params_yaml_s_value(cls: type) -> None:
    group = PARAMS[CONFIGS[cls]]
    for f in fields(cls):
        if (cls, f.name) in NOT_PARAMS or default(f) is MISSING:
            continue
        if f.name in group:
            expected = normal(cls, f.name, group[f.name])
        elif f.name in TOP_LEVEL:
            expected = PARAMS[f.name]
        else:
            pytest.fail(f"{cls.__name__}.{f.name} has a default but params.yaml's "
                        f"'{CONFIGS[cls]}:' group has no '{f.name}'")
        assert default(f) == expected, (f"{cls.__name__}.{f.name} defaults to {default(f)!r}, "
                                        f"params.yaml says {expected!r}")


@pytest.mark.parametrize("cls", list(CONFIGS), ids=lambda c: c.__name__)
def test_every_group_key_is_read_by_its_config(cls: type) -> None:
    """No key of a group is left to a config that never reads it (stage keys excepted)."""
    group = PARAMS[CONFIGS[cls]]
    names = {f.name for f in fields(cls)}
    others = {"train_scratch": {"input_size", "epochs", "learning_rate"}}.get(CONFIGS[cls], set())
    if cls in (ExplainConfig, SaliencyConfig):  # the explain: group is shared by the two
        names |= {f.name for f in fields(ExplainConfig)} | {f.name for f in fields(SaliencyConfig)}
    assert not set(group) - names - others, (cls.__name__, sorted(set(group) - names - others))


def test_the_default_check_sees_a_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = {**PARAMS, "train": {**PARAMS["train"], "patience": PARAMS["train"]["patience"] + 1}}
    monkeypatch.setitem(globals(), "PARAMS", changed)
    with pytest.raises(AssertionError, match="TrainConfig.patience defaults to"):
        test_every_default_is_params_yaml_s_value(TrainConfig)


@pytest.mark.parametrize("cls", list(CONFIGS)[:-1], ids=lambda c: c.__name__)
def test_from_params_of_the_committed_group_works_and_an_unknown_key_is_named(cls: type) -> None:
    name = CONFIGS[cls]
    extra = {"seed": 1} if cls in (PrepareConfig, EdaConfig, EvaluateConfig, ExplainConfig) else {}
    if cls is ScratchConfig:
        extra = {"variant": "batchnorm"}
    if cls is PretrainConfig:
        extra = {"backbone": "MobileNetV3Small"}
    if cls is TrainConfig:
        extra = {"epochs": 1, "learning_rate": 0.1}
    cls.from_params(dict(PARAMS[name]), **extra)
    with pytest.raises(ValueError, match=rf"'{name}:' has unknown key\(s\) nope; known: "):
        cls.from_params({**PARAMS[name], "nope": 1}, **extra)


def test_a_renamed_key_is_refused_with_its_new_name() -> None:
    old = {**PARAMS, "seeds": [42]}
    del old["train_seeds"]
    with pytest.raises(ValueError, match="'seeds:' was renamed to 'train_seeds'"):
        check_renamed(old)
    explain = {**PARAMS, "explain": {**PARAMS["explain"], "method": "gradcam"}}
    del explain["explain"]["gallery_method"]
    with pytest.raises(ValueError, match="'explain.method' was renamed to 'explain.gallery_m"):
        check_renamed(explain)
    check_renamed(PARAMS)  # the committed file uses only the new names
    assert all(new != name for (_, name), new in RENAMED.items())


def test_check_keys_names_the_key_the_group_and_the_known_keys() -> None:
    with pytest.raises(ValueError, match=r"'g:' has unknown key\(s\) b, c; known: a"):
        check_keys({"a": 1, "b": 2, "c": 3}, "g", ["a"])
    with pytest.raises(ValueError, match="must be a mapping"):
        check_keys(["a"], "g", ["a"])
