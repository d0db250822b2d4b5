"""The pretrain stage: the transfer backbone learns which MRI sequence a phantom slice is.

A task the phantom gives for free, without tumour labels, on a separately seeded set at its own
input size; the backbone weights it saves are what `train_transfer.weights: pretrain` loads
(docs/architecture.md). CLI: ``python -m lib.train.pretrain --params params.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import from_group, load_params, repo_root, section
from ..contracts import PRETEXT_IMAGES, PRETEXT_LABELS, PRETEXT_NAMES
from ..data.inputs import TrainStream
from ..forward import predict_labelled
from ..jsonio import write_json
from . import distribute
from .fit import (
    TrainConfig,
    compile_model,
    finish,
    fit,
    resume_dir,
    seed_everything,
    val_scores,
)


@dataclass(frozen=True)
class PretrainConfig:
    """The `pretrain:` group; the backbone comes from `train_transfer:`.

    The pretext task runs at its own input size: convolution weights do not depend on it, and
    each halving of the side makes the pretext set four times cheaper to learn.
    """

    backbone: str
    input_size: int = 64
    n_per_sequence: int = 400
    seed: int = 7
    val_fraction: float = 0.2
    epochs: int = 10
    learning_rate: float = 2e-3
    bn_momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.n_per_sequence < 2:
            raise ValueError(f"pretrain.n_per_sequence must be >= 2, got {self.n_per_sequence}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"pretrain.val_fraction must be in (0, 1), got {self.val_fraction}")

    @classmethod
    def from_params(cls, group: dict[str, Any], backbone: str) -> PretrainConfig:
        """From the `pretrain:` group; the backbone is train_transfer's (the one it pretrains)."""
        return from_group(cls, group, "pretrain", backbone=backbone)


def pretrain_train_config(train: dict[str, Any], cfg: PretrainConfig) -> TrainConfig:
    """The shared train: group with the pretext task's own epochs and learning rate."""
    return TrainConfig.from_params(train, epochs=cfg.epochs, learning_rate=cfg.learning_rate)


def sequence_task(pretext_dir: Path | str, cfg: PretrainConfig
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The pretext set (the pretext stage's files), split into train/val by a seeded shuffle."""
    folder = Path(pretext_dir)
    try:
        images = np.load(folder / PRETEXT_IMAGES, allow_pickle=False)
        labels = np.load(folder / PRETEXT_LABELS, allow_pickle=False)
        names = json.loads((folder / PRETEXT_NAMES).read_text())
    except OSError as err:
        raise ValueError(f"no pretext set in {folder} ({err}); run the pretext stage "
                         "(dvc repro pretext)") from err
    if images.shape[1:] != (cfg.input_size, cfg.input_size):
        raise ValueError(f"the pretext set in {folder} is {images.shape[1:]} px, pretrain."
                         f"input_size is {cfg.input_size}: rerun the pretext stage")
    order = np.random.default_rng(cfg.seed).permutation(len(labels))
    n_val = max(len(names), int(round(cfg.val_fraction * len(labels))))
    val, train = order[:n_val], order[n_val:]
    x = images[..., None].astype("float32")
    return x[train], labels[train], x[val], labels[val], list(names)


def _tensor_dataset(x: np.ndarray, y: np.ndarray, n_classes: int, batch_size: int,
                    channels: int) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, n_classes))).batch(batch_size)
    if channels == 3:
        ds = ds.map(lambda a, b: (tf.image.grayscale_to_rgb(a), b))
    return ds.prefetch(tf.data.AUTOTUNE)


def pretrain(params: dict[str, Any], pretext_dir: Path, out_dir: Path, metrics_path: Path,
             root: Path | None = None, verbose: int | str = 2) -> dict[str, Any]:
    """Train the chosen backbone from random weights to recognise T1/T1c/T2/FLAIR; save it."""
    from .models import WeightsChoice, build_transfer, save_backbone_weights, set_bn_momentum

    cfg = PretrainConfig.from_params(section(params, "pretrain"),
                                     section(params, "train_transfer")["backbone"])
    seed = int(params["seed"])
    tcfg = pretrain_train_config(section(params, "train"), cfg)
    distribute.strategy_for(tcfg.strategy)  # before any TensorFlow op (multiworker needs it)
    seed_everything(seed)
    x_tr, y_tr, x_va, y_va, names = sequence_task(pretext_dir, cfg)
    k = len(names)
    train_ds = TrainStream(x_tr, y_tr, k, tcfg.batch_size, seed, channels=3)
    val_ds = _tensor_dataset(x_va, y_va, k, tcfg.batch_size, 3)
    run_dir = resume_dir("pretrain", asdict(cfg), asdict(tcfg), seed, root=root)
    with distribute.training_scope(tcfg):  # empty with the default strategy and precision
        model = build_transfer(cfg.backbone, (cfg.input_size, cfg.input_size, 3), k,
                               WeightsChoice("none", None, "random initialisation"))
        set_bn_momentum(model, cfg.bn_momentum)
        compile_model(model, tcfg)
        result = fit(model, train_ds, val_ds, tcfg, run_dir, verbose=verbose)
    labels, scores = predict_labelled(result.model, val_ds)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / "backbone.weights.h5"
    save_backbone_weights(result.model, weights_path)
    result.history.to_csv(out_dir / "history.csv", index=False)
    metrics = {
        "task": "MRI sequence (" + "/".join(names) + ") on a separately seeded phantom set",
        "backbone": cfg.backbone, "image_size": cfg.input_size, "seed": seed,
        "phantom_seed": cfg.seed, "n_train": int(len(y_tr)), "n_val": int(len(y_va)),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "val": val_scores(labels, scores, names),
    }
    write_json(metrics_path, metrics)
    finish(run_dir)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lib.train.pretrain`: the pretrain DVC stage."""
    parser = argparse.ArgumentParser(prog="python -m lib.train.pretrain",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("models/pretrain"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/metrics/pretrain.json"))
    args = parser.parse_args(argv)
    try:
        params_path = args.params or repo_root() / "params.yaml"
        params = load_params(params_path)
        root = Path(params_path).resolve().parent
        pretext = root / section(params, "data")["processed_dir"] / "pretext"
        metrics = pretrain(params, pretext, root / args.out, root / args.metrics, root=root)
    except (KeyError, ValueError) as exc:
        print(f"pretrain: bad configuration: {exc}", file=sys.stderr)
        return 2
    print(f"pretrain: {metrics['backbone']} on the sequence task, val accuracy "
          f"{metrics['val']['accuracy']:.3f} (kept epoch {metrics['best_epoch'] + 1} of "
          f"{metrics['epochs_run']}); "
          f"weights in {args.out / 'backbone.weights.h5'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
