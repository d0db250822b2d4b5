"""Step-throughput budget: each training stage's training step against its compute bound.

For every training stage of the default profile (the four scratch variants at their input side,
the transfer model's fine-tuning phase, the pretrain backbone), in one run on the prepared dataset
(data/processed/manifest.csv must exist, as after `make repro`):

- **compute bound**: the stage's model fitted on one in-memory batch of random pixels, repeated
  (`tf.data.Dataset.from_tensors(batch).repeat()`): forward + backward + optimizer step and
  nothing else, the fastest this machine trains that model;
- **stage step**: the same model fitted on the stage's own training stream
  (``lib.data.inputs.TrainStream``: in-memory decoded images, the per-epoch order, the seeded
  augmentation, grey-to-RGB for the backbones), as `fit` runs it, validation excluded.

The first epoch of each is not timed (tracing). Prints images/second and the ratio stage / bound
per stage; the budget is a ratio >= 0.8 (the input pipeline costs at most a fifth of the step).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUDGET = 0.8


def images_per_second(model: Any, dataset: Any, steps: int, n_images: int, epochs: int) -> float:
    """Images per second over epochs 2..epochs of model.fit (the first one traces)."""
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    timer = Timer()
    model.fit(dataset, steps_per_epoch=steps, epochs=epochs, callbacks=[timer], verbose=0,
              shuffle=False)
    return n_images * (epochs - 1) / sum(timer.seconds[1:])


def stages(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{stage: build (a fresh model), input side, channels, learning rate, augmented?} for
    every training stage of params.yaml."""
    from lib.train.models import NO_WEIGHTS, ScratchConfig, build_scratch, build_transfer

    scratch, transfer = params["train_scratch"], params["train_transfer"]
    out: dict[str, dict[str, Any]] = {}
    for variant in params["variants"]:
        cfg = ScratchConfig.from_params(scratch, variant)
        size = int(scratch["input_size"])

        def build(cfg: ScratchConfig = cfg, size: int = size) -> Any:
            return build_scratch((size, size, 1), 4, cfg)

        out[f"train_scratch@{variant}"] = {"build": build, "size": size, "channels": 1,
                                           "lr": scratch["learning_rate"]}
    for name, group, lr in (("train_transfer (phase 2)", transfer,
                             transfer["phase2_learning_rate"]),
                            ("pretrain", params["pretrain"], params["pretrain"]["learning_rate"])):
        size = int(group["input_size"])

        def build(size: int = size) -> Any:  # every layer trains: the fine-tuning phase's cost
            return build_transfer(transfer["backbone"], (size, size, 3), 4, NO_WEIGHTS)

        out[name] = {"build": build, "size": size, "channels": 3, "lr": lr,
                     "augment": name != "pretrain"}
    for spec in out.values():
        spec.setdefault("augment", True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per measurement (the first is not timed)")
    parser.add_argument("--only", default="", help="a substring of the stage names to measure")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from lib.config import load_params
    from lib.seeding import seed_everything
    from lib.train import fit as train
    from lib.train.augment import AugmentConfig, AugmentPolicy

    params = load_params(REPO / "params.yaml")
    manifest = REPO / params["data"]["processed_dir"] / "manifest.csv"
    if not manifest.is_file():
        print(f"no {manifest}: run `make repro` (or `dvc repro prepare`) first", file=sys.stderr)
        return 2
    raw = REPO / params["data"]["raw_dir"]
    batch = int(params["train"]["batch_size"])
    policy_cfg = AugmentConfig.from_params(params["augment"])
    cache: dict[int, Any] = {}

    def data_for(size: int) -> Any:
        if size not in cache:
            cache[size] = train.TrainingData.from_manifest(manifest, raw, size)
        return cache[size]

    ratios = {}
    print(f"step throughput per training stage, batch {batch}, {args.epochs - 1} timed epochs")
    for name, spec in stages(params).items():
        if args.only not in name:
            continue
        data = data_for(spec["size"])
        cfg = train.TrainConfig.from_params(params["train"], epochs=args.epochs,
                                            learning_rate=spec["lr"])
        stream, _ = data.datasets(batch, spec["channels"], seed=0,
                                  augment=AugmentPolicy(policy_cfg, 0) if spec["augment"]
                                  else None)
        n = len(stream.labels)
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (batch, spec["size"], spec["size"], spec["channels"]))
        y = np.eye(4, dtype="float32")[np.arange(batch) % 4]
        one_batch = tf.data.Dataset.from_tensors((x.astype("float32"), y)).repeat()

        seed_everything(0)
        bound = images_per_second(train.compile_model(spec["build"](), cfg), one_batch,
                                  stream.steps, stream.steps * batch, args.epochs)
        seed_everything(0)
        step = images_per_second(train.compile_model(spec["build"](), cfg),
                                 stream.dataset(0, args.epochs), stream.steps, n, args.epochs)
        ratios[name] = step / bound
        print(f"  {name:<32} bound {bound:7.1f} img/s   stage {step:7.1f} img/s   "
              f"ratio {ratios[name]:5.2f}", flush=True)
    worst = min(ratios.values()) if ratios else float("nan")
    print(f"\nbudget: every stage's step / compute bound >= {BUDGET}: lowest {worst:.2f} "
          f"({'within' if worst >= BUDGET else 'OVER'} budget)")
    return 0 if worst >= BUDGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
