"""The augmentation policy: masks follow their image, photometry spares masks, seeds reproduce."""

from __future__ import annotations

from dataclasses import asdict

import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from lib.train import figures as plots
from lib.train.augment import AugmentConfig, AugmentPolicy, preview

STRONG = AugmentConfig(flip="horizontal_and_vertical", rotation_deg=30.0, zoom=0.2,
                       translation=0.1, contrast=0.2, brightness=0.1)
OFF = AugmentConfig(flip="none", rotation_deg=0, zoom=0, translation=0, contrast=0,
                    brightness=0)


def blob_batch(n: int, size: int = 96, radius: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """n copies of a black image with one bright off-centre disc, and its mask (the disc)."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size * 0.35) ** 2 + (xx - size * 0.65) ** 2 <= radius**2
    image = np.where(disc, 200.0, 0.0).astype(np.float32)
    return (np.repeat(image[None, ..., None], n, axis=0),
            np.repeat(disc[None, ..., None], n, axis=0).astype(np.float32))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_masks_follow_their_image_through_the_full_policy() -> None:
    images, masks = blob_batch(8)
    out_images, out_masks = AugmentPolicy(STRONG, seed=3)(images, masks)
    out_images, out_masks = out_images.numpy()[..., 0], out_masks.numpy()[..., 0]
    assert set(np.unique(out_masks)) <= {0.0, 1.0}  # nearest-neighbour: still binary
    moved = 0
    for img, mask, original in zip(out_images, out_masks > 0.5, masks[..., 0] > 0.5,
                                   strict=True):
        # Contrast and brightness are affine per image, so the min/max midpoint is the
        # transformed midpoint between background and blob: the bright region of this image.
        bright = img > (img.min() + img.max()) / 2
        assert mask.sum() > 100, "the blob left the frame; the test would prove nothing"
        assert iou(bright, mask) >= 0.9
        # ...and they differ by at most a couple of pixels at the edge, nowhere else.
        assert not (mask & ~ndimage.binary_dilation(bright, iterations=2)).any()
        assert not (bright & ~ndimage.binary_dilation(mask, iterations=2)).any()
        moved += iou(mask, original) < 0.8
    assert moved >= 6, f"only {moved}/8 samples moved: the policy is close to the identity"


def test_photometric_layers_leave_masks_alone_and_stay_in_0_255() -> None:
    rng = np.random.default_rng(0)
    images = rng.choice([0.0, 128.0, 255.0], size=(6, 32, 32, 1)).astype(np.float32)
    masks = (rng.random((6, 32, 32, 1)) > 0.7).astype(np.float32)
    photometric = AugmentConfig(flip="none", rotation_deg=0, zoom=0, translation=0,
                                contrast=1.0, brightness=0.5)
    out_images, out_masks = AugmentPolicy(photometric, seed=1)(images, masks)
    np.testing.assert_array_equal(out_masks.numpy(), masks)
    assert not np.allclose(out_images.numpy(), images)  # the layers did something
    for cfg in (photometric, STRONG):
        out = AugmentPolicy(cfg, seed=2)(images).numpy()
        assert out.min() >= 0.0 and out.max() <= 255.0
    # Resizing can overshoot 0-255 a little; the policy's output never does.
    geometric = AugmentConfig(**{**asdict(STRONG), "contrast": 0, "brightness": 0})
    out = AugmentPolicy(geometric, seed=2)(images * 1.1 - 10).numpy()
    assert out.min() == 0.0 and out.max() == 255.0


def test_rgb_images_and_bool_masks_keep_their_shape_and_dtype() -> None:
    images = np.random.default_rng(0).uniform(0, 255, (3, 24, 24, 3)).astype(np.float32)
    masks = np.zeros((3, 24, 24, 1), bool)
    masks[:, 5:12, 6:14] = True
    out_images, out_masks = AugmentPolicy(STRONG, seed=0)(images, masks)
    assert out_images.shape == images.shape and out_images.dtype == tf.float32
    assert out_masks.shape == masks.shape and out_masks.dtype == tf.bool


def test_all_factors_zero_is_the_identity_and_so_is_inference() -> None:
    images, masks = blob_batch(4, size=32, radius=5)
    images = images + np.random.default_rng(0).uniform(0, 50, images.shape).astype(np.float32)
    off = AugmentPolicy(OFF, seed=0)
    assert off.layers == []
    out_images, out_masks = off(images, masks)
    np.testing.assert_array_equal(out_images.numpy(), images)
    np.testing.assert_array_equal(out_masks.numpy(), masks)
    np.testing.assert_array_equal(AugmentPolicy(STRONG, 0)(images, training=False).numpy(),
                                  images)


def test_same_seed_same_output_other_seed_other_output() -> None:
    images, masks = blob_batch(4, size=48, radius=7)
    a_img, a_mask = AugmentPolicy(STRONG, seed=11)(images, masks)
    b_img, b_mask = AugmentPolicy(STRONG, seed=11)(images, masks)
    c_img = AugmentPolicy(STRONG, seed=12)(images)
    np.testing.assert_array_equal(a_img.numpy(), b_img.numpy())
    np.testing.assert_array_equal(a_mask.numpy(), b_mask.numpy())
    assert not np.array_equal(a_img.numpy(), c_img.numpy())
    # The image draws do not depend on whether masks come along.
    np.testing.assert_array_equal(a_img.numpy(), AugmentPolicy(STRONG, seed=11)(images).numpy())


def run_pipeline(seed: int, epochs: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """Iterate a batched tf.data pipeline that augments in `map`, with a fresh policy."""
    images, masks = blob_batch(12, size=32, radius=5)
    policy = AugmentPolicy(STRONG, seed=seed)
    ds = (tf.data.Dataset.from_tensor_slices((images, masks, np.arange(12)))
          .batch(4).map(lambda x, m, y: (*policy(x, m), y)))
    out = []
    for _ in range(epochs):
        batches = list(ds.as_numpy_iterator())
        assert [b[2].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
        out.append(tuple(np.concatenate([b[i] for b in batches]) for i in (0, 1)))
    return out


def test_tf_data_map_is_reproducible_across_runs_and_fresh_across_epochs() -> None:
    first, again, other = run_pipeline(5), run_pipeline(5), run_pipeline(6)
    for epoch in range(2):
        np.testing.assert_array_equal(first[epoch][0], again[epoch][0])
        np.testing.assert_array_equal(first[epoch][1], again[epoch][1])
        assert not np.array_equal(first[epoch][0], other[epoch][0])
    assert not np.array_equal(first[0][0], first[1][0])  # epoch 2 draws new augmentations
    assert set(np.unique(first[1][1])) <= {0.0, 1.0}


def test_at_step_draws_depend_on_the_step_alone() -> None:
    """A batch's augmentation is a function of its global step, whatever ran before it: what
    lets a resumed run augment exactly as an uninterrupted one (lib.data.inputs.TrainStream)."""
    images, masks = blob_batch(4, size=32, radius=5)
    policy = AugmentPolicy(STRONG, seed=3)
    first_img, first_mask = policy.at_step(images, 7, masks)
    policy(images)  # advance every layer's random state, as other batches would
    policy.at_step(images, 2)
    again_img, again_mask = policy.at_step(images, 7, masks)
    fresh_img = AugmentPolicy(STRONG, seed=3).at_step(images, 7)
    np.testing.assert_array_equal(first_img.numpy(), again_img.numpy())
    np.testing.assert_array_equal(first_mask.numpy(), again_mask.numpy())
    np.testing.assert_array_equal(first_img.numpy(), fresh_img.numpy())
    assert not np.array_equal(first_img.numpy(), policy.at_step(images, 8).numpy())
    assert not np.array_equal(first_img.numpy(),
                              AugmentPolicy(STRONG, seed=4).at_step(images, 7).numpy())


def test_horizontal_and_vertical_flip_gives_all_four_orientations() -> None:
    # Keras 3's own RandomFlip("horizontal_and_vertical") flips both axes with one coin.
    images = np.zeros((64, 4, 4, 1), np.float32)
    images[:, 0, 0] = 255.0
    cfg = AugmentConfig(flip="horizontal_and_vertical", rotation_deg=0, zoom=0,
                        translation=0, contrast=0, brightness=0)
    out = AugmentPolicy(cfg, seed=0)(images).numpy()[..., 0]
    corners = {tuple(np.argwhere(img == 255.0)[0]) for img in out}
    assert corners == {(0, 0), (0, 3), (3, 0), (3, 3)}


def test_describe_lists_enabled_layers_geometric_first() -> None:
    rows = AugmentPolicy(AugmentConfig(zoom=0), seed=0).describe()
    assert [r["class"] for r in rows] == ["RandomFlip", "RandomRotation", "RandomTranslation",
                                          "RandomContrast", "RandomBrightness"]
    assert [r["kind"] for r in rows] == ["geometric"] * 3 + ["photometric"] * 2
    assert "±10°" in rows[1]["setting"] and len({r["seed"] for r in rows}) == len(rows)


def test_preview_returns_the_original_then_augmented_copies() -> None:
    images, masks = blob_batch(1, size=40, radius=6)
    image, mask = images[0, ..., 0].astype(np.uint8), masks[0, ..., 0] > 0
    out, out_masks = preview(AugmentPolicy(STRONG, seed=0), image, mask, n=5)
    assert out.shape == (5, 40, 40) and out_masks.shape == (5, 40, 40)
    assert out_masks.dtype == bool
    np.testing.assert_array_equal(out[0], image)
    np.testing.assert_array_equal(out_masks[0], mask)
    assert not np.array_equal(out[1:], np.repeat(out[:1], 4, axis=0))
    _, no_masks = preview(AugmentPolicy(STRONG, seed=0), image, None, n=2)
    assert not no_masks.any()
    fig = plots.augment_grid([out, out], [out_masks, out_masks], ["a", "b"])
    assert len(fig.axes) == 10
    plt.close(fig)


def test_from_params_round_trips_and_refuses_an_unknown_key() -> None:
    cfg = AugmentConfig(flip="vertical", rotation_deg=15, zoom=0.0, translation=0.1,
                        contrast=0.3, brightness=0.05)
    assert AugmentConfig.from_params(asdict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown key.*preview_n"):
        AugmentConfig.from_params({**asdict(cfg), "preview_n": 6})
    assert AugmentConfig.from_params({}) == AugmentConfig()
    assert isinstance(AugmentConfig(rotation_deg=10).rotation_deg, float)


@pytest.mark.parametrize("key, value", [
    ("flip", "diagonal"), ("rotation_deg", -5), ("rotation_deg", 200), ("zoom", 1.0),
    ("translation", "0.1"), ("contrast", float("nan")), ("brightness", True),
])
def test_from_params_rejects_a_bad_value_naming_its_key(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"augment\.{key}"):
        AugmentConfig.from_params({key: value})


def test_from_params_rejects_an_unknown_key_and_a_missing_group() -> None:
    with pytest.raises(ValueError, match="'augment:' has unknown key.*rotation"):
        AugmentConfig.from_params({"rotation": 10})
    with pytest.raises(ValueError, match="'augment:' must be a mapping"):
        AugmentConfig.from_params(None)


@pytest.mark.parametrize("field, value", [("rotation_deg", 45.0), ("zoom", 0.3),
                                          ("translation", 0.2)])
def test_geometric_fill_is_black_not_reflected_anatomy(field: str, value: float) -> None:
    images = np.full((16, 32, 32, 1), 255.0, np.float32)
    cfg = AugmentConfig(**{**asdict(OFF), field: value})
    out = AugmentPolicy(cfg, seed=0)(images).numpy()[..., 0]
    border = np.concatenate([out[:, 0], out[:, -1], out[:, :, 0], out[:, :, -1]], axis=1)
    assert (border == 0.0).any(axis=1).sum() >= 4  # reflect or wrap would keep 255 there
