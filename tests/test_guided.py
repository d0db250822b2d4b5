"""The guided arm's localisation term (lib.train.guided): what it measures, what it ignores, that
its trivial minimiser is not a flat map, and that training with it moves Grad-CAM into the mask."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lib.train import guided


def test_grid_masks_keep_each_cell_s_share_of_the_lesion() -> None:
    mask = np.zeros((1, 8, 8), np.float32)
    mask[0, :4, :4] = 1
    assert np.allclose(guided.grid_masks(mask, (2, 2)).numpy()[0], [[1, 0], [0, 0]])
    dot = np.zeros((1, 8, 8, 1), np.float32)
    dot[0, 0, 0, 0] = 1  # one pixel: a quarter of a 2 x 2 cell
    assert guided.grid_masks(dot, (4, 4)).numpy()[0, 0, 0] == pytest.approx(0.25)


def test_mass_is_the_lesion_share_for_a_flat_map_and_one_for_a_map_inside_it() -> None:
    masks = tf.constant([[[1.0, 0.0], [0.0, 0.0]]])
    flat, zero = tf.fill((1, 2, 2), 3.0), tf.zeros((1, 2, 2))
    assert guided.mask_mass(flat, masks).numpy()[0] == pytest.approx(0.25)
    # the trivial minimiser of a share-outside loss (a map that is zero everywhere) gains nothing
    assert guided.mask_mass(zero, masks).numpy()[0] == pytest.approx(0.25)
    inside = tf.constant([[[50.0, 0.0], [0.0, 0.0]]])
    assert guided.mask_mass(inside, masks).numpy()[0] == pytest.approx(1.0, abs=1e-3)
    outside = tf.constant([[[0.0, 50.0], [0.0, 0.0]]])
    assert guided.mask_mass(outside, masks).numpy()[0] < 1e-3
    # blind to the map's scale: raw Grad-CAM is ~1e-3 at initialisation
    assert guided.mask_mass(inside * 1e-4, masks).numpy()[0] == pytest.approx(
        guided.mask_mass(inside, masks).numpy()[0])


def test_images_without_a_mask_add_nothing() -> None:
    cam = tf.constant([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 9.0]]])
    masked = tf.constant([[[1.0, 0.0], [0.0, 0.0]]])
    both = tf.concat([masked, tf.zeros((1, 2, 2))], axis=0)
    alone = guided.localisation_loss(cam[:1], masked).numpy()
    assert guided.localisation_loss(cam, both).numpy() == pytest.approx(alone)
    assert guided.localisation_loss(cam, tf.zeros((2, 2, 2))).numpy() == 0.0


def tiny_task(n: int = 32, size: int = 16, seed: int = 0):
    """Two bright squares per image: the class is read from either; the mask marks one of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.2, 0.05, (n, size, size, 1)).astype(np.float32)
    masks = np.zeros((n, size, size), np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        value = 1.0 if y[i] else 0.6
        a, b = rng.choice(size // 4, 2, replace=False) * 4
        x[i, 0:4, a:a + 4] = value
        x[i, 12:16, b:b + 4] = value  # the marked one, at the bottom
        masks[i, 12:16, b:b + 4] = 1
    return x, y, masks


def tiny_classifier():
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inputs, outputs)


def mass_after(lam: float, steps: int) -> tuple[float, float]:
    import keras

    x, y, masks = tiny_task()
    model = guided.GuidedClassifier(tiny_classifier(), "features", lam)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    def mass() -> float:
        _, cam = model.logits_and_cam(x, tf.constant(y, tf.int32), training=False)
        return float(tf.reduce_mean(guided.mask_mass(cam, guided.grid_masks(masks, (16, 16)))))
    before = mass()
    data = tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(8).repeat()
    history = model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    return before, mass()


def test_guided_steps_move_grad_cam_into_the_mask_and_plain_ones_do_not() -> None:
    before, guided_after = mass_after(lam=1.0, steps=40)
    same_start, plain_after = mass_after(lam=0.0, steps=40)
    assert before == pytest.approx(same_start)  # one seeded initialisation for both
    assert guided_after > before + 0.1, (before, guided_after)
    assert guided_after > plain_after + 0.1, (plain_after, guided_after)


def test_a_model_without_a_dense_head_or_a_negative_weight_is_refused() -> None:
    import keras

    inputs = keras.Input((8, 8, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, name="c")(inputs))
    with pytest.raises(ValueError, match="Dense softmax"):
        guided.GuidedClassifier(keras.Model(inputs, pooled), "c", 0.1)
    with pytest.raises(ValueError, match="lam must be"):
        guided.GuidedClassifier(tiny_classifier(), "features", -1.0)
