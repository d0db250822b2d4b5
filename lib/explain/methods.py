"""Saliency maps of trained classifiers: where each method says a model looked.

Methods (METHODS): Grad-CAM, Grad-CAM++, Score-CAM and SmoothGrad through tf-keras-vis, HiResCAM
and occlusion sensitivity (ours, batched). Every method returns one map per image at the model's
input size, non-negative and scaled to [0, 1] per map, so lib.explain.scores scores them alike.

- The tf-keras-vis objects and HiResCAM work on one *logits twin* of the model (a clone whose
  softmax is replaced by a linear output, tf-keras-vis's ``ReplaceToLinear``): gradients of a
  saturated softmax vanish, and Score-CAM applies its own softmax to what the model returns.
- HiResCAM (Draelos & Carin 2020) multiplies the gradient and the activation element-wise before
  summing over channels, where Grad-CAM first averages each channel's gradient over the grid. The
  map is then exactly what the score reads from each cell: when a linear head follows global
  average pooling the two are equal, but after max pooling or a flattening head Grad-CAM can
  light up cells the score does not depend on. One forward and backward pass, like Grad-CAM.
- CAMs are taken at the target layer's resolution (``expand_cam=False``) and upsampled here with
  half-pixel-centred bilinear interpolation (tf.image.resize): tf-keras-vis's own zoom aligns the
  corners, which shifts an 8x8 map by up to half a cell, enough to miss a small lesion.
- Occlusion and the faithfulness curves replace pixels with a *blurred* copy of the image (the
  lesion is erased, the intensity level stays), not with black, which a scan never contains.

The target layer of the CAM methods (``layer_choice``) is given by name or chosen by the rule
"auto": the last rectified feature map the classifier head reads (the Grad-CAM paper's choice:
the last 4-D layer, stepping back over pooling and dropout), unless its grid is smaller than
``min_grid`` cells a side (default 8); then the deepest rectified 4-D layer whose grid is at
least ``min_grid``. A map cannot be sharper than its grid: on the phantom even a perfect map
scores only 0.77 in the pointing game at 8x8 and 1.00 at 16x16, and a 2x2 map cannot point at a
lesion at all. "Rectified" means the output of a nonlinearity (a ReLU or Activation layer, a
convolution with a built-in activation, or a concatenation of such maps), never a pooling,
dropout, batch-norm, padding or linear convolution output. The study runs with min_grid 32
(params.yaml ``explain.min_grid``: its smallest lesions are ~4 px across at 64 px, a single cell
of a 16x16 grid): for its scratch CNN at 64 px (4 blocks, ``block4_relu`` 8x8) the rule reads
``block2_relu`` (32x32); with the default of 8, for the flat transfer models it reads
``mixed10`` (InceptionV3), ``conv5_block3_out`` (ResNet50), ``block5_conv3`` (VGG16),
``top_activation`` (EfficientNetV2), the final activation of MobileNetV3 and
``block14_sepconv2_act`` (Xception) when their grid is fine enough, and at 64 px input (a 2x2
grid) steps down to an earlier activation (MobileNetV3Small: the 8x8 expansion activation of its
fourth inverted-residual block). When no rectified layer reaches ``min_grid``, the head's map
is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import check_int
from ..forward import PREDICT_BATCH, predict_probs, quiet
from ..stats import numpy_global_seed

# Cheapest first: the validation pass breaks ties between methods in this order.
METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "hirescam", "scorecam", "smoothgrad",
                            "occlusion")
# One forward and backward pass per batch: cheap enough to explain every test image.
CHEAP_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "hirescam")
CLASS_TARGETS: tuple[str, ...] = ("predicted", "true")
BLUR_SIGMA_FRACTION = 1 / 8  # Gaussian sigma of the blurred baseline, as a share of the side
OCCLUSION_COPIES = 2048  # occluded copies held in memory at once (a few predict batches)
BLOCK_LAYER = re.compile(r"^block(\d+)_relu$")
# The method library's own default of the cells a side a CAM's layer needs (module docstring); the
# study passes params.yaml's explain.min_grid (32) through ExplainConfig.
MIN_GRID = 8


OCCLUSION_REFERENCE_SIDE = 64


def occlusion_geometry(size: int, patch: int, stride: int) -> tuple[int, int]:
    """(patch, stride) in pixels of a `size`-pixel input, from their values at 64 pixels."""
    scale = size / OCCLUSION_REFERENCE_SIDE
    return max(1, round(patch * scale)), max(1, round(stride * scale))


@dataclass(frozen=True)
class SaliencyConfig:
    """Knobs of the saliency methods (notebook parameters of 06_explain).

    occlusion_patch / occlusion_stride: side and step of the occluding square, in pixels of a
    64-pixel input (OCCLUSION_REFERENCE_SIDE), scaled with the model's input side so that every
    model is occluded by the same share of the image at the same number of positions;
    smooth_samples / smooth_noise: SmoothGrad's noisy copies and their sigma as a share of the
    image's range; score_cam_max_n: channels Score-CAM keeps (Faster Score-CAM, highest variance);
    batch_size: images per tf-keras-vis call; seed: SmoothGrad's noise.
    """

    occlusion_patch: int = 8
    occlusion_stride: int = 4
    smooth_samples: int = 20
    smooth_noise: float = 0.2
    score_cam_max_n: int = 32
    batch_size: int = 64
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("occlusion_patch", "occlusion_stride", "smooth_samples", "score_cam_max_n",
                     "batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        noise = self.smooth_noise
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 < noise <= 1:
            raise ValueError(f"smooth_noise must be a number in (0, 1], got {noise!r}")


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """A comma string (DVC passes no lists) or a list of method names, checked and de-duplicated."""
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    names = [str(m).strip().lower() for m in items if str(m).strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown saliency method(s) {unknown or methods!r}; "
                         f"choose from {', '.join(METHODS)} (comma-separated)")
    return list(dict.fromkeys(names))


def parse_class_index(value: Any, n_classes: int | None = None) -> str | int:
    """"predicted", "true" or a class index (an int, or a string of digits from papermill)."""
    if isinstance(value, str) and value.strip().lower() in CLASS_TARGETS:
        return value.strip().lower()
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"class_index must be 'predicted', 'true' or a class number, "
                         f"got {value!r}")
    if value < 0 or (n_classes is not None and value >= n_classes):
        top = f"0..{n_classes - 1}" if n_classes else ">= 0"
        raise ValueError(f"class_index {value} is not a class number ({top})")
    return int(value)


def resolve_targets(class_index: str | int, labels: np.ndarray, predicted: np.ndarray,
                    n_classes: int) -> np.ndarray:
    """The class each image's map explains: its prediction, its true class, or one fixed class."""
    choice = parse_class_index(class_index, n_classes)
    if choice == "predicted":
        return np.asarray(predicted, dtype=np.int64)
    if choice == "true":
        return np.asarray(labels, dtype=np.int64)
    return np.full(len(labels), choice, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
def _producer(layer: Any) -> Any:
    """The layer whose output feeds `layer` (flat functional models: one inbound tensor)."""
    return layer.input._keras_history.operation


def feature_layers(model: Any) -> list[str]:
    """Names of the layers with a 4-D (spatial) output: the possible Grad-CAM targets."""
    import keras

    return [layer.name for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and len(layer.output.shape) == 4]


def grid_of(model: Any, name: str) -> tuple[int, int]:
    """(rows, columns) of a 4-D layer's output: the resolution of a CAM taken there."""
    shape = model.get_layer(name).output.shape
    return int(shape[1]), int(shape[2])


def is_rectified(layer: Any) -> bool:
    """Whether a layer's output is a nonlinearity's (a feature map a CAM can weigh).

    ReLU-like and Activation layers, convolutions with a built-in activation (VGG) and
    concatenations of such maps (Inception's mixed blocks); not pooling, dropout, batch norm,
    padding, additions or linear convolutions.
    """
    import keras

    if isinstance(layer, keras.layers.ReLU | keras.layers.LeakyReLU | keras.layers.ELU
                  | keras.layers.PReLU):
        return True
    if isinstance(layer, keras.layers.Concatenate):
        inbound = layer.input if isinstance(layer.input, list | tuple) else [layer.input]
        return all(is_rectified(t._keras_history.operation) for t in inbound)
    activation = getattr(layer, "activation", None)
    return callable(activation) and getattr(activation, "__name__", "linear") != "linear"


def layer_choice(model: Any, layer: str = "auto", min_grid: int = MIN_GRID) -> tuple[str, str]:
    """(target layer, why): a name checked, or the "auto" rule of the module docstring."""
    import keras

    from ..train.models import last_feature_layer_name

    check_int("min_grid", min_grid, 1)
    if layer != "auto":
        candidates = feature_layers(model)
        if layer not in candidates:
            raise ValueError(f"model {model.name!r} has no 4-D layer named {layer!r}; use 'auto' "
                             f"or one of the last feature layers: {', '.join(candidates[-8:])}")
        return layer, "given by name"
    skip = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.Dropout,
            keras.layers.SpatialDropout2D)
    current = model.get_layer(last_feature_layer_name(model))
    while isinstance(current, skip):
        current = _producer(current)
    h, w = grid_of(model, current.name)
    if min(h, w) >= min_grid:
        return current.name, f"the map the head reads ({h}x{w} >= min_grid {min_grid})"
    spatial = set(feature_layers(model))
    fine = [candidate.name for candidate in model.layers
            if candidate.name in spatial and is_rectified(candidate)
            and min(grid_of(model, candidate.name)) >= min_grid]
    if not fine:
        return current.name, (f"the map the head reads ({h}x{w}); no rectified layer has a grid "
                              f"of min_grid {min_grid} or more")
    gh, gw = grid_of(model, fine[-1])
    return fine[-1], (f"the head reads a {h}x{w} map (< min_grid {min_grid}): the deepest "
                      f"rectified layer with a grid of {min_grid} or more ({gh}x{gw})")


def head_facts(model: Any, layer: str) -> dict[str, Any]:
    """How the classifier head reads the map at `layer`: facts the report's prose is built from.

    ``pooling``: "average", "max", "flatten" or "none" (the last such layer before the output);
    ``reads_layer``: whether the head reads `layer` itself (through pooling and dropout only);
    ``layers_between``: how many layers lie between `layer` and the head's input. Grad-CAM and
    HiResCAM coincide when an average-pooled linear head reads the layer directly, and differ
    when later layers or another pooling stand between them.
    """
    import keras

    kinds = ((keras.layers.GlobalAveragePooling2D, "average"),
             (keras.layers.GlobalMaxPooling2D, "max"), (keras.layers.Flatten, "flatten"))
    pooling = "none"
    for candidate in reversed(model.layers):
        found = next((name for kind, name in kinds if isinstance(candidate, kind)), None)
        if found:
            pooling = found
            break
    head_input, _ = layer_choice(model, "auto", min_grid=1)
    names = [candidate.name for candidate in model.layers]
    return {"pooling": pooling, "reads_layer": head_input == layer,
            "layers_between": max(names.index(head_input) - names.index(layer), 0)}


# --------------------------------------------------------------------------------------------
# Array helpers shared by the methods and the scores
# --------------------------------------------------------------------------------------------
def upsample(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, h, w) maps to (N, *shape), bilinear with half-pixel centres (tf.image.resize)."""
    import tensorflow as tf

    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[1:] == tuple(shape):
        return maps
    return tf.image.resize(maps[..., None], tuple(shape), method="bilinear").numpy()[..., 0]


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1] (min to 0, max to 1); a constant map becomes all zeros."""
    maps = np.asarray(maps, dtype=np.float32)
    axes = tuple(range(1, maps.ndim))
    lo, hi = maps.min(axis=axes, keepdims=True), maps.max(axis=axes, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


def blur(images: np.ndarray, sigma_fraction: float = BLUR_SIGMA_FRACTION) -> np.ndarray:
    """The blurred baseline (N, S, S, C): the lesion is gone, the local intensity stays."""
    from scipy import ndimage as ndi

    images = np.asarray(images, dtype=np.float32)
    sigma = sigma_fraction * images.shape[1]
    return ndi.gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="nearest")












# --------------------------------------------------------------------------------------------
# Occlusion sensitivity (ours, batched)
# --------------------------------------------------------------------------------------------
def occlusion_starts(size: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets along one side; the last patch is moved in so the border is covered."""
    if patch > size:
        raise ValueError(f"occlusion_patch {patch} is larger than the {size}-pixel model input")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def occlusion_maps(model: Any, images: np.ndarray, targets: np.ndarray, patch: int = 8,
                   stride: int = 4, baseline: np.ndarray | None = None,
                   max_copies: int = OCCLUSION_COPIES) -> np.ndarray:
    """Drop of the target class's probability when a patch is replaced by the baseline.

    Each pixel gets the mean drop over the patches covering it (Zeiler & Fergus 2014); negative
    means (the patch was evidence *against* the class) are clipped to 0, as CAMs are. All
    occluded copies of a group of images go through the model in a few predict calls.
    """
    images = np.asarray(images, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    n, size = images.shape[0], images.shape[1]
    starts = occlusion_starts(size, patch, stride)
    cover = np.zeros((len(starts) ** 2, size, size), dtype=bool)
    for k, (r, c) in enumerate((r, c) for r in starts for c in starts):
        cover[k, r:r + patch, c:c + patch] = True
    counts = cover.sum(axis=0)
    baseline = blur(images) if baseline is None else np.asarray(baseline, dtype=np.float32)
    base = predict_probs(model, images)[np.arange(n), targets]
    per = max(1, max_copies // len(cover))
    heat = np.zeros((n, size, size), dtype=np.float64)
    for i in range(0, n, per):
        x, b, t = images[i:i + per], baseline[i:i + per], targets[i:i + per]
        copies = np.where(cover[None, :, :, :, None], b[:, None], x[:, None])
        probs = predict_probs(model, copies.reshape(-1, *images.shape[1:]))
        probs = probs.reshape(len(x), len(cover), -1)[np.arange(len(x)), :, t]
        drop = base[i:i + per, None] - probs
        heat[i:i + per] = np.tensordot(drop, cover, axes=(1, 0)) / np.maximum(counts, 1)
    return normalise(np.maximum(heat, 0))


# --------------------------------------------------------------------------------------------
# tf-keras-vis methods
# --------------------------------------------------------------------------------------------
def logits_twin(model: Any) -> Any:
    """A clone of `model` with the same weights whose output layer is linear (ReplaceToLinear)."""
    import keras
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    ReplaceToLinear()(twin)
    return twin


def hirescam_function(twin: Any, layer: str) -> Any:
    """A compiled (images, targets) -> (N, h, w) HiResCAM at `layer` of a logits twin.

    ReLU(sum over channels of dScore/dA * A), per cell (Draelos & Carin 2020): no averaging of
    the gradient over the grid, so each cell gets exactly its share of the target's logit change.
    The images are watched, so frozen (non-trainable) layers still pass gradients.
    """
    import keras
    import tensorflow as tf

    probe = keras.Model(twin.input, [twin.get_layer(layer).output, twin.output])
    spec = [tf.TensorSpec((None, *twin.input_shape[1:]), tf.float32),
            tf.TensorSpec((None,), tf.int32)]

    @tf.function(input_signature=spec)
    def cam(x: Any, t: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            activations, logits = probe(x, training=False)
            score = tf.gather(logits, t, axis=1, batch_dims=1)
        grads = tape.gradient(score, activations)  # images are independent: per-image grads
        return tf.nn.relu(tf.reduce_sum(grads * activations, axis=-1))

    return cam


def hirescam(twin: Any, layer: str, images: np.ndarray, targets: np.ndarray,
             batch_size: int = 64, function: Any = None) -> np.ndarray:
    """Raw HiResCAM maps (N, h, w) at the layer's grid, batched (see ``hirescam_function``)."""
    function = function or hirescam_function(twin, layer)
    images = np.asarray(images, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int32)
    out = [np.asarray(function(images[i:i + batch_size], targets[i:i + batch_size]))
           for i in range(0, len(images), batch_size)]
    h, w = (int(d) for d in twin.get_layer(layer).output.shape[1:3])
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, h, w), np.float32)


class Explainer:
    """Saliency maps of one model at one target layer.

    Builds the logits twin and the tf-keras-vis objects once, then explains any number of
    batches; ``maps(images, targets, method)`` is the one call the study makes. ``layer`` and
    ``min_grid`` choose the CAM layer (``layer_choice``); ``layer_reason`` says why.
    """

    def __init__(self, model: Any, layer: str = "auto", cfg: SaliencyConfig | None = None,
                 min_grid: int = MIN_GRID):
        self.model = model
        self.layer, self.layer_reason = layer_choice(model, layer, min_grid)
        self.grid = grid_of(model, self.layer)
        self.head = head_facts(model, self.layer)
        self.cfg = cfg or SaliencyConfig()
        self.size = int(model.input_shape[1])
        self._linear = logits_twin(model)
        self._vis: dict[str, Any] = {}
        self._hirescam: Any = None

    def _visualiser(self, method: str) -> Any:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
        from tf_keras_vis.saliency import Saliency
        from tf_keras_vis.scorecam import Scorecam

        kinds = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam,
                 "smoothgrad": Saliency}
        if method not in self._vis:
            self._vis[method] = kinds[method](self._linear, clone=False)
        return self._vis[method]

    def maps(self, images: np.ndarray, targets: np.ndarray, method: str) -> np.ndarray:
        """(N, S, S) maps in [0, 1] at input size S for the target class of each image."""
        if method not in METHODS:
            raise ValueError(f"unknown saliency method {method!r}; choose from {METHODS}")
        images = np.asarray(images, dtype=np.float32)
        targets = np.asarray(targets, dtype=np.int64)
        if images.ndim != 4 or images.shape[1:] != tuple(self.model.input_shape[1:]):
            raise ValueError(f"images of shape {images.shape} do not fit the model's input "
                             f"{self.model.input_shape}")
        if len(targets) != len(images):
            raise ValueError(f"{len(targets)} targets for {len(images)} images")
        if not len(images):
            return np.zeros((0, self.size, self.size), dtype=np.float32)
        if method == "occlusion":
            patch, stride = occlusion_geometry(self.size, self.cfg.occlusion_patch,
                                               self.cfg.occlusion_stride)
            return occlusion_maps(self.model, images, targets, patch, stride)
        if method == "hirescam":
            if self._hirescam is None:
                self._hirescam = hirescam_function(self._linear, self.layer)
            with quiet():  # one trace per explainer, which TF's retracing detector misreads
                cam = hirescam(self._linear, self.layer, images, targets, self.cfg.batch_size,
                               self._hirescam)
            return normalise(upsample(cam, (self.size, self.size)))
        # Score-CAM masks each image once per kept channel; tf-keras-vis keeps the union of the
        # images' top channels, so small groups keep that union (and the copies) small.
        step = max(1, 256 // self.cfg.score_cam_max_n) if method == "scorecam" \
            else self.cfg.batch_size
        return np.concatenate([self._batch(method, images[i:i + step], targets[i:i + step], i)
                               for i in range(0, len(images), step)])

    def _batch(self, method: str, x: np.ndarray, t: np.ndarray, offset: int) -> np.ndarray:
        from tf_keras_vis.utils.scores import CategoricalScore

        vis, score = self._visualiser(method), CategoricalScore(t.tolist())
        with quiet():
            if method == "smoothgrad":
                with numpy_global_seed(self.cfg.seed * 1_000_003 + offset):
                    grads = vis(score, x, smooth_samples=self.cfg.smooth_samples,
                                smooth_noise=self.cfg.smooth_noise, normalize_map=False)
                return normalise(grads)
            options: dict[str, Any] = {"penultimate_layer": self.layer,
                                       "seek_penultimate_conv_layer": False,
                                       "expand_cam": False, "normalize_cam": False}
            if method == "scorecam":
                channels = int(self.model.get_layer(self.layer).output.shape[-1])
                options["max_N"] = min(self.cfg.score_cam_max_n, channels)
                options["batch_size"] = PREDICT_BATCH
            cam = np.asarray(vis(score, x, **options), dtype=np.float32)
        return normalise(upsample(np.maximum(cam, 0), (self.size, self.size)))


# --------------------------------------------------------------------------------------------
# Per-block activation maps (scratch CNN) and weight randomisation (sanity check)
# --------------------------------------------------------------------------------------------
def block_layers(model: Any) -> list[str]:
    """The scratch CNN's ``block<i>_relu`` layers in depth order (empty for other models)."""
    found = [(int(m.group(1)), layer.name) for layer in model.layers
             if (m := BLOCK_LAYER.match(layer.name))]
    return [name for _, name in sorted(found)]


def block_maps(model: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    """Mean activation over channels of each block, at input size, each map in [0, 1].

    What each depth responds to, class-independent: edges and tissue borders early, larger
    structures (ideally the lesion) late.
    """
    import keras

    names = block_layers(model)
    if not names:
        raise ValueError(f"model {model.name!r} has no block<i>_relu layers: per-block maps are "
                         "for the scratch CNN")
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    size = int(model.input_shape[1])
    outputs = probe(np.asarray(images, dtype=np.float32), training=False)
    return {name: normalise(upsample(np.asarray(out).mean(axis=-1), (size, size)))
            for name, out in zip(names, outputs, strict=True)}


def randomised_copy(model: Any, n_layers: int, seed: int) -> tuple[Any, list[str]]:
    """A copy whose top `n_layers` layers with weights are scrambled (cascading, from the output).

    Each weight tensor's values are permuted at random (Adebayo et al. 2018 re-initialise; a
    permutation keeps each tensor's scale, so a map cannot change merely because activations
    blew up or vanished, and keeps BN variances positive). Returns the copy and the layer names.
    """
    import keras

    check_int("sanity_layers", n_layers, 1)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    layers = [layer for layer in reversed(copy.layers) if layer.weights][:n_layers]
    for layer in layers:
        for weight in layer.weights:
            values = np.asarray(weight.numpy())
            weight.assign(rng.permutation(values.ravel()).reshape(values.shape))
    return copy, [layer.name for layer in layers]
