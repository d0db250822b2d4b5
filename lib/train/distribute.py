"""Training on several devices (``train.strategy``) and in mixed precision.

The default (``strategy: default``, ``mixed_precision: false``) adds nothing: ``training_scope``
enters no ``strategy.scope()`` and sets no dtype policy, so a one-machine ``make repro`` runs
exactly the code it ran before this module existed. The other settings:

- ``mirrored``: ``tf.distribute.MirroredStrategy`` over this machine's GPUs (or, with none, its
  logical CPU devices: the tests split one CPU in two to run it without a GPU);
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` across machines, each running the
  same command with its own ``TF_CONFIG`` (as Keras documents). TensorFlow must create this
  strategy before it runs its first op, so a program calls ``strategy_for`` first thing.

Three rules make a run on N replicas reproduce the one-device run at the same settings:

- batch: ``train.batch_size`` is the GLOBAL batch. Keras splits each batch of the input stream
  into N equal shares, one per replica (``per_replica_batch``), so the examples of step k are
  those of step k on one device, in the same order (the stream is a function of seed and epoch:
  ``lib.data.inputs.TrainStream``). A batch size that N does not divide is refused. (An epoch's
  last batch is short when the batch size does not divide the training set; Keras splits it as
  evenly as it can, and in that one step each replica's mean weighs its share equally.)
- learning rate: ``train.lr_scaling: none`` (default) keeps each stage's learning rate; the same
  global batch then gives the same loss curve as one device, by design. ``linear`` multiplies it
  by ``batch_size / LR_REFERENCE_BATCH`` (Goyal et al. 2017, "Accurate, large minibatch SGD"),
  for when the global batch is raised with the replica count.
- seeding: every worker calls ``lib.seeding.seed_everything`` with the same seed, so each starts
  from the same initial weights and draws the same augmentation; synchronous all-reduce then keeps
  the replicas identical.

BatchNormalization must see the global batch too: under a strategy ``prepare_model`` makes it
``synchronized`` (moments of the whole batch, all-reduced). Without that each replica normalises
by its own share and the curve drifts (measured on the tests' tiny CNN after 3 epochs: 0.02-0.05
in loss, against 7e-7 with it).

What still differs from one device, and why the tests compare with a tolerance: the gradient is a
sum of per-replica sums (the all-reduce adds in another order than one device's reduction), and
the synchronised moments come from per-replica sums. Both are float32 rounding (7e-7 in loss in
the tests, where accuracy and macro-F1 are equal), far below what changes a callback's decision.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

STRATEGIES = ("default", "mirrored", "multiworker")
LR_SCALINGS = ("none", "linear")
# The global batch the study's learning rates were tuned at (params.yaml's train.batch_size).
LR_REFERENCE_BATCH = 32
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


class DistributeSettings(Protocol):
    """The fields of ``lib.train.fit.TrainConfig`` this module reads."""

    strategy: str
    batch_size: int
    learning_rate: float
    lr_scaling: str
    mixed_precision: bool


def check_settings(strategy: str, lr_scaling: str, mixed_precision: Any) -> None:
    """Refuse an unknown strategy, scaling rule or a non-boolean mixed_precision, naming the key."""
    if strategy not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {', '.join(STRATEGIES)}, "
                         f"got {strategy!r}")
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"train.lr_scaling must be one of {', '.join(LR_SCALINGS)}, "
                         f"got {lr_scaling!r}")
    if not isinstance(mixed_precision, bool):
        raise ValueError(f"train.mixed_precision must be true or false, got {mixed_precision!r}")


def tf_config(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """TF_CONFIG, checked: a multi-worker run without it would silently train alone on each
    machine (TensorFlow then falls back to one worker), so a missing or malformed one stops here
    with what to set."""
    env = os.environ if environ is None else environ
    how = (f"set TF_CONFIG on every worker to JSON like {TF_CONFIG_EXAMPLE} (the same cluster "
           "everywhere, task.index 0, 1, ... one per machine; README 'Training on several "
           "devices')")
    raw = env.get("TF_CONFIG", "")
    if not raw.strip():
        raise ValueError(f"train.strategy=multiworker needs TF_CONFIG, which is not set: {how}")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {how}") from err
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG needs a 'cluster' and a 'task' mapping: {how}")
    workers = [a for job in ("chief", "worker") for a in cluster.get(job) or []]
    if not workers or not all(isinstance(a, str) and ":" in a for a in workers):
        raise ValueError(f"TF_CONFIG cluster needs 'worker' (and optionally 'chief') lists of "
                         f"'host:port' addresses, got {cluster!r}: {how}")
    kind, index = task.get("type"), task.get("index")
    jobs = cluster.get(kind) if isinstance(kind, str) else None
    if (not isinstance(jobs, list) or isinstance(index, bool) or not isinstance(index, int)
            or not 0 <= index < len(jobs)):
        raise ValueError(f"TF_CONFIG task {task!r} must name a job of the cluster "
                         f"({', '.join(cluster)}) and an index into its list: {how}")
    return config


def local_devices() -> list[str]:
    """This machine's GPUs, or else its logical CPU devices (one, unless a program split it)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


@functools.cache
def strategy_for(name: str) -> Any | None:
    """The process's one strategy for `name`; None for ``default`` (and no TensorFlow call).

    Cached: MultiWorkerMirroredStrategy may be created once per process only, before the first
    TensorFlow op; call this first thing in a program that trains with it.
    """
    check_settings(name, "none", False)
    if name == "default":
        return None
    if name == "multiworker":
        tf_config()  # refused before TensorFlow starts
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy(local_devices())
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise RuntimeError(
            "train.strategy=multiworker: TensorFlow had already run an op when the strategy was "
            "created; call lib.train.distribute.strategy_for('multiworker') at the start of the "
            f"program, before any model or dataset is made ({err})") from err
    _patch_keras_for_multiworker()
    return strategy


def replicas(strategy: Any | None) -> int:
    """Replicas that share each global batch (1 without a strategy)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def per_replica_batch(batch_size: int, strategy: Any | None) -> int:
    """Each replica's share of the global batch; a batch the replicas do not divide is refused
    (unequal shares would weigh the examples of the smaller ones more in the mean loss)."""
    n = replicas(strategy)
    if batch_size % n:
        raise ValueError(f"train.batch_size ({batch_size}) is the global batch and must be a "
                         f"multiple of the {n} replicas of this strategy; use e.g. "
                         f"{batch_size + n - batch_size % n}")
    return batch_size // n


def learning_rate(cfg: DistributeSettings) -> float:
    """The optimizer's learning rate under ``train.lr_scaling`` (none: the stage's own, as is)."""
    if cfg.lr_scaling == "linear":
        return cfg.learning_rate * cfg.batch_size / LR_REFERENCE_BATCH
    return cfg.learning_rate


@contextmanager
def _global_policy(name: str) -> Iterator[None]:
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextmanager
def training_scope(cfg: DistributeSettings) -> Iterator[Any | None]:
    """Where a model is built, compiled, fitted and reloaded: the strategy's scope (when one is
    set) and the ``mixed_float16`` global policy (when asked). With the defaults it enters
    nothing and calls no TensorFlow. Yields the strategy or None."""
    strategy = strategy_for(cfg.strategy)
    with ExitStack() as stack:
        if strategy is not None:
            per_replica_batch(cfg.batch_size, strategy)
            stack.enter_context(strategy.scope())
        if cfg.mixed_precision:
            stack.enter_context(_global_policy("mixed_float16"))
        yield strategy


def _layers(model: Any) -> Iterator[Any]:
    """Every layer inside `model`, nested models included, once each."""
    seen: set[int] = set()
    todo = list(getattr(model, "layers", []))
    while todo:
        layer = todo.pop()
        if id(layer) not in seen:
            seen.add(id(layer))
            yield layer
            todo += list(getattr(layer, "layers", []))


def prepare_model(model: Any, cfg: DistributeSettings) -> Any:
    """Adapt a built model to the settings before it is compiled (nothing with the defaults).

    - under a strategy, BatchNormalization normalises by the moments of the global batch
      (``synchronized``), as on one device, not of each replica's share;
    - in mixed precision the softmax head (the model's last layer, ``predictions``) computes in
      float32, so the scores and the loss are float32 (Keras's mixed-precision guide).
    """
    import keras

    if cfg.strategy != "default":
        for layer in _layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    if cfg.mixed_precision:
        classifier = getattr(model, "classifier", model)  # lib.train.guided's wrapper
        classifier.layers[-1].dtype_policy = "float32"
    return model


def distribute_input(dataset: Any, cfg: DistributeSettings) -> Any:
    """A dataset as Keras should split it across workers (unchanged unless multiworker).

    Multi-worker: shard by DATA. Every worker builds the same stream (same seed, stateless
    order); Keras cuts each global batch into per-replica shares and each worker keeps its own
    share, so together they see one device's batch. The AUTO default looks for input files
    first (there are none: the arrays are in memory) and warns before falling back to DATA;
    OFF would give every worker the whole batch.
    """
    if cfg.strategy != "multiworker":
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def scale_for_replicas(value: Any) -> Any:
    """A per-replica mean as a share of the global mean (divided by the replicas in sync), as
    Keras scales its compiled losses; unchanged (the same tensor) on one replica."""
    import tensorflow as tf

    n = tf.distribute.get_strategy().num_replicas_in_sync
    return value if n == 1 else value * tf.cast(1.0 / n, value.dtype)


def unscale_for_replicas(value: Any) -> Any:
    """The inverse of ``scale_for_replicas``, for reporting a loss (unchanged on one replica)."""
    import tensorflow as tf

    n = tf.distribute.get_strategy().num_replicas_in_sync
    return value if n == 1 else value * tf.cast(n, value.dtype)


def _patch_keras_for_multiworker() -> None:
    """Work around two Keras 3 bugs under MultiWorkerMirroredStrategy (keras-team/keras#20585:
    Keras 3's ``fit`` fails under this strategy as it ships); only the multi-worker path sees
    the patches (both check for that strategy), every other path keeps Keras's own code.

    - Before fitting, Keras builds the model symbolically from one batch, which it first
      all-reduces with ``strategy.reduce`` on the (images, labels) tuple; the multi-worker
      strategy cannot reduce a tuple. Only the batch's shapes and dtypes matter there, so the
      patch hands Keras this worker's own share instead.
    - After each step Keras averages the replicas' metric values with ``strategy.reduce("MEAN",
      value, axis=0)``, which fails on a scalar (every loss and metric here). The patch reduces
      a scalar over the replicas only (``axis=None``), as Keras does for one machine's replicas
      (the values are equal on all of them: Keras sums metric states across replicas).
    """
    from keras import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "_multiworker_patch", False):
        return
    build, reduce = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica

    def multiworker(strategy: Any) -> bool:
        return bool(trainer._collective_all_reduce_multi_worker(strategy))

    def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        strategy = self._distribute_strategy
        if (strategy is None or iterator is None or data_batch is not None
                or not multiworker(strategy)):
            return build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        else:
            return build(self, iterator=iterator)
        local = tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], batch)
        return build(self, data_batch=local)

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction not in ("auto", "mean") or not multiworker(strategy):
            return reduce(values, strategy, reduction)

        def one(value: Any) -> Any:
            if strategy.experimental_local_results(value)[0].shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return reduce(value, strategy, reduction)

        return tree.map_structure(one, values)

    reduce_per_replica._multiworker_patch = True  # type: ignore[attr-defined]
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
