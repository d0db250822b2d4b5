"""evaluate.json: every model's metrics and the seed-aware evidence, as one payload."""

from __future__ import annotations

from typing import Any

from ..jsonio import round_floats
from .metrics import (
    BEST_MODEL_RULE,
    DIGITS,
    Evaluation,
    best_model,
    check_same_images,
    compare_models,
    validation_macro_f1,
)
from .seeds import seed_evidence


def summarise(evaluations: dict[str, Evaluation], *, resamples: int, seed: int,
              level: float = 0.95, alpha: float = 0.05, bins: int = 15) -> dict[str, Any]:
    """The evaluate.json payload: every model; per configuration its seeds' statistics, the
    seed-aware comparisons and its seed ensemble (lib.evaluate.seeds); per-seed McNemar (detail);
    the best configuration and the model standing for it (chosen on validation,
    ``BEST_MODEL_RULE``); notes."""

    if not evaluations:
        raise ValueError("no models to summarise; predict_all found none")
    check_same_images(evaluations)
    first = next(iter(evaluations.values())).pred
    notes = sorted({n for ev in evaluations.values() for n in ev.notes})
    payload = {
        "split": "test", "n_images": len(first.labels), "classes": list(first.classes),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": level},
        "alpha": alpha, "ece_bins": bins,
        "models": {k: ev.metrics for k, ev in sorted(evaluations.items())},
        "mcnemar": compare_models({k: ev.correct for k, ev in evaluations.items()}, alpha),
        "best_model": best_model({k: validation_macro_f1(ev.pred.val_labels, ev.pred.val_probs,
                                                         len(first.classes))
                                  for k, ev in evaluations.items()}),
        "best_model_rule": BEST_MODEL_RULE,
        **seed_evidence(evaluations, resamples=resamples, seed=seed, level=level, alpha=alpha,
                        bins=bins),
        "notes": notes,
    }
    return round_floats(payload, DIGITS)
