"""Model inputs: manifest rows -> tf.data batches, and in-memory images -> the same tensors.

One resize (``resize_to_model``) and one decode (``decode_to_model``) for training, evaluation,
explanation and the app, so a model sees the same pixels from every path. TensorFlow is
imported lazily."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .manifest import DataError


def resize_to_model(image: Any, image_size: int) -> Any:
    """HxWxC pixels in 0-255 -> float32 image_size x image_size x C, the one model-input resize.

    Antialiased bilinear (like PIL's resize), then clipped to 0-255; a uint8 array or tensor is
    cast to float32 first. Training, evaluation, the explain stage's in-memory images and the
    augmentation preview all go through this function, so a model sees the same pixels from all.
    """
    import tensorflow as tf

    image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size), antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def apply_orientation(image: Any, orientation: Any) -> Any:
    """HxWxC tensor as stored -> as shown, for EXIF orientation 1..8 (PIL's exif_transpose).

    tf.io.decode_image ignores EXIF; prepare records each image's orientation in the manifest
    (column `orientation`, present only when some image has one), and make_dataset applies it
    here so that training sees what the audit, load_image and a viewer see.
    """
    import tensorflow as tf

    branches = [
        lambda: image,                                          # 1 upright
        lambda: tf.image.flip_left_right(image),                # 2 mirrored
        lambda: tf.image.rot90(image, k=2),                     # 3 rotated 180
        lambda: tf.image.flip_up_down(image),                   # 4 flipped
        lambda: tf.image.transpose(image),                      # 5 transposed
        lambda: tf.image.rot90(image, k=3),                     # 6 rotate 90 clockwise
        lambda: tf.image.rot90(tf.image.transpose(image), k=2),  # 7 transversed
        lambda: tf.image.rot90(image, k=1),                     # 8 rotate 90 anticlockwise
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32) - 1, 0, 7)
    return tf.switch_case(index, branches)


def decode_to_model(data: Any, image_size: int, orientation: Any = None) -> Any:
    """Encoded image bytes -> float32 HxWx1 in 0-255 at the model's size: the one decode.

    Training, evaluation and the app (lib.serve, for an uploaded file) all call it, so a model
    sees an upload exactly as it would see the same file in data/raw.
    """
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=1, expand_animations=False)
    if orientation is not None:
        image = apply_orientation(image, orientation)
    return resize_to_model(image, image_size)


def _decode(path: Any, image_size: int, orientation: Any = None) -> Any:
    """A file path -> ``decode_to_model`` of its bytes."""
    import tensorflow as tf

    return decode_to_model(tf.io.read_file(path), image_size, orientation)


def make_dataset(frame: pd.DataFrame, raw_dir: Path, *, image_size: int, n_classes: int,
                 batch_size: int, channels: int = 1, shuffle: bool = False, seed: int = 0,
                 augment: Callable[[Any], Any] | None = None, cache: bool | str = True) -> Any:
    """Batches of (float32 images in 0-255, one-hot labels) from manifest rows.

    Decode and resize happen once (then cached in memory, or in the file `cache` names, so
    memory does not grow with the split); shuffling is seeded; augmentation runs
    on whole batches in one sequential map (Keras random layers keep their seed state, so a
    parallel map would make runs differ). Grayscale is replicated to 3 channels for backbones
    last, so the policy works on one channel. Each model applies its own preprocessing.
    """
    import tensorflow as tf

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    paths = [str(Path(raw_dir) / p) for p in frame["path"]]
    labels = frame["label"].to_numpy(dtype="int64")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"labels outside 0..{n_classes - 1}; the model and manifest disagree")
    orient = (frame["orientation"].to_numpy(dtype="int64") if "orientation" in frame.columns
              else np.ones(len(paths), dtype="int64"))
    if (orient != 1).any():
        ds = tf.data.Dataset.from_tensor_slices((paths, orient, tf.one_hot(labels, n_classes)))
        ds = ds.map(lambda p, o, y: (_decode(p, image_size, o), y),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:  # the common case keeps the plain graph
        ds = tf.data.Dataset.from_tensor_slices((paths, tf.one_hot(labels, n_classes)))
        ds = ds.map(lambda p, y: (_decode(p, image_size), y),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache(cache) if isinstance(cache, str) else ds.cache()
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x), y))
    if channels == 3:
        ds = ds.map(lambda x, y: (tf.image.grayscale_to_rgb(x), y),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


class RowFile:
    """A float32 ``.npy`` array on disk read a few rows at a time (``os.pread``): a batch costs
    the memory of the batch, not of the file (a memory map would count every page it touched
    as the process's own, so a whole epoch would bring the whole file in)."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1 else
                           np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            self.offset = fh.tell()
        if fortran or dtype != np.float32:
            raise ValueError(f"{path}: expected a C-ordered float32 array, got {dtype}")
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(np.float32)
        self.row_bytes = int(np.prod(shape[1:])) * 4

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """The array's bytes (on disk, not in memory)."""
        return len(self) * self.row_bytes

    def __getitem__(self, index: Any) -> np.ndarray:
        """Rows by index, index array or slice, as numpy indexing gives them."""
        import os

        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        out = np.empty((len(index), *self.shape[1:]), np.float32)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for k, i in enumerate(index):
                data = os.pread(fd, self.row_bytes, self.offset + int(i) * self.row_bytes)
                out[k] = np.frombuffer(data, np.float32).reshape(self.shape[1:])
        finally:
            os.close(fd)
        return out


def rows(array: np.ndarray | RowFile, index: Any) -> Any:
    """``array[index]`` as a float32 tensor inside tf.data: the same values as ``tf.gather`` on
    the whole array, whether it is in memory or in a ``RowFile``."""
    import tensorflow as tf

    out = tf.numpy_function(lambda i: np.ascontiguousarray(array[i], dtype=np.float32),
                            [index], tf.float32, stateful=False)
    out.set_shape((None, *array.shape[1:]))
    return out


def decode_to_file(frame: pd.DataFrame, raw_dir: Path, *, image_size: int, n_classes: int,
                   path: Path) -> tuple[RowFile, np.ndarray]:
    """``load_arrays`` written batch by batch into a float32 ``.npy`` file: (the rows on disk,
    integer labels). Peak memory is one decode batch, whatever the number of images."""
    ds = make_dataset(frame, raw_dir, image_size=image_size, n_classes=n_classes,
                      batch_size=256, channels=1, cache=False)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                    shape=(len(frame), image_size, image_size, 1))
    start = 0
    for x, _ in ds:
        out[start:start + len(x)] = x.numpy()
        start += len(x)
    out.flush()
    del out
    return RowFile(path), frame["label"].to_numpy(dtype="int64")


@dataclass
class TrainStream:
    """Every epoch's training batches as a pure function of (seed, epoch, batch): exact resume.

    The images are decoded and resized once, into memory (``load_arrays``) or into a file
    (``decode_to_file``: then only the rows of the current batch are read, so memory does not
    grow with the number of images). Epoch e visits
    them in the order of a stateless draw seeded by (seed, e), and batch i of epoch e is augmented
    by ``augment.at_step(x, e * steps + i)``, whose random state is reset from that step number.
    So a run resumed at epoch e sees exactly the batches an uninterrupted run sees there, with no
    shuffle buffer or random-generator position to carry over. ``dataset(first, last)`` is one
    stream of epochs first..last-1, for ``model.fit(steps_per_epoch=steps)``.

    With `masks` (float32 (N, S, S, 1), see ``load_masks``) each batch is (images, labels,
    masks), the masks moved by the same geometric draws as their images (the guided arm,
    lib.train.guided); the images are the ones the stream gives without masks.
    """

    images: np.ndarray | RowFile  # float32 (N, S, S, 1) in 0-255, as make_dataset decodes them
    labels: np.ndarray  # int64 (N,)
    n_classes: int
    batch_size: int
    seed: int
    channels: int = 1
    augment: Any | None = None  # an object with at_step(images, step), e.g. AugmentPolicy
    masks: np.ndarray | None = None  # float32 (N, S, S, 1) lesion shares, or None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.masks is not None and self.masks.shape != self.images.shape[:3] + (1,):
            raise ValueError(f"masks {self.masks.shape} do not match images {self.images.shape}")
        if len(self.labels) == 0:
            raise DataError("no training images")
        if self.labels.min() < 0 or self.labels.max() >= self.n_classes:
            raise DataError(f"labels outside 0..{self.n_classes - 1}; the model and manifest "
                            "disagree")

    @property
    def steps(self) -> int:
        """Batches per epoch (the last one may be short)."""
        return -(-len(self.labels) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The image order of `epoch` (what ``dataset`` draws; for tests and readers)."""
        return self._order(epoch).numpy()

    def _order(self, epoch: Any) -> Any:
        import tensorflow as tf

        key = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])
        return tf.argsort(tf.random.stateless_uniform([len(self.labels)], seed=key))

    def dataset(self, first_epoch: int, last_epoch: int) -> Any:
        import tensorflow as tf

        if self.masks is not None:
            return self._masked_dataset(first_epoch, last_epoch)
        y = tf.one_hot(self.labels, self.n_classes)
        steps = self.steps

        def one_epoch(epoch: Any) -> Any:
            batches = tf.data.Dataset.from_tensor_slices(self._order(epoch))
            batches = batches.batch(self.batch_size).enumerate()
            return batches.map(lambda i, idx: (epoch * steps + i, rows(self.images, idx),
                                               tf.gather(y, idx)))

        ds = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(one_epoch)
        if self.augment is not None:  # sequential: the policy resets shared random state
            ds = ds.map(lambda step, xb, yb: (self.augment.at_step(xb, step), yb))
        else:
            ds = ds.map(lambda step, xb, yb: (xb, yb))
        if self.channels == 3:
            ds = ds.map(lambda xb, yb: (tf.image.grayscale_to_rgb(xb), yb),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def _masked_dataset(self, first_epoch: int, last_epoch: int) -> Any:
        """``dataset`` with each batch's masks carried beside it: (images, labels, masks)."""
        import tensorflow as tf

        y = tf.one_hot(self.labels, self.n_classes)
        steps = self.steps

        def one_epoch(epoch: Any) -> Any:
            batches = tf.data.Dataset.from_tensor_slices(self._order(epoch))
            batches = batches.batch(self.batch_size).enumerate()
            return batches.map(lambda i, idx: (epoch * steps + i, rows(self.images, idx),
                                               tf.gather(y, idx), rows(self.masks, idx)))

        ds = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(one_epoch)
        if self.augment is not None:
            ds = ds.map(lambda step, xb, yb, mb: (*self.augment.at_step(xb, step, mb), yb))
            ds = ds.map(lambda xb, mb, yb: (xb, yb, mb))
        else:
            ds = ds.map(lambda step, xb, yb, mb: (xb, yb, mb))
        return with_channels(ds, self.channels).prefetch(tf.data.AUTOTUNE)


def with_channels(ds: Any, channels: int) -> Any:
    """Batches (images, ...) with grey images replicated to RGB when the model takes 3 channels."""
    import tensorflow as tf

    if channels == 1:
        return ds
    return ds.map(lambda xb, *rest: (tf.image.grayscale_to_rgb(xb), *rest),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def masked_batches(images: np.ndarray, labels: np.ndarray, masks: np.ndarray, n_classes: int,
                   batch_size: int, channels: int = 1) -> Any:
    """(images, one-hot labels, masks) batches in row order: validation for the guided arm."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (images.astype(np.float32), tf.one_hot(labels, n_classes), masks.astype(np.float32)))
    return with_channels(ds.batch(batch_size), channels).prefetch(tf.data.AUTOTUNE)


def load_arrays(frame: pd.DataFrame, raw_dir: Path, *, image_size: int, n_classes: int,
                channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The same decoded pixels as make_dataset, as numpy (images, integer labels)."""
    ds = make_dataset(frame, raw_dir, image_size=image_size, n_classes=n_classes,
                      batch_size=256, channels=channels, cache=False)
    images = [x.numpy() for x, _ in ds]
    shape = (0, image_size, image_size, channels)
    return (np.concatenate(images) if images else np.zeros(shape, np.float32),
            frame["label"].to_numpy(dtype="int64"))


def to_model_input(images: Sequence[np.ndarray], size: int, channels: int) -> np.ndarray:
    """uint8 grayscale images -> float32 (N, size, size, channels) as lib.data's pipeline makes.

    Same resize (``lib.data.inputs.resize_to_model``) and grey-to-RGB as
    ``lib.data.inputs.make_dataset``,
    for images that exist only in memory (the phantom's healthy twins).
    """
    from .inputs import resize_to_model

    out = np.zeros((len(images), size, size, channels), dtype=np.float32)
    for i, image in enumerate(images):
        x = resize_to_model(np.asarray(image)[..., None], size).numpy()
        out[i] = np.repeat(x, channels, axis=-1) if channels == 3 else x
    return out
