"""Probe for the guided arm: plain vs mask-guided training of one scratch CNN, one seed.

Not a stage and not a claim (one seed, fixed epochs, flips only): it measures whether the
localisation term of lib.train.guided moves Grad-CAM into the lesion, what it costs in macro-F1
and in training time, before the term becomes a stage evaluated over seeds.

    python -m tools.guided_probe --params params.yaml --epochs 20 --lam 0.1

Reads the prepare stage's manifest and data/raw (run `make repro` first); prints one JSON line
per arm: test macro-F1, Grad-CAM and HiResCAM strict pointing game on the test tumour images at
the explain stage's layer, and training seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def flips(x: Any, y: Any, m: Any) -> tuple[Any, Any, Any]:
    """The same random left-right flip of an image and its mask."""
    import tensorflow as tf

    flip = tf.random.uniform(()) < 0.5
    return (tf.cond(flip, lambda: tf.image.flip_left_right(x), lambda: x), y,
            tf.cond(flip, lambda: tf.image.flip_left_right(m[..., None])[..., 0], lambda: m))


def arm(lam: float, data: dict[str, Any], params: dict[str, Any], epochs: int, seed: int
        ) -> dict[str, Any]:
    import keras
    import tensorflow as tf
    from sklearn.metrics import f1_score

    from lib.explain import scores
    from lib.explain.methods import Explainer
    from lib.seeding import seed_everything
    from lib.train import guided
    from lib.train.models import ScratchConfig, build_scratch

    seed_everything(seed)
    size = data["x_train"].shape[1]
    model = build_scratch((size, size, 1), 4,
                          ScratchConfig.from_params(params["train_scratch"], "batchnorm"))
    explainer_layer = Explainer(model, "auto", min_grid=params["explain"]["min_grid"]).layer
    optimizer = keras.optimizers.Adam(params["train_scratch"]["learning_rate"])
    ds = (tf.data.Dataset.from_tensor_slices((data["x_train"], data["y_train"],
                                              data["m_train"]))
          .shuffle(len(data["y_train"]), seed=seed).map(flips).batch(32))
    if lam > 0:
        trainer = guided.GuidedClassifier(model, explainer_layer, lam)
        trainer.compile(optimizer=optimizer, loss="categorical_crossentropy")
        ds = ds.map(lambda x, y, m: (x, tf.one_hot(y, 4), m[..., None]))
    else:  # the plain arm trains as Keras does, so its seconds are the cost baseline
        trainer = model
        trainer.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        ds = ds.map(lambda x, y, m: (x, y))
    start = time.perf_counter()
    trainer.fit(ds, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    probs = model.predict(data["x_test"], verbose=0)
    y = data["y_test"]
    out: dict[str, Any] = {"lam": lam, "layer": explainer_layer, "seconds": round(seconds, 1),
                           "test_macro_f1": round(float(f1_score(y, probs.argmax(1),
                                                                 average="macro")), 3)}
    explainer = Explainer(model, explainer_layer)
    rows = data["tumour"]
    for method in ("gradcam", "hirescam"):
        maps = explainer.maps(data["x_test"][rows], y[rows], method)
        table = scores.score_maps(maps, [data["masks_test"][i] for i in rows])
        out[f"{method}_pointing_game"] = round(float(table["pointing_game"].mean()), 3)
    return out


def load(params: dict[str, Any], root: Path, size: int) -> dict[str, Any]:
    from lib.explain.study import SplitImages
    from lib.train.guided import grid_masks

    manifest, raw = root / "data" / "processed" / "manifest.csv", root / "data" / "raw"
    train = SplitImages.load(manifest, raw, 1, 0, split="train")
    test = SplitImages.load(manifest, raw, 1, 0, split="test")
    masks = np.stack([m.astype(np.float32) for m in train.masks])
    return {"x_train": train.inputs(size, 1), "y_train": train.frame["label"].to_numpy(),
            "m_train": grid_masks(masks, (size, size)).numpy(),
            "x_test": test.inputs(size, 1), "y_test": test.frame["label"].to_numpy(),
            "masks_test": test.masks, "tumour": test.tumour}


def main(argv: list[str] | None = None) -> int:
    from lib.config import load_params, repo_root

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lam", type=float, nargs="+", default=[0.0, 0.1])
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    params = load_params(args.params)
    data = load(params, repo_root(), int(params["train_scratch"]["input_size"]))
    for lam in args.lam:
        print(json.dumps(arm(lam, data, params, args.epochs, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
