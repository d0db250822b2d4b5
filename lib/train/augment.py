"""Training-time augmentation: one seeded policy of Keras preprocessing layers, masks included.

Why these choices:

* Geometric layers come first (flip, rotation, zoom, translation), photometric ones last
  (contrast, brightness), so intensity changes never get resampled and blurred.
* Geometric layers fill with constant 0: MRI background is black, and reflecting or wrapping
  would invent anatomy at the border.
* Tumour masks go through exactly the same geometric transform as their image (Keras samples
  one transformation per call for a ``{"images", "segmentation_masks"}`` dict and resamples
  masks nearest-neighbour, so they stay binary) and never through the photometric layers.
  Saliency maps are later scored against these masks, so a mask that drifted from its tumour
  would silently corrupt the explanation metrics.
* Every layer has its own seed derived from the policy seed, and Keras keeps each layer's
  random state in a variable (a ``SeedGenerator``): the same seed gives the same sequence of
  augmentations, and successive batches and epochs get fresh draws.

Determinism in ``tf.data``: that random state is read and advanced on every call, so the
sequence depends on the order in which batches are processed. Map the policy **sequentially**,
``ds.batch(b).map(fn)`` (``num_parallel_calls=None``, the default); a parallel map
(``num_parallel_calls=tf.data.AUTOTUNE``) gives different augmentations from run to run even
with ``deterministic=True``, which only fixes the output order, not which call draws which
random numbers. Training calls ``at_step``, which first sets each layer's state from the batch's
global step number, so a batch's augmentation does not depend on what ran before it: a resumed
run augments exactly as an uninterrupted one (``lib.data.inputs.TrainStream``).

Keras 3 quirk: ``RandomFlip("horizontal_and_vertical")`` draws one coin per image for both axes
(identity or a 180° turn only); ``flip: horizontal_and_vertical`` here uses two independent flip
layers instead, so all four orientations occur.

Known cost: rotation, zoom and translation are separate Keras layers, so an image is resampled
(bilinear) up to three times and its mask (nearest) up to three times. Images come out smoother
than unaugmented ones (on 64 px phantoms the std of the Laplacian falls to about a third), and
a mask can sit up to about a pixel off its blob's edge (IoU around 0.9 for small blobs); each
layer alone stays within half a pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ..config import check_int, from_group

FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical", "none")
PARAMS_GROUP = "augment"
VALUE_RANGE = (0.0, 255.0)
# Each layer slot has a fixed seed index, so disabling one layer never changes another's draws.
_SEED_SLOTS = ("flip_h", "flip_v", "rotation", "zoom", "translation", "contrast", "brightness")
_FILLING = ("rotation", "zoom", "translation")  # layers that uncover pixels outside the image
_STEP_DRAWS = 16  # random-counter values each layer may use per batch (a layer draws 1-3)

# Upper bound (inclusive) of each numeric field, with what it means, for the error messages.
_BOUNDS: dict[str, tuple[float, str]] = {
    "rotation_deg": (180.0, "degrees, 0 to 180"),
    "zoom": (0.9, "a share of the image size, 0 to 0.9"),
    "translation": (1.0, "a share of height and width, 0 to 1"),
    "contrast": (1.0, "a share, 0 to 1"),
    "brightness": (1.0, "a share of the 0-255 range, 0 to 1"),
}


@dataclass(frozen=True)
class AugmentConfig:
    """The `augment:` group of params.yaml; each value is a ± range, and 0 switches a layer off."""

    flip: str = "horizontal"  # horizontal | vertical | horizontal_and_vertical | none
    rotation_deg: float = 10.0  # ± degrees
    zoom: float = 0.1  # ± share of the image size (negative draws zoom in)
    translation: float = 0.05  # ± share of height and width
    contrast: float = 0.2  # contrast factor drawn from [1 - c, 1 + c]
    brightness: float = 0.1  # ± share of the 0-255 range added to every pixel

    def __post_init__(self) -> None:
        if self.flip not in FLIP_MODES:
            raise ValueError(f"augment.flip must be one of {', '.join(FLIP_MODES)}; "
                             f"got {self.flip!r}")
        for name, (upper, meaning) in _BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"augment.{name} must be a number ({meaning}); got {value!r}")
            if not math.isfinite(value) or not 0 <= value <= upper:
                raise ValueError(f"augment.{name} must be {meaning} (a ± range is given by its "
                                 f"magnitude, 0 switches it off); got {value!r}")
            object.__setattr__(self, name, float(value))  # YAML may give an int

    @classmethod
    def from_params(cls, group: dict[str, Any]) -> AugmentConfig:
        """From the `augment:` group; a key this config does not know is an error, not a no-op."""
        return from_group(cls, group, "augment")


@dataclass(frozen=True)
class PreviewConfig:
    """The `augment_preview:` group: the figure of 02_augmentation, not the training policy."""

    preview_n: int = 6  # augmented copies per class, the first one unaugmented

    def __post_init__(self) -> None:
        check_int("augment_preview.preview_n", self.preview_n, 1)

    @classmethod
    def from_params(cls, group: dict[str, Any]) -> PreviewConfig:
        return from_group(cls, group, "augment_preview")


def _layer_seeds(seed: int) -> dict[str, int]:
    """One independent 31-bit seed per layer slot, a pure function of the policy seed."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    states = np.random.SeedSequence(int(seed)).generate_state(len(_SEED_SLOTS))
    return {slot: int(s) & 0x7FFFFFFF for slot, s in zip(_SEED_SLOTS, states, strict=True)}


class AugmentPolicy:
    """The augmentation used in training: call it on a batch, inside a sequential tf.data map.

    Images: float (batch, H, W, C) in 0-255, C = 1 or 3 (integer input is cast to float32).
    Masks: (batch, H, W, 1), 0/1 (any dtype; returned in the same dtype).
    """

    def __init__(self, cfg: AugmentConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = int(seed)
        seeds = _layer_seeds(seed)
        fill = {"fill_mode": "constant", "fill_value": 0.0}
        L = keras.layers
        geometric: list[keras.layers.Layer] = []
        if cfg.flip in ("horizontal", "horizontal_and_vertical"):
            geometric.append(L.RandomFlip("horizontal", seed=seeds["flip_h"], name="flip_h"))
        if cfg.flip in ("vertical", "horizontal_and_vertical"):
            geometric.append(L.RandomFlip("vertical", seed=seeds["flip_v"], name="flip_v"))
        if cfg.rotation_deg:
            geometric.append(L.RandomRotation(cfg.rotation_deg / 360.0, seed=seeds["rotation"],
                                              name="rotation", **fill))
        if cfg.zoom:
            # width_factor=None: one factor for both axes, so the aspect ratio is kept.
            geometric.append(L.RandomZoom(cfg.zoom, seed=seeds["zoom"], name="zoom", **fill))
        if cfg.translation:
            geometric.append(L.RandomTranslation(cfg.translation, cfg.translation,
                                                 seed=seeds["translation"], name="translation",
                                                 **fill))
        photometric: list[keras.layers.Layer] = []
        if cfg.contrast:
            photometric.append(L.RandomContrast(cfg.contrast, value_range=VALUE_RANGE,
                                                seed=seeds["contrast"], name="contrast"))
        if cfg.brightness:
            photometric.append(L.RandomBrightness(cfg.brightness, value_range=VALUE_RANGE,
                                                  seed=seeds["brightness"], name="brightness"))
        self.geometric = geometric
        self.photometric = photometric
        self._seeds = seeds

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """All layers in the order they run: geometric, then photometric."""
        return [*self.geometric, *self.photometric]

    def __call__(self, images: Any, masks: Any = None, training: bool = True) -> Any:
        """Augmented images, or (images, masks) when masks are given; identity when not training.

        The image draws do not depend on whether masks are passed, so training with or without
        masks sees the same augmented images for the same seed.
        """
        ops = keras.ops
        images = ops.cast(images, "float32")
        if masks is not None:
            mask_dtype = keras.backend.standardize_dtype(masks.dtype)
            masks = ops.cast(masks, "float32")
        if training:
            if masks is not None:
                data = {"images": images, "segmentation_masks": masks}
                for layer in self.geometric:  # one sampled transform per layer for both
                    data = layer(data, training=True)
                images, masks = data["images"], data["segmentation_masks"]
            else:
                for layer in self.geometric:
                    images = layer(images, training=True)
            for layer in self.photometric:  # images only: masks are not intensities
                images = layer(images, training=True)
        images = ops.clip(images, *VALUE_RANGE)
        if masks is None:
            return images
        return images, ops.cast(masks, mask_dtype)

    def at_step(self, images: Any, step: Any, masks: Any = None) -> Any:
        """``self(images, masks)`` with every layer's random state set from (its seed, `step`).

        The draws of a training batch are then a function of its global step alone (not of how
        many batches this process has augmented before), so a run resumed at epoch e augments
        exactly as an uninterrupted one. Each step owns _STEP_DRAWS counter values per layer.
        Call it in a sequential map: the states are shared variables.
        """
        ops = keras.ops
        for layer in self.layers:
            state = layer.generator.state
            counter = ops.cast(step, state.dtype) * _STEP_DRAWS
            state.assign(ops.stack([ops.cast(self._seeds[layer.name], state.dtype), counter]))
        return self(images, masks, training=True)

    def describe(self) -> list[dict[str, Any]]:
        """One row per layer, in order: what it does and with which setting (for tables)."""
        cfg = self.cfg
        settings = {
            "flip_h": "mirror left-right with p 0.5",
            "flip_v": "mirror up-down with p 0.5",
            "rotation": f"±{cfg.rotation_deg:g}° (factor {cfg.rotation_deg / 360:.4f} of a turn)",
            "zoom": f"±{cfg.zoom:.0%} of the size, aspect ratio kept",
            "translation": f"±{cfg.translation:.0%} of height and width",
            "contrast": f"factor in [{1 - cfg.contrast:g}, {1 + cfg.contrast:g}] around the "
                        "image mean",
            "brightness": f"±{cfg.brightness:.0%} of 0-255 (±{255 * cfg.brightness:.1f})",
        }
        rows = []
        for step, layer in enumerate(self.layers, start=1):
            geometric = layer in self.geometric
            rows.append({
                "step": step,
                "layer": layer.name,
                "class": type(layer).__name__,
                "kind": "geometric" if geometric else "photometric",
                "setting": settings[layer.name],
                "fill": "constant 0" if layer.name in _FILLING else "",
                "masks": "same transform, nearest" if geometric else "untouched",
                "seed": self._seeds[layer.name],
            })
        return rows


def preview(policy: AugmentPolicy, image: np.ndarray, mask: np.ndarray | None,
            n: int) -> tuple[np.ndarray, np.ndarray]:
    """n copies of one image and its mask for a grid: copy 0 is the original, 1..n-1 augmented.

    `image` is HxW or HxWxC (uint8 or float in 0-255); `mask` HxW or None (then all False is
    returned, like lib.data.images.load_mask for an image without a mask). Returns float32 images of
    shape (n, *image.shape) and bool masks (n, H, W). Uses, and advances, the policy's state.
    """
    if n < 1:
        raise ValueError(f"preview needs n >= 1, got {n}")
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"preview expects an HxW or HxWxC image, got shape {image.shape}")
    chw = image[..., None] if image.ndim == 2 else image
    mask = np.zeros(chw.shape[:2], bool) if mask is None else np.asarray(mask).astype(bool)
    if mask.shape != chw.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    images = np.repeat(chw[None].astype(np.float32), n, axis=0)
    masks = np.repeat(mask[None, ..., None].astype(np.float32), n, axis=0)
    if n > 1:
        aug_images, aug_masks = policy(images[1:], masks[1:], training=True)
        images[1:], masks[1:] = keras.ops.convert_to_numpy(aug_images), \
            keras.ops.convert_to_numpy(aug_masks)
    images = np.clip(images, *VALUE_RANGE)
    return (images[..., 0] if image.ndim == 2 else images), masks[..., 0] > 0.5
