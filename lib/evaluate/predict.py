"""Find the trained models and predict once: evaluation and explanation read the cached scores.

Every training stage writes `models/<name>/seed<N>.keras`; this module turns that folder into a
list of models (name, seed, file) and writes each model's softmax scores on the val and test
splits to `reports/predictions/<name>_s<N>.csv`, so no metric ever re-runs a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.inputs import make_dataset
from ..data.manifest import DataError, class_names, split_frame
from ..forward import predict_probs
from ..splits import PREDICTED_SPLITS

SEED_FILE = re.compile(r"^seed(\d+)\.keras$")
NOT_CLASSIFIERS = ("pretrain",)  # a backbone source task, not a tumour classifier


@dataclass(frozen=True)
class TrainedModel:
    """One trained classifier: its stage output folder name and the seed it was trained with."""

    name: str
    seed: int
    path: Path

    @property
    def key(self) -> str:
        """Stable id used in every metrics file and figure name, e.g. `scratch_batchnorm_s42`."""
        return f"{self.name}_s{self.seed}"


def find_models(models_dir: Path | str) -> list[TrainedModel]:
    """Every `<name>/seed<N>.keras` under models_dir, sorted by name then seed."""
    models_dir = Path(models_dir)
    found = []
    folders = sorted(p for p in models_dir.iterdir() if p.is_dir()) if models_dir.is_dir() else []
    for folder in folders:
        if folder.name in NOT_CLASSIFIERS:
            continue
        for file in folder.iterdir():
            match = SEED_FILE.match(file.name)
            if match:
                found.append(TrainedModel(folder.name, int(match.group(1)), file))
    if not found:
        raise DataError(f"no trained models (<name>/seed<N>.keras) under {models_dir}; "
                        "run the training stages first: dvc repro train_scratch train_transfer")
    return sorted(found, key=lambda m: (m.name, m.seed))


def load(model: TrainedModel) -> Any:
    """The Keras model (lib.train.models registers the custom preprocessing layer it may
    contain)."""
    import keras

    from ..train import models  # noqa: F401  (registers BackbonePreprocess)

    return keras.saving.load_model(model.path, compile=False)


def input_spec(keras_model: Any) -> tuple[int, int]:
    """(image size, channels) the model was built for, read from the model itself."""
    shape = keras_model.input_shape
    if shape[1] != shape[2]:
        raise ValueError(f"expected a square input, got {shape}")
    return int(shape[1]), int(shape[3])


def predict_frame(keras_model: Any, frame: pd.DataFrame, raw_dir: Path | str, n_classes: int,
                  batch_size: int = 128) -> np.ndarray:
    """Softmax scores (n_images x n_classes) in manifest row order."""
    size, channels = input_spec(keras_model)
    ds = make_dataset(frame, Path(raw_dir), image_size=size, n_classes=n_classes,
                      batch_size=batch_size, channels=channels, cache=False)
    scores = predict_probs(keras_model, ds)
    return scores if len(scores) else np.zeros((0, n_classes))


def write_predictions(path: Path | str, frame: pd.DataFrame, scores: np.ndarray,
                      names: list[str]) -> Path:
    """One row per image: path, split, class, label, predicted, then one p_<class> column each."""
    out = frame[["path", "split", "class", "label", "mask"]].copy()
    out["predicted"] = scores.argmax(axis=1)
    for i, name in enumerate(names):
        out[f"p_{name}"] = np.round(scores[:, i], 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path


def read_predictions(path: Path | str, split: str | None = None
                     ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """(rows, scores, class names) from a predictions csv, optionally one split only."""
    frame = pd.read_csv(path, keep_default_na=False, dtype={"path": str, "mask": str})
    if split is not None:
        frame = frame[frame["split"] == split].reset_index(drop=True)
    cols = [c for c in frame.columns if c.startswith("p_")]
    return frame, frame[cols].to_numpy(dtype=np.float64), [c[2:] for c in cols]


def predict_all(models_dir: Path | str, manifest: pd.DataFrame, raw_dir: Path | str,
                out_dir: Path | str, splits: tuple[str, ...] = PREDICTED_SPLITS,
                progress: bool = True) -> dict[str, Path]:
    """Predict every trained model once on the given splits; {model key: predictions csv}."""
    names = class_names(manifest)
    frame = pd.concat([split_frame(manifest, s) for s in splits], ignore_index=True)
    models = find_models(models_dir)
    written = {}
    iterator: Any = models
    if progress:
        from tqdm import tqdm

        iterator = tqdm(models, desc="predict", unit="model")
    for model in iterator:
        keras_model = load(model)
        n_out = int(keras_model.output_shape[-1])
        if n_out != len(names):
            raise DataError(f"{model.path} predicts {n_out} classes but the manifest has "
                            f"{len(names)} ({names}); retrain it on this dataset")
        scores = predict_frame(keras_model, frame, raw_dir, len(names))
        written[model.key] = write_predictions(Path(out_dir) / f"{model.key}.csv", frame,
                                               scores, names)
    return written
