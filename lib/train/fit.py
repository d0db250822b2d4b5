"""Training: one seed for everything, callbacks that survive an interruption, and the numbers kept.

Every training stage (the scratch variants, pretrain, both transfer phases) goes through `fit`:
- `seed_everything` drives Python, numpy, TensorFlow and Keras from one integer and turns on op
  determinism, so a rerun on the same machine gives the same weights bit for bit;
- work in progress lives in a resume folder under ``.cache/train/`` keyed by everything that
  defines the run (so a changed parameter never resumes a stale run). ResumeState saves the
  weights, the optimizer and every callback's counters at each epoch end, ModelCheckpoint keeps
  the best epoch on the validation split and CSVLogger appends the history, and the training
  batches are a function of (seed, epoch) (``lib.data.inputs.TrainStream``), so a killed stage
  resumes at the epoch it reached into the same model, bit for bit, as an uninterrupted run; the
  folder is removed once the stage's outputs are written;
- the model returned is the best epoch on the validation split, never simply the last one;
- `train_seeds` is the one per-seed loop of the scratch, transfer and guided notebooks (and
  lib.tiny's tiny models),
  `fit_two_phase` the transfer models' fine-tuning (frozen backbone, then its top layers).

The pretrain stage (the transfer backbone's pretext task) lives in lib.train.pretrain.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import check_int, check_keys, from_group, repo_root
from ..forward import predict_labelled
from ..jsonio import STAGE_DIGITS, round_floats
from ..seeding import seed_everything
from ..stats import mean_sd
from . import distribute

RESUME_ROOT = Path(".cache") / "train"
OPTIMIZERS = ("adam", "adamw")
LOSSES = ("crossentropy", "focal")
CLASS_WEIGHTS = ("none", "balanced")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is fitted: the shared `train:` group, plus each stage's own epochs and learning
    rate (no default: every stage says them, in its own params.yaml group)."""

    epochs: int
    learning_rate: float
    batch_size: int = 32
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    loss: str = "crossentropy"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    class_weight: str = "none"
    monitor: str = "val_macro_f1"
    patience: int = 10
    lr_patience: int = 4
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    strategy: str = "default"  # default | mirrored | multiworker (lib.train.distribute)
    lr_scaling: str = "none"  # none | linear: the learning rate x batch_size / 32
    mixed_precision: bool = False  # mixed_float16 layers, float32 softmax head and loss

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"train.{key}: {why} (got {getattr(self, key)!r})")

        for key in ("epochs", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise bad(key, "must be >= 1")
        for key in ("patience", "lr_patience"):
            if int(getattr(self, key)) < 0:
                raise bad(key, "must be >= 0")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "must be > 0")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"must be one of {OPTIMIZERS}")
        if self.loss not in LOSSES:
            raise bad("loss", f"must be one of {LOSSES}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise bad("class_weight", f"must be one of {CLASS_WEIGHTS}")
        if not 0 < self.lr_factor < 1:
            raise bad("lr_factor", "must be between 0 and 1")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "must be in [0, 1)")
        if not self.monitor.startswith("val_"):
            raise bad("monitor", "must be a validation metric such as val_loss or val_macro_f1")
        distribute.check_settings(self.strategy, self.lr_scaling, self.mixed_precision)

    @classmethod
    def from_params(cls, group: dict[str, Any], **overrides: Any) -> TrainConfig:
        """From the shared `train:` group; a stage's own values (its epochs, its learning rate)
        are `overrides`."""
        check_keys(group, "train", {f.name for f in fields(cls)})
        return cls(**{**group, **overrides})

    @property
    def mode(self) -> str:
        """'min' for losses, 'max' for scores (Keras's 'auto' would minimise macro_f1)."""
        return "min" if self.monitor.endswith("loss") else "max"


@dataclass
class FitResult:
    """A finished fit: the best model on validation and how it got there."""

    model: Any
    history: pd.DataFrame
    best_epoch: int
    epochs_run: int
    resumed_at: int | None
    seconds: float


def run_key(*parts: Any) -> str:
    """A short stable hash of what defines a run, naming its resume folder."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resume_dir(stage: str, *parts: Any, root: Path | None = None) -> Path:
    """Where an interrupted run of `stage` with these settings keeps its progress."""
    return (root or repo_root()) / RESUME_ROOT / f"{stage}-{run_key(stage, *parts)}"


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """sklearn's 'balanced' weights (n / (k * count)) or None; a missing class is an error."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    if len(present) != n_classes:
        raise ValueError(f"class_weight=balanced needs every class in the training split; "
                         f"found labels {present.tolist()} of {n_classes}")
    weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=labels)
    return {int(k): float(w) for k, w in enumerate(weights)}


def compile_model(model: Any, cfg: TrainConfig) -> Any:
    """Optimizer, loss and metrics from the config (one-hot labels: focal loss needs them).

    Call it inside ``distribute.training_scope(cfg)`` (as train_seeds and pretrain do) when
    cfg sets a strategy or mixed precision; with the defaults that scope is empty."""
    import keras

    distribute.prepare_model(model, cfg)
    learning_rate = distribute.learning_rate(cfg)
    if cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=cfg.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    if cfg.loss == "focal":
        loss = keras.losses.CategoricalFocalCrossentropy(gamma=cfg.focal_gamma,
                                                         label_smoothing=cfg.label_smoothing)
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
               keras.metrics.F1Score(average="macro", name="macro_f1")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return model


def read_history(path: Path) -> pd.DataFrame:
    """CSVLogger's file; after a resume an epoch can appear twice, the last row wins."""
    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        return pd.DataFrame()
    frame = pd.read_csv(path)
    if frame.empty:
        return frame
    return frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


# What each callback carries from one epoch to the next (Keras saves none of it): restored on
# resume so that early stopping, the plateau schedule and the checkpoint decide as they would have.
CALLBACK_STATE = {"EarlyStopping": ("wait", "best", "stopped_epoch", "best_epoch"),
                  "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
                  "ModelCheckpoint": ("best",)}


class ResumeState:
    """A run's state after each epoch, written as one unit: weights (the optimizer's moments,
    step count and learning rate included, as ``save_weights`` stores them), the dropout layers'
    random-generator positions (which ``save_weights`` leaves out), the epoch reached and every
    callback's counters.

    Files are ``state/e<epoch>.weights.h5`` and ``state/e<epoch>.json``, and ``state/latest``
    names the last complete pair (replaced atomically), so a kill at any moment leaves the last
    finished epoch to resume from.
    """

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / "state"

    def latest(self) -> int | None:
        """The number of epochs completed, or None before the first one finished."""
        pointer = self.dir / "latest"
        return int(pointer.read_text()) if pointer.is_file() else None

    def save(self, model: Any, epoch_done: int, cbs: Sequence[Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        model.save_weights(self.dir / f"e{epoch_done}.weights.h5")
        state: dict[str, Any] = {
            type(cb).__name__: {a: _jsonable(getattr(cb, a)) for a in attrs}
            for cb in cbs for name, attrs in CALLBACK_STATE.items() if type(cb).__name__ == name}
        state["stopped"] = bool(model.stop_training)  # early stopping ended the run here
        state["random"] = {v.path: v.numpy().tolist() for v in _random_states(model)}
        (self.dir / f"e{epoch_done}.json").write_text(json.dumps(state))
        tmp = self.dir / "latest.tmp"
        tmp.write_text(str(epoch_done))
        tmp.replace(self.dir / "latest")
        for old in self.dir.glob("e*.*"):
            if old.name.split(".")[0] != f"e{epoch_done}":
                old.unlink()

    def restore_model(self, model: Any, epoch_done: int) -> None:
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.dir / f"e{epoch_done}.weights.h5")
        saved = json.loads((self.dir / f"e{epoch_done}.json").read_text())["random"]
        for var in _random_states(model):
            var.assign(np.asarray(saved[var.path], dtype=var.dtype))

    def stopped(self, epoch_done: int) -> bool:
        """Whether early stopping had ended the run at that epoch (nothing left to train)."""
        return bool(json.loads((self.dir / f"e{epoch_done}.json").read_text())["stopped"])

    def restore_callbacks(self, epoch_done: int, cbs: Sequence[Any]) -> None:
        state = json.loads((self.dir / f"e{epoch_done}.json").read_text())
        for cb in cbs:
            for attr, value in state.get(type(cb).__name__, {}).items():
                setattr(cb, attr, value)


def _random_states(model: Any) -> list[Any]:
    """The model's random-generator state variables (dropout's), in a stable order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _jsonable(value: Any) -> Any:
    return float(value) if isinstance(value, np.floating | float) else value


def _state_callback(state: ResumeState, resumed_at: int | None, cbs: Sequence[Any]) -> Any:
    """Last in the list: restores the counters after the others reset them in on_train_begin,
    and saves after the others have updated theirs (and the plateau schedule its rate)."""
    import keras

    class SaveState(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            if resumed_at is not None:
                state.restore_callbacks(resumed_at, cbs)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            state.save(self.model, epoch + 1, cbs)

    return SaveState()


def callbacks(run_dir: Path, cfg: TrainConfig) -> list[Any]:
    """Best-on-val checkpoint, early stop, LR drop, history (their state is ResumeState's)."""
    import keras

    return [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor=cfg.monitor,
                                        mode=cfg.mode, save_best_only=True),
        keras.callbacks.EarlyStopping(monitor=cfg.monitor, mode=cfg.mode,
                                      patience=cfg.patience),
        keras.callbacks.ReduceLROnPlateau(monitor=cfg.monitor, mode=cfg.mode,
                                          factor=cfg.lr_factor, patience=cfg.lr_patience,
                                          min_lr=cfg.min_lr),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]


def fit(model: Any, train: Any, val_ds: Any, cfg: TrainConfig, run_dir: Path, *,
        initial_epoch: int = 0, class_weight: dict[int, float] | None = None,
        extra_callbacks: Sequence[Any] = (), verbose: int | str = 2) -> FitResult:
    """Fit (or resume, or reuse a finished fit in `run_dir`) and return the best model on val.

    `train` is a ``lib.data.inputs.TrainStream``; the model must be compiled. `initial_epoch`
    numbers a second phase after a first one. A resumed run is the uninterrupted run: the
    batches are a function of the epoch (TrainStream) and ResumeState restores the rest.
    Everything runs in ``distribute.training_scope(cfg)`` (empty with the defaults), so the
    best model comes back on the same devices, ready for a second phase.
    """
    with distribute.training_scope(cfg):
        return _fit_in_scope(model, train, val_ds, cfg, Path(run_dir),
                             initial_epoch=initial_epoch, class_weight=class_weight,
                             extra_callbacks=extra_callbacks, verbose=verbose)


def _fit_in_scope(model: Any, train: Any, val_ds: Any, cfg: TrainConfig, run_dir: Path, *,
                  initial_epoch: int, class_weight: dict[int, float] | None,
                  extra_callbacks: Sequence[Any], verbose: int | str) -> FitResult:
    import keras

    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / "final.keras"
    start = time.perf_counter()
    if final.is_file():  # this phase finished before an interruption of a later one
        print(f"fit: reusing the finished run in {run_dir}")
        prior = read_history(run_dir / "history.csv")
        return _result(keras.models.load_model(final), prior, cfg, len(prior), start)
    if not model.built:
        model.build((None, *model.input_shape[1:]))
    state = ResumeState(run_dir)
    resumed_at = state.latest()
    last_epoch = initial_epoch + cfg.epochs
    if resumed_at is not None:
        print(f"fit: resuming an interrupted run at epoch {resumed_at} (of {last_epoch}) "
              f"from {run_dir}")
        state.restore_model(model, resumed_at)
    first_epoch = initial_epoch if resumed_at is None else resumed_at
    cbs = callbacks(run_dir, cfg)
    stopped = resumed_at is not None and state.stopped(resumed_at)
    if first_epoch < last_epoch and not stopped:
        model.fit(distribute.distribute_input(train.dataset(first_epoch, last_epoch), cfg),
                  steps_per_epoch=train.steps,
                  validation_data=distribute.distribute_input(val_ds, cfg),
                  epochs=last_epoch, initial_epoch=first_epoch,
                  class_weight=class_weight, shuffle=False,
                  callbacks=[*cbs, *extra_callbacks, _state_callback(state, resumed_at, cbs)],
                  verbose=verbose)
    history = read_history(run_dir / "history.csv")
    best_path = run_dir / "best.keras"
    best = keras.models.load_model(best_path) if best_path.is_file() else model
    best.save(final)
    return _result(best, history, cfg, resumed_at, start)


def _result(model: Any, history: pd.DataFrame, cfg: TrainConfig, resumed_at: int | None,
            start: float) -> FitResult:
    if history.empty or cfg.monitor not in history:
        best_epoch = -1
    else:
        col = history[cfg.monitor]
        best_epoch = int(history["epoch"][col.idxmin() if cfg.mode == "min" else col.idxmax()])
    return FitResult(model, history, best_epoch, len(history), resumed_at,
                     time.perf_counter() - start)


def finish(run_dir: Path) -> None:
    """Remove a run's resume folder once its outputs are safely written."""
    shutil.rmtree(run_dir, ignore_errors=True)


def val_scores(labels: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class F1 on the validation split (test is evaluate's)."""
    from sklearn.metrics import accuracy_score, f1_score

    pred = scores.argmax(axis=1)
    per_class = f1_score(labels, pred, labels=list(range(len(names))), average=None,
                         zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(labels, pred)), 6),
        "macro_f1": round(float(f1_score(labels, pred, average="macro", zero_division=0)), 6),
        "f1": {name: round(float(v), 6) for name, v in zip(names, per_class, strict=True)},
    }


def summarise_seeds(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per-seed validation scores and their mean ± sd, the layout every training metric uses."""
    seeds = sorted(per_seed)
    out: dict[str, Any] = {
        "seeds": seeds,
        "per_seed": {f"s{s}": per_seed[s] for s in seeds},
        "val_accuracy": mean_sd([per_seed[s]["val"]["accuracy"] for s in seeds]),
        "val_macro_f1": mean_sd([per_seed[s]["val"]["macro_f1"] for s in seeds]),
    }
    return round_floats(out, STAGE_DIGITS["train"])


# --------------------------------------------------------------------------------------------
# The seeds of a training stage, shared by the scratch and transfer notebooks and lib.tiny
# --------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """The train and val rows of the manifest and how they become model inputs."""

    train: pd.DataFrame
    val: pd.DataFrame
    raw_dir: Path
    names: list[str]
    image_size: int
    fingerprint: str
    _train_arrays: tuple[Any, np.ndarray] | None = field(default=None, repr=False)
    # the decoded training and validation images on disk (removed with this object)
    _work: Any = field(default=None, repr=False)
    # lesion masks at the input size (lib.data.inputs.load_masks): only for the guided arm
    train_masks: np.ndarray | None = field(default=None, repr=False)
    val_masks: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_manifest(cls, manifest_path: Path | str, raw_dir: Path | str,
                      image_size: int) -> TrainingData:
        from ..data.manifest import class_names, load_manifest, split_frame
        from ..hashing import file_md5

        manifest = load_manifest(Path(manifest_path))
        digest = file_md5(Path(manifest_path))
        return cls(split_frame(manifest, "train"), split_frame(manifest, "val"), Path(raw_dir),
                   class_names(manifest), int(image_size), digest)

    @property
    def n_classes(self) -> int:
        return len(self.names)

    @property
    def work_dir(self) -> Path:
        """A private temporary folder for the decoded images: training memory then does not
        grow with the number of images (bench/scale.py measures it)."""
        import tempfile

        if self._work is None:
            self._work = tempfile.TemporaryDirectory(prefix="brain-mri-train-")
        return Path(self._work.name)

    def input_shape(self, channels: int) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, channels)

    def datasets(self, batch_size: int, channels: int, seed: int,
                 augment: Any | None = None) -> tuple[Any, Any]:
        """(the training stream: shuffled, augmented epochs; val batches in manifest order).

        With masks (the guided arm: ``lib.train.guided.with_masks``) both yield (images,
        labels, masks)."""
        from ..data.inputs import (
            TrainStream,
            decode_to_file,
            load_arrays,
            make_dataset,
            masked_batches,
        )

        if self._train_arrays is None:  # decoded once into a file, shared by every seed
            self._train_arrays = decode_to_file(self.train, self.raw_dir,
                                                image_size=self.image_size,
                                                n_classes=self.n_classes,
                                                path=self.work_dir / "train.npy")
        images, labels = self._train_arrays
        stream = TrainStream(images, labels, self.n_classes, batch_size, seed, channels, augment,
                             self.train_masks)
        if self.val_masks is not None:
            val_images, val_labels = load_arrays(self.val, self.raw_dir,
                                                 image_size=self.image_size,
                                                 n_classes=self.n_classes)
            return stream, masked_batches(val_images, val_labels, self.val_masks,
                                          self.n_classes, batch_size, channels)
        return stream, make_dataset(self.val, raw_dir=self.raw_dir, image_size=self.image_size,
                                    n_classes=self.n_classes, batch_size=batch_size,
                                    cache=str(self.work_dir / "val.cache"),
                                    channels=channels)

    def class_weight(self, mode: str) -> dict[int, float] | None:
        return class_weights(self.train["label"].to_numpy(), self.n_classes, mode)

    def counts(self) -> pd.DataFrame:
        """Images per class in each split, for the notebook."""
        frames = {"train": self.train, "val": self.val}
        table = pd.DataFrame({k: f["class"].value_counts() for k, f in frames.items()})
        return table.reindex(self.names).fillna(0).astype(int)


def save_seed(result: FitResult, val_ds: Any, names: Sequence[str], seed: int,
              models_dir: Path | str | None, history_dir: Path | str | None) -> dict[str, Any]:
    """Write one seed's best model and history; return its validation numbers."""
    labels, scores = predict_labelled(result.model, val_ds)
    if models_dir:
        Path(models_dir).mkdir(parents=True, exist_ok=True)
        result.model.save(Path(models_dir) / f"seed{seed}.keras")
    if history_dir:
        Path(history_dir).mkdir(parents=True, exist_ok=True)
        result.history.to_csv(Path(history_dir) / f"history_s{seed}.csv", index=False)
    return {"val": val_scores(labels, scores, names), "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run}


@dataclass(frozen=True)
class TransferConfig:
    """The `train_transfer:` group: backbone, weights, input side, head and the two phases.

    Phase 1 trains the head on the frozen backbone; phase 2 unfreezes the top
    ``fine_tune_layers`` backbone layers (BatchNormalization too when ``train_bn``).
    """

    backbone: str = "MobileNetV3Small"
    weights: str = "pretrain"  # pretrain | imagenet | none | a weights file
    input_size: int = 128
    head_dropout: float = 0.2
    dense_units: int = 0
    phase1_epochs: int = 2
    phase1_learning_rate: float = 0.001
    phase2_epochs: int = 18
    phase2_learning_rate: float = 0.001
    fine_tune_layers: int = 200
    train_bn: bool = True

    def __post_init__(self) -> None:
        for key, low in (("input_size", 8), ("dense_units", 0), ("phase1_epochs", 1),
                         ("phase2_epochs", 0), ("fine_tune_layers", 0)):
            check_int(f"train_transfer.{key}", getattr(self, key), low)
        if not isinstance(self.train_bn, bool):
            raise ValueError(f"train_transfer.train_bn must be true or false, "
                             f"got {self.train_bn!r}")

    @classmethod
    def from_params(cls, group: dict[str, Any]) -> TransferConfig:
        return from_group(cls, group, "train_transfer")

    def phases(self, train: dict[str, Any]) -> tuple[TrainConfig, TrainConfig]:
        """The shared `train:` settings with each phase's epochs and learning rate."""
        phase1 = TrainConfig.from_params(train, epochs=self.phase1_epochs,
                                         learning_rate=self.phase1_learning_rate)
        return phase1, replace(phase1, epochs=self.phase2_epochs,
                               learning_rate=self.phase2_learning_rate)


@dataclass(frozen=True)
class FineTune:
    """Phase 2 of a transfer fit: the top `layers` backbone layers learn, at `cfg`'s settings.

    ``train_bn`` lets the BatchNormalization layers among them learn too (``models.unfreeze_top``).
    """

    cfg: TrainConfig
    layers: int
    train_bn: bool = False


def fit_two_phase(model: Any, train_ds: Any, val_ds: Any, phase1: TrainConfig, tune: FineTune,
                  run_dirs: Sequence[Path], *, class_weight: dict[int, float] | None = None,
                  verbose: int | str = 2) -> tuple[FitResult, int]:
    """Fine-tuning a transfer model: the head on a frozen backbone, then the top layers too.

    Phase 1 freezes the backbone and fits `phase1` in ``run_dirs[0]``; phase 2 unfreezes the top
    ``tune.layers`` layers of phase 1's *best* model and fits ``tune.cfg`` in ``run_dirs[1]``,
    numbering its epochs after phase 1's. Returns phase 2's result, whose history is both
    phases (a ``phase`` column says which) and whose ``epochs_run`` counts both, and how many
    backbone layers trained in phase 2.
    """
    from .models import freeze_backbone, unfreeze_top

    freeze_backbone(model)
    with distribute.training_scope(phase1):  # both phases compile here (empty by default)
        first = fit(compile_model(model, phase1), train_ds, val_ds, phase1, run_dirs[0],
                    class_weight=class_weight, verbose=verbose)
        n_open = unfreeze_top(first.model, tune.layers, train_bn=tune.train_bn)
        second = fit(compile_model(first.model, tune.cfg), train_ds, val_ds, tune.cfg,
                     run_dirs[1], initial_epoch=first.epochs_run, class_weight=class_weight,
                     verbose=verbose)
    second.history = pd.concat([first.history.assign(phase=1), second.history.assign(phase=2)])
    second.epochs_run = len(second.history)
    return second, n_open


def deployable(model: Any) -> Any:
    """The classifier a training wrapper holds (lib.train.guided.GuidedClassifier's
    `.classifier`), or the model itself: what is saved and evaluated."""
    return getattr(model, "classifier", model)


@dataclass
class SeedRuns:
    """Every seed of a training stage: its validation numbers and its history."""

    per_seed: dict[int, dict[str, Any]]
    histories: dict[str, pd.DataFrame]  # "seed <N>" -> history, for plots.training_curves

    def summary(self) -> dict[str, Any]:
        return summarise_seeds(self.per_seed)


def train_seeds(data: TrainingData, seeds: Sequence[int], build: Any, cfg: TrainConfig, *,
                stage: str, key: Sequence[Any] = (), channels: int = 1,
                augment: Any | None = None, fine_tune: FineTune | None = None,
                models_dir: Path | str | None = None, history_dir: Path | str | None = None,
                resume_root: Path | None = None, warm_start: Any | None = None,
                verbose: int | str = 2) -> SeedRuns:
    """One model per seed, the loop every training stage runs.

    For each seed: seed everything; make the (augmented, shuffled) train and the val batches;
    ``build()`` a fresh model; fit it (two phases when `fine_tune` is given, see
    ``fit_two_phase``) in a resume folder keyed by `stage`, `key` and the seed; save the best
    model and history where asked; remove the resume folder. `augment(seed)` makes the
    augmentation policy of a seed (None: no augmentation). `warm_start(seed)`, when given,
    replaces ``build()``: the seed's model starts from that one (the guided arm fine-tunes each
    seed's plain model).

    With ``cfg.strategy`` set, each model is built, compiled and fitted in the strategy's scope
    (``distribute.training_scope``; nothing is entered with the defaults); every worker of a
    multi-worker run runs this same loop with the same seeds.
    """
    distribute.strategy_for(cfg.strategy)  # before any TensorFlow op here (multiworker needs it)
    runs = SeedRuns({}, {})
    for seed in seeds:
        seed_everything(seed)
        train_ds, val_ds = data.datasets(cfg.batch_size, channels=channels, seed=seed,
                                         augment=augment(seed) if augment else None)
        weights = data.class_weight(cfg.class_weight)
        if weights is not None and data.train_masks is not None:
            raise ValueError("train.class_weight: balanced cannot weigh batches that carry "
                             "masks (the guided arm); set it to none for train_guided")
        extra: dict[str, Any] = {}
        if fine_tune is None:
            run_dirs = [resume_dir(stage, *key, seed, root=resume_root)]
            with distribute.training_scope(cfg):
                model = warm_start(seed) if warm_start else build()
                result = fit(compile_model(model, cfg), train_ds, val_ds, cfg, run_dirs[0],
                             class_weight=weights, verbose=verbose)
        else:
            run_dirs = [resume_dir(f"{stage}_phase{i}", *key, seed, root=resume_root)
                        for i in (1, 2)]
            with distribute.training_scope(cfg):
                result, n_open = fit_two_phase(build(), train_ds, val_ds, cfg, fine_tune,
                                               run_dirs, class_weight=weights, verbose=verbose)
            extra["trainable_layers_phase2"] = n_open
        result.model = deployable(result.model)
        runs.per_seed[seed] = {**save_seed(result, val_ds, data.names, seed, models_dir,
                                           history_dir), **extra}
        runs.histories[f"seed {seed}"] = result.history.reset_index(drop=True)
        for run_dir in run_dirs:
            finish(run_dir)
    return runs
