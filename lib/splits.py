"""The split names, defined once: the dataset's source folders and the study's three splits.

The Kaggle layout (and the phantom that copies it) has two folders, ``Training`` and
``Testing``; the prepare stage carves a validation split out of Training, so the study works on
``train``, ``val`` and ``test``. Testing images are only ever the test split.
"""

from __future__ import annotations

TRAINING, TESTING = "Training", "Testing"
SOURCE_SPLITS: tuple[str, ...] = (TRAINING, TESTING)  # folder names in a raw dataset

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS: tuple[str, ...] = (TRAIN, VAL, TEST)  # in this order in every table
# scored by lib.evaluate.predict: val fits, test reports
PREDICTED_SPLITS: tuple[str, ...] = (VAL, TEST)

# The split each source folder's images start in (prepare moves some Training images to val).
SOURCE_TO_SPLIT: dict[str, str] = {TRAINING: TRAIN, TESTING: TEST}
