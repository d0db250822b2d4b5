"""Tiny data and models a notebook makes for itself in seconds when run on its own (and by nbval).

Only a notebook's standalone branch (``if raw_dir is None:``) imports this module: a pipeline
stage always passes its data, so the generator and the prepare stage imported here are never part
of a training, evaluate or explain stage's dependencies (tests/test_stage.py checks both).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import load_params
from .data.phantom import PhantomConfig, generate
from .data.phantom_sets import write_twins
from .data.prepare import PrepareConfig, prepare
from .stage import lookup
from .train.fit import TrainConfig, TrainingData, train_seeds
from .train.models import ScratchConfig, build_scratch

# What a notebook run on its own changes in params.yaml's values, so that it trains in seconds on
# the tiny dataset; everything else is the study's own setting.
TINY: dict[str, Any] = {
    "train_seeds": [42],  # one, for speed: 05/06 (tiny_models) and the pipeline test use two
    "train": {"batch_size": 16},
    "train_scratch": {"input_size": 32, "blocks": 2, "filters": 8, "epochs": 2},
    "train_transfer": {"weights": "none", "input_size": 32, "phase1_epochs": 1, "phase2_epochs": 1,
                       "phase2_learning_rate": 0.0001, "fine_tune_layers": 10},
    "guide": {"epochs": 1},
    "evaluate": {"bootstrap_resamples": 200},
    "explain": {"sample_size": 8, "sanity_size": 4, "smooth_samples": 4, "score_cam_max_n": 8,
                "bootstrap_resamples": 200, "faithfulness_steps": 5},
}


def standalone(*keys: str) -> tuple[Any, ...]:
    """params.yaml's values of `keys` (groups or dotted keys), with the TINY changes: what a
    notebook run on its own uses in place of the values papermill injects in the pipeline."""
    params = load_params()
    for group, changes in TINY.items():
        params[group] = {**params[group], **changes} if isinstance(changes, dict) else changes
    return tuple(lookup(params, key) for key in keys)


@dataclass(frozen=True)
class TinyDataset:
    raw_dir: Path
    manifest_path: Path
    audit_path: Path
    twins_dir: Path


def tiny_dataset(per_class: int = 8, image_size: int = 64, seed: int = 0,
                 workdir: str | Path | None = None) -> TinyDataset:
    """Generate a few phantom images per class, prepare them and write their healthy twins,
    outside the repository."""
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="brain-mri-tiny-"))
    raw = root / "raw"
    cfg = PhantomConfig(seed=seed, n_train_per_class=per_class,
                        n_test_per_class=max(2, per_class // 2), image_size=image_size)
    generate(cfg, raw, progress=False)
    # no confounder audit: a tiny set has too few images for its cross-validation to say anything
    prepare(raw, root / "processed", root / "reports",
            PrepareConfig(seed=seed, confounder_permutations=0), progress=False)
    write_twins(root / "processed" / "manifest.csv", raw, cfg, root / "processed" / "twins")
    return TinyDataset(raw, root / "processed" / "manifest.csv",
                       root / "reports" / "metrics" / "data_audit.json",
                       root / "processed" / "twins")


def tiny_models(dataset: TinyDataset, models_dir: str | Path | None = None,
                variants: tuple[str, ...] = ("none", "batchnorm"), image_size: int = 32,
                epochs: int = 3, seeds: Sequence[int] = (0, 1)) -> Path:
    """Small scratch CNNs, one per variant and seed, saved as `<models_dir>/scratch_<v>/seed<N>
    .keras`: what the evaluation and explanation notebooks explain when run on their own (two
    seeds, so that their seed-aware statistics run too)."""
    models_dir = Path(models_dir) if models_dir else dataset.manifest_path.parent.parent / "models"
    data = TrainingData.from_manifest(dataset.manifest_path, dataset.raw_dir, image_size)
    cfg = TrainConfig(epochs=epochs, batch_size=16, learning_rate=0.003, patience=epochs)
    for variant in variants:
        arch = ScratchConfig(blocks=2, filters=8, dense_units=16,
                             use_batchnorm="batchnorm" in variant,
                             use_dropout="dropout" in variant)

        def build(arch: ScratchConfig = arch) -> object:
            return build_scratch(data.input_shape(1), data.n_classes, arch)

        train_seeds(data, list(seeds), build, cfg, stage=f"scratch_{variant}",
                    models_dir=models_dir / f"scratch_{variant}",
                    resume_root=models_dir.parent, verbose=0)
    return models_dir
