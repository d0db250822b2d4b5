"""The app's one object: the models, the study's settings and where feedback goes.

The REST API (``lib.serve.api``) and the UI (``lib.serve.ui``) both call ``Service``, so the two
faces cannot answer the same request differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import load_params, section
from . import feedback as fb
from .inference import DEFAULT_MAX_BYTES, BadInput, Limits, Prediction, Upload, predict, read_upload
from .registry import LoadedModel, Registry

FEEDBACK_DIR = "feedback"


@dataclass
class Service:
    """Models loaded once, upload limits, saliency settings and the feedback folder."""

    registry: Registry
    params: dict[str, Any]
    limits: Limits
    feedback_dir: Path

    @classmethod
    def open(cls, root: Path | str = ".", feedback_dir: Path | str | None = None,
             max_bytes: int = DEFAULT_MAX_BYTES) -> Service:
        """Load every declared, trained model under root (the study's folder)."""
        root = Path(root).resolve()
        params = load_params(root / "params.yaml")
        raw = root / section(params, "data").get("raw_dir", "data/raw")
        folder = fb.check_location(Path(feedback_dir) if feedback_dir else root / FEEDBACK_DIR,
                                   raw)
        return cls(Registry(root), params, Limits.from_params(params, max_bytes), folder)

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

    def feedback(self, data: bytes, label: str, mask: np.ndarray | None,
                 model: str | None = None, user: str = "") -> dict[str, Any]:
        """Store the user's label and drawing with what the model said about the same image."""
        upload, pred = self.predict(data, model)
        said = {"model": pred.artifact, "key": pred.key, "label": pred.label,
                "probs": dict(zip(pred.classes, map(float, pred.probs), strict=True)),
                "model_md5": self.model(model).card.md5, "revision": self.registry.revision}
        return fb.store(self.feedback_dir, upload, label, self.classes, mask, said, user)
