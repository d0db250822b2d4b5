"""Is an upload like the images a model was trained on? A k-nearest-neighbour distance in the
model's own feature space, with a threshold set on the validation split.

Why this check: the models were trained, chosen and tested on a synthetic phantom, and a softmax
answers with confidence whatever it is shown (a photograph, a grey square, a real scan). The
distance says when an upload lies outside what the model has seen, so the app can warn that its
prediction and map mean nothing there.

How (the one place the app decides "unlike the training images"):

* features: the activations of the layer the saliency maps are read from (the explain stage's
  CAM layer, ``lib.explain.methods.layer_choice`` with params.yaml's ``explain.layer`` and
  ``explain.min_grid``: block2_relu of the scratch CNNs, re_lu_16 of the transfer model),
  averaged over the grid and L2-normalised;
* distance: the mean Euclidean distance to the ``K_NEIGHBOURS`` nearest *training* images
  (``sklearn.neighbors.NearestNeighbors``; Sun et al. 2022, "Out-of-distribution detection with
  deep nearest neighbors");
* threshold: the ``PERCENTILE``-th percentile of the same distance over the *validation* images,
  which the reference does not contain, so about 1 % of images like the study's own are flagged.

Why these choices, measured on the study's five models (1360 training images as reference, 240
validation images for the threshold, 400 test images): the penultimate features (the pooled
input of the softmax) are trained to keep only what tells the four classes apart, and there a
photograph scored 1.07 times the threshold on the transfer model and a real sagittal MRI slice
0.98 times on scratch-dropout (not flagged); the saliency layer keeps the image's texture and
contrast, and there every non-brain image tried scores 1.8 to 45 times the threshold and the
real slice 1.0 to 3.2 times, on every model, while 1.0 to 2.2 % of the test images are flagged.
A Mahalanobis distance (``sklearn.covariance.LedoitWolf``) on the penultimate features did not
separate a photograph from the phantom on the transfer model (576 features, 1360 images), and a
threshold fitted on the reference images themselves flagged 20 to 37 % of the test images.

The reference (training features and validation distances) is computed once per model from the
prepare stage's manifest and cached under ``<root>/.cache/serve/ood/``, keyed by the model
file's md5, the layer, the md5s of the reference images and these settings; when the manifest or
its images are missing the check is reported unavailable, with the reason, never skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

K_NEIGHBOURS = 5
PERCENTILE = 99.0
VERSION = 1                   # bump when the features or the distance change: new cache keys
CACHE_DIR = Path(".cache") / "serve" / "ood"
REFERENCE_SPLIT, THRESHOLD_SPLIT = "train", "val"
BATCH = 128


def feature_model(model: Any, layer: str) -> Any:
    """A Keras model from the classifier's input to the grid average of `layer`'s activations."""
    import keras

    pooled = keras.layers.GlobalAveragePooling2D(name="ood_pool")(model.get_layer(layer).output)
    return keras.Model(model.inputs, pooled, name=f"{model.name}_ood_features")


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero: every unit vector is at distance 1)."""
    features = np.asarray(features, dtype=np.float32)
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norm > 0, norm, 1.0)


@dataclass
class Reference:
    """The training features and the validation threshold of one model."""

    features: np.ndarray            # (n_train, d) normalised training features
    val_distances: np.ndarray       # (n_val,) distance of each validation image
    k: int = K_NEIGHBOURS
    percentile: float = PERCENTILE

    def __post_init__(self) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.k = min(self.k, len(self.features))
        # a ball tree answers one query on one thread (0.4 ms); "auto" picks brute force here,
        # whose OpenMP threads stalled 100 ms per request on busy cores (measured)
        self.index = NearestNeighbors(n_neighbors=self.k, algorithm="ball_tree").fit(
            self.features)

    @classmethod
    def fit(cls, train: np.ndarray, val: np.ndarray) -> Reference:
        """From raw training and validation features: the index, then the validation distances."""
        ref = cls(normalise(train), np.zeros(0))
        ref.val_distances = ref.distance(val)
        return ref

    @property
    def threshold(self) -> float:
        return float(np.percentile(self.val_distances, self.percentile))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mean distance of each (raw) feature row to its k nearest training images."""
        found, _ = self.index.kneighbors(normalise(features))
        return found.mean(axis=1)

    def save(self, path: Path) -> None:
        """Write atomically (two servers may start at once): a private name, then a rename."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with tmp.open("wb") as fh:
                np.savez(fh, features=self.features, val_distances=self.val_distances,
                         k=self.k, percentile=self.percentile)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> Reference:
        with np.load(path) as z:
            return cls(z["features"], z["val_distances"], int(z["k"]), float(z["percentile"]))


class OODCheck:
    """One model's out-of-distribution check: a Reference, or the reason there is none."""

    def __init__(self, reference: Reference | None, message: str, features: Any = None,
                 layer: str | None = None) -> None:
        self.reference, self.message, self.features = reference, message, features
        self.layer = layer

    @property
    def available(self) -> bool:
        return self.reference is not None

    def summary(self) -> dict[str, Any]:
        """For /models and the model card: whether it runs, its threshold and why."""
        ref = self.reference
        return {"available": ref is not None, "method": describe(self.layer),
                "threshold": ref.threshold if ref else None,
                "percentile": ref.percentile if ref else None,
                "n_reference": len(ref.features) if ref else None,
                "n_validation": len(ref.val_distances) if ref else None,
                "message": self.message}

    def assess(self, x: np.ndarray) -> dict[str, Any]:
        """{available, distance, threshold, unlike_training, message} of one model input."""
        if self.reference is None:
            return {"available": False, "distance": None, "threshold": None,
                    "unlike_training": None, "message": self.message}
        from ..forward import predict_probs

        ref = self.reference
        distance = float(ref.distance(predict_probs(self.features, x))[0])
        unlike = bool(distance > ref.threshold)
        if unlike:
            text = (f"Unlike the training images: distance {distance:.3f} > threshold "
                    f"{ref.threshold:.3f} (the {ref.percentile:g}th percentile of the validation "
                    "images). The model has not seen anything like this image; its prediction "
                    "and map say nothing about it.")
        else:
            text = (f"Like the training images: distance {distance:.3f} ≤ threshold "
                    f"{ref.threshold:.3f} (the {ref.percentile:g}th percentile of the validation "
                    "images).")
        return {"available": True, "distance": distance, "threshold": ref.threshold,
                "unlike_training": unlike, "message": text}


def describe(layer: str | None = None) -> str:
    at = f" ({layer})" if layer else ""
    return (f"mean distance to the {K_NEIGHBOURS} nearest training images in the model's "
            f"features at its saliency layer{at}, averaged over the grid and normalised; "
            f"threshold: the {PERCENTILE:g}th percentile of the validation images' distances")


def unavailable(message: str) -> OODCheck:
    return OODCheck(None, f"OOD check unavailable: {message}")


def cache_key(model_md5: str | None, layer: str, rows: Any) -> str:
    """md5 of the model file, the layer, the reference images (split, path, md5), the settings."""
    h = hashlib.md5(f"v{VERSION} k{K_NEIGHBOURS} p{PERCENTILE} {model_md5} {layer}".encode())
    for split, path, md5 in zip(rows["split"], rows["path"], rows["md5"], strict=True):
        h.update(f"\n{split}\t{path}\t{md5}".encode())
    return h.hexdigest()


def embed(features: Any, frame: Any, raw_dir: Path, size: int, channels: int, n_classes: int
          ) -> np.ndarray:
    """Features of manifest rows, decoded exactly as training decodes them (make_dataset)."""
    from ..data.inputs import make_dataset
    from ..forward import predict_probs

    ds = make_dataset(frame, raw_dir, image_size=size, n_classes=n_classes, batch_size=BATCH,
                      channels=channels, cache=False)
    return predict_probs(features, ds)


def prepare(loaded: Any, manifest: Path, raw_dir: Path, cache_dir: Path | None,
            layer: str = "auto", min_grid: int = 32) -> OODCheck:
    """The OOD check of a loaded model at its saliency layer (``layer_choice(model, layer,
    min_grid)``, the explain stage's settings): from the cache, or computed (and cached) from the
    manifest's training and validation images; unavailable (with why) when they are missing."""
    if not manifest.is_file():
        return unavailable(f"{manifest} is missing, so there are no training and validation "
                           "images to compare with (run `make repro`: the prepare stage)")
    import pandas as pd

    frame = pd.read_csv(manifest, keep_default_na=False)
    if "status" in frame:
        frame = frame[frame["status"] != "excluded"]
    frame = frame[frame["split"].isin([REFERENCE_SPLIT, THRESHOLD_SPLIT])]
    frame = frame.sort_values(["split", "path"]).reset_index(drop=True)
    n_ref = int((frame["split"] == REFERENCE_SPLIT).sum())
    n_val = int((frame["split"] == THRESHOLD_SPLIT).sum())
    if n_ref < 2 or n_val < 1:
        return unavailable(f"{manifest} has {n_ref} training and {n_val} validation images; "
                           "the check needs at least 2 and 1")
    missing = [p for p in frame["path"] if not (raw_dir / p).is_file()]
    if missing:
        return unavailable(f"{len(missing)} of the {len(frame)} training and validation images "
                           f"of {manifest.name} are missing under {raw_dir} (e.g. {missing[0]}); "
                           "run `dvc pull` or `make repro`")
    from ..explain.methods import layer_choice

    layer, _ = layer_choice(loaded.model, layer, min_grid)
    features = feature_model(loaded.model, layer)
    key = cache_key(loaded.card.md5, layer, frame)
    path = cache_dir / f"{loaded.card.artifact}-{key[:16]}.npz" if cache_dir else None
    reference = None
    if path is not None and path.is_file():
        try:
            reference = Reference.load(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("unreadable OOD cache %s (%s): recomputing", path, exc)
    if reference is None:
        n_classes = int(frame["label"].max()) + 1
        train, val = (embed(features, frame[frame["split"] == split], raw_dir, loaded.size,
                            loaded.channels, n_classes)
                      for split in (REFERENCE_SPLIT, THRESHOLD_SPLIT))
        reference = Reference.fit(train, val)
        if path is not None:
            try:
                reference.save(path)
                for stale in cache_dir.glob(f"{loaded.card.artifact}-*.npz"):  # older models
                    if stale != path and stale.stem.rsplit("-", 1)[0] == loaded.card.artifact:
                        stale.unlink(missing_ok=True)
            except OSError as exc:  # a read-only study: the check still runs, uncached
                log.warning("could not cache the OOD reference at %s: %s", path, exc)
    return OODCheck(reference, f"threshold {reference.threshold:.3f} set on "
                               f"{len(reference.val_distances)} validation images, distances to "
                               f"{len(reference.features)} training images", features, layer)
