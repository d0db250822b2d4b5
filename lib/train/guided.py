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
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

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


class GuidedClassifier(keras.Model):
    """A trained-as-usual classifier plus the localisation term at one of its layers.

    `classifier` must end in a Dense softmax layer (both of the study's models do); its logits
    are rebuilt from that layer's input and weights, since Grad-CAM reads the score before the
    softmax. Training data: (images, integer labels, masks); validation: (images, labels).
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
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss", "classification", "localisation")}

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.classifier(inputs, training=training)

    @property
    def metrics(self) -> list[Any]:
        return list(self.trackers.values())

    def logits_and_cam(self, x: Any, y: Any, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """The logits and the true class's Grad-CAM (N, gh, gw), differentiable in the weights."""
        with tf.GradientTape() as inner:
            features, pooled = self.parts(x, training=training)
            logits = tf.matmul(pooled, self.head.kernel) + self.head.bias
            score = tf.reduce_sum(logits * tf.one_hot(y, tf.shape(logits)[-1]), axis=-1)
        grads = inner.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return logits, tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, masks = data
        y = tf.cast(tf.reshape(y, (-1,)), tf.int32)
        with tf.GradientTape() as tape:
            logits, cam = self.logits_and_cam(x, y, training=True)
            ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
            loc = localisation_loss(cam, grid_masks(masks, tuple(cam.shape[1:3])),
                                    self.temperature)
            loss = ce + self.lam * loc
        variables = self.classifier.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        for name, value in (("loss", loss), ("classification", ce), ("localisation", loc)):
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y = data[:2]
        y = tf.cast(tf.reshape(y, (-1,)), tf.int32)
        probs = self.classifier(x, training=False)
        ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probs))
        self.trackers["classification"].update_state(ce)
        return {"classification": self.trackers["classification"].result()}
