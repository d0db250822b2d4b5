"""One seed for every source of randomness: the rule every stage that trains or explains follows."""

from __future__ import annotations

import os


def seed_everything(seed: int) -> None:
    """One seed for Python, numpy, TF and Keras, and deterministic TF ops (bit-identical reruns)."""
    import keras
    import tensorflow as tf

    os.environ.setdefault("PYTHONHASHSEED", "0")
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()
