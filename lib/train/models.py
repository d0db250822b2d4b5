"""Model builders: the scratch CNN, the transfer models, their freezing and their weights.

Every model takes float32 images in the 0-255 range, shape (H, W, C) (C=1 for the scratch CNN,
C=3 for transfer models: the data pipeline replicates grayscale to RGB), and carries its own
input preprocessing as its first layers. Training, evaluation and Grad-CAM therefore feed the
same raw pixels and can never apply the wrong scaling (or scale twice) for a backbone. Output is
a softmax over the classes in a Dense layer named ``predictions``. Models use the Functional API
and are *flat*: the Keras Applications backbone is built on our preprocessed tensor via
``input_tensor=``, so every backbone layer (e.g. EfficientNetV2's ``top_conv``) is a layer of the
outer model and Grad-CAM can reach it directly.

Per-backbone preprocessing (checked against ``keras/src/applications/*.py`` of Keras 3.15, see
BACKBONES): EfficientNetV2 and MobileNetV3 already contain their preprocessing layers
(``include_preprocessing=True``), so our layer is the identity for them; ResNet50 and VGG16 need
"caffe" (RGB->BGR, ImageNet mean subtracted, no scaling); InceptionV3 and Xception need "tf"
(x / 127.5 - 1).

Weights (``train_transfer.weights``): ``imagenet`` reads the no-top file from the Keras cache and
fails with instructions when it is not there (this study runs offline: nothing is ever
downloaded), ``pretrain`` reads the backbone weights of the pretrain stage, a path reads that file,
``none`` is random initialisation. :class:`WeightsChoice` carries a sentence for the report.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from ..config import check_int, from_group
from ..hashing import file_md5

# ----------------------------------------------------------------------------------------------
# Scratch CNN
# ----------------------------------------------------------------------------------------------

# variant name -> (use_dropout, use_batchnorm): the four regularisation variants the DVC
# matrix stage trains, so that the effect of each regulariser is measured on its own and together.
SCRATCH_VARIANTS: dict[str, tuple[bool, bool]] = {
    "none": (False, False),
    "dropout": (True, False),
    "batchnorm": (False, True),
    "dropout_batchnorm": (True, True),
}

INPUT_NAME = "image"


# Keras's default BN momentum (0.99) needs ~500 steps before the moving statistics used at
# inference match the data; a default-profile run has ~40 steps per epoch, so validation scores
# were erratic for the first epochs and misled early stopping. 0.9 settles within ~40 steps.
SCRATCH_BN_MOMENTUM = 0.9


# Keys of train_scratch: that are not the architecture's: the input side and the train: overrides.
SCRATCH_STAGE_KEYS = ("input_size", "epochs", "learning_rate")


@dataclass(frozen=True)
class ScratchConfig:
    """Architecture of the scratch CNN (the ``train_scratch:`` group of params.yaml).

    ``filters`` is the width of the first block and doubles with each block, the usual way to
    trade spatial resolution for channels; ``dense_units = 0`` means the head is GAP -> softmax.
    ``dropout`` is the rate used where dropout is enabled (``use_dropout``, set by the variant).
    ``standardize`` rescales each image to zero mean and unit variance inside the model: the
    four MRI sequences have very different intensity scales, and without it the network mostly
    fails to start learning (measured: training accuracy stuck at chance for 15 epochs).
    ``pooling`` "max" lets one strong local lesion detector decide the class; "avg" (GAP)
    dilutes a small lesion over the whole slice (measured on the phantom: ~0.6 vs ~0.3 val F1).
    """

    blocks: int = 4
    filters: int = 16
    kernel_size: int = 3
    dense_units: int = 0
    dropout: float = 0.1
    standardize: bool = True
    pooling: str = "max"
    use_dropout: bool = False
    use_batchnorm: bool = False

    def __post_init__(self) -> None:
        check_int("train_scratch.blocks", self.blocks, 1)
        check_int("train_scratch.filters", self.filters, 1)
        check_int("train_scratch.kernel_size", self.kernel_size, 1)
        check_int("train_scratch.dense_units", self.dense_units, 0)
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0.0 <= self.dropout < 1.0):
            raise ValueError(
                f"train_scratch.dropout must be a number in [0, 1), got {self.dropout!r}"
            )
        if self.pooling not in ("max", "avg"):
            raise ValueError(f"train_scratch.pooling must be max or avg, got {self.pooling!r}")
        for key in ("use_dropout", "use_batchnorm", "standardize"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"train_scratch.{key} must be true or false, "
                                 f"got {getattr(self, key)!r}")

    @classmethod
    def from_params(cls, group: dict[str, Any], variant: str) -> ScratchConfig:
        """Config from the ``train_scratch:`` group and a variant name (see SCRATCH_VARIANTS).

        Only the architecture keys are read here; the group's stage keys (SCRATCH_STAGE_KEYS:
        the input size and the training overrides) are the training notebook's.
        """
        if variant not in SCRATCH_VARIANTS:
            raise ValueError(f"unknown scratch variant {variant!r}; valid variants: "
                             f"{', '.join(SCRATCH_VARIANTS)}")
        use_dropout, use_batchnorm = SCRATCH_VARIANTS[variant]
        return from_group(cls, group, "train_scratch", others=SCRATCH_STAGE_KEYS,
                          use_dropout=use_dropout, use_batchnorm=use_batchnorm)


def _check_classes(n_classes: int) -> None:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) \
            or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")


def build_scratch(input_shape: tuple[int, int, int], n_classes: int, cfg: ScratchConfig,
                  name: str = "scratch_cnn") -> keras.Model:
    """The scratch CNN: rescale (and standardise), `blocks` x Conv-(BN)-ReLU-MaxPool, pooled head.

    He-normal initialisation suits the ReLU blocks: with Keras's Glorot default the plain variant
    (no BN, no dropout) stayed at chance on the phantom.

    The conv has no bias when BN follows (BN's beta makes it redundant). Layers are named
    ``block{i}_conv|bn|relu|pool`` (1-based) and ``head_*``, so the CAM methods find their
    target ``block{i}_relu`` (``lib.explain.methods.layer_choice``) and the variants differ only
    in the
    layers they add.
    """
    _check_classes(n_classes)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    height, width = int(input_shape[0]), int(input_shape[1])
    needed = 2 ** cfg.blocks
    if min(height, width) < needed:
        raise ValueError(
            f"input {height}x{width} is too small for {cfg.blocks} blocks: each block halves "
            f"the size with a 2x2 max-pool, so it needs at least {needed}x{needed} pixels. "
            f"Lower train_scratch.blocks or use larger images."
        )

    inputs = keras.Input(shape=tuple(input_shape), name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    if cfg.standardize:  # per-image z-score, no learnt parameters
        x = layers.LayerNormalization(axis=(1, 2, 3), epsilon=1e-6, center=False, scale=False,
                                      name="standardize")(x)
    for i in range(1, cfg.blocks + 1):
        x = layers.Conv2D(cfg.filters * 2 ** (i - 1), cfg.kernel_size, padding="same",
                          use_bias=not cfg.use_batchnorm, kernel_initializer="he_normal",
                          name=f"block{i}_conv")(x)
        if cfg.use_batchnorm:
            x = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"block{i}_bn")(x)
        x = layers.Activation("relu", name=f"block{i}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    pool = layers.GlobalMaxPooling2D if cfg.pooling == "max" else layers.GlobalAveragePooling2D
    x = pool(name="head_pool")(x)
    if cfg.use_dropout:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
    if cfg.dense_units > 0:
        x = layers.Dense(cfg.dense_units, activation="relu", kernel_initializer="he_normal",
                         name="head_dense")(x)
        if cfg.use_dropout:
            x = layers.Dropout(cfg.dropout, name="head_dense_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


# ----------------------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------------------

PREPROCESS_MODES = ("none", "caffe", "tf", "torch")

# What a 0..255 pixel becomes under ImageNet mean/std normalisation (EfficientNetV2 B0-B3 do
# Rescaling(1/255) then Normalization(mean=[.485,.456,.406], variance=std**2) on 3 channels).
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_TORCH_RANGE = (min((0 - m) / s for m, s in zip(_TORCH_MEAN, _TORCH_STD, strict=True)),
                max((1 - m) / s for m, s in zip(_TORCH_MEAN, _TORCH_STD, strict=True)))
# caffe: BGR, minus the ImageNet BGR mean [103.939, 116.779, 123.68], no scaling.
_CAFFE_RANGE = (0.0 - 123.68, 255.0 - 103.939)


@dataclass(frozen=True)
class BackboneSpec:
    """What we need to know about one Keras Applications backbone (verified in Keras 3.15 source).

    constructor: name in ``keras.applications``; module: its submodule (for preprocess_input).
    mode: preprocessing our ``preprocess`` layer applies to 0-255 input ("none" when the
    application includes its own preprocessing layers). input_range: (min, max) of what the first
    convolution sees for 0-255 input, with range_source saying where that comes from.
    min_size: smallest height/width the constructor accepts with include_top=False.
    default_size: the ImageNet training resolution. weights_file / weights_md5: the no-top
    ImageNet file that ``keras.utils.get_file`` caches under ``$KERAS_HOME/models`` and its md5.
    """

    constructor: str
    module: str
    mode: str
    input_range: tuple[float, float]
    range_source: str
    min_size: int
    default_size: int
    weights_file: str
    weights_md5: str


_EFFNET_SOURCE = ("built in: Rescaling(1/255) + Normalization(ImageNet mean/std) for B-variants "
                  "with 3 channels (efficientnet_v2.py, include_preprocessing)")
_MOBILENET_SOURCE = "built in: Rescaling(1/127.5, offset=-1) (mobilenet_v3.py)"
_CAFFE_SOURCE = "ours: imagenet_utils.preprocess_input mode='caffe' (BGR, mean-subtracted)"
_TF_SOURCE = "ours: imagenet_utils.preprocess_input mode='tf' (x/127.5 - 1)"


def _effnet(variant: str, default_size: int, md5: str) -> BackboneSpec:
    return BackboneSpec(f"EfficientNetV2{variant.upper()}", "efficientnet_v2", "none",
                        _TORCH_RANGE, _EFFNET_SOURCE, 32, default_size,
                        f"efficientnetv2-{variant}_notop.h5", md5)


def _mobilenet(kind: str, md5: str) -> BackboneSpec:
    return BackboneSpec(f"MobileNetV3{kind.capitalize()}", "mobilenet_v3", "none", (-1.0, 1.0),
                        _MOBILENET_SOURCE, 32, 224,
                        f"weights_mobilenet_v3_{kind}_224_1.0_float_no_top_v2.h5", md5)


BACKBONES: dict[str, BackboneSpec] = {
    "EfficientNetV2B0": _effnet("b0", 224, "893217f2bb855e2983157299931e43ff"),
    "EfficientNetV2B1": _effnet("b1", 240, "0e80663031ca32d657f9caa404b6ec37"),
    "EfficientNetV2B2": _effnet("b2", 260, "1dfe2e7a5d45b6632553a8961ea609eb"),
    "EfficientNetV2B3": _effnet("b3", 300, "f6abf7b5849ac99a89b50dd3fd532856"),
    "MobileNetV3Small": _mobilenet("small", "d3e8ec802a04aa4fc771ee12a9a9b836"),
    "MobileNetV3Large": _mobilenet("large", "07fb09a5933dd0c8eaafa16978110389"),
    "ResNet50": BackboneSpec("ResNet50", "resnet", "caffe", _CAFFE_RANGE, _CAFFE_SOURCE, 32, 224,
                             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                             "4d473c1dd8becc155b73f8504c6f6626"),
    "VGG16": BackboneSpec("VGG16", "vgg16", "caffe", _CAFFE_RANGE, _CAFFE_SOURCE, 32, 224,
                          "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                          "6d6bbae143d832006294945121d1f1fc"),
    "InceptionV3": BackboneSpec("InceptionV3", "inception_v3", "tf", (-1.0, 1.0), _TF_SOURCE, 75,
                                299, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                "bcbd6486424b2319ff4ef7d526e38f63"),
    "Xception": BackboneSpec("Xception", "xception", "tf", (-1.0, 1.0), _TF_SOURCE, 71, 299,
                             "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                             "b0042744bf5b25fce3cb969f33bebb97"),
}


def backbone_spec(backbone: str) -> BackboneSpec:
    """The spec of a backbone, or a ValueError listing the valid names."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r} (train_transfer.backbone); valid: "
                         f"{', '.join(BACKBONES)}")
    return BACKBONES[backbone]


@keras.saving.register_keras_serializable(package="brain_mri")
class BackbonePreprocess(keras.layers.Layer):
    """Maps 0-255 RGB input to what a backbone expects, inside the model.

    ``mode`` is an ``imagenet_utils.preprocess_input`` mode ("caffe", "tf", "torch") or "none"
    (identity, for applications that preprocess themselves). ``backbone`` only records which
    backbone the model was built with, so that a saved model describes itself.
    """

    def __init__(self, mode: str, backbone: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"BackbonePreprocess mode must be one of {PREPROCESS_MODES}, "
                             f"got {mode!r}")
        self.mode = mode
        self.backbone = backbone

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        return keras.applications.imagenet_utils.preprocess_input(x, mode=self.mode)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode, "backbone": self.backbone}


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------

WEIGHT_KINDS = ("imagenet", "file", "none")
BACKBONE_WEIGHTS_SUFFIX = ".weights.h5"


class WeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but are not in the Keras cache (and we never download)."""


@dataclass(frozen=True)
class WeightsChoice:
    """Which initial weights a transfer model gets, and a sentence saying so for the report.

    kind "imagenet": a Keras-applications no-top file (``path``) passed to the constructor;
    "file": ``path`` is either our backbone format (``*.weights.h5`` + sidecar JSON) or any
    other Keras-applications ``.h5`` file; "none": random initialisation.
    """

    kind: str
    path: Path | None
    description: str

    def __post_init__(self) -> None:
        if self.kind not in WEIGHT_KINDS:
            raise ValueError(f"WeightsChoice.kind must be one of {WEIGHT_KINDS}, got {self.kind!r}")
        if (self.kind == "none") != (self.path is None):
            raise ValueError(f"WeightsChoice kind {self.kind!r} "
                             f"{'takes no' if self.kind == 'none' else 'needs a'} path")

    @property
    def is_backbone_file(self) -> bool:
        """True when `path` is our backbone format, loaded after building (not by Keras)."""
        return self.path is not None and self.path.name.endswith(BACKBONE_WEIGHTS_SUFFIX)


NO_WEIGHTS = WeightsChoice("none", None, "random initialisation (no pretrained weights)")


def keras_cache_dirs() -> list[Path]:
    """Folders where ``keras.utils.get_file`` keeps downloaded models, most likely first.

    Mirrors keras/src/backend/config.py and keras/src/utils/file_utils.get_file: the base is
    $KERAS_HOME, else ~/.keras (/tmp/.keras when home is not writable); get_file falls back to
    /tmp/.keras when that base is not writable; files go to ``<base>/models``. Keras reads
    KERAS_HOME once at import; we read it at call time, which is what a user who sets it expects
    (we never call get_file, so Keras' own notion does not matter here).
    """
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path("~").expanduser()
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    dirs = [base / "models"]
    if base.exists() and not os.access(base, os.W_OK):
        dirs.append(Path("/tmp/.keras/models"))
    return dirs


def _sidecar(path: Path) -> Path:
    return Path(f"{path}.json")


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = _sidecar(path)
    if not side.is_file():
        raise FileNotFoundError(
            f"{side} is missing: backbone weights {path} need the sidecar written by "
            f"save_backbone_weights (rerun `dvc repro pretrain`)."
        )
    return json.loads(side.read_text())


def _check_sidecar_backbone(path: Path, backbone: str) -> None:
    saved = _read_sidecar(path).get("backbone")
    if saved != backbone:
        raise ValueError(
            f"backbone weights {path} are for {saved}, but the model's backbone is {backbone}. "
            f"Rerun `dvc repro pretrain` with the same train_transfer.backbone, or set "
            f"train_transfer.weights to weights for {backbone}."
        )


def resolve_weights(spec: str | None, backbone: str,
                    pretrain_path: Path | None = None) -> WeightsChoice:
    """Turn ``train_transfer.weights`` into a WeightsChoice, failing loudly, never downloading.

    spec: "none"/None (random), "imagenet" (the no-top file must already be in the Keras cache),
    "pretrain" (our backbone weights at `pretrain_path`) or a path to an existing file: a
    ``*.weights.h5`` file is our backbone format (its sidecar must name `backbone`), any other
    ``.h5``/``.hdf5`` file is a Keras-applications weights file given to the constructor.
    """
    bspec = backbone_spec(backbone)
    if spec is None or spec == "none":
        return NO_WEIGHTS
    if spec == "imagenet":
        dirs = keras_cache_dirs()
        for folder in dirs:
            path = folder / bspec.weights_file
            if path.is_file():
                break
        else:
            target = dirs[0] / bspec.weights_file
            raise WeightsUnavailable(
                f"ImageNet weights for {backbone} are not cached at {target}, and this machine "
                f"cannot download them (the study never downloads). On a machine with network "
                f"run `python -c \"import keras; keras.applications.{bspec.constructor}"
                f"(include_top=False, weights='imagenet')\"` and copy "
                f"~/.keras/models/{bspec.weights_file} to {target}; or set "
                f"train_transfer.weights to `pretrain`, `none` or a file path "
                f"(`dvc exp run -S train_transfer.weights=...`)."
            )
        description = f"ImageNet weights from {path}"
        if file_md5(path) != bspec.weights_md5:
            note = (f"{path} does not have the md5 of the published {bspec.weights_file} "
                    f"({bspec.weights_md5}); it is not the official ImageNet file")
            warnings.warn(note, stacklevel=2)
            description += f" ({note})"
        return WeightsChoice("imagenet", path, description)
    if spec == "pretrain":
        if pretrain_path is None:
            raise ValueError("train_transfer.weights is `pretrain` but no pretrain_path was given")
        path = Path(pretrain_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained backbone weights {path} do not exist: run `dvc repro pretrain` "
                f"first, or set train_transfer.weights to `imagenet`, `none` or a file path."
            )
        _check_sidecar_backbone(path, backbone)
        return WeightsChoice("file", path, f"weights from the pretrain stage ({path})")
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"train_transfer.weights = {spec!r} is neither `imagenet`, `pretrain` nor `none`, "
            f"and no such file exists ({path.resolve()})."
        )
    if path.name.endswith(BACKBONE_WEIGHTS_SUFFIX):
        _check_sidecar_backbone(path, backbone)
        return WeightsChoice("file", path, f"backbone weights from {path}")
    if path.suffix not in (".h5", ".hdf5"):
        raise ValueError(
            f"train_transfer.weights = {spec!r}: expected our backbone weights "
            f"(*{BACKBONE_WEIGHTS_SUFFIX}) or a Keras-applications .h5 file."
        )
    return WeightsChoice("file", path, f"Keras-applications weights from {path}")


# ----------------------------------------------------------------------------------------------
# Transfer models
# ----------------------------------------------------------------------------------------------


def build_transfer(backbone: str, input_shape: tuple[int, int, int], n_classes: int,
                   weights: WeightsChoice, head_dropout: float = 0.2, dense_units: int = 0,
                   name: str = "transfer") -> keras.Model:
    """A flat transfer model: Input -> preprocess -> backbone (no top) -> GAP head -> softmax.

    The backbone is built on our preprocessed tensor (``input_tensor=``), which makes all its
    layers layers of the returned model. Weights are loaded from `weights` only (never the
    network): ImageNet/Keras files through the constructor, our backbone files afterwards.
    """
    spec = backbone_spec(backbone)
    _check_classes(n_classes)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"transfer models take (height, width, 3) RGB input (the data pipeline "
                         f"replicates grayscale to RGB), got input_shape={input_shape}")
    if min(input_shape[0], input_shape[1]) < spec.min_size:
        raise ValueError(
            f"{backbone} needs images of at least {spec.min_size}x{spec.min_size} pixels, got "
            f"{input_shape[0]}x{input_shape[1]}: raise train_transfer.input_size."
        )
    if not 0.0 <= head_dropout < 1.0:
        raise ValueError(f"train_transfer.head_dropout must be in [0, 1), got {head_dropout!r}")
    check_int("train_transfer.dense_units", dense_units, 0)

    inputs = keras.Input(shape=tuple(input_shape), name=INPUT_NAME)
    x = BackbonePreprocess(spec.mode, backbone=backbone, name="preprocess")(inputs)
    ctor_weights = None if weights.kind == "none" or weights.is_backbone_file else str(weights.path)
    constructor = getattr(keras.applications, spec.constructor)
    try:
        base = constructor(include_top=False, weights=ctor_weights, input_tensor=x,
                           input_shape=tuple(input_shape))
    except ValueError as err:
        if ctor_weights is None:
            raise
        raise ValueError(f"could not load {weights.path} into {backbone} (expected the no-top "
                         f"file {spec.weights_file}): {err}") from err
    x = base.output
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    if head_dropout > 0:
        x = layers.Dropout(head_dropout, name="head_dropout")(x)
    if dense_units > 0:
        x = layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights.is_backbone_file:
        load_backbone_weights(model, weights.path)
    return model


def _preprocess_layer(model: keras.Model) -> BackbonePreprocess:
    try:
        layer = model.get_layer("preprocess")
    except ValueError:
        layer = None
    if not isinstance(layer, BackbonePreprocess):
        raise ValueError(f"model {model.name!r} is not a transfer model built by build_transfer "
                         f"(no BackbonePreprocess layer named 'preprocess')")
    return layer


def model_backbone(model: keras.Model) -> str:
    """The backbone name a transfer model was built with (recorded in its preprocess layer)."""
    name = _preprocess_layer(model).backbone
    if name is None:
        raise ValueError(f"model {model.name!r} does not record its backbone")
    return name


def _is_head(layer: keras.layers.Layer) -> bool:
    return layer.name.startswith("head_") or layer.name == "predictions"


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of a transfer model except the input, ``preprocess`` and the head."""
    _preprocess_layer(model)
    return [layer for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
            and layer.name != "preprocess" and not _is_head(layer)]


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1 of fine-tuning: no backbone layer trains (BN layers then run in inference mode).

    Call ``model.compile(...)`` afterwards: Keras only picks up trainability at compile time.
    """
    for layer in backbone_layers(model):
        layer.trainable = False


def unfreeze_top(model: keras.Model, n: int, train_bn: bool = False,
                 bn_momentum: float = SCRATCH_BN_MOMENTUM) -> int:
    """Phase 2: the top `n` backbone layers with weights train (BatchNormalization only if asked).

    Everything else in the backbone is frozen first, so the result does not depend on earlier
    calls. By default BN layers stay ``trainable=False``: in Keras 3 that also makes them run in
    inference mode (moving statistics are used and not updated; BatchNormalization.call only
    uses batch statistics when ``training and self.trainable``), which keeps the small
    fine-tuning batches from wrecking statistics learnt on another domain (ImageNet).
    ``train_bn=True`` lets them learn, at `bn_momentum` (0.9 settles in the few hundred steps
    of a fine-tune; Keras's 0.99 does not): needed when
    the statistics come from random initialisation (``weights: none``, measured: chance with BN
    frozen) and harmless when the source task used the same images (the pretrain stage).
    `n` counts BN layers among the top layers. Returns how many backbone layers now have
    trainable weights. Re-compile the model afterwards.
    """
    check_int("train_transfer.fine_tune_layers", n, 0)
    freeze_backbone(model)
    with_weights = [layer for layer in backbone_layers(model) if layer.weights]
    for layer in with_weights[max(0, len(with_weights) - n):] if n else []:
        if train_bn or not isinstance(layer, layers.BatchNormalization):
            layer.trainable = True
    if train_bn:
        set_bn_momentum(model, bn_momentum)
    return sum(1 for layer in backbone_layers(model) if layer.trainable_weights)


def backbone_submodel(model: keras.Model) -> keras.Model:
    """Input -> backbone feature map of a transfer model, sharing its layers (no head)."""
    _preprocess_layer(model)
    return keras.Model(model.input, model.get_layer("head_pool").input,
                       name=f"{model.name}_backbone")


def save_backbone_weights(model: keras.Model, path: str | Path) -> Path:
    """Save the backbone's weights (not the head) to `path` plus a sidecar `<path>.json`.

    The file can initialise any transfer model with the same backbone, whatever its head or
    number of classes; the sidecar lets loading refuse weights of another backbone.
    """
    path = Path(path)
    if not path.name.endswith(BACKBONE_WEIGHTS_SUFFIX):
        raise ValueError(f"backbone weights path must end with {BACKBONE_WEIGHTS_SUFFIX}: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    sub = backbone_submodel(model)
    sub.save_weights(path)
    meta = {"backbone": model_backbone(model), "input_shape": list(model.input_shape[1:]),
            "feature_shape": list(sub.output_shape[1:]), "keras_version": keras.__version__}
    _sidecar(path).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_backbone_weights(model: keras.Model, path: str | Path) -> None:
    """Load backbone weights saved by save_backbone_weights, after checking they fit.

    Only the backbone changes; the head keeps its initialisation. The spatial input size may
    differ from the saved one (convolution weights do not depend on it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} do not exist; run `dvc repro pretrain`")
    _check_sidecar_backbone(path, model_backbone(model))
    backbone_submodel(model).load_weights(path)


# ----------------------------------------------------------------------------------------------
# Introspection
# ----------------------------------------------------------------------------------------------


def last_feature_layer_name(model: keras.Model) -> str:
    """Name of the last layer with a 4-D output (the feature map the head pools)."""
    for layer in reversed(model.layers):
        if not isinstance(layer, keras.layers.InputLayer) and len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"model {model.name!r} has no layer with a 4-D output")


def count_params(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts (BN moving stats are non-trainable)."""
    def size(weights: list) -> int:
        return int(sum(int(np.prod(w.shape)) for w in weights))

    trainable = size(model.trainable_weights)
    non_trainable = size(model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable,
            "non_trainable": non_trainable}


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set every BatchNormalization layer's momentum (before compiling); returns how many.

    For training a backbone from random weights on a few hundred steps (the pretrain stage): with
    the applications' 0.99/0.999 the moving statistics never catch up and inference collapses to
    chance (measured: train accuracy 0.97, validation 0.28 on the sequence task).
    """
    if not 0.0 < momentum < 1.0:
        raise ValueError(f"BatchNormalization momentum must be in (0, 1), got {momentum}")
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = float(momentum)
    return len(bns)
