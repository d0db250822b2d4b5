"""Mask-guided training: a localisation term that teaches a classifier where to look.

First part of the guided arm (not yet a stage): the loss and a Keras model that trains with it.
For an image with a tumour mask M, averaged onto the cells of the CAM layer's grid (values in
[0, 1]):

    L_loc = -log  sum_cells  softmax(CAM / max(CAM) / temperature)_cell * M_cell

where CAM is Grad-CAM of the true class at `layer`, its logit's gradient taken with an inner
GradientTape, so the term is differentiable in the weights (a second-order gradient, as in GAIN,
Li et al. 2018, and the HiResCAM mask loss, Draelos & Carin 2021). The total loss is
cross-entropy + lam * mean(L_loc over the images that carry a mask); an image without one (a
notumor scan, unlabelled data: an all-zero mask) adds only its cross-entropy.

Why this form:
- The spatial softmax makes the map a distribution over cells, so a map that is zero (or
  constant) everywhere is uniform and keeps the full penalty. A ReLU'd map normalised by its sum
  and penalised for its share outside the mask is minimised by a map that is zero everywhere, and
  a probe found the network learns exactly that (its pointing game stayed at 0.20 on test).
- Dividing by the map's own maximum first makes the term blind to the CAM's scale (raw
  Grad-CAM values are ~1e-3 at initialisation, where a softmax of them is flat and its gradient
  vanishes); `temperature` then sets how sharp a distribution a [0, 1] map becomes (0.1: a cell
  at the maximum weighs e^10 times a cell at zero).
- -log of the mass inside keeps a useful gradient while the mass is still small.

The stage (notebooks/04b_train_guided.ipynb, `train_guided@<model>`) fine-tunes each seed's
plain model with this loss for a few epochs (a warm start: the plain model already classifies,
so the term only has to move where it looks), keeping the epoch with the lowest validation
guided loss (cross-entropy + lam * localisation on the validation masks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from ..config import check_int, from_group
from . import distribute
from . import models as _models  # noqa: F401  (registers the custom layers a saved model holds)
from .fit import TrainingData

EPS = 1e-7
TEMPERATURE = 0.1  # of the max-normalised map


def grid_masks(masks: Any, grid: tuple[int, int]) -> tf.Tensor:
    """(N, H, W) or (N, H, W, 1) masks -> (N, gh, gw): the share of each CAM cell in the mask
    (area averaging, so a lesion smaller than a cell still counts, by its share)."""
    m = tf.convert_to_tensor(masks, tf.float32)
    if m.shape.rank == 3:
        m = m[..., None]
    return tf.image.resize(m, grid, method="area")[..., 0]


def mask_mass(cam: tf.Tensor, masks: tf.Tensor, temperature: float = TEMPERATURE) -> tf.Tensor:
    """Per image, the probability mass of softmax(cam / max(cam) / temperature) over the cells,
    weighted by each cell's share of the mask: near 1 when the map sits inside the lesion, the
    lesion's share of the image when the map is flat or zero."""
    flat = tf.reshape(cam, (tf.shape(cam)[0], -1))
    flat = flat / (tf.reduce_max(flat, axis=-1, keepdims=True) + EPS) / temperature
    weights = tf.reshape(masks, (tf.shape(masks)[0], -1))
    return tf.reduce_sum(tf.nn.softmax(flat, axis=-1) * weights, axis=-1)


def localisation_loss(cam: tf.Tensor, masks: tf.Tensor, temperature: float = TEMPERATURE
                      ) -> tf.Tensor:
    """Mean of -log(mask_mass) over the images whose mask is not empty; 0 when none is."""
    has_mask = tf.cast(tf.reduce_max(tf.reshape(masks, (tf.shape(masks)[0], -1)), -1) > 0,
                       tf.float32)
    per_image = -tf.math.log(mask_mass(cam, masks, temperature) + EPS)
    return tf.math.divide_no_nan(tf.reduce_sum(per_image * has_mask), tf.reduce_sum(has_mask))


@dataclass(frozen=True)
class GuideConfig:
    """The `guide:` group: which plain models are fine-tuned with the localisation term, how
    strongly, for how long, and how many tumour training images keep their mask."""

    lam: float = 0.1               # weight of the localisation term
    temperature: float = TEMPERATURE
    mask_share: float = 1.0        # share of the tumour training images whose mask is used
    epochs: int = 6                # of fine-tuning, after the plain model's own training
    learning_rate: float = 0.0005
    monitor: str = "val_guided_loss"  # what picks the kept epoch (lib.train.fit's callbacks)

    def __post_init__(self) -> None:
        check_int("guide.epochs", self.epochs, 1)
        if not self.lam >= 0:
            raise ValueError(f"guide.lam must be >= 0, got {self.lam!r}")
        if not self.temperature > 0:
            raise ValueError(f"guide.temperature must be > 0, got {self.temperature!r}")
        if not 0 <= self.mask_share <= 1:
            raise ValueError(f"guide.mask_share must be in [0, 1], got {self.mask_share!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"guide.learning_rate must be > 0, got {self.learning_rate!r}")

    @classmethod
    def from_params(cls, group: dict[str, Any]) -> GuideConfig:
        return from_group(cls, group, "guide", others=("models",))


def annotated(has_mask: np.ndarray, labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Which images keep their mask: `share` of the masked images of each class, drawn once from
    `seed` (the same subset for every training seed, as an annotation budget would be), at least
    one per class that has any when share > 0."""
    has_mask = np.asarray(has_mask, bool)
    keep = np.zeros(len(has_mask), bool)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        rows = np.flatnonzero(has_mask & (labels == label))
        if len(rows) and share > 0:
            n = max(1, int(round(share * len(rows))))
            keep[rng.choice(rows, n, replace=False)] = True
    return keep

def load_masks(frame: pd.DataFrame, raw_dir: Path, image_size: int) -> np.ndarray:
    """Each row's lesion mask at the model's input size, float32 (N, S, S, 1): the share of each
    input pixel inside the lesion (area-averaged, so a lesion smaller than a pixel still counts);
    all zero for a row without a mask. EXIF orientation is applied as for its image."""
    import tensorflow as tf
    from PIL import Image, ImageOps

    from ..data.images import load_mask

    out = np.zeros((len(frame), image_size, image_size, 1), np.float32)
    for i, (path, mask) in enumerate(zip(frame["path"], frame["mask"], strict=True)):
        if not isinstance(mask, str) or not mask:
            continue
        with Image.open(Path(raw_dir) / path) as img:
            shape = ImageOps.exif_transpose(img).size[::-1]
        full = load_mask(Path(raw_dir), mask, shape).astype(np.float32)[..., None]
        out[i] = tf.image.resize(full, (image_size, image_size), method="area").numpy()
    return out


def with_masks(data: TrainingData, share: float, seed: int) -> TrainingData:
    """A copy of `data` whose batches carry lesion masks: `share` of each split's masked images
    per class keep theirs (``annotated``, drawn from `seed`), the others (and every image
    without a lesion) an all-zero mask."""

    def kept(frame: pd.DataFrame) -> np.ndarray:
        masks = load_masks(frame, data.raw_dir, data.image_size)
        keep = annotated(masks.reshape(len(masks), -1).max(axis=1) > 0,
                         frame["label"].to_numpy(), share, seed)
        return masks * keep[:, None, None, None]

    return replace(data, train_masks=kept(data.train), val_masks=kept(data.val))


@keras.saving.register_keras_serializable(package="brain_mri")
class GuidedClassifier(keras.Model):
    """A classifier trained with cross-entropy plus the localisation term at one of its layers.

    It wraps `classifier` (whose last layer must be a Dense softmax, as both of the study's
    models have): inference is the classifier's own; training and validation batches are
    (images, one-hot labels, masks) with masks (batch, H, W, 1) at the input size (an all-zero
    mask adds no localisation term). Compile it like any model (lib.train.fit.compile_model):
    the compiled loss and metrics are the classification part. Saved and reloaded whole; the
    stage keeps only `.classifier`.
    """

    def __init__(self, classifier: keras.Model, layer: str, lam: float,
                 temperature: float = TEMPERATURE, **kwargs: Any):
        super().__init__(**kwargs)
        if lam < 0 or temperature <= 0:
            raise ValueError(f"lam must be >= 0 and temperature > 0, got {lam}, {temperature}")
        head = classifier.layers[-1]
        if not isinstance(head, keras.layers.Dense):
            raise ValueError(f"{classifier.name}: the last layer must be a Dense softmax, "
                             f"got {type(head).__name__}")
        self.classifier, self.head = classifier, head
        self.layer, self.lam, self.temperature = layer, float(lam), float(temperature)
        self.parts = keras.Model(classifier.inputs,
                                 [classifier.get_layer(layer).output, head.input])
        self.localisation = keras.metrics.Mean(name="localisation")
        self.guided_loss = keras.metrics.Mean(name="guided_loss")
        self.built = True  # every variable is the classifier's, already built

    def build(self, input_shape: Any = None) -> None:
        self.built = True

    @property
    def input_shape(self) -> Any:
        return self.classifier.input_shape

    @property
    def output_shape(self) -> Any:
        return self.classifier.output_shape

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.classifier(inputs, training=training)

    def get_config(self) -> dict[str, Any]:
        return {"classifier": keras.saving.serialize_keras_object(self.classifier),
                "layer": self.layer, "lam": self.lam, "temperature": self.temperature,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GuidedClassifier:
        config = dict(config)
        classifier = keras.saving.deserialize_keras_object(config.pop("classifier"))
        return cls(classifier, **config)

    def logits_and_cam(self, x: Any, y: Any, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """The logits and the Grad-CAM (N, gh, gw) of class `y` (integer labels),
        differentiable in the weights: an inner tape gives the gradient of the logit.

        Both come out in the head's dtype: float32, also in mixed precision, where the
        features are float16 (the casts are no-ops in float32)."""
        with tf.GradientTape() as inner:
            features, pooled = self.parts(x, training=training)
            logits = tf.matmul(tf.cast(pooled, self.head.kernel.dtype), self.head.kernel) \
                + self.head.bias
            score = tf.reduce_sum(logits * tf.one_hot(y, tf.shape(logits)[-1]), axis=-1)
        grads = inner.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
        return logits, tf.cast(cam, logits.dtype)

    def losses_of(self, data: Any, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(softmax scores, classification loss, localisation term) of one batch."""
        x, y, masks = data
        labels = tf.argmax(y, axis=-1, output_type=tf.int32)
        logits, cam = self.logits_and_cam(x, labels, training=training)
        probs = tf.nn.softmax(logits)
        ce = self._compute_loss(x=x, y=y, y_pred=probs, training=training)
        loc = localisation_loss(cam, grid_masks(masks, tuple(cam.shape[1:3])), self.temperature)
        return probs, ce, loc

    def _track(self, data: Any, probs: tf.Tensor, ce: tf.Tensor, loc: tf.Tensor) -> dict:
        x, y, _ = data
        ce = distribute.unscale_for_replicas(ce)  # the compiled loss is a share per replica
        self._loss_tracker.update_state(ce, sample_weight=tf.shape(x)[0])
        self.localisation.update_state(loc)
        self.guided_loss.update_state(ce + self.lam * loc)
        logs = self.compute_metrics(x, y, probs)
        return {**logs, "localisation": self.localisation.result(),
                "guided_loss": self.guided_loss.result()}

    def train_step(self, data: Any) -> dict[str, Any]:
        """One step; under a strategy each replica's term is its share (the compiled loss
        already is) and in mixed precision the loss is scaled; both are no-ops by default."""
        with tf.GradientTape() as tape:
            probs, ce, loc = self.losses_of(data, training=True)
            loss = ce + self.lam * distribute.scale_for_replicas(loc)
            loss = self.optimizer.scale_loss(loss)
        variables = self.classifier.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return self._track(data, probs, ce, loc)

    def test_step(self, data: Any) -> dict[str, Any]:
        probs, ce, loc = self.losses_of(data, training=False)
        return self._track(data, probs, ce, loc)
