"""A peer side by side: our scratch CNN against the keras-io "Image classification from scratch"
recipe, on the same data split and for the same wall-clock training seconds.

Why: a test macro-F1 says little on its own. A well-known small model trained for the same
time on the same images says whether our architecture and training choices earn their keep
(the target is ours >= peer on the test split).

The peer is François Chollet's keras-io example
``examples/vision/image_classification_from_scratch.py`` in github.com/keras-team/keras-io
(https://keras.io/examples/vision/image_classification_from_scratch/), its Keras 3 revision: a
small Xception, entry Conv2D 128/2, residual blocks of 256, 512 and 728 separable filters,
SeparableConv2D 1024, global average pooling, Dropout 0.25, Adam 3e-4. Written here from that
description, not copied. Adapted only where the data needs it: 4 classes, so a softmax Dense and
categorical cross-entropy (our pipeline yields one-hot labels) instead of one logit and binary
cross-entropy; one grayscale channel instead of RGB; our input size (``train_scratch.image_size``)
instead of 180 px.

Fairness, in one place (:func:`compare`):
- both models read the same manifest rows through the same ``lib.train.fit.TrainingData`` /
  ``lib.data.inputs.make_dataset`` pipeline: same train/val/test split, same size, same batch size
  (``train.batch_size``, not the recipe's 128), same shuffling seed;
- both see the same augmentation: the study's policy (``augment:`` in params.yaml, a superset
  of the recipe's flip + rotation), a fresh ``AugmentPolicy`` with the same seed for each, so the
  two streams of augmented batches are identical;
- both go through ``lib.train.fit`` (best epoch on validation kept, the same per-epoch
  checkpointing overhead) and are scored by sklearn's macro-F1 on the test split;
- ours trains exactly as ``train_scratch`` does (its variant, its TrainConfig, its seed); its
  wall-clock training time (fit's start to its end, validation included) is the peer's
  budget, enforced by :class:`TimeBudget`. The peer keeps its recipe's optimiser (Adam 3e-4,
  constant: no early stop, no LR drop) and runs until the budget is spent;
- one training-length adaptation, the same one ours has: BatchNormalization momentum 0.9
  (``lib.train.models.SCRATCH_BN_MOMENTUM``) instead of Keras's 0.99. In the few hundred steps a
  budget allows, 0.99 leaves the moving statistics near their initial values and inference
  falls to one class (one 60 s probe, 40 per class of the four-sequence phantom: train accuracy
  0.88 but test macro-F1 0.10 with 0.99; 0.50 with 0.9). ``--peer-bn-momentum 0.99`` runs the
  recipe's value.

CLI: ``python bench/peer.py --params params.yaml`` (needs data/raw and the prepare stage's
manifest), or ``--tiny 8`` for a throwaway phantom with 8 images per class.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras

from lib.train.models import SCRATCH_BN_MOMENTUM

REPO = Path(__file__).resolve().parent.parent

PEER_NAME = "keras-io Xception-mini"
PEER_LEARNING_RATE = 3e-4
PEER_ENTRY_FILTERS = 128
PEER_BLOCK_FILTERS = (256, 512, 728)
PEER_TOP_FILTERS = 1024
PEER_DROPOUT = 0.25
EPOCH_CAP = 100_000  # the peer stops on time, never on epochs
RECIPE_BN_MOMENTUM = 0.99  # Keras's BatchNormalization default, which the recipe keeps
CHANNELS = 1  # both models take the pipeline's grayscale (the recipe's RGB is not in the data)


def make_keras_io_model(input_shape: tuple[int, int, int], n_classes: int,
                        bn_momentum: float = RECIPE_BN_MOMENTUM) -> keras.Model:
    """The keras-io recipe's ``make_model`` with a softmax head for `n_classes` (see module doc).

    Layer names are Keras's defaults, as in the recipe; 0-255 pixels in, like every model here.
    `bn_momentum` defaults to the recipe's (Keras's) 0.99; :func:`compare` passes ours.
    """
    from keras import layers

    def bn() -> keras.layers.Layer:
        return layers.BatchNormalization(momentum=bn_momentum)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(PEER_ENTRY_FILTERS, 3, strides=2, padding="same")(x)
    x = bn()(x)
    x = layers.Activation("relu")(x)
    previous = x  # set aside for the residual
    for size in PEER_BLOCK_FILTERS:
        for _ in range(2):
            x = layers.Activation("relu")(x)
            x = layers.SeparableConv2D(size, 3, padding="same")(x)
            x = bn()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(size, 1, strides=2, padding="same")(previous)
        x = layers.add([x, residual])
        previous = x
    x = layers.SeparableConv2D(PEER_TOP_FILTERS, 3, padding="same")(x)
    x = bn()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(PEER_DROPOUT)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="keras_io_xception_mini")


class TimeBudget(keras.callbacks.Callback):
    """Stop a fit once its wall-clock time passes `seconds` (None: only measure).

    Checked at every batch end, so a budget is never overrun by more than one batch plus the
    epoch's validation pass (Keras still validates the cut epoch). The clock starts at
    ``on_train_begin`` and stops at ``on_train_end``: graph tracing, the first epoch's decode and
    cache fill, validation and checkpoints all count, for both models alike.
    """

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        if seconds is not None and not seconds > 0:
            raise ValueError(f"a time budget must be > 0 seconds, got {seconds!r}")
        self.seconds = seconds
        self.start = 0.0
        self.elapsed = 0.0
        self.epochs = 0  # epochs started, a cut last one included
        self.batches = 0
        self.stopped = False  # True when the budget, not the epochs or early stopping, ended it

    def _spent(self) -> bool:
        self.elapsed = time.perf_counter() - self.start
        return self.seconds is not None and self.elapsed >= self.seconds

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.start = time.perf_counter()
        self.elapsed, self.epochs, self.batches, self.stopped = 0.0, 0, 0, False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs += 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches += 1
        if self._spent():
            self.stopped = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._spent():  # a validation pass may have used up the rest: start no new epoch
            self.stopped = True
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.elapsed = time.perf_counter() - self.start


# --------------------------------------------------------------------------------------------
# Scores and how they are printed
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    """One model's side of the comparison."""

    model: str
    macro_f1: float  # test split, sklearn f1_score(average="macro")
    seconds: float  # wall-clock training time (TimeBudget's clock)
    epochs: int  # epochs started
    best_epoch: int  # the epoch kept (best on validation), 0-based
    params: int


def f1_ratio(ours: float, peer: float) -> float:
    """ours / peer; inf when only the peer scores 0, nan when both do (no ratio exists)."""
    if peer > 0:
        return ours / peer
    return math.inf if ours > 0 else math.nan


@dataclass(frozen=True)
class Comparison:
    """Both scores on the same data and seconds, and what they were measured on."""

    variant: str
    ours: Score
    peer: Score
    budget_s: float
    image_size: int
    batch_size: int
    seed: int
    n_train: int
    n_val: int
    n_test: int
    augmentation: str
    peer_bn_momentum: float

    @property
    def ratio(self) -> float:
        return f1_ratio(self.ours.macro_f1, self.peer.macro_f1)

    @property
    def target_met(self) -> bool:
        """The target: ours >= peer on test macro-F1."""
        return self.ours.macro_f1 >= self.peer.macro_f1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a non-finite ratio becomes null)."""
        out = asdict(self)
        out["ratio"] = round(self.ratio, 6) if math.isfinite(self.ratio) else None
        out["target_met"] = self.target_met
        return out

    def lines(self) -> list[str]:
        """The side-by-side table and the ratio line, as printed by the CLI and `make bench`."""
        head = (f"same data ({self.n_train} train / {self.n_val} val / {self.n_test} test, "
                f"{self.image_size} px, batch {self.batch_size}, seed {self.seed}, "
                f"augmentation: {self.augmentation}); peer budget {self.budget_s:.1f} s, "
                f"peer BatchNorm momentum {self.peer_bn_momentum}")
        rows = [head, f"  {'model':<36} {'test macro-F1':>13} {'train s':>8} {'epochs':>7} "
                      f"{'best':>5} {'params':>10}"]
        for s in (self.ours, self.peer):
            rows.append(f"  {s.model:<36} {s.macro_f1:13.3f} {s.seconds:8.1f} {s.epochs:7d} "
                        f"{s.best_epoch:5d} {s.params:10,d}")
        ratio = f"{self.ratio:.2f}" if math.isfinite(self.ratio) else str(self.ratio)
        verdict = "met" if self.target_met else "NOT met"
        rows.append(f"ratio ours / peer = {ratio}  (target ours >= peer: {verdict})")
        return rows


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------
def best_variant(metrics_dir: Path) -> str:
    """The scratch variant with the best mean validation macro-F1 over its seeds in
    train_scratch_*.json (the study's one rule, ``lib.evaluate.metrics.best_configuration``)."""
    from lib.evaluate.metrics import best_configuration

    scores = {}
    for path in sorted(Path(metrics_dir).glob("train_scratch_*.json")):
        variant = path.stem.removeprefix("train_scratch_")
        for seed, run in json.loads(path.read_text())["per_seed"].items():
            scores[f"{variant}_{seed}"] = float(run["val"]["macro_f1"])  # seed is "s<N>"
    if not scores:
        raise FileNotFoundError(f"no train_scratch_*.json in {metrics_dir}: run the "
                                f"train_scratch stage first, or name a variant")
    return best_configuration(scores)


def _fit_one(build: Callable[[], keras.Model], cfg: Any, data: Any, aug_cfg: Any, seed: int,
             budget_s: float | None, run_dir: Path, verbose: int) -> tuple[Any, TimeBudget]:
    """Seed, batches, model, fit: in the order 03_train_scratch uses, so ours is the pipeline's."""
    from lib.train import fit as train
    from lib.train.augment import AugmentPolicy

    train.seed_everything(seed)
    train_ds, val_ds = data.datasets(cfg.batch_size, channels=CHANNELS, seed=seed,
                                     augment=AugmentPolicy(aug_cfg, seed))
    model = train.compile_model(build(), cfg)
    clock = TimeBudget(budget_s)
    result = train.fit(model, train_ds, val_ds, cfg, run_dir,
                       class_weight=data.class_weight(cfg.class_weight),
                       extra_callbacks=[clock], verbose=verbose)
    return result, clock


def _test_macro_f1(model: keras.Model, test_ds: Any) -> float:
    from sklearn.metrics import f1_score

    from lib.train.fit import predict_scores

    labels, scores = predict_scores(model, test_ds)
    return float(f1_score(labels, scores.argmax(axis=1), average="macro", zero_division=0))


def compare(params_path: Path | str, manifest_path: Path | str, raw_dir: Path | str,
            seconds: float | None = None, variant: str = "batchnorm",
            metrics_dir: Path | str | None = None,
            peer_bn_momentum: float = SCRATCH_BN_MOMENTUM, verbose: int = 0) -> Comparison:
    """Train ours as train_scratch does, then the peer for ours' seconds; score both on test.

    `variant` names a scratch variant, or "best" for the best validation macro-F1 recorded in
    `metrics_dir` (default reports/metrics beside params). `seconds` caps ours' training time
    (for short trial runs); the peer always gets exactly the seconds ours took.
    `peer_bn_momentum` is ours by default (see the module doc); 0.99 is the recipe's.
    """
    from lib.config import load_params
    from lib.data.inputs import make_dataset
    from lib.data.manifest import load_manifest, split_frame
    from lib.train import fit as train
    from lib.train.augment import AugmentConfig
    from lib.train.models import ScratchConfig, build_scratch, count_params

    params = load_params(params_path)
    if variant == "best":
        variant = best_variant(Path(metrics_dir) if metrics_dir
                               else Path(params_path).resolve().parent / "reports" / "metrics")
    seed = int(params["train_seeds"][0])
    image_size = int(params["train_scratch"]["input_size"])
    data = train.TrainingData.from_manifest(manifest_path, raw_dir, image_size)
    aug_cfg = AugmentConfig.from_params(params["augment"])
    arch = ScratchConfig.from_params(params["train_scratch"], variant)
    scratch = params["train_scratch"]
    ours_cfg = train.TrainConfig.from_params(params["train"], epochs=scratch["epochs"],
                                             learning_rate=scratch["learning_rate"])
    peer_cfg = train.TrainConfig.from_params(
        params["train"], epochs=EPOCH_CAP, optimizer="adam", learning_rate=PEER_LEARNING_RATE,
        loss="crossentropy", label_smoothing=0.0, patience=EPOCH_CAP, lr_patience=EPOCH_CAP)
    test = split_frame(load_manifest(Path(manifest_path)), "test")
    test_ds = make_dataset(test, Path(raw_dir), image_size=image_size, n_classes=data.n_classes,
                           batch_size=ours_cfg.batch_size, channels=CHANNELS)
    shape = data.input_shape(CHANNELS)

    work = Path(tempfile.mkdtemp(prefix="brain-mri-peer-"))
    try:
        result, clock = _fit_one(lambda: build_scratch(shape, data.n_classes, arch), ours_cfg,
                                 data, aug_cfg, seed, seconds, work / "ours", verbose)
        ours = Score(f"ours: scratch_{variant}", _test_macro_f1(result.model, test_ds),
                     round(clock.elapsed, 3), clock.epochs, result.best_epoch,
                     count_params(result.model)["total"])
        print(f"peer: trained {ours.model} in {ours.seconds:.1f} s ({ours.epochs} epochs); "
              f"now the peer for the same seconds", flush=True)
        budget = clock.elapsed
        result, clock = _fit_one(
            lambda: make_keras_io_model(shape, data.n_classes, peer_bn_momentum), peer_cfg,
            data, aug_cfg, seed, budget, work / "peer", verbose)
        peer = Score(f"peer: {PEER_NAME}", _test_macro_f1(result.model, test_ds),
                     round(clock.elapsed, 3), clock.epochs, result.best_epoch,
                     count_params(result.model)["total"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Comparison(variant, ours, peer, round(budget, 3), image_size, ours_cfg.batch_size,
                      seed, len(data.train), len(data.val), len(test),
                      "the study's policy (params.yaml augment:) for both, same seed",
                      peer_bn_momentum)


def main(argv: list[str] | None = None) -> int:
    """CLI: paths default to params.yaml's data group, relative to the params file's folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="default: <data.processed_dir>/manifest.csv")
    parser.add_argument("--raw", type=Path, default=None, help="default: data.raw_dir")
    parser.add_argument("--variant", default="batchnorm",
                        help="scratch variant to compare, or 'best' (from reports/metrics)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="cap ours' training time (the peer still gets what ours took)")
    parser.add_argument("--peer-bn-momentum", type=float, default=SCRATCH_BN_MOMENTUM,
                        help=f"the peer's BatchNorm momentum (default ours, "
                             f"{SCRATCH_BN_MOMENTUM}; the recipe's is {RECIPE_BN_MOMENTUM})")
    parser.add_argument("--tiny", type=int, default=0, metavar="N",
                        help="use a throwaway phantom with N images per class (a trial run)")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    parser.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    args = parser.parse_args(argv)

    from lib.config import load_params

    root = args.params.resolve().parent
    data_group = load_params(args.params)["data"]
    with tempfile.TemporaryDirectory(prefix="brain-mri-peer-tiny-") as scratch:
        if args.tiny:
            from lib.tiny import tiny_dataset

            tiny = tiny_dataset(per_class=args.tiny, image_size=64, seed=0, workdir=scratch)
            manifest, raw = tiny.manifest_path, tiny.raw_dir
        else:
            manifest = args.manifest or root / data_group["processed_dir"] / "manifest.csv"
            raw = args.raw or root / data_group["raw_dir"]
        if not Path(manifest).is_file():
            print(f"no {manifest}: run `make repro` (or `dvc repro prepare`) first",
                  file=sys.stderr)
            return 2
        result = compare(args.params, manifest, raw, seconds=args.seconds,
                         variant=args.variant, peer_bn_momentum=args.peer_bn_momentum,
                         verbose=args.verbose)
    print("\n".join(result.lines()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
