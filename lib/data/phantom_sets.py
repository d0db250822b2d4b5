"""Image sets the phantom makes for later stages, as files: those stages need no generator.

- **Healthy twins** (``twins`` stage, for explain's shortcut control): each tumour test image of
  the phantom regenerated without its lesion (same anatomy, pose, sequence, bias and noise).
  Written only when ``data/raw`` *is* the phantom generated with ``params.yaml``'s ``phantom:``
  group (its ``phantom.json`` records the parameters, and one image must regenerate bit for bit);
  otherwise ``twins.json`` says why there are none (real scans have no healthy twins).
- **The pretext set** (``pretext`` stage, for pretrain): phantom slices labelled by MRI sequence
  (T1/T1c/T2/FLAIR) on a separately seeded set at the backbone pretraining's own input size.

Both are uint8 images stored losslessly (PNG, .npy), so the explain and pretrain stages see the
very pixels the generator made, and depend on these files instead of on lib.data.phantom.

    python -m lib.data.phantom_sets twins --params params.yaml
    python -m lib.data.phantom_sets pretext --params params.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import load_params, repo_root, section
from ..contracts import PRETEXT_IMAGES, PRETEXT_LABELS, PRETEXT_NAMES, TWINS_JSON
from .images import load_image, png_bytes
from .manifest import DataError, class_names, load_manifest, split_frame
from .phantom import (
    CLASSES,
    MANIFEST,
    SEQUENCES,
    TUMOUR_CLASSES,
    PhantomConfig,
    generate_sequence_task,
    healthy_twin,
    render_case,
)

# The phantom keys that shape a pretext image; its size, seed and counts are pretrain's own, and
# no teaching shortcut applies.
SEQUENCE_PHANTOM_KEYS = ("lesion_fraction", "noise", "bias_field", "max_rotation_deg", "sequences")


# --------------------------------------------------------------------------------------------
# Healthy twins
# --------------------------------------------------------------------------------------------
def _twin_index(path: str) -> int:
    stem = Path(path).stem
    try:
        return int(stem.rsplit("_", 1)[1])
    except (IndexError, ValueError) as err:
        raise DataError(f"{path}: not a phantom file name (<class>_<index>.png)") from err


def twin_check(test: pd.DataFrame, names: list[str], raw_dir: Path,
               expected: PhantomConfig | None) -> str | None:
    """Why healthy twins cannot be made for these test rows (None when they can).

    Twins are the test images' twins only when data/raw is the phantom generated with exactly
    these parameters: its phantom.json must record them, and one tumour image must regenerate
    bit for bit (the generator's code has not changed since).
    """
    if expected is None:
        return "no phantom parameters given: twins need params.yaml's phantom: group"
    provenance = Path(raw_dir) / MANIFEST
    if not provenance.is_file():
        return (f"{provenance} does not exist: the data is not the phantom, and real scans have "
                "no healthy twins")
    recorded = json.loads(provenance.read_text()).get("config", {})
    wanted = expected.recorded()
    differ = sorted(k for k in wanted if recorded.get(k) != wanted[k])
    if differ:
        pairs = ", ".join(f"{k}={recorded.get(k)!r} (params: {wanted[k]!r})" for k in differ)
        return f"{provenance} was generated with other parameters: {pairs}"
    if set(names) - set(CLASSES):
        return f"classes {names} are not the phantom's {list(CLASSES)}"
    rows = [i for i, c in enumerate(test["class"]) if c in TUMOUR_CLASSES]
    if not rows:
        return "no tumour test images"
    row = test.iloc[rows[0]]
    image = render_case(expected, row["source_split"], row["class"], _twin_index(row["path"]))[0]
    stored = load_image(Path(raw_dir), row["path"])
    if image.shape != stored.shape or not np.array_equal(image, stored):
        return (f"{row['path']} does not regenerate bit for bit from the phantom parameters "
                "(lib.data.phantom changed since data/raw was generated): twins would not match")
    return None


def write_twins(manifest_path: Path | str, raw_dir: Path | str, expected: PhantomConfig | None,
                out_dir: Path | str) -> dict[str, Any]:
    """Write a healthy twin PNG per tumour test image and ``twins.json`` (the reason if none).

    ``twins.json``: ``reason`` (null when twins exist), ``healthy`` (the class a lesion-free image
    belongs to) and ``twins``: [test image path, twin file relative to out_dir] in manifest order.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    manifest = load_manifest(Path(manifest_path))
    test, names = split_frame(manifest, "test"), class_names(manifest)
    reason = twin_check(test, names, raw_dir, expected)
    payload: dict[str, Any] = {"reason": reason, "healthy": None, "twins": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    if reason is None:
        assert expected is not None
        payload["healthy"] = next(c for c in CLASSES if c not in TUMOUR_CLASSES)
        for _, row in test[test["class"].isin(TUMOUR_CLASSES)].iterrows():
            image = healthy_twin(expected, row["source_split"], row["class"],
                                 _twin_index(row["path"]))
            rel = Path(row["class"]) / f"{Path(row['path']).stem}_twin.png"
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (out_dir / rel).write_bytes(png_bytes(image))
            payload["twins"].append([row["path"], rel.as_posix()])
    (out_dir / TWINS_JSON).write_text(json.dumps(payload, indent=1) + "\n")
    return payload


# --------------------------------------------------------------------------------------------
# The pretext set of the pretrain stage
# --------------------------------------------------------------------------------------------
def sequence_phantom(params: dict[str, Any]) -> PhantomConfig:
    """The pretext set's phantom: the study's image physics at pretrain's input size and seed."""
    group, pre = section(params, "phantom"), section(params, "pretrain")
    return PhantomConfig.from_params({**{k: group[k] for k in SEQUENCE_PHANTOM_KEYS if k in group},
                                      "image_size": pre["input_size"], "shortcut": "none",
                                      "seed": pre["seed"]})


def write_pretext(params: dict[str, Any], out_dir: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Phantom slices labelled by sequence (index into SEQUENCES), as .npy files in out_dir."""
    pre = section(params, "pretrain")
    images, labels = generate_sequence_task(sequence_phantom(params), pre["n_per_sequence"],
                                            pre["seed"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / PRETEXT_IMAGES, images, allow_pickle=False)
    np.save(out_dir / PRETEXT_LABELS, labels, allow_pickle=False)
    (out_dir / PRETEXT_NAMES).write_text(json.dumps(list(SEQUENCES)) + "\n")
    return images, labels


# --------------------------------------------------------------------------------------------
# CLI: the twins and pretext DVC stages
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.data.phantom_sets",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=("twins", "pretext"))
    parser.add_argument("--params", type=Path, default=None)
    args = parser.parse_args(argv)
    params_path = args.params or repo_root() / "params.yaml"
    try:
        params = load_params(params_path)
        root = Path(params_path).resolve().parent
        processed = root / section(params, "data")["processed_dir"]
        if args.which == "pretext":
            images, _ = write_pretext(params, processed / "pretext")
            print(f"pretext: {len(images)} phantom slices labelled by sequence in "
                  f"{processed / 'pretext'}")
            return 0
        expected = PhantomConfig.from_params(section(params, "phantom"))
        raw = root / section(params, "data")["raw_dir"]
        payload = write_twins(processed / "manifest.csv", raw, expected, processed / "twins")
    except (KeyError, ValueError, OSError) as exc:
        print(f"{args.which}: {exc}", file=sys.stderr)
        return 2
    print(f"twins: {len(payload['twins'])} healthy twins" if payload["reason"] is None
          else f"twins: none ({payload['reason']}); explain skips the shortcut control")
    return 0


if __name__ == "__main__":
    sys.exit(main())
