"""Which trained models the app serves, what the study measured on them, and loading them once.

The list of models is the ``artifacts:`` section of dvc.yaml (``dvc artifacts get`` reads the
same list), so the server and DVC agree on what exists. An artifact whose file is not there yet
is listed as not trained (with the command that makes it), never silently dropped. Which one is
best is the study's rule (``lib.serve.study.ranking``: ``lib.evaluate.metrics.best_model`` on the
validation scores of evaluate.json), and each model carries that rule's quantity.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.manifest import DataError
from ..evaluate.predict import SEED_FILE, input_spec
from ..hashing import file_md5
from .study import EVALUATE_JSON, Headline, Ranking, headline_method, ranking


@dataclass(frozen=True)
class ModelCard:
    """One declared model: where it is, what it is, and the study's test scores for it."""

    artifact: str                 # the DVC artifact name (dvc.yaml artifacts:)
    key: str                      # the study's id, e.g. scratch_batchnorm_s42
    path: Path                    # absolute path of the .keras file
    description: str
    labels: tuple[str, ...]
    trained: bool                 # the file exists
    md5: str | None = None
    test_macro_f1: float | None = None
    ece: float | None = None              # before temperature scaling, test split
    ece_calibrated: float | None = None   # after
    temperature: float = 1.0              # fitted on validation by the evaluate stage
    best: bool = False                    # the study's best model (BEST_MODEL_RULE)
    configuration: str | None = None      # e.g. transfer (the key without its seed)
    seeds: tuple[int, ...] = ()           # the configuration's seeds in evaluate.json
    val_macro_f1_mean: float | None = None   # BEST_MODEL_RULE's quantity, over the seeds
    test_macro_f1_mean: float | None = None  # over the configuration's seeds
    test_macro_f1_sd: float | None = None


@dataclass
class LoadedModel:
    """A card with its Keras model and (built on first use) one explainer per method family."""

    card: ModelCard
    model: Any
    size: int
    channels: int
    explainer: Any = None
    ood: Any = None  # lib.serve.ood.OODCheck, set by Service.open
    lock: threading.Lock = field(default_factory=threading.Lock)


def declared_artifacts(root: Path) -> dict[str, dict[str, Any]]:
    """The ``artifacts:`` of root/dvc.yaml of type model (name -> path, desc, labels)."""
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file():
        raise DataError(f"no dvc.yaml under {root}; run the app from the study's folder")
    spec = yaml.safe_load(dvc_yaml.read_text()) or {}
    artifacts = spec.get("artifacts") or {}
    return {name: a for name, a in artifacts.items() if a.get("type") == "model"}


def model_key(path: str) -> str:
    """models/<name>/seed<N>.keras -> <name>_s<N>, the key of every metrics file."""
    parts = Path(path).parts
    match = SEED_FILE.match(parts[-1]) if parts else None
    if match is None or len(parts) < 2:
        raise DataError(f"artifact path {path!r} is not models/<name>/seed<N>.keras")
    return f"{parts[-2]}_s{match.group(1)}"


def git_revision(root: Path) -> str | None:
    """HEAD's commit, with '+dirty' when tracked files changed; None outside a git checkout."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # git status must not rewrite .git/index
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=True, env=env).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10,
                               env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")


def _scores(root: Path) -> dict[str, Any]:
    path = root / EVALUATE_JSON
    return json.loads(path.read_text()) if path.is_file() else {}


def cards(root: Path, ranked: Ranking | None = None) -> list[ModelCard]:
    """Every declared model, with the test scores evaluate.json has for it (None if not run)
    and, from its configuration, the validation score the study's rule ranks it by."""
    scores = _scores(root)
    models = scores.get("models", {})
    ranked = ranked or ranking(scores)
    out = []
    for name, artifact in sorted(declared_artifacts(root).items()):
        key = model_key(artifact["path"])
        path = (root / artifact["path"]).resolve()
        m = models.get(key, {})
        cal = m.get("calibration", {})
        config = ranked.configuration_of(key)
        out.append(ModelCard(
            artifact=name, key=key, path=path, description=str(artifact.get("desc", "")),
            labels=tuple(artifact.get("labels") or ()), trained=path.is_file(),
            md5=file_md5(path) if path.is_file() else None,
            test_macro_f1=m.get("macro", {}).get("f1"),
            ece=cal.get("before", {}).get("ece"), ece_calibrated=cal.get("after", {}).get("ece"),
            temperature=float(cal.get("temperature", 1.0)), best=key == ranked.best_model,
            configuration=config.name if config else None,
            seeds=config.seeds if config else (),
            val_macro_f1_mean=config.val_macro_f1_mean if config else None,
            test_macro_f1_mean=config.test_macro_f1_mean if config else None,
            test_macro_f1_sd=config.test_macro_f1_sd if config else None))
    return out


def load_model(card: ModelCard) -> LoadedModel:
    """The Keras model of a card, with safe_mode (no arbitrary code from the file)."""
    import keras

    from ..train import models  # noqa: F401  (registers BackbonePreprocess)

    if not card.trained:
        raise DataError(f"{card.artifact}: {card.path} does not exist; run `make repro`")
    model = keras.saving.load_model(card.path, compile=False, safe_mode=True)
    size, channels = input_spec(model)
    return LoadedModel(card, model, size, channels)


class Registry:
    """The declared models, each trained one loaded once at start."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        scores = _scores(self.root)
        self.ranking: Ranking = ranking(scores)
        self.headline: Headline = headline_method(self.root)
        self.cards = cards(self.root, self.ranking)
        self.revision = git_revision(self.root)
        self.classes: list[str] = list(scores.get("classes", []))
        self.loaded = {c.artifact: load_model(c) for c in self.cards if c.trained}
        if not self.loaded:
            raise DataError(f"none of the models declared in {self.root / 'dvc.yaml'} exists; "
                            "run `make repro` first")
        if not self.classes:
            raise DataError(f"{self.root / EVALUATE_JSON} is missing or has no classes; run "
                            "`make repro` (the evaluate stage) first")
        n_out = {int(m.model.output_shape[-1]) for m in self.loaded.values()}
        if n_out != {len(self.classes)}:
            raise DataError(f"the models output {sorted(n_out)} classes but evaluate.json names "
                            f"{len(self.classes)}; rerun `make repro`")

    @property
    def default(self) -> str:
        """The artifact the UI opens with: the study's best model, else the first trained one."""
        best = [c.artifact for c in self.cards if c.best and c.artifact in self.loaded]
        return best[0] if best else next(iter(self.loaded))

    def get(self, artifact: str) -> LoadedModel:
        """A loaded model by artifact name; KeyError names the ones that exist."""
        if artifact not in self.loaded:
            known = ", ".join(self.loaded) or "none"
            raise KeyError(f"unknown model {artifact!r}; trained models: {known}")
        return self.loaded[artifact]
