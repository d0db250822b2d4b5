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
