"""bench/peer.py: the peer model's shape, the time budget that stops a fit, and the printed ratio.

Fast unit tests only; the comparison itself trains two models and runs in `make bench`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import numpy as np
import pytest

from tests.conftest import REPO


def _load_peer() -> ModuleType:
    """bench/ is not a package: load the script as a module."""
    spec = importlib.util.spec_from_file_location("bench_peer", REPO / "bench" / "peer.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peer"] = module
    spec.loader.exec_module(module)
    return module


peer = _load_peer()


def _count(model: keras.Model, kind: type) -> int:
    return sum(1 for layer in model.layers if type(layer) is kind)


def test_peer_model_is_the_recipe_with_a_softmax_head() -> None:
    model = peer.make_keras_io_model((64, 64, 1), 4)
    assert model.input_shape == (None, 64, 64, 1)
    assert model.output_shape == (None, 4)
    L = keras.layers
    assert _count(model, L.Rescaling) == 1
    assert _count(model, L.Conv2D) == 4  # the strided entry conv + three 1x1 residual projections
    assert _count(model, L.SeparableConv2D) == 7  # 2 per block x 3, then the 1024 one
    assert _count(model, L.BatchNormalization) == 8
    assert _count(model, L.MaxPooling2D) == 3
    assert _count(model, L.Add) == 3
    assert _count(model, L.GlobalAveragePooling2D) == 1
    entry = next(layer for layer in model.layers if type(layer) is L.Conv2D)
    assert (entry.filters, entry.strides) == (128, (2, 2))
    seps = [layer.filters for layer in model.layers if type(layer) is L.SeparableConv2D]
    assert seps == [256, 256, 512, 512, 728, 728, 1024]
    (dropout,) = [layer for layer in model.layers if type(layer) is L.Dropout]
    assert dropout.rate == 0.25
    assert model.layers[-1].activation is keras.activations.softmax
    out = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 1)),
                           training=False))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_peer_batchnorm_momentum_is_the_recipe_s_unless_given() -> None:
    def momenta(model: keras.Model) -> set[float]:
        return {layer.momentum for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization)}

    assert momenta(peer.make_keras_io_model((32, 32, 1), 4)) == {0.99}
    assert momenta(peer.make_keras_io_model((32, 32, 1), 4, bn_momentum=0.9)) == {0.9}


class _SlowBatches(keras.callbacks.Callback):
    """Makes every batch take at least `pause` seconds, so the budget test is not about speed."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        time.sleep(self.pause)


def _tiny_fit(epochs: int, callbacks: list[keras.callbacks.Callback]) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.zeros((64, 4), dtype="float32")
    y = np.zeros(64, dtype="int64")
    model.fit(x, y, batch_size=8, epochs=epochs, callbacks=callbacks, verbose=0)


def test_time_budget_stops_a_fit_early() -> None:
    clock = peer.TimeBudget(0.3)
    start = time.perf_counter()
    _tiny_fit(1000, [_SlowBatches(0.05), clock])
    assert clock.stopped
    assert clock.elapsed >= 0.3
    assert clock.epochs < 1000 and clock.batches < 8 * 1000
    assert time.perf_counter() - start < 30


def test_time_budget_none_only_measures() -> None:
    clock = peer.TimeBudget(None)
    _tiny_fit(2, [clock])
    assert (clock.stopped, clock.epochs, clock.batches) == (False, 2, 16)
    assert clock.elapsed > 0


@pytest.mark.parametrize("seconds", [0, -1.0])
def test_time_budget_refuses_a_non_positive_budget(seconds: float) -> None:
    with pytest.raises(ValueError, match="> 0 seconds"):
        peer.TimeBudget(seconds)


def _comparison(ours_f1: float, peer_f1: float) -> Any:
    ours = peer.Score("ours: scratch_batchnorm", ours_f1, 60.0, 15, 9, 106_388)
    other = peer.Score("peer: keras-io Xception-mini", peer_f1, 60.8, 2, 1, 2_731_836)
    return peer.Comparison("batchnorm", ours, other, 60.0, 64, 32, 42, 1360, 240, 400,
                           "the study's policy", 0.9)


def test_ratio_and_printed_lines() -> None:
    result = _comparison(0.6, 0.3)
    assert result.ratio == pytest.approx(2.0)
    assert result.target_met
    text = "\n".join(result.lines())
    assert "ratio ours / peer = 2.00  (target ours >= peer: met)" in text
    assert "0.600" in text and "0.300" in text and "2,731,836" in text
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["ratio"] == 2.0 and payload["target_met"] is True
    assert payload["ours"]["epochs"] == 15 and payload["peer"]["seconds"] == 60.8


def test_ratio_edge_cases() -> None:
    assert not _comparison(0.2, 0.4).target_met
    assert "NOT met" in _comparison(0.2, 0.4).lines()[-1]
    assert peer.f1_ratio(0.5, 0.0) == math.inf
    assert math.isnan(peer.f1_ratio(0.0, 0.0))
    assert _comparison(0.5, 0.0).to_dict()["ratio"] is None  # JSON has no inf
    assert _comparison(0.0, 0.0).target_met  # equal scores meet "ours >= peer"


def test_best_variant_reads_the_training_metrics(tmp_path: Path) -> None:
    """The mean over seeds decides: dropout has the best single seed, batchnorm the best mean."""
    seeds = {"none": [0.49, 0.50], "batchnorm": [0.58, 0.56], "dropout": [0.26, 0.70]}
    for variant, f1 in seeds.items():
        (tmp_path / f"train_scratch_{variant}.json").write_text(json.dumps({"per_seed": {
            f"s{42 + i}": {"val": {"macro_f1": v}} for i, v in enumerate(f1)}}))
    assert peer.best_variant(tmp_path) == "batchnorm"
    with pytest.raises(FileNotFoundError, match="train_scratch"):
        peer.best_variant(tmp_path / "missing")
