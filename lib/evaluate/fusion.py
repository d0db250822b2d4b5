"""What metadata adds to the image: the fusion stage (image-only, metadata-only, image + metadata).

Clinical metadata is the multimodal row of many brain-tumour studies, and a trap: age and sex
differ by tumour type in every registry (lib.data.demographics), so a model given them can score
by reading the population instead of the image, and a hospital whose population differs breaks
it. This stage measures both sides on the study's own splits, seed by seed:

- ``image``: the trained model itself (its test macro-F1 equals the evaluate stage's);
- ``image_head``: a new head on the same frozen features, no metadata (the control);
- ``fusion``: the same features + a small metadata network (lib.train.fusion);
- ``metadata``: the metadata alone;

and the metadata audit's question: can each column alone predict the class?

Where the metadata comes from is explicit (``fusion.metadata``): ``phantom`` draws age and sex
for each image of ``data/raw`` from published epidemiology, exactly as ``phantom.metadata:
cbtrus`` would write them (it refuses when data/raw is not the phantom of params.yaml);
``prepared`` reads ``data/processed/metadata.csv``, your ``data/raw/metadata.csv`` joined by the
prepare stage. Every number is per seed, summarised over seeds with paired differences (the
heads of seed s share seed s's image model). Run as the ``fusion`` DVC stage:
``python -m lib.evaluate.fusion --params params.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import load_params, repo_root, section
from ..data import metadata as meta
from ..data.manifest import DataError, class_names, load_manifest, split_frame
from ..data.phantom import PhantomConfig, image_metadata
from ..data.phantom_sets import twin_check
from ..figures import SAVE_DPI, readable
from ..jsonio import write_json
from ..seeding import seed_everything
from ..splits import TEST, TRAIN, VAL
from ..stats import paired_difference, seed_interval
from ..train import fusion

ARMS = ("image", "image_head", "fusion")
METADATA_ARM = "metadata"
COMPARISONS = (("fusion", "image_head", "what metadata adds to the same features"),
               ("fusion", "image", "fusion against the image model as trained"),
               ("image_head", "image", "a new head on the same features (control)"))
CAVEAT = ("On real data, metadata that predicts the class is as likely a confounder as a clue: "
          "it carries the population of the hospital that made the set (who was referred, who "
          "was scanned), and a model that leans on it fails where the population differs.")


@dataclass(frozen=True)
class Setup:
    cfg: fusion.FusionConfig
    phantom: PhantomConfig
    seeds: list[int]
    seed: int
    permutations: int
    raw_dir: Path
    processed_dir: Path

    @classmethod
    def from_params(cls, params: dict[str, Any], root: Path) -> Setup:
        data = section(params, "data")
        return cls(fusion.FusionConfig.from_params(section(params, "fusion")),
                   PhantomConfig.from_params(section(params, "phantom")),
                   [int(s) for s in params["train_seeds"]], int(params["seed"]),
                   int(section(params, "prepare")["confounder_permutations"]),
                   root / data["raw_dir"], root / data["processed_dir"])


# --------------------------------------------------------------------------------------------
# The metadata of every usable image
# --------------------------------------------------------------------------------------------
def phantom_metadata(manifest: pd.DataFrame, raw_dir: Path, phantom: PhantomConfig
                     ) -> pd.DataFrame:
    """Age and sex of each image, drawn as ``phantom.metadata: cbtrus`` writes them; refuses
    when data/raw is not the phantom of params.yaml (its draws would belong to other images)."""
    from ..data.phantom_sets import _twin_index

    reason = twin_check(split_frame(manifest, TEST), class_names(manifest), raw_dir, phantom)
    if reason:
        raise DataError(f"fusion.metadata: phantom needs data/raw to be the phantom of "
                        f"params.yaml, but {reason}. With your own data, put a metadata.csv "
                        "(path, then columns) in data/raw, rerun prepare and set "
                        "fusion.metadata: prepared")
    rows = [image_metadata(phantom, split, cls, _twin_index(path)) for split, cls, path in
            zip(manifest["source_split"], manifest["class"], manifest["path"], strict=True)]
    return pd.DataFrame({meta.PATH: manifest["path"].to_numpy(),
                         **{c: [str(r[c]) for r in rows] for c in rows[0]}})


def prepared_metadata(manifest: pd.DataFrame, processed_dir: Path) -> pd.DataFrame:
    """data/processed/metadata.csv (prepare's join), one row per usable manifest image."""
    path = processed_dir / meta.METADATA_CSV
    if not path.is_file():
        raise DataError(f"fusion.metadata: prepared needs {path}, which the prepare stage writes "
                        "when data/raw/metadata.csv exists (a 'path' column, then age, sex, ...). "
                        "Add it and rerun prepare, or use fusion.metadata: phantom on the phantom")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if len(table.columns) < 2:
        raise DataError(f"fusion.metadata: prepared, but {path} has no metadata column: data/raw "
                        "has no metadata.csv (a 'path' column, then age, sex, ...). Add it and "
                        "rerun prepare, or use fusion.metadata: phantom on the phantom")
    joined = table.set_index(meta.PATH).reindex(manifest["path"]).fillna("")
    return joined.reset_index()


def load_metadata(setup: Setup, manifest: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """(path + the chosen columns for every usable manifest row, the columns' types)."""
    frame = (phantom_metadata(manifest, setup.raw_dir, setup.phantom)
             if setup.cfg.metadata == "phantom" else
             prepared_metadata(manifest, setup.processed_dir))
    types = meta.column_types(frame)
    columns = setup.cfg.column_list(list(types))
    return frame[[meta.PATH, *columns]], {c: types[c] for c in columns}


# --------------------------------------------------------------------------------------------
# Heads, per seed
# --------------------------------------------------------------------------------------------
def _scores(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score, f1_score

    pred = probs.argmax(axis=1)
    per_class = f1_score(labels, pred, average=None, labels=range(len(names)), zero_division=0)
    return {"macro_f1": round(float(f1_score(labels, pred, average="macro")), 4),
            "balanced_accuracy": round(float(balanced_accuracy_score(labels, pred)), 4),
            **{f"f1_{n}": round(float(v), 4) for n, v in zip(names, per_class, strict=True)}}


@dataclass
class Splits:
    """Per split: the manifest rows, their labels and encoded metadata."""

    frames: dict[str, pd.DataFrame]
    labels: dict[str, np.ndarray]
    metadata: dict[str, np.ndarray]
    names: list[str]
    encoded: list[str]  # the encoder's feature names

    @classmethod
    def build(cls, manifest: pd.DataFrame, table: pd.DataFrame, types: dict[str, str]
              ) -> Splits:
        frames = {s: split_frame(manifest, s) for s in (TRAIN, VAL, TEST)}
        by_path = table.set_index(meta.PATH)
        rows = {s: by_path.loc[f["path"]].reset_index() for s, f in frames.items()}
        encoder = meta.Encoder.fit(rows[TRAIN], types)
        return cls(frames, {s: f["label"].to_numpy() for s, f in frames.items()},
                   {s: encoder.transform(r) for s, r in rows.items()}, class_names(manifest),
                   encoder.names)


def train_heads(splits: Splits, parts: dict[str, dict[str, np.ndarray]], cfg: fusion.FusionConfig,
                seed: int) -> dict[str, Any]:
    """One head per arm in `parts` ({arm: {split: inputs list}}); test scores and fit info."""
    out = {}
    for arm, x in parts.items():
        head = fusion.build_head(x["n_features"], x["n_metadata"], len(splits.names), cfg, arm,
                                 seed)
        info = fusion.fit_head(head, x[TRAIN], splits.labels[TRAIN], x[VAL], splits.labels[VAL],
                               cfg, seed)
        out[arm] = {**_scores(splits.labels[TEST], fusion.predict_head(head, x[TEST]),
                              splits.names),
                    "val_macro_f1": _scores(splits.labels[VAL],
                                            fusion.predict_head(head, x[VAL]),
                                            splits.names)["macro_f1"], **info}
    return out


def _inputs(feats: dict[str, np.ndarray] | None, metadata: dict[str, np.ndarray] | None
            ) -> dict[str, Any]:
    out: dict[str, Any] = {"n_features": 0 if feats is None else feats[TRAIN].shape[1],
                           "n_metadata": 0 if metadata is None else metadata[TRAIN].shape[1]}
    for split in (TRAIN, VAL, TEST):
        out[split] = [x[split] for x in (feats, metadata) if x is not None]
    return out


def model_inputs(model: Any, splits: Splits, raw_dir: Path, cache: dict[tuple[int, int], Any]
                 ) -> dict[str, np.ndarray]:
    """Each split's pixels as this model reads them (lib.data's pipeline), once per shape."""
    from ..data.inputs import load_arrays

    size, channels = int(model.input_shape[1]), int(model.input_shape[3])
    if (size, channels) not in cache:
        cache[(size, channels)] = {
            s: load_arrays(f, raw_dir, image_size=size, n_classes=len(splits.names),
                           channels=channels)[0] for s, f in splits.frames.items()}
    return cache[(size, channels)]


def image_arms(model: Any, splits: Splits, x: dict[str, np.ndarray], cfg: fusion.FusionConfig,
               seed: int) -> dict[str, Any]:
    """The image model as trained, a new head on its features, and the fusion head."""
    from ..forward import predict_probs

    feats = {s: fusion.features(model, v) for s, v in x.items()}
    out = {"image": {**_scores(splits.labels[TEST], predict_probs(model, x[TEST]), splits.names),
                     "val_macro_f1": _scores(splits.labels[VAL], predict_probs(model, x[VAL]),
                                             splits.names)["macro_f1"]}}
    out.update(train_heads(splits, {"image_head": _inputs(feats, None),
                                    "fusion": _inputs(feats, splits.metadata)}, cfg, seed))
    return out


def summarise(per_seed: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per arm: each score over seeds; the comparisons, paired by seed."""
    out: dict[str, Any] = {}
    for arm, seeds in per_seed.items():
        keys = [k for k, v in next(iter(seeds.values())).items() if isinstance(v, float)]
        out[arm] = {"per_seed": {f"s{s}": v for s, v in seeds.items()},
                    **{k: seed_interval([seeds[s][k] for s in sorted(seeds)]) for k in keys}}
    return out


def comparisons(arms: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The paired differences in test macro-F1 the claims test (Holm is applied there)."""
    out = []
    for a, b, label in COMPARISONS:
        common = sorted(set(arms[a]) & set(arms[b]))
        out.append({"a": a, "b": b, "label": label,
                    **paired_difference([arms[a][s]["macro_f1"] for s in common],
                                        [arms[b][s]["macro_f1"] for s in common])})
    return out


@readable(SAVE_DPI)
def f1_figure(payload: dict[str, Any]) -> Any:
    """Test macro-F1 per arm, one dot per seed, one panel per image model (+ metadata alone)."""
    import matplotlib.pyplot as plt

    models = list(payload["image_models"])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models) + 0.6, 3.8),
                             sharey=True, squeeze=False)
    labels = {"image": "image,\nas trained", "image_head": "image,\nnew head",
              "fusion": "image +\nmetadata", "metadata": "metadata\nalone"}
    for ax, model in zip(axes[0], models, strict=True):
        arms = {**payload["image_models"][model]["arms"], "metadata": payload["metadata_only"]}
        for i, stat in enumerate(arms.values()):
            values = [v["macro_f1"] for v in stat["per_seed"].values()]
            ax.scatter(np.full(len(values), i), values, color=f"C{i}", zorder=3)
            ax.hlines(np.mean(values), i - 0.3, i + 0.3, color=f"C{i}")
        ax.set_xticks(range(len(arms)), [labels[a] for a in arms], fontsize=8)
        ax.set_title(model, fontsize=10)
        ax.axhline(payload["chance_macro_f1"], color="grey", lw=0.8, ls=":")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("test macro-F1 (dot: a seed)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------
def run(params: dict[str, Any], root: Path, models_dir: Path, metrics_path: Path,
        figures_dir: Path) -> dict[str, Any]:
    import keras
    import matplotlib.pyplot as plt

    from ..figures import save

    setup = Setup.from_params(params, root)
    seed_everything(setup.seed)
    manifest = load_manifest(setup.processed_dir / "manifest.csv")
    table, types = load_metadata(setup, manifest)
    splits = Splits.build(manifest, table, types)
    labelled = table.assign(**{"class": manifest["class"].to_numpy()})
    audit = meta.audit(labelled, splits.names, types, setup.seed, setup.permutations)
    metadata_only = {s: train_heads(splits, {"metadata": _inputs(None, splits.metadata)},
                                    setup.cfg, s)["metadata"] for s in setup.seeds}
    models: dict[str, Any] = {}
    pixels: dict[tuple[int, int], Any] = {}
    for name in setup.cfg.image_models:
        per_seed: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in ARMS}
        for seed in setup.seeds:
            path = models_dir / name / f"seed{seed}.keras"
            if not path.is_file():
                raise DataError(f"fusion.image_models names {name}, but {path} does not exist: "
                                "train it first (dvc repro) or name a trained configuration")
            model = keras.models.load_model(path)
            x = model_inputs(model, splits, setup.raw_dir, pixels)
            for arm, scores in image_arms(model, splits, x, setup.cfg, seed).items():
                per_seed[arm][seed] = scores
            keras.backend.clear_session()
        models[name] = {"arms": summarise(per_seed), "comparisons": comparisons(per_seed)}
    payload = {
        "source": setup.cfg.metadata, "columns": types, "seeds": setup.seeds,
        "n_images": {s: len(f) for s, f in splits.frames.items()},
        "encoded": splits.encoded,
        "chance_macro_f1": round(1.0 / len(splits.names), 4),
        "audit": audit, "metadata_only": summarise({"metadata": metadata_only})["metadata"],
        "image_models": models, "caveat": CAVEAT}
    write_json(metrics_path, payload, digits=4)
    fig = f1_figure(payload)
    save(fig, figures_dir / "fusion_f1.png")
    plt.close(fig)
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.evaluate.fusion",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/metrics/fusion.json"))
    parser.add_argument("--figures", type=Path, default=Path("reports/figures/fusion"))
    args = parser.parse_args(argv)
    params_path = args.params or repo_root() / "params.yaml"
    try:
        params = load_params(params_path)
        root = Path(params_path).resolve().parent
        payload = run(params, root, root / args.models, root / args.metrics, root / args.figures)
    except (KeyError, ValueError) as exc:
        print(f"fusion: {exc}", file=sys.stderr)
        return 2
    m = payload["metadata_only"]["macro_f1"]
    print(f"fusion: metadata alone: test macro-F1 {m['mean']:.3f} (chance "
          f"{payload['chance_macro_f1']:.2f})")
    for name, result in payload["image_models"].items():
        arms = result["arms"]
        add = result["comparisons"][0]
        print(f"fusion: {name}: image {arms['image']['macro_f1']['mean']:.3f}, new head "
              f"{arms['image_head']['macro_f1']['mean']:.3f}, image + metadata "
              f"{arms['fusion']['macro_f1']['mean']:.3f} (metadata adds {add['estimate']:+.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
