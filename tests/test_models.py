"""Tests of lib.train.models: scratch CNN, per-backbone preprocessing, freezing, saving and
weights."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from lib.train import models as M
from lib.train.models import (
    BACKBONES,
    NO_WEIGHTS,
    SCRATCH_VARIANTS,
    BackbonePreprocess,
    ScratchConfig,
    WeightsUnavailable,
)

CONV_LAYER_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                    keras.layers.SeparableConv2D)


def last_conv(model: keras.Model) -> keras.layers.Layer:
    """The last convolution with a 4-D output (Grad-CAM's usual target)."""
    return next(layer for layer in reversed(model.layers)
                if isinstance(layer, CONV_LAYER_TYPES) and len(layer.output.shape) == 4)


# Keras' own Variable.numpy() trips a NumPy 2 copy-keyword deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = "MobileNetV3Small"  # the cheapest backbone, used wherever any backbone will do
SMALL_SHAPE = (32, 32, 3)
TINY = ScratchConfig(blocks=2, filters=4, kernel_size=3, dense_units=8)


def images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random float32 images in the 0-255 range the models take."""
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def one_hot(n: int, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype="float32")[np.arange(n) % n_classes]


# ---------------------------------------------------------------------------------------------
# Scratch CNN


@pytest.mark.parametrize("variant", list(SCRATCH_VARIANTS))
def test_scratch_outputs_a_softmax_and_names_its_layers(variant: str) -> None:
    use_dropout, use_bn = SCRATCH_VARIANTS[variant]
    cfg = ScratchConfig.from_params({"blocks": 2, "filters": 4, "dense_units": 8}, variant)
    model = M.build_scratch((32, 32, 1), 4, cfg)
    probs = model(images(3, (32, 32, 1))).numpy()
    assert probs.shape == (3, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()

    names = {layer.name for layer in model.layers}
    for i in (1, 2):
        assert {f"block{i}_conv", f"block{i}_relu", f"block{i}_pool"} <= names
        assert (f"block{i}_bn" in names) == use_bn
        assert model.get_layer(f"block{i}_conv").use_bias == (not use_bn)
    assert {"image", "rescale", "head_pool", "head_dense", "predictions"} <= names
    assert ("head_dropout" in names) == use_dropout
    assert ("head_dense_dropout" in names) == use_dropout
    assert "block3_conv" not in names
    assert model.get_layer("predictions").activation is keras.activations.softmax


def test_scratch_without_dense_layer() -> None:
    model = M.build_scratch((16, 16, 1), 3,
                            ScratchConfig(blocks=2, filters=4, dense_units=0, use_dropout=True))
    names = {layer.name for layer in model.layers}
    assert "head_dense" not in names and "head_dense_dropout" not in names
    assert "head_dropout" in names


@pytest.mark.parametrize("blocks", [1, 3])
def test_scratch_last_conv_layer(blocks: int) -> None:
    model = M.build_scratch((32, 32, 1), 4, ScratchConfig(blocks=blocks, filters=4,
                                                          use_batchnorm=True))
    assert last_conv(model).name == f"block{blocks}_conv"


def test_scratch_rescales_inside_the_model() -> None:
    model = M.build_scratch((16, 16, 1), 2, ScratchConfig(**{**TINY.__dict__,
                                                            "standardize": False}))
    probe = keras.Model(model.input, model.get_layer("block1_conv").input)
    out = probe(np.full((1, 16, 16, 1), 255.0, "float32")).numpy()
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_scratch_standardizes_each_image() -> None:
    model = M.build_scratch((16, 16, 1), 2, TINY)
    probe = keras.Model(model.input, model.get_layer("block1_conv").input)
    rng = np.random.default_rng(0)
    images = np.stack([rng.uniform(0, 60, (16, 16, 1)), rng.uniform(100, 255, (16, 16, 1))])
    out = probe(images.astype("float32")).numpy().reshape(2, -1)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-2)
    plain = M.build_scratch((16, 16, 1), 2, ScratchConfig(**{**TINY.__dict__,
                                                            "standardize": False}))
    assert M.count_params(model) == M.count_params(plain)  # standardisation learns nothing


@pytest.mark.parametrize(("pooling", "layer"), [("max", "GlobalMaxPooling2D"),
                                                 ("avg", "GlobalAveragePooling2D")])
def test_scratch_pooling_choice(pooling: str, layer: str) -> None:
    model = M.build_scratch((16, 16, 1), 2, ScratchConfig(**{**TINY.__dict__,
                                                            "pooling": pooling}))
    assert type(model.get_layer("head_pool")).__name__ == layer
    with pytest.raises(ValueError, match="train_scratch.pooling"):
        ScratchConfig(pooling="sum")


def test_scratch_parameter_count_by_hand() -> None:
    # conv1 3*3*1*4+4=40, conv2 3*3*4*8+8=296, dense 8*8+8=72, predictions 8*4+4=36
    assert M.count_params(M.build_scratch((32, 32, 1), 4, TINY)) == {
        "total": 444, "trainable": 444, "non_trainable": 0}
    # with BN the convs lose their bias; each BN has gamma, beta (trainable) + mean, var
    bn = ScratchConfig(blocks=2, filters=4, kernel_size=3, dense_units=8, use_batchnorm=True)
    assert M.count_params(M.build_scratch((32, 32, 1), 4, bn)) == {
        "total": 36 + 16 + 288 + 32 + 72 + 36, "trainable": 36 + 8 + 288 + 16 + 72 + 36,
        "non_trainable": 8 + 16}


@pytest.mark.parametrize("change", [{"blocks": 3}, {"filters": 8}, {"kernel_size": 5},
                                    {"dense_units": 16}])
def test_scratch_parameter_count_follows_config(change: dict) -> None:
    base = M.count_params(M.build_scratch((32, 32, 1), 4, TINY))["total"]
    cfg = ScratchConfig(**{**TINY.__dict__, **change})
    model = M.build_scratch((32, 32, 1), 4, cfg)
    assert M.count_params(model)["total"] > base
    assert M.count_params(model)["total"] == model.count_params()


def test_scratch_input_too_small() -> None:
    with pytest.raises(ValueError, match=r"too small for 3 blocks.*at least 8x8"):
        M.build_scratch((4, 64, 1), 4, ScratchConfig(blocks=3))
    M.build_scratch((8, 8, 1), 4, ScratchConfig(blocks=3, filters=2))  # the minimum works


def test_scratch_config_from_params_and_validation() -> None:
    group = {"blocks": 2, "filters": 8, "kernel_size": 5, "dense_units": 0, "dropout": 0.5,
             "epochs": 30, "learning_rate": 1e-3, "input_size": 64}
    cfg = ScratchConfig.from_params(group, "dropout_batchnorm")
    assert cfg == ScratchConfig(2, 8, 5, 0, 0.5, use_dropout=True, use_batchnorm=True)
    with pytest.raises(ValueError, match=r"unknown scratch variant 'bn'.*dropout_batchnorm"):
        ScratchConfig.from_params(group, "bn")
    with pytest.raises(ValueError, match=r"train_scratch\.blocks"):
        ScratchConfig.from_params({"blocks": 0}, "none")
    with pytest.raises(ValueError, match=r"'train_scratch:' has unknown key\(s\) image_size.*"
                                         r"'image_size' is now 'input_size'"):
        ScratchConfig.from_params({**group, "image_size": 64}, "none")
    with pytest.raises(ValueError, match=r"train_scratch\.dropout"):
        ScratchConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"train_scratch\.filters"):
        ScratchConfig(filters=8.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Backbones: the input range each one sees


def first_conv(model: keras.Model) -> keras.layers.Layer:
    return next(layer for layer in model.layers if isinstance(layer, CONV_LAYER_TYPES))


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_first_convolution_sees_the_documented_range(backbone: str) -> None:
    spec = BACKBONES[backbone]
    size = spec.min_size
    model = M.build_transfer(backbone, (size, size, 3), 4, NO_WEIGHTS)
    # flat: the backbone's layers are the model's own (Grad-CAM reaches them directly)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert last_conv(model) in model.layers

    probe = keras.Model(model.input, first_conv(model).input)
    lo, hi = spec.input_range
    black = probe(np.zeros((1, size, size, 3), "float32")).numpy()
    white = probe(np.full((1, size, size, 3), 255.0, "float32")).numpy()
    noise = probe(images(2, (size, size, 3))).numpy()
    assert black.min() == pytest.approx(lo, abs=1e-3)
    assert white.max() == pytest.approx(hi, abs=1e-3)
    for out in (black, white, noise):
        assert lo - 1e-3 <= out.min() and out.max() <= hi + 1e-3


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_preprocess_layer_matches_keras_preprocess_input(backbone: str) -> None:
    spec = BACKBONES[backbone]
    x = images(2, (40, 40, 3), seed=1)
    ours = BackbonePreprocess(spec.mode)(x)
    theirs = getattr(keras.applications, spec.module).preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), theirs, rtol=1e-6, atol=1e-4)


# Backbones whose file name Keras computes: (WEIGHTS_HASHES key, how the source builds the name)
COMPUTED_NAMES = {
    **{f"EfficientNetV2B{i}": (f"b{i}", (f'name="efficientnetv2-b{i}"',
                                         'file_suffix = "_notop.h5"')) for i in range(4)},
    **{f"MobileNetV3{kind.capitalize()}": (
        f"{kind}_224_1.0_float", ('"weights_mobilenet_v3_{model_name}_no_top_v2.h5"',
                                  '"{}{}_224_{}_float".format(')) for kind in ("small", "large")},
    "ResNet50": ("resnet50", ('f"{weights_name}_weights_tf_dim_ordering_tf_kernels_notop.h5"',
                              'weights_name="resnet50"')),
}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_backbone_spec_matches_keras_source(backbone: str) -> None:
    spec = BACKBONES[backbone]
    module = getattr(keras.src.applications, spec.module)
    source = inspect.getsource(module)
    assert spec.weights_md5 in source
    if backbone in COMPUTED_NAMES:
        key, fragments = COMPUTED_NAMES[backbone]
        assert module.WEIGHTS_HASHES[key][1] == spec.weights_md5
        for fragment in fragments:
            assert fragment in source
    else:
        assert module.WEIGHTS_PATH_NO_TOP.endswith("/" + spec.weights_file)
    assert f"min_size={spec.min_size}" in source or f"< {spec.min_size}" in source
    with pytest.raises(ValueError, match=rf"at least {spec.min_size}x.*train_transfer\.input_size"):
        M.build_transfer(backbone, (spec.min_size - 1, 64, 3), 4, NO_WEIGHTS)


def test_transfer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'ResNet18'.*EfficientNetV2B0"):
        M.build_transfer("ResNet18", SMALL_SHAPE, 4, NO_WEIGHTS)
    with pytest.raises(ValueError, match="RGB"):
        M.build_transfer(SMALL, (32, 32, 1), 4, NO_WEIGHTS)


def test_transfer_head() -> None:
    model = M.build_transfer(SMALL, SMALL_SHAPE, 3, NO_WEIGHTS, head_dropout=0.3, dense_units=16)
    names = [layer.name for layer in model.layers]
    assert names[:2] == ["image", "preprocess"]
    assert names[-4:] == ["head_pool", "head_dropout", "head_dense", "predictions"]
    probs = model(images(2, SMALL_SHAPE)).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert M.model_backbone(model) == SMALL
    assert last_conv(model).name == "conv_1"
    plain = M.build_transfer(SMALL, SMALL_SHAPE, 3, NO_WEIGHTS, head_dropout=0.0)
    assert [layer.name for layer in plain.layers][-2:] == ["head_pool", "predictions"]


# ---------------------------------------------------------------------------------------------
# Freezing for two-phase fine-tuning


def snapshot(layers: list[keras.layers.Layer]) -> dict[str, list[np.ndarray]]:
    return {layer.name: [w.numpy() for w in layer.weights] for layer in layers}


def changed(before: dict, layers: list[keras.layers.Layer]) -> set[str]:
    return {layer.name for layer in layers
            if any(not np.array_equal(a, b.numpy())
                   for a, b in zip(before[layer.name], layer.weights, strict=True))}


def train_step(model: keras.Model) -> None:
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy",
                  run_eagerly=True)
    model.train_on_batch(images(4, SMALL_SHAPE), one_hot(4, 3))


def test_unfreeze_top_with_train_bn_lets_batchnorm_learn_at_its_momentum() -> None:
    """train_bn: BN layers among the top n train (statistics move) at the given momentum; the
    ones below stay frozen (the statistics of random or ImageNet weights are not all wrong)."""
    model = M.build_transfer(SMALL, SMALL_SHAPE, 3, NO_WEIGHTS)
    backbone = M.backbone_layers(model)
    with_weights = [layer for layer in backbone if layer.weights]
    top = with_weights[-12:]
    n = M.unfreeze_top(model, 12, train_bn=True, bn_momentum=0.8)
    assert n == len(top) and all(layer.trainable for layer in top)
    top_bn = [la for la in top if isinstance(la, keras.layers.BatchNormalization)]
    assert top_bn and all(la.momentum == pytest.approx(0.8) for la in top_bn)
    low_bn = [la for la in with_weights[:-12] if isinstance(la, keras.layers.BatchNormalization)]
    assert low_bn and not any(la.trainable for la in low_bn)
    before = snapshot(top_bn)
    train_step(model)
    assert changed(before, top_bn)  # moving statistics update in training mode


def test_freeze_then_unfreeze_top() -> None:
    model = M.build_transfer(SMALL, SMALL_SHAPE, 3, NO_WEIGHTS)
    backbone = M.backbone_layers(model)
    bn_layers = [layer for layer in backbone if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn_layers and all(layer.name not in ("image", "preprocess") for layer in backbone)
    assert not any(M._is_head(layer) for layer in backbone)

    # phase 1: only the head trains; backbone weights and BN statistics stay put
    M.freeze_backbone(model)
    assert not any(w.trainable for layer in backbone for w in layer.weights)
    head = [model.get_layer("predictions")]
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in head[0].weights}
    before, head_before = snapshot(backbone), snapshot(head)
    train_step(model)
    assert changed(before, backbone) == set()
    assert changed(head_before, head) == {"predictions"}

    # phase 2: the top two layers with weights are conv_1 and its BN: only the conv trains
    assert M.unfreeze_top(model, 2) == 1
    assert {layer.name for layer in backbone if layer.trainable_weights} == {"conv_1"}
    n = M.unfreeze_top(model, 12)
    trainable = [layer for layer in backbone if layer.trainable_weights]
    with_weights = [layer for layer in backbone if layer.weights]
    assert n == len(trainable) > 1
    assert set(trainable) == {layer for layer in with_weights[-12:]
                              if not isinstance(layer, keras.layers.BatchNormalization)}
    assert not any(layer.trainable for layer in bn_layers)
    assert M.count_params(model)["trainable"] == sum(
        int(np.prod(w.shape)) for w in model.trainable_weights)

    before = snapshot(backbone)
    train_step(model)  # re-compiles, as the caller must after changing trainability
    moved = changed(before, backbone)
    assert "conv_1" in moved
    assert moved <= {layer.name for layer in trainable}
    assert not moved & {layer.name for layer in bn_layers}  # no moving_mean/var update

    with pytest.raises(ValueError, match="not a transfer model"):
        M.freeze_backbone(M.build_scratch((16, 16, 1), 2, TINY))


def test_unfreeze_more_layers_than_exist() -> None:
    model = M.build_transfer("VGG16", SMALL_SHAPE, 3, NO_WEIGHTS)
    assert M.unfreeze_top(model, 1000) == 13  # VGG16's 13 convolutions, no BN
    assert M.unfreeze_top(model, 0) == 0


# ---------------------------------------------------------------------------------------------
# Saving and loading


@pytest.mark.parametrize("backbone", [SMALL, "VGG16"])
def test_keras_file_round_trip(backbone: str, tmp_path: Path) -> None:
    model = M.build_transfer(backbone, SMALL_SHAPE, 4, NO_WEIGHTS, dense_units=8)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = images(3, SMALL_SHAPE)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    layer = loaded.get_layer("preprocess")
    assert isinstance(layer, BackbonePreprocess)
    assert (layer.mode, layer.backbone) == (BACKBONES[backbone].mode, backbone)
    # a loaded model (e.g. a training checkpoint) still works with the backbone helpers
    M.save_backbone_weights(loaded, tmp_path / "backbone.weights.h5")
    assert M.unfreeze_top(loaded, 2) >= 1


def backbone_weights(model: keras.Model) -> list[np.ndarray]:
    return [w.numpy() for layer in M.backbone_layers(model) for w in layer.weights]


def test_backbone_weights_round_trip(tmp_path: Path) -> None:
    source = M.build_transfer(SMALL, SMALL_SHAPE, 4, NO_WEIGHTS)
    rng = np.random.default_rng(3)
    for layer in M.backbone_layers(source):  # non-default BN statistics must travel too
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
    target = M.build_transfer(SMALL, SMALL_SHAPE, 3, NO_WEIGHTS, dense_units=8)
    x = images(2, SMALL_SHAPE)
    features = M.backbone_submodel(source)(x).numpy()
    assert not np.array_equal(M.backbone_submodel(target)(x).numpy(), features)

    path = M.save_backbone_weights(source, tmp_path / "pretrain" / "backbone.weights.h5")
    meta = json.loads(Path(f"{path}.json").read_text())
    assert meta["backbone"] == SMALL and meta["input_shape"] == list(SMALL_SHAPE)
    stored: list[str] = []
    with h5py.File(path, "r") as fh:  # the backbone only: no head variables in the file
        fh.visititems(lambda key, item: stored.append(key) if isinstance(item, h5py.Dataset)
                      else None)
    assert len(stored) == len(backbone_weights(source))
    head_before = target.get_layer("predictions").kernel.numpy()
    M.load_backbone_weights(target, path)
    for a, b in zip(backbone_weights(source), backbone_weights(target), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(M.backbone_submodel(target)(x).numpy(), features)
    np.testing.assert_array_equal(target.get_layer("predictions").kernel.numpy(), head_before)

    # the same file through the weights setting
    choice = M.resolve_weights("pretrain", SMALL, pretrain_path=path)
    assert choice.kind == "file" and choice.is_backbone_file
    assert choice.description == f"weights from the pretrain stage ({path})"
    built = M.build_transfer(SMALL, SMALL_SHAPE, 2, choice)
    np.testing.assert_array_equal(M.backbone_submodel(built)(x).numpy(), features)

    # a sidecar that says another backbone
    Path(f"{path}.json").write_text(json.dumps({**meta, "backbone": "ResNet50"}))
    with pytest.raises(ValueError, match=r"are for ResNet50.*MobileNetV3Small.*dvc repro pretrain"):
        M.load_backbone_weights(target, path)
    with pytest.raises(ValueError, match="are for ResNet50"):
        M.resolve_weights(str(path), SMALL)
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        M.save_backbone_weights(source, tmp_path / "backbone.h5")


# ---------------------------------------------------------------------------------------------
# Weights resolution


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any download attempt fail the test."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", refuse)


def test_imagenet_weights_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         no_download: None) -> None:
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    spec = BACKBONES[SMALL]
    with pytest.raises(WeightsUnavailable) as info:
        M.resolve_weights("imagenet", SMALL)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    for part in (spec.weights_file, str(home / "models"), "train_transfer.weights",
                 "cannot download", "keras.applications.MobileNetV3Small(include_top=False, "
                 "weights='imagenet')", "pretrain"):
        assert part in message

    # a stand-in for the ImageNet file, in the legacy h5 format keras.applications loads
    reference = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                                    input_shape=SMALL_SHAPE)
    (home / "models").mkdir()
    cached = home / "models" / spec.weights_file
    with h5py.File(cached, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, reference)

    with pytest.warns(UserWarning, match="md5"):  # not the published file, and we say so
        choice = M.resolve_weights("imagenet", SMALL)
    assert (choice.kind, choice.path) == ("imagenet", cached)
    assert choice.description.startswith(f"ImageNet weights from {cached}")
    model = M.build_transfer(SMALL, SMALL_SHAPE, 3, choice)
    expected = [layer for layer in reference.layers if layer.weights]
    got = [layer for layer in M.backbone_layers(model) if layer.weights]
    assert len(got) == len(expected)
    for ref_layer, layer in zip(expected, got, strict=True):
        for a, b in zip(ref_layer.weights, layer.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())

    # the same file given as a path is a Keras-applications file
    by_path = M.resolve_weights(str(cached), SMALL)
    assert by_path.kind == "file" and not by_path.is_backbone_file
    assert by_path.description == f"Keras-applications weights from {cached}"


def test_imagenet_file_of_another_backbone(tmp_path: Path, no_download: None) -> None:
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=SMALL_SHAPE)
    path = tmp_path / "vgg16.h5"
    with h5py.File(path, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, reference)
    with pytest.raises(ValueError, match=r"could not load .*vgg16\.h5 into MobileNetV3Small"):
        M.build_transfer(SMALL, SMALL_SHAPE, 3, M.resolve_weights(str(path), SMALL))


def test_weights_errors_and_none(tmp_path: Path) -> None:
    for spec in (None, "none"):
        choice = M.resolve_weights(spec, SMALL)
        assert (choice.kind, choice.path) == ("none", None)
        assert choice.description == "random initialisation (no pretrained weights)"
    with pytest.raises(FileNotFoundError, match="dvc repro pretrain"):
        M.resolve_weights("pretrain", SMALL, pretrain_path=tmp_path / "missing.weights.h5")
    with pytest.raises(ValueError, match="pretrain_path"):
        M.resolve_weights("pretrain", SMALL)
    with pytest.raises(FileNotFoundError, match=r"train_transfer\.weights.*no such file"):
        M.resolve_weights(str(tmp_path / "nowhere.h5"), SMALL)
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.h5"):
        M.resolve_weights(str(tmp_path / "weights.pt"), SMALL)
    with pytest.raises(ValueError, match="unknown backbone"):
        M.resolve_weights("none", "AlexNet")
