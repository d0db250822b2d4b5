"""The app's one object: the models, the study's settings and where feedback goes.

The REST API (``lib.serve.api``) and the UI (``lib.serve.ui``) both call ``Service``, so the two
faces cannot answer the same request differently: the same prediction, the same out-of-
distribution check (``lib.serve.ood``, prepared here once per model at start) and the same model
card (``model_card``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import load_params, section
from ..data.manifest import MANIFEST_NAME
from . import feedback as fb
from . import ood
from .inference import (
    DEFAULT_MAX_BYTES,
    BadInput,
    Limits,
    Prediction,
    Upload,
    predict,
    read_upload,
    saliency_config,
)
from .registry import LoadedModel, Registry
from .study import TrainingData, not_for, training_data

FEEDBACK_DIR = "feedback"
log = logging.getLogger(__name__)


@dataclass
class Service:
    """Models loaded once, upload limits, saliency settings and the feedback folder."""

    registry: Registry
    params: dict[str, Any]
    limits: Limits
    feedback_dir: Path
    data: TrainingData | None = field(default=None)

    @classmethod
    def open(cls, root: Path | str = ".", feedback_dir: Path | str | None = None,
             max_bytes: int = DEFAULT_MAX_BYTES, ood_cache: Path | str | None = None
             ) -> Service:
        """Load every declared, trained model under root (the study's folder) and prepare each
        one's out-of-distribution check (cached under ood_cache, default
        <root>/.cache/serve/ood)."""
        root = Path(root).resolve()
        params = load_params(root / "params.yaml")
        data_cfg = section(params, "data")
        raw = (root / data_cfg.get("raw_dir", "data/raw")).resolve()
        manifest = root / data_cfg.get("processed_dir", "data/processed") / MANIFEST_NAME
        folder = fb.check_location(Path(feedback_dir) if feedback_dir else root / FEEDBACK_DIR,
                                   raw)
        registry = Registry(root)
        cache = Path(ood_cache) if ood_cache else root / ood.CACHE_DIR
        _, layer, min_grid = saliency_config(params)
        for loaded in registry.loaded.values():
            try:
                loaded.ood = ood.prepare(loaded, manifest, raw, cache, layer, min_grid)
            except Exception as exc:  # noqa: BLE001 - the app still serves, and says why not
                log.exception("OOD reference of %s failed", loaded.card.artifact)
                loaded.ood = ood.unavailable(f"computing the reference failed "
                                             f"({type(exc).__name__}: {exc})")
        return cls(registry, params, Limits.from_params(params, max_bytes), folder,
                   training_data(raw, manifest, registry.classes))

    @property
    def classes(self) -> list[str]:
        return self.registry.classes

    def model(self, artifact: str | None) -> LoadedModel:
        """A loaded model by artifact name (None: the default); BadInput(404) if unknown."""
        try:
            return self.registry.get(artifact or self.registry.default)
        except KeyError as exc:
            raise BadInput(str(exc.args[0]), 404) from exc

    def predict(self, data: bytes, model: str | None = None, method: str | None = None
                ) -> tuple[Upload, Prediction]:
        """Check the bytes, run the model and, with a method, its saliency map."""
        loaded = self.model(model)  # an unknown model is refused before the upload is read
        upload = read_upload(data, self.limits)
        return upload, predict(loaded, upload, self.classes, method, self.params)

    def model_card(self, artifact: str | None = None) -> dict[str, Any]:
        """What a model is, what it was trained on, how it scored and what it is not for: every
        figure read from the study's files (evaluate.json, explain.json, phantom.json, the
        manifest), none typed by hand."""
        loaded = self.model(artifact)
        card, reg = loaded.card, self.registry
        data = self.data or TrainingData("unknown", "not known", tuple(self.classes), None, {},
                                         False)
        check = loaded.ood.summary() if loaded.ood is not None else \
            ood.unavailable("not prepared (the service was not opened with Service.open)").summary()
        n_seeds = len(card.seeds)
        return {
            "model": {"artifact": card.artifact, "key": card.key,
                      "description": card.description, "configuration": card.configuration,
                      "seeds": list(card.seeds), "input_size": loaded.size,
                      "input_channels": loaded.channels, "md5": card.md5,
                      "revision": reg.revision},
            "training_data": {"source": data.source, "synthetic": data.synthetic,
                              "description": data.description, "classes": list(data.classes),
                              "image_size": data.image_size,
                              "n_train": data.splits.get("train"),
                              "n_validation": data.splits.get("val"),
                              "n_test": data.splits.get("test")},
            "performance": {
                "test_macro_f1_mean": card.test_macro_f1_mean,
                "test_macro_f1_sd": card.test_macro_f1_sd, "n_seeds": n_seeds or None,
                "test_macro_f1_this_seed": card.test_macro_f1,
                "val_macro_f1_mean": card.val_macro_f1_mean,
                "ece": card.ece, "ece_calibrated": card.ece_calibrated,
                "temperature": card.temperature,
                "source": "reports/metrics/evaluate.json (test split of the study's data)"},
            "best": {"is_best": card.best, "best_model": reg.ranking.best_model,
                     "best_configuration": reg.ranking.best_configuration,
                     "rule": reg.ranking.rule, "note": reg.ranking.note},
            "saliency": {"default_method": reg.headline.method,
                         "message": reg.headline.message},
            "ood": check,
            "not_for": not_for(data),
        }

    def feedback(self, data: bytes, label: str, mask: np.ndarray | None,
                 model: str | None = None, user: str = "") -> dict[str, Any]:
        """Store the user's label and drawing with what the model said about the same image."""
        upload, pred = self.predict(data, model)
        said = {"model": pred.artifact, "key": pred.key, "label": pred.label,
                "probs": dict(zip(pred.classes, map(float, pred.probs), strict=True)),
                "model_md5": self.model(model).card.md5, "revision": self.registry.revision}
        return fb.store(self.feedback_dir, upload, label, self.classes, mask, said, user)
