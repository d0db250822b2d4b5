"""Input-pipeline budget: training throughput through lib's tf.data vs the same tensors in memory.

Measured in one run on the prepared default dataset (data/processed/manifest.csv must exist, as
after `make repro`): the default scratch model is fitted for a few epochs (a) on numpy tensors
already in memory, (b) through `lib.data.inputs.make_dataset` without augmentation (the pipeline's
own
overhead: decode once, cache, shuffle, batch, prefetch) and (c) through it with the augmentation
policy training uses. The first epoch of each is not timed (graph tracing, cache fill).
Prints images/second and the ratios; the budget is (b)/(a) >= 0.9.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _images_per_second(model, fit_args: dict, n_images: int, epochs: int) -> float:
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.starts: list[float] = []
            self.ends: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.starts.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())

    timer = Timer()
    model.fit(**fit_args, epochs=epochs, callbacks=[timer], verbose=0)
    seconds = sum(e - s for s, e in zip(timer.starts[1:], timer.ends[1:], strict=True))
    return n_images * (epochs - 1) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per measurement (the first is not timed)")
    args = parser.parse_args()

    import numpy as np

    from lib.config import load_params
    from lib.data.inputs import load_arrays
    from lib.seeding import seed_everything
    from lib.train import fit as train
    from lib.train.augment import AugmentConfig, AugmentPolicy
    from lib.train.models import ScratchConfig, build_scratch

    params = load_params(REPO / "params.yaml")
    manifest = REPO / params["data"]["processed_dir"] / "manifest.csv"
    if not manifest.is_file():
        print(f"no {manifest}: run `make repro` (or `dvc repro prepare`) first", file=sys.stderr)
        return 2
    size = int(params["train_scratch"]["input_size"])
    batch = int(params["train"]["batch_size"])
    data = train.TrainingData.from_manifest(manifest, REPO / params["data"]["raw_dir"], size)
    model_cfg = ScratchConfig.from_params(params["train_scratch"], "batchnorm")
    scratch = params["train_scratch"]
    cfg = train.TrainConfig.from_params(params["train"], epochs=scratch["epochs"],
                                        learning_rate=scratch["learning_rate"])
    n = len(data.train)

    def fresh():
        seed_everything(0)
        return train.compile_model(build_scratch(data.input_shape(1), data.n_classes, model_cfg),
                                   cfg)

    x, y = load_arrays(data.train, data.raw_dir, image_size=size, n_classes=data.n_classes)
    y1 = np.eye(data.n_classes, dtype="float32")[y]
    results = {
        "in-memory tensors": _images_per_second(
            fresh(), {"x": x, "y": y1, "batch_size": batch, "shuffle": True}, n, args.epochs),
        "tf.data pipeline": _images_per_second(
            fresh(), {"x": data.datasets(batch, 1, seed=0)[0]}, n, args.epochs),
        "tf.data + augmentation": _images_per_second(
            fresh(), {"x": data.datasets(batch, 1, seed=0,
                                         augment=AugmentPolicy(AugmentConfig.from_params(params["augment"]),
                                                               0))[0]}, n, args.epochs),
    }
    base = results["in-memory tensors"]
    print(f"training throughput, {n} images at {size} px, batch {batch}, "
          f"{args.epochs - 1} timed epochs each")
    for label, value in results.items():
        print(f"  {label:<24} {value:7.1f} img/s   ratio to in-memory {value / base:5.2f}")
    ratio = results["tf.data pipeline"] / base
    print(f"\nbudget: tf.data / in-memory >= 0.90: measured {ratio:.2f} "
          f"({'within' if ratio >= 0.9 else 'OVER'} budget)")
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
