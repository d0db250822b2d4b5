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
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy")
    def mass() -> float:
        _, cam = model.logits_and_cam(x, tf.constant(y, tf.int32), training=False)
        return float(tf.reduce_mean(guided.mask_mass(cam, guided.grid_masks(masks, (16, 16)))))
    before = mass()
    onehot = np.eye(2, dtype=np.float32)[y]
    data = tf.data.Dataset.from_tensor_slices((x, onehot, masks[..., None])).batch(8).repeat()
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


# ---------------------------------------------------------------- the stage's pieces
def test_masks_move_with_their_images_and_the_images_are_the_unmasked_stream_s() -> None:
    from lib.data.inputs import TrainStream
    from lib.train.augment import AugmentConfig, AugmentPolicy

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (12, 16, 16, 1)).astype(np.float32)
    masks = np.zeros((12, 16, 16, 1), np.float32)
    masks[:, 2:6, 1:4] = 1  # off-centre, so a mirror moves it
    labels = rng.integers(0, 2, 12)
    flips = AugmentConfig(flip="horizontal", rotation_deg=0, zoom=0, translation=0, contrast=0,
                          brightness=0)
    plain = TrainStream(images, labels, 2, 4, seed=1, augment=AugmentPolicy(flips, 1))
    masked = TrainStream(images, labels, 2, 4, seed=1, augment=AugmentPolicy(flips, 1),
                         masks=masks)
    mirrored = 0
    for (xp, _), (xm, ym, mm) in zip(plain.dataset(0, 2), masked.dataset(0, 2), strict=True):
        assert np.array_equal(xp.numpy(), xm.numpy())  # masks do not change the image draws
        order = np.argmax(ym.numpy(), axis=1)
        assert len(order) == len(xm)
        for x, m in zip(xm.numpy(), mm.numpy(), strict=True):
            flipped = not any(np.array_equal(x, im) for im in images)
            assert np.array_equal(m, masks[0][:, ::-1] if flipped else masks[0])
            mirrored += flipped
    assert 0 < mirrored < 24  # both kinds were drawn


def test_the_annotated_share_is_per_class_seeded_and_never_a_healthy_image() -> None:
    has_mask = np.array([True] * 40 + [False] * 20)
    labels = np.array([0] * 20 + [1] * 20 + [2] * 20)
    keep = guided.annotated(has_mask, labels, 0.1, seed=5)
    assert keep[:20].sum() == 2 and keep[20:40].sum() == 2 and not keep[40:].any()
    assert np.array_equal(keep, guided.annotated(has_mask, labels, 0.1, seed=5))
    assert not np.array_equal(keep, guided.annotated(has_mask, labels, 0.1, seed=6))
    assert guided.annotated(has_mask, labels, 0.001, seed=5)[:20].sum() == 1  # one at least
    assert not guided.annotated(has_mask, labels, 0.0, seed=5).any()
    assert guided.annotated(has_mask, labels, 1.0, seed=5).sum() == 40


def test_a_guided_model_saves_reloads_and_unwraps_to_its_classifier(tmp_path) -> None:
    import keras

    from lib.train import fit

    x, y, masks = tiny_task(n=16)
    onehot = np.eye(2, dtype=np.float32)[y]
    model = guided.GuidedClassifier(tiny_classifier(), "features", 0.5)
    fit.compile_model(model, fit.TrainConfig(epochs=1, learning_rate=1e-3))
    ds = tf.data.Dataset.from_tensor_slices((x, onehot, masks[..., None])).batch(8)
    logs = model.fit(ds, validation_data=ds, epochs=1, verbose=0).history
    assert {"localisation", "guided_loss", "val_guided_loss", "val_macro_f1"} <= set(logs)
    model.save(tmp_path / "g.keras")
    again = keras.models.load_model(tmp_path / "g.keras")
    assert isinstance(again, guided.GuidedClassifier) and again.lam == 0.5
    plain = fit.deployable(again)
    assert not isinstance(plain, guided.GuidedClassifier)
    assert np.allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert fit.deployable(plain) is plain


def test_guide_config_refuses_bad_values_and_unknown_keys() -> None:
    assert guided.GuideConfig.from_params({"lam": 0.2, "models": ["transfer"]}).lam == 0.2
    for bad in ({"lam": -1}, {"mask_share": 1.5}, {"epochs": 0}, {"temperature": 0},
                {"learning_rate": 0}):
        with pytest.raises(ValueError, match="guide\\."):
            guided.GuideConfig(**bad)
    with pytest.raises(ValueError, match="unknown key"):
        guided.GuideConfig.from_params({"lamda": 0.1})


@pytest.fixture(scope="module")
def tiny_plain(tmp_path_factory: pytest.TempPathFactory):
    from lib.tiny import tiny_dataset, tiny_models

    tiny = tiny_dataset(per_class=6, image_size=64, seed=3,
                        workdir=tmp_path_factory.mktemp("tiny"))
    return tiny, tiny_models(tiny, variants=("batchnorm",), seeds=(0,), epochs=1) / \
        "scratch_batchnorm"


def test_train_seeds_fine_tunes_each_seed_s_plain_model_with_masks(tiny_plain, tmp_path) -> None:
    import keras

    from lib.train import fit

    tiny, plain_dir = tiny_plain
    data = fit.TrainingData.from_manifest(tiny.manifest_path, tiny.raw_dir, 32)
    with_masks = guided.with_masks(data, 1.0, seed=0)
    tumour = (with_masks.train["class"] != "notumor").to_numpy()
    has = with_masks.train_masks.reshape(len(tumour), -1).max(axis=1) > 0
    assert np.array_equal(has, tumour)  # every tumour image and no healthy one
    cfg = fit.TrainConfig(epochs=2, learning_rate=1e-3, batch_size=8, monitor="val_guided_loss")
    starts = []

    def warm(seed: int) -> object:
        model = keras.models.load_model(plain_dir / f"seed{seed}.keras")
        starts.append(seed)
        return guided.GuidedClassifier(model, "block1_relu", 0.5)

    runs = fit.train_seeds(with_masks, [0], None, cfg, stage="guided_test", warm_start=warm,
                           models_dir=tmp_path / "m", resume_root=tmp_path, verbose=0)
    assert starts == [0]
    saved = keras.models.load_model(tmp_path / "m" / "seed0.keras")
    assert not isinstance(saved, guided.GuidedClassifier)
    before = keras.models.load_model(plain_dir / "seed0.keras")
    assert not all(np.array_equal(a, b) for a, b in
                   zip(saved.get_weights(), before.get_weights(), strict=True))
    assert {"localisation", "val_guided_loss"} <= set(runs.histories["seed 0"].columns)
    fit.train_seeds(with_masks, [0], None, cfg, stage="guided_test", warm_start=warm,
                    models_dir=tmp_path / "again", resume_root=tmp_path / "r2", verbose=0)
    again = keras.models.load_model(tmp_path / "again" / "seed0.keras")
    assert all(np.array_equal(a, b) for a, b in  # the second-order gradients are deterministic
               zip(saved.get_weights(), again.get_weights(), strict=True))
    balanced = fit.TrainConfig(epochs=1, learning_rate=1e-3, class_weight="balanced")
    with pytest.raises(ValueError, match="class_weight"):
        fit.train_seeds(with_masks, [0], None, balanced, stage="guided_test", warm_start=warm,
                        resume_root=tmp_path, verbose=0)
