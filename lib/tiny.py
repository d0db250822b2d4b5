"""A tiny phantom dataset a notebook can make for itself in seconds (its default, and nbval's)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from lib.data import PrepareConfig, prepare
from lib.phantom import PhantomConfig, generate


@dataclass(frozen=True)
class TinyDataset:
    raw_dir: Path
    manifest_path: Path
    audit_path: Path


def tiny_dataset(per_class: int = 8, image_size: int = 64, seed: int = 0,
                 workdir: str | Path | None = None) -> TinyDataset:
    """Generate a few phantom images per class and prepare them, outside the repository."""
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="brain-mri-tiny-"))
    raw = root / "raw"
    cfg = PhantomConfig(seed=seed, n_train_per_class=per_class,
                        n_test_per_class=max(2, per_class // 2), image_size=image_size)
    generate(cfg, raw, progress=False)
    prepare(raw, root / "processed", root / "reports", PrepareConfig(seed=seed), progress=False)
    return TinyDataset(raw, root / "processed" / "manifest.csv",
                       root / "reports" / "metrics" / "data_audit.json")


def tiny_models(dataset: TinyDataset, models_dir: str | Path | None = None,
                variants: tuple[str, ...] = ("none", "batchnorm"), image_size: int = 32,
                epochs: int = 3, seed: int = 0) -> Path:
    """One small scratch CNN per variant, saved as `<models_dir>/scratch_<v>/seed<N>.keras`.

    The evaluation and explanation notebooks default to these so they run without the pipeline.
    """
    from lib import train
    from lib.models import ScratchConfig, build_scratch

    models_dir = Path(models_dir) if models_dir else dataset.manifest_path.parent.parent / "models"
    data = train.TrainingData.from_manifest(dataset.manifest_path, dataset.raw_dir, image_size)
    cfg = train.TrainConfig(epochs=epochs, batch_size=16, learning_rate=0.003, patience=epochs)
    for variant in variants:
        arch = ScratchConfig(blocks=2, filters=8, dense_units=16,
                             use_batchnorm="batchnorm" in variant,
                             use_dropout="dropout" in variant)

        def build(arch: ScratchConfig = arch) -> object:
            return build_scratch(data.input_shape(1), data.n_classes, arch)

        train.train_seeds(data, [seed], build, cfg, stage=f"scratch_{variant}",
                          models_dir=models_dir / f"scratch_{variant}",
                          resume_root=models_dir.parent, verbose=0)
    return models_dir
