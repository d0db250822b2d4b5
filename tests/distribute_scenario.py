"""One training scenario of tests/test_distribute.py, in its own process (TensorFlow must see the
logical devices or TF_CONFIG before it starts, so each runs as ``python -m tests.distribute_scenario
MODE OUT``):

- ``mirrored``: one CPU split into two logical devices; the tiny study trained with the default
  strategy (one device) and then with ``train.strategy: mirrored`` (two replicas);
- ``worker``: one worker of a two-process ``train.strategy: multiworker`` run (TF_CONFIG set by
  the test), training the same tiny study.

Both go through the study's own loop, ``lib.train.fit.train_seeds`` (seeding, the strategy's
scope, compile_model, fit with its callbacks and the best-epoch reload), on random but seeded
16x16 images with the training augmentation, and write each run's per-epoch history as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

N_TRAIN, N_VAL, SIZE, CLASSES = 64, 16, 16, 4
BATCH = 16  # the global batch: 8 per replica on two
EPOCHS = 3
SEED = 5


def tiny_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded images in 0-255 whose class brightens one quadrant (learnable in 3 epochs), and
    that quadrant as each image's lesion mask (for the guided run)."""
    rng = np.random.default_rng(11)
    n = N_TRAIN + N_VAL
    labels = np.arange(n) % CLASSES
    images = rng.uniform(0, 120, size=(n, SIZE, SIZE, 1)).astype("float32")
    masks = np.zeros_like(images)
    half = SIZE // 2
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, r * half:(r + 1) * half, c * half:(c + 1) * half] += 100.0
        masks[i, r * half:(r + 1) * half, c * half:(c + 1) * half] = 1.0
    return images, labels.astype("int64"), masks


def train_once(strategy: str, root: Path, guided: bool = False) -> dict[str, Any]:
    """The tiny study through lib.train.fit.train_seeds; its history per epoch. `guided`: the
    scratch CNN inside lib.train.guided's GuidedClassifier, trained on the masks too."""
    from lib.data.inputs import TrainStream
    from lib.train import fit
    from lib.train.augment import AugmentConfig, AugmentPolicy
    from lib.train.guided import GuidedClassifier
    from lib.train.models import ScratchConfig, build_scratch

    images, labels, masks = tiny_arrays()
    x_tr, y_tr, m_tr = images[:N_TRAIN], labels[:N_TRAIN], masks[:N_TRAIN]
    x_va, y_va, m_va = images[N_TRAIN:], labels[N_TRAIN:], masks[N_TRAIN:]

    @dataclass
    class InMemory(fit.TrainingData):
        """TrainingData whose splits are the arrays above (no manifest, no image files)."""

        def datasets(self, batch_size: int, channels: int, seed: int,
                     augment: Any | None = None) -> tuple[Any, Any]:
            import tensorflow as tf

            if self.train_masks is None:
                stream = TrainStream(x_tr, y_tr, CLASSES, batch_size, seed, channels, augment)
                val = (x_va, tf.one_hot(y_va, CLASSES))
            else:
                stream = TrainStream(x_tr, y_tr, CLASSES, batch_size, seed, channels, augment,
                                     self.train_masks)
                val = (x_va, tf.one_hot(y_va, CLASSES), self.val_masks)
            return stream, tf.data.Dataset.from_tensor_slices(val).batch(batch_size)

        def class_weight(self, mode: str) -> None:
            return None

    import pandas as pd

    data = InMemory(pd.DataFrame(), pd.DataFrame(), root, [f"c{i}" for i in range(CLASSES)],
                    SIZE, "tiny", train_masks=m_tr if guided else None,
                    val_masks=m_va if guided else None)
    model_cfg = ScratchConfig(blocks=2, filters=4, kernel_size=3, dense_units=8,
                              use_batchnorm=True)
    cfg = fit.TrainConfig(epochs=EPOCHS, learning_rate=0.01, batch_size=BATCH, patience=EPOCHS,
                          strategy=strategy,
                          monitor="val_guided_loss" if guided else "val_macro_f1")
    aug = AugmentConfig(rotation_deg=10.0, zoom=0.0, translation=0.0, contrast=0.0,
                        brightness=0.1)

    def build() -> Any:
        return build_scratch((SIZE, SIZE, 1), CLASSES, model_cfg)

    runs = fit.train_seeds(data, [SEED], build, cfg, stage=f"dist_{strategy}_{guided}",
                           channels=1, augment=lambda s: AugmentPolicy(aug, s),
                           warm_start=(lambda s: GuidedClassifier(build(), "block2_relu", 0.5))
                           if guided else None, resume_root=root, verbose=0)
    history = runs.histories[f"seed {SEED}"]
    keys = ("loss", "val_loss", "localisation", "val_localisation") if guided else (
        "loss", "val_loss", "accuracy", "val_accuracy", "macro_f1", "val_macro_f1")
    return {key: [float(v) for v in history[key]] for key in keys}


def main(argv: list[str]) -> int:
    mode, out = argv[0], Path(argv[1])
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "mirrored":
            import tensorflow as tf

            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            result["one_device"] = train_once("default", Path(tmp) / "one")
            result["one_device_guided"] = train_once("default", Path(tmp) / "one_g", True)
            from lib.train import distribute

            strategy = distribute.strategy_for("mirrored")
            result["replicas"] = distribute.replicas(strategy)
            result["mirrored"] = train_once("mirrored", Path(tmp) / "mirrored")
            result["mirrored_guided"] = train_once("mirrored", Path(tmp) / "mirrored_g", True)
            try:
                distribute.per_replica_batch(BATCH - 1, strategy)
            except ValueError as err:
                result["odd_batch_error"] = str(err)
        elif mode == "worker":
            from lib.train import distribute

            strategy = distribute.strategy_for("multiworker")  # first, before any TF op
            result["replicas"] = distribute.replicas(strategy)
            result["multiworker"] = train_once("multiworker", Path(tmp) / "worker")
        else:
            raise SystemExit(f"unknown mode {mode!r}: mirrored | worker")
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
