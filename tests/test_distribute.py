"""Training on several devices (lib.train.distribute) without a cluster, and mixed precision.

- two logical CPU devices under ``train.strategy: mirrored`` and two worker processes on
  localhost under ``train.strategy: multiworker`` (TF_CONFIG, free ports chosen here) each give
  the one-device loss curve at the same global batch, plain and mask-guided
  (tests/distribute_scenario.py runs each in its own process: TensorFlow must see the logical
  devices or TF_CONFIG before it starts);
- the settings are validated, the defaults enter no strategy and no dtype policy, a global batch
  the replicas do not divide and a missing or malformed TF_CONFIG are refused with what to set;
- ``train.mixed_precision: true`` builds float16 layers under the ``mixed_float16`` policy with a
  float32 softmax head, so the scores and the loss are float32.

Tolerance: per-epoch losses agree to TOLERANCE, not bit for bit. On N replicas the gradient is
the all-reduced sum of per-replica sums and BatchNormalization's global moments come from
per-replica sums, so float32 additions happen in another order than on one device (measured:
7e-7 after 3 epochs, with accuracy and macro-F1 equal).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from lib.config import load_params
from lib.train import distribute
from lib.train.fit import TrainConfig, compile_model
from tests.conftest import REPO

TOLERANCE = 1e-4  # absolute, on each epoch's training and validation loss (measured 7e-7)
TIMEOUT = 300  # seconds for the three scenario processes together (about 45 s of CPU)
CURVES = {"plain": ("loss", "val_loss"), "guided": ("loss", "val_loss", "localisation",
                                                     "val_localisation")}


def _env(**extra: str) -> dict[str, str]:
    """This environment without a TF_CONFIG of its own, plus `extra`; one TensorFlow thread per
    process unless set (three processes share the cores; the mirrored one alone: 25 s instead
    of 32 s, measured)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    env.update({"PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}, **extra)
    return env


def _free_ports(n: int) -> list[int]:
    """n ports free on localhost now (held open together, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start(mode: str, out: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.distribute_scenario", mode, str(out)],
                            cwd=REPO, env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The mirrored process and the two multi-worker processes, run at the same time; every
    process is killed if it is still running when this returns or fails."""
    tmp = tmp_path_factory.mktemp("distribute")
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = {"mirrored": _start("mirrored", tmp / "mirrored.json")}
    for i in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs[f"worker{i}"] = _start("worker", tmp / f"worker{i}.json", TF_CONFIG=config)
    deadline = time.monotonic() + TIMEOUT
    try:
        logs = {}
        for name, proc in procs.items():
            try:
                logs[name] = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
            except subprocess.TimeoutExpired:
                pytest.fail(f"the scenarios did not finish in {TIMEOUT} s ({name} was running)")
            assert proc.returncode == 0, f"{name} failed:\n{logs[name][-4000:]}"
        return {name: json.loads((tmp / f"{name}.json").read_text()) for name in procs}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def _max_gap(a: dict[str, list[float]], b: dict[str, list[float]], keys: tuple) -> float:
    assert all(len(a[k]) == len(b[k]) > 0 for k in keys)
    return max(float(np.max(np.abs(np.subtract(a[k], b[k])))) for k in keys)


@pytest.mark.slow  # a training process with two logical CPUs: about 20 s of CPU
def test_mirrored_on_two_logical_cpus_gives_the_one_device_curve(scenarios) -> None:
    run = scenarios["mirrored"]
    assert run["replicas"] == 2
    for arm, suffix in (("plain", ""), ("guided", "_guided")):
        one, two = run[f"one_device{suffix}"], run[f"mirrored{suffix}"]
        assert one["loss"][-1] < one["loss"][0]  # it learns: the curves are not flat
        gap = _max_gap(one, two, CURVES[arm])
        assert gap <= TOLERANCE, f"{arm}: mirrored differs from one device by {gap:.2e}"
    assert "train.batch_size (15)" in run["odd_batch_error"]
    assert "multiple of the 2 replicas" in run["odd_batch_error"]


@pytest.mark.slow  # two worker processes on localhost, started and killed by the fixture
def test_two_localhost_workers_give_the_one_device_curve(scenarios) -> None:
    one = scenarios["mirrored"]["one_device"]
    for name in ("worker0", "worker1"):
        run = scenarios[name]
        assert run["replicas"] == 2
        gap = _max_gap(one, run["multiworker"], CURVES["plain"])
        assert gap <= TOLERANCE, f"{name} differs from one device by {gap:.2e}"
    # synchronous training: both workers hold the same model, so they log the same curve
    assert _max_gap(scenarios["worker0"]["multiworker"], scenarios["worker1"]["multiworker"],
                    CURVES["plain"]) <= TOLERANCE


# ---- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("strategy", "gpus", "default, mirrored, multiworker"),
    ("lr_scaling", "sqrt", "none, linear"),
    ("mixed_precision", "yes", "true or false"),
])
def test_bad_settings_name_the_key_and_the_allowed_values(key: str, value: Any,
                                                          allowed: str) -> None:
    with pytest.raises(ValueError, match=f"train.{key} must be .*{allowed}"):
        TrainConfig.from_params({key: value}, epochs=1, learning_rate=0.1)


def test_the_defaults_are_params_yaml_s_and_enter_nothing() -> None:
    """The default path is today's: no strategy scope, no dtype policy, the same objects."""
    import keras
    import tensorflow as tf

    train = load_params(REPO / "params.yaml")["train"]
    assert (train["strategy"], train["lr_scaling"], train["mixed_precision"]) == (
        "default", "none", False)
    cfg = TrainConfig.from_params(train, epochs=1, learning_rate=0.002)
    assert (cfg.strategy, cfg.lr_scaling, cfg.mixed_precision) == ("default", "none", False)
    assert distribute.strategy_for("default") is None
    policy = keras.config.dtype_policy().name
    with distribute.training_scope(cfg) as strategy:
        assert strategy is None and not tf.distribute.has_strategy()
        assert keras.config.dtype_policy().name == policy
    dataset = object()
    assert distribute.distribute_input(dataset, cfg) is dataset
    assert distribute.learning_rate(cfg) is cfg.learning_rate


def test_the_global_batch_must_split_evenly_across_replicas() -> None:
    four = SimpleNamespace(num_replicas_in_sync=4)
    assert distribute.per_replica_batch(32, four) == 8
    assert distribute.per_replica_batch(30, None) == 30
    with pytest.raises(ValueError, match=r"train.batch_size \(30\) is the global batch and must "
                                         r"be a multiple of the 4 replicas.*use e.g. 32"):
        distribute.per_replica_batch(30, four)


def test_linear_lr_scaling_follows_the_global_batch() -> None:
    base = dict(epochs=1, learning_rate=0.002, batch_size=128)
    assert distribute.learning_rate(TrainConfig(**base)) == 0.002
    assert distribute.learning_rate(TrainConfig(**base, lr_scaling="linear")) == pytest.approx(
        0.002 * 128 / distribute.LR_REFERENCE_BATCH)


@pytest.mark.parametrize(("value", "message"), [
    (None, "needs TF_CONFIG, which is not set"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', "needs a 'cluster' and a 'task'"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "'host:port'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     "must name a job of the cluster"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "must name a job of the cluster"),
])
def test_a_missing_or_malformed_tf_config_says_what_to_set(value: str | None,
                                                           message: str) -> None:
    env = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(ValueError, match=message) as err:
        distribute.tf_config(env)
    assert "set TF_CONFIG on every worker" in str(err.value) and '"task"' in str(err.value)


def test_tf_config_is_checked_before_a_multiworker_strategy_is_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ok = '{"cluster": {"worker": ["h1:2222", "h2:2222"]}, "task": {"type": "worker", "index": 1}}'
    assert distribute.tf_config({"TF_CONFIG": ok})["task"]["index"] == 1
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="train.strategy=multiworker needs TF_CONFIG"):
        distribute.strategy_for("multiworker")


# ---- mixed precision ---------------------------------------------------------------------------
def test_mixed_precision_keeps_the_head_and_the_loss_in_float32(tmp_path: Path) -> None:
    """Under the policy: float16 convolutions, a float32 softmax, a loss-scaling optimizer, a
    finite float32 loss through lib.train.fit.fit; the global policy is restored afterwards."""
    import keras
    import tensorflow as tf

    from lib.data.inputs import TrainStream
    from lib.train.fit import fit
    from lib.train.guided import GuidedClassifier
    from lib.train.models import ScratchConfig, build_scratch

    cfg = TrainConfig(epochs=1, learning_rate=0.01, batch_size=8, mixed_precision=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 16, 16, 1)).astype("float32")
    y = np.arange(16) % 4
    before = keras.config.dtype_policy().name
    with distribute.training_scope(cfg):
        assert keras.config.dtype_policy().name == "mixed_float16"
        model = build_scratch((16, 16, 1), 4, ScratchConfig(blocks=2, filters=4))
        compile_model(model, cfg)
        assert model.get_layer("block1_conv").compute_dtype == "float16"
        assert model.get_layer("predictions").compute_dtype == "float32"
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model(x[:2]).dtype.name == "float32"
        val = tf.data.Dataset.from_tensor_slices((x, np.eye(4, dtype="float32")[y])).batch(8)
        result = fit(model, TrainStream(x, y, 4, 8, 0), val, cfg, tmp_path / "run", verbose=0)
        assert np.isfinite(result.history["loss"]).all()
        guided = GuidedClassifier(model, "block2_relu", 0.1)
        logits, cam = guided.logits_and_cam(x[:2], np.array([0, 1]), training=False)
        assert logits.dtype.name == cam.dtype.name == "float32"
    assert keras.config.dtype_policy().name == before
