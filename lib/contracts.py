"""File names and columns shared by the stage that writes a file and the stages that read it.

The data contracts between stages (docs/architecture.md lists them all): a name is defined here
once so that writer and reader cannot drift apart.
"""

from __future__ import annotations

# explain.json: the localisation scores of each saliency method, in the report's column order.
SCORES: tuple[str, ...] = ("pointing_game", "pointing_game_tol", "energy_in_mask", "iou_otsu",
                           "iou_fixed")

# data/processed/twins/twins.json (the twins stage -> explain): reason, healthy, twins.
TWINS_JSON = "twins.json"

# data/processed/pretext/ (the pretext stage -> pretrain): uint8 (N, side, side) images, int64
# labels (index into the names), and the sequence names.
PRETEXT_IMAGES, PRETEXT_LABELS, PRETEXT_NAMES = "images.npy", "labels.npy", "sequences.json"

# <raw>/phantom.json (the phantom generator -> eda, the twins stage, the report): `generator` says
# the data is the phantom. The name predates the module's move to lib.data.phantom and stays: it
# is part of data/raw's bytes (data.dvc).
PHANTOM_GENERATOR = "lib.phantom"
