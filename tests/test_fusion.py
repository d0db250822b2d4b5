"""Image + metadata fusion (lib.train.fusion, the fusion stage lib.evaluate.fusion) on a tiny
phantom and tiny trained scratch CNNs: the arms over seeds, a planted metadata column that codes
the class (fusion must find it), the phantom's metadata equal to what the generator writes, and
the errors that say what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.config import load_params
from lib.data import phantom as P
from lib.data.manifest import DataError, load_manifest
from lib.data.prepare import PrepareConfig, prepare
from lib.evaluate import fusion as F
from lib.tiny import tiny_dataset, tiny_models
from lib.train import fusion as T

pytestmark = pytest.mark.slow
SEEDS = (0, 1)
PER_CLASS = 8


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fusion")
    data = tiny_dataset(per_class=PER_CLASS, image_size=64, seed=0, workdir=root / "data")
    tiny_models(data, root / "models", variants=("batchnorm",), epochs=2, seeds=SEEDS)
    return root


def params_for(root: Path, **fusion: object) -> dict:
    params = load_params()
    params["data"] = {"raw_dir": "data/raw", "processed_dir": "data/processed"}
    params["phantom"] = {**params["phantom"], "seed": 0, "n_train_per_class": PER_CLASS,
                         "n_test_per_class": PER_CLASS // 2, "image_size": 64}
    params["train_seeds"] = list(SEEDS)
    params["prepare"] = {**params["prepare"], "confounder_permutations": 5}
    params["fusion"] = {**params["fusion"], "image_models": ["scratch_batchnorm"], "epochs": 10,
                        "patience": 3, **fusion}
    return params


def run(root: Path, params: dict, name: str = "fusion") -> dict:
    return F.run(params, root, root / "models", root / "out" / f"{name}.json",
                 root / "out" / name)


def check_arms(payload: dict, study: Path) -> None:
    """Every arm on every seed, the comparisons in their order, the figure; the image arm is
    the trained model on the test split, as the evaluate stage scores it."""
    import keras
    from sklearn.metrics import f1_score

    from lib.data.inputs import load_arrays
    from lib.forward import predict_probs

    result = payload["image_models"]["scratch_batchnorm"]
    assert set(result["arms"]) == {"image", "image_head", "fusion"}
    for stat in (*result["arms"].values(), payload["metadata_only"]):
        assert set(stat["per_seed"]) == {f"s{s}" for s in SEEDS}
        assert stat["macro_f1"]["n"] == len(SEEDS) and stat["macro_f1"]["interval"] is not None
    assert [c["a"] for c in result["comparisons"]] == ["fusion", "fusion", "image_head"]
    manifest = load_manifest(study / "data" / "processed" / "manifest.csv")
    test = manifest[manifest["split"] == "test"]
    model = keras.models.load_model(study / "models" / "scratch_batchnorm" / "seed0.keras")
    x, y = load_arrays(test, study / "data" / "raw", image_size=32, n_classes=4)
    expected = f1_score(y, predict_probs(model, x).argmax(axis=1), average="macro")
    assert result["arms"]["image"]["per_seed"]["s0"]["macro_f1"] == pytest.approx(expected,
                                                                                  abs=1e-4)


def test_the_phantom_source_is_what_phantom_metadata_cbtrus_writes(study: Path,
                                                                   tmp_path: Path) -> None:
    params = params_for(study)
    cfg = P.PhantomConfig.from_params({**params["phantom"], "metadata": "cbtrus"})
    P.write_metadata(cfg, tmp_path)
    written = pd.read_csv(tmp_path / P.METADATA_CSV, dtype=str).set_index("path")
    manifest = load_manifest(study / "data" / "processed" / "manifest.csv")
    drawn = F.phantom_metadata(manifest, study / "data" / "raw",
                               P.PhantomConfig.from_params(params["phantom"])).set_index("path")
    assert len(drawn) == len(manifest)
    pd.testing.assert_frame_equal(drawn, written.loc[drawn.index])


def test_a_column_that_codes_the_class_is_found_by_the_fusion_head(study: Path) -> None:
    """Plant `code` = the class in data/raw/metadata.csv (a copy): the metadata alone and the
    fusion head must read it; the same features without it cannot. (The phantom source's full
    run is the fusion stage of tests/test_pipeline.py's tiny repro.)"""
    root = study / "planted"
    shutil.copytree(study / "data" / "raw", root / "data" / "raw")
    (root / "models").symlink_to(study / "models")
    manifest = load_manifest(study / "data" / "processed" / "manifest.csv")
    pd.DataFrame({"path": manifest["path"], "code": manifest["class"].str.upper()}).to_csv(
        root / "data" / "raw" / "metadata.csv", index=False)
    prepare(root / "data" / "raw", root / "data" / "processed", root / "reports",
            PrepareConfig(seed=0, confounder_permutations=0), progress=False)
    params = params_for(root, metadata="prepared", columns="code", epochs=20, patience=20,
                        learning_rate=0.05)
    params["prepare"]["confounder_permutations"] = 20  # the smallest p is then 1/21 < 0.05
    payload = run(root, params)
    check_arms(payload, study)
    assert payload["columns"] == {"code": "categorical"}
    assert payload["audit"]["columns"]["code"]["finding"] is True
    assert all(v["macro_f1"] == 1.0 for v in payload["metadata_only"]["per_seed"].values())
    result = payload["image_models"]["scratch_batchnorm"]
    fused = result["arms"]["fusion"]["per_seed"]
    plain = result["arms"]["image_head"]["per_seed"]
    assert all(fused[s]["macro_f1"] > plain[s]["macro_f1"] for s in fused)
    assert result["comparisons"][0]["estimate"] > 0.2
    assert (root / "out" / "fusion" / "fusion_f1.png").stat().st_size > 10_000


def test_missing_metadata_and_a_foreign_raw_folder_are_errors_that_say_what_to_do(
        study: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no metadata column"):
        run(study, params_for(study, metadata="prepared"))
    params = params_for(study)
    params["phantom"]["noise"] = 0.05  # data/raw is not this phantom
    with pytest.raises(DataError, match="fusion.metadata: phantom needs data/raw"):
        run(study, params)
    with pytest.raises(ValueError, match="not in the metadata columns"):
        run(study, params_for(study, columns="age,weight"))
    with pytest.raises(ValueError, match="fusion.metadata must be one of"):
        T.FusionConfig(metadata="registry")


def test_a_head_trains_the_same_twice_and_composes_with_its_image_model(study: Path) -> None:
    import keras

    rng = np.random.default_rng(0)
    feats, meta, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 3)), np.arange(40) % 4
    cfg = T.FusionConfig(epochs=5, patience=5)
    weights = []
    for _ in range(2):
        head = T.build_head(6, 3, 4, cfg, "fusion", seed=3)
        T.fit_head(head, [feats, meta], y, [feats, meta], y, cfg, seed=3)
        weights.append(head.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
    image = keras.models.load_model(study / "models" / "scratch_batchnorm" / "seed0.keras")
    head = T.build_head(int(image.get_layer(T.FEATURE_LAYER).output.shape[-1]), 3, 4, cfg, "f")
    both = T.compose(image, head)
    x = rng.uniform(0, 255, size=(5, 32, 32, 1)).astype("float32")
    m = rng.normal(size=(5, 3)).astype("float32")
    np.testing.assert_allclose(both.predict([x, m], verbose=0),
                               T.predict_head(head, [T.features(image, x), m]), atol=1e-5)
    json.dumps(T.fit_head(T.build_head(0, 3, 4, cfg, "m"), [meta], y, [meta], y, cfg, 1))
