"""Names shared by the stage that writes a metrics file and the report that reads it."""

from __future__ import annotations

# explain.json: the localisation scores of each saliency method, in the report's column order.
SCORES: tuple[str, ...] = ("pointing_game", "pointing_game_tol", "energy_in_mask", "iou_otsu",
                           "iou_fixed")
