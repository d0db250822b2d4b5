"""Scores of saliency maps: against lesion masks, against the model itself, and their spread.

- Localisation (tumour images with a mask): the map, made at the model's input size, is resized
  bilinearly to the mask's size first. Pointing game, strict (the headline): the map's maximum
  lies inside the mask (an all-zero map points nowhere). Pointing game with tolerance
  (``pointing_game_tol``): the maximum lies within a tolerance of the mask, as in Zhang et al.
  2016 ("Top-down neural attention by excitation backprop": 15 pixels on 224-pixel inputs),
  scaled to the image: 15/224 of the image's longer side (``TOLERANCE_FRACTION``).
  Energy-in-mask: the share of the map's sum inside the mask (Wang et al. 2020, Score-CAM).
  IoU of the map thresholded at Otsu's threshold and at a fixed one with the mask.
- Faithfulness (Petsiuk et al. 2018, RISE): delete pixels from the image in saliency order (or
  insert them into a blurred baseline) and follow the target class's probability; a faithful
  map makes it fall fast (small deletion AUC) and rise fast (large insertion AUC).
- Sanity (Adebayo et al. 2018): Spearman rank correlation between the maps of the trained model
  and of a copy with its top layers randomised; maps that barely change do not explain the model.
- Percentile bootstrap confidence intervals of the mean over images (lib.stats.mean_ci), seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..contracts import SCORES
from ..forward import predict_probs
from ..stats import CI_LEVEL, mean_ci, otsu_threshold
from .methods import normalise, upsample

TOLERANCE_FRACTION = 15 / 224  # Zhang et al. 2016: 15 px on 224 px inputs, as a share of the side
SANITY_MAX_SPEARMAN = 0.5  # a method passes when its maps' rank correlation falls below this


# --------------------------------------------------------------------------------------------
# Localisation against masks
# --------------------------------------------------------------------------------------------
def pointing_game(saliency: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the map's (first) maximum lies inside the mask; a flat map never hits."""
    if saliency.max() <= saliency.min():
        return False
    return bool(mask.ravel()[int(np.argmax(saliency))])


def tolerance_px(shape: tuple[int, ...]) -> float:
    """The pointing game's tolerance in pixels for an image (mask) of this shape."""
    return TOLERANCE_FRACTION * max(int(d) for d in shape[:2])


def pointing_game_tol(saliency: np.ndarray, mask: np.ndarray, tolerance: float | None = None,
                      distance: np.ndarray | None = None) -> bool:
    """Whether the map's (first) maximum lies within `tolerance` pixels of the mask (Euclidean
    distance to the nearest mask pixel; default ``tolerance_px``); a flat map never hits.

    `distance`: the mask's distance transform, when the caller already has it.
    """
    from scipy import ndimage as ndi

    if saliency.max() <= saliency.min():
        return False
    tolerance = tolerance_px(mask.shape) if tolerance is None else tolerance
    distance = ndi.distance_transform_edt(~mask) if distance is None else distance
    return bool(distance.ravel()[int(np.argmax(saliency))] <= tolerance)


def energy_in_mask(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (non-negative) map's sum that falls inside the mask; 0 for an empty map."""
    total = float(saliency.sum())
    return float(saliency[mask].sum()) / total if total > 0 else 0.0


def iou(saliency: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """Intersection over union of {map > threshold} with the mask."""
    region = saliency > threshold
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum()) / float(union) if union else 0.0


def score_maps(maps: np.ndarray, masks: Sequence[np.ndarray], iou_threshold: float = 0.5
               ) -> pd.DataFrame:
    """One row of localisation scores per image; maps (N, S, S) in [0, 1], masks at image size."""
    if len(maps) != len(masks):
        raise ValueError(f"{len(maps)} maps for {len(masks)} masks")
    if not 0 < iou_threshold < 1:
        raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
    rows = []
    for saliency, mask in zip(maps, masks, strict=True):
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError("an empty mask cannot be scored: pass tumour images only")
        big = upsample(saliency[None], mask.shape)[0]
        rows.append({"pointing_game": float(pointing_game(big, mask)),
                     "pointing_game_tol": float(pointing_game_tol(big, mask)),
                     "energy_in_mask": energy_in_mask(np.maximum(big, 0), mask),
                     "iou_otsu": iou(big, mask, otsu_threshold(big)),
                     "iou_fixed": iou(big, mask, iou_threshold)})
    return pd.DataFrame(rows, columns=list(SCORES))


def summarise(table: pd.DataFrame, classes: Sequence[str], resamples: int, seed: int
              ) -> dict[str, Any]:
    """Mean and CI of each score, with per-class means: one method of one model, JSON-ready."""
    if len(table) != len(classes):
        raise ValueError(f"{len(table)} score rows for {len(classes)} class labels")
    out: dict[str, Any] = {"n": len(table)}
    for score in SCORES:
        values = table[score].to_numpy()
        out[score] = {"value": float(values.mean()),
                      "ci": list(mean_ci(values, resamples, seed, CI_LEVEL))}
    frame = table.assign(cls=list(classes))
    out["per_class"] = {str(cls): {**{s: float(g[s].mean()) for s in SCORES}, "n": len(g)}
                        for cls, g in frame.groupby("cls", sort=True)}
    return out


# --------------------------------------------------------------------------------------------
# Faithfulness: deletion and insertion curves
# --------------------------------------------------------------------------------------------
def deletion_insertion(model: Any, images: np.ndarray, maps: np.ndarray, targets: np.ndarray,
                       baseline: np.ndarray, steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(deletion, insertion) curves, each (N, steps + 1): target probability after each step.

    Step k removes (deletion: image -> baseline) or restores (insertion: baseline -> image) the
    k/steps share of pixels the map ranks highest; ties keep raster order (stable sort).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"faithfulness_steps must be an integer >= 2, got {steps!r}")
    images = np.asarray(images, dtype=np.float32)
    n, size = images.shape[0], images.shape[1]
    if maps.shape != (n, size, size):
        raise ValueError(f"maps {maps.shape} do not match images {images.shape[:3]}")
    ranks = np.empty((n, size * size), dtype=np.int64)
    order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")
    np.put_along_axis(ranks, order, np.arange(size * size)[None].repeat(n, 0), axis=1)
    fractions = np.arange(steps + 1) / steps
    # (N, steps+1, S, S): True where the pixel is among the top `fraction` of the map.
    top = ranks.reshape(n, 1, size, size) < (fractions * size * size)[None, :, None, None]
    curves = []
    for start, end in ((images, baseline), (baseline, images)):
        mixed = np.where(top[..., None], end[:, None], start[:, None])
        probs = predict_probs(model, mixed.reshape(-1, *images.shape[1:]))
        probs = probs.reshape(n, steps + 1, -1)
        curves.append(np.take_along_axis(probs, targets[:, None, None], axis=2)[..., 0])
    return curves[0], curves[1]


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve over the removed/inserted share 0..1 (trapezoid rule)."""
    curves = np.asarray(curves, dtype=np.float64)
    x = np.linspace(0, 1, curves.shape[1])
    return np.trapezoid(curves, x, axis=1)


# --------------------------------------------------------------------------------------------
# Sanity: do the maps depend on the weights?
# --------------------------------------------------------------------------------------------
def map_spearman(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman correlation of each pair of maps; a constant map shares no ranking (0)."""
    from scipy import stats

    if first.shape != second.shape:
        raise ValueError(f"map shapes differ: {first.shape} vs {second.shape}")
    out = np.zeros(len(first))
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            out[i] = stats.spearmanr(a.ravel(), b.ravel()).statistic
    return out


def sanity(trained: np.ndarray, randomised: np.ndarray,
           max_spearman: float = SANITY_MAX_SPEARMAN, resamples: int = 1000,
           seed: int = 0) -> dict[str, Any]:
    """Mean Spearman correlation over images, whether it is low enough to pass, and how sure.

    On a few images the mean can sit near the cut and flip between splits, so the verdict carries
    a bootstrap interval over the images: `settled` when it lies wholly on one side of the cut.
    """
    per_image = map_spearman(normalise(trained), normalise(randomised))
    rho = float(per_image.mean())
    low, high = mean_ci(per_image, resamples, seed)
    return {"spearman": rho, "passed": bool(rho < max_spearman), "n": len(trained),
            "ci": [low, high], "settled": bool(high < max_spearman or low >= max_spearman)}
