"""Image + metadata fusion: the image model's pooled features and a small network on the encoded
metadata, concatenated before a new softmax head (late fusion, as in the multimodal rows of the
studies this one is compared with).

The image model is one of the study's trained models, frozen: its ``head_pool`` output (the
global pooling every model here ends with, lib.train.models) is the image's feature vector.
Three heads are trained on the same rows, seed by seed, so their differences are paired:

- ``image_head``: features only, a new head: the control that isolates what metadata adds (the
  fusion model differs from it only by the metadata branch);
- ``fusion``: features + the metadata branch (Dense ``units``, ReLU);
- ``metadata``: the metadata branch alone, the metadata-only baseline.

Heads train in seconds (features are computed once per model), with early stopping on the
validation loss and the best epoch kept; :func:`compose` joins a fusion head to its image
model as one Keras model with two inputs (image, metadata) for use outside the study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import check_int, from_group
from . import models as _models  # noqa: F401  (registers the custom layers trained models use)

FEATURE_LAYER = "head_pool"
SOURCES = ("phantom", "prepared")


@dataclass(frozen=True)
class FusionConfig:
    """The ``fusion:`` group of params.yaml."""

    metadata: str = "phantom"  # phantom | prepared
    columns: str = "all"  # comma-separated metadata columns, or all
    image_models: tuple[str, ...] = ("scratch_batchnorm", "transfer")
    units: int = 16
    dropout: float = 0.2
    epochs: int = 200
    patience: int = 20
    batch_size: int = 64
    learning_rate: float = 0.001

    def __post_init__(self) -> None:
        if self.metadata not in SOURCES:
            raise ValueError(f"fusion.metadata must be one of {list(SOURCES)}, got "
                             f"{self.metadata!r}")
        object.__setattr__(self, "image_models", tuple(str(m) for m in self.image_models))
        if not self.image_models:
            raise ValueError("fusion.image_models needs at least one trained configuration")
        for name, low in (("units", 1), ("epochs", 1), ("patience", 1), ("batch_size", 1)):
            check_int(f"fusion.{name}", getattr(self, name), low)
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"fusion.dropout must be in [0, 1), got {self.dropout!r}")
        if not float(self.learning_rate) > 0:
            raise ValueError(f"fusion.learning_rate must be > 0, got {self.learning_rate!r}")

    @classmethod
    def from_params(cls, group: dict[str, Any]) -> FusionConfig:
        return from_group(cls, group, "fusion")

    def column_list(self, available: list[str]) -> list[str]:
        """The metadata columns to use, in the table's order; unknown names are an error."""
        if str(self.columns).strip() == "all":
            return list(available)
        wanted = [c.strip() for c in str(self.columns).split(",") if c.strip()]
        unknown = [c for c in wanted if c not in available]
        if unknown or not wanted:
            raise ValueError(f"fusion.columns names {unknown or wanted} not in the metadata "
                             f"columns {available}; use 'all' or a comma-separated subset")
        return [c for c in available if c in wanted]


def feature_model(model: Any) -> Any:
    """The image model up to its pooled features (shares its frozen weights)."""
    import keras

    return keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).output,
                       name=f"{model.name}_features")


def features(model: Any, x: np.ndarray) -> np.ndarray:
    """Pooled features of model inputs, through the study's one inference loop."""
    from ..forward import predict_probs

    return predict_probs(feature_model(model), x).astype(np.float32)


def build_head(n_features: int, n_metadata: int, n_classes: int, cfg: FusionConfig,
               name: str, seed: int = 0) -> Any:
    """A softmax head over [features][, metadata branch]; either part may be absent (0).
    Seeded here: its initial weights must not depend on what ran before it."""
    import keras
    from keras import layers

    from ..seeding import seed_everything

    seed_everything(seed)

    inputs, parts = [], []
    if n_features:
        feats = keras.Input((n_features,), name="features")
        inputs.append(feats)
        parts.append(feats)
    if n_metadata:
        meta = keras.Input((n_metadata,), name="metadata")
        inputs.append(meta)
        parts.append(layers.Dense(cfg.units, activation="relu", name="metadata_dense")(meta))
    if not parts:
        raise ValueError("a head needs features, metadata or both")
    x = parts[0] if len(parts) == 1 else layers.Concatenate(name="fuse")(parts)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
    out = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, out, name=name)


def fit_head(head: Any, train_x: list[np.ndarray], train_y: np.ndarray,
             val_x: list[np.ndarray], val_y: np.ndarray, cfg: FusionConfig, seed: int
             ) -> dict[str, Any]:
    """Train a head (seeded; early stopping on validation loss, best epoch kept)."""
    import keras

    from ..seeding import seed_everything

    seed_everything(seed)
    n_classes = int(head.output_shape[-1])
    head.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                 loss="categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                         restore_best_weights=True)
    history = head.fit(train_x, keras.utils.to_categorical(train_y, n_classes),
                       validation_data=(val_x, keras.utils.to_categorical(val_y, n_classes)),
                       epochs=cfg.epochs, batch_size=cfg.batch_size, shuffle=True, verbose=0,
                       callbacks=[stop])
    losses = history.history["val_loss"]
    return {"epochs": len(losses), "best_epoch": int(np.argmin(losses)) + 1,
            "val_loss": round(float(np.min(losses)), 4)}


def predict_head(head: Any, x: list[np.ndarray]) -> np.ndarray:
    """Softmax scores of a head (several inputs, so not the one-input inference loop)."""
    from ..forward import quiet

    with quiet():
        return np.asarray(head.predict(x, batch_size=1024, verbose=0), dtype=np.float64)


def compose(image_model: Any, head: Any) -> Any:
    """One model with two inputs (image, encoded metadata) -> class scores."""
    import keras

    meta = keras.Input(tuple(head.inputs[-1].shape[1:]), name="metadata")
    feats = feature_model(image_model)(image_model.inputs[0])
    return keras.Model([image_model.inputs[0], meta], head([feats, meta]),
                       name=f"fusion_{image_model.name}")
