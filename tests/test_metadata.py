"""Clinical metadata: the phantom's metadata knob (lib.data.demographics), prepare's join of
<raw>/metadata.csv (lib.data.metadata) with its report, the encoder and the metadata audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.data import demographics as D
from lib.data import metadata as M
from lib.data import phantom as P
from lib.data.manifest import DataError
from lib.data.prepare import PrepareConfig, prepare

SMALL = {"n_train_per_class": 6, "n_test_per_class": 3, "image_size": 64}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------- the phantom
def test_metadata_none_leaves_the_phantom_s_files_as_they_were(tmp_path: Path) -> None:
    """The knob's default records nothing new: phantom.json has no 'metadata' key, no csv."""
    P.generate(P.PhantomConfig(**SMALL), tmp_path / "a", progress=False)
    recorded = json.loads((tmp_path / "a" / P.MANIFEST).read_text())["config"]
    assert "metadata" not in recorded and not (tmp_path / "a" / P.METADATA_CSV).exists()


def test_cbtrus_adds_a_table_and_changes_no_pixel(tmp_path: Path) -> None:
    P.generate(P.PhantomConfig(**SMALL), tmp_path / "plain", progress=False)
    P.generate(P.PhantomConfig(**SMALL, metadata="cbtrus"), tmp_path / "meta", progress=False)
    plain, meta = tree(tmp_path / "plain"), tree(tmp_path / "meta")
    images = [k for k in plain if k.endswith(".png")]
    assert images and all(plain[k] == meta[k] for k in images)
    table = pd.read_csv(tmp_path / "meta" / P.METADATA_CSV)
    assert list(table.columns) == ["path", "age", "sex"]
    assert sorted(table["path"]) == sorted(k for k in images if "_mask" not in k)
    assert table["age"].between(*D.AGE_RANGE).all() and set(table["sex"]) <= {"F", "M"}
    assert json.loads(meta[P.MANIFEST])["config"]["metadata"] == "cbtrus"
    # regenerating over it without the knob removes the table
    P.generate(P.PhantomConfig(**SMALL), tmp_path / "meta", progress=False)
    assert not (tmp_path / "meta" / P.METADATA_CSV).exists()


def test_an_unknown_metadata_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="phantom.metadata must be one of"):
        P.PhantomConfig(metadata="registry")


def test_draws_are_per_image_and_carry_the_published_direction() -> None:
    assert D.draw(1, "Training", "glioma", 5) == D.draw(1, "Training", "glioma", 5)
    assert D.draw(1, "Training", "glioma", 5) != D.draw(1, "Testing", "glioma", 5) or \
        D.draw(1, "Training", "glioma", 6) != D.draw(1, "Training", "glioma", 5)
    many = {c: [D.draw(3, "Training", c, i) for i in range(600)] for c in D.BY_CLASS}
    age = {c: np.mean([r["age"] for r in rows]) for c, rows in many.items()}
    female = {c: np.mean([r["sex"] == "F" for r in rows]) for c, rows in many.items()}
    assert age["meningioma"] > age["glioma"] > age["pituitary"]  # CBTRUS: oldest, then younger
    assert female["meningioma"] > 0.6 and female["glioma"] < 0.5  # 2.3:1 F, 1.6:1 M (GBM)
    with pytest.raises(ValueError, match="no demographics"):
        D.draw(1, "Training", "lymphoma", 0)


# ------------------------------------------------------------------------------ prepare's join
@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("meta") / "raw"
    P.generate(P.PhantomConfig(**SMALL), root, progress=False)
    return root


def write_table(raw: Path, dest: Path, rows: list[list[str]], header: str) -> Path:
    import shutil

    shutil.copytree(raw, dest)
    (dest / M.METADATA_CSV).write_text(header + "\n" + "\n".join(",".join(r) for r in rows)
                                       + "\n")
    return dest


def test_prepare_joins_the_table_and_reports_every_problem(raw: Path, tmp_path: Path) -> None:
    images = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png")
                    if "_mask" not in p.name)
    rows = [[p, str(40 + i % 30), "F" if i % 2 else "M", "1.5T" if i % 3 else "unknown"]
            for i, p in enumerate(images[:-2])]  # the last two images have no row
    rows += [["Training/glioma/typo.png", "50", "F", "3T"], [images[0], "99", "M", "3T"]]
    src = write_table(raw, tmp_path / "raw", rows, "path,age,sex,field")
    before = tree(src)
    prepare(src, tmp_path / "processed", tmp_path / "reports",
            PrepareConfig(confounder_permutations=5), progress=False)
    assert tree(src) == before  # raw data is only read
    joined = pd.read_csv(tmp_path / "processed" / M.METADATA_CSV, dtype=str,
                         keep_default_na=False)
    assert list(joined.columns) == ["path", "age", "sex", "field"] and len(joined) == len(images)
    first = joined.set_index("path").loc[images[0]]
    assert first["age"] == "40"  # the first of the two rows wins
    report = json.loads((tmp_path / "reports" / "metrics" / "data_audit.json").read_text())
    meta = report["metadata"]
    assert meta["columns"]["age"]["type"] == "numeric"
    assert meta["columns"]["field"]["type"] == "categorical"
    assert meta["columns"]["field"]["missing"] == sum(1 for i in range(len(images) - 2)
                                                      if i % 3 == 0) + 2
    assert meta["unknown_paths"] == {"count": 1, "examples": ["Training/glioma/typo.png"]}
    assert meta["images_without_row"]["count"] == 2
    assert meta["duplicate_paths"]["count"] == 1
    assert set(meta["audit"]["columns"]) == {"age", "sex", "field", M.ALL}
    text = (tmp_path / "reports" / "data_audit.md").read_text()
    assert "## Metadata" in text and "name no image" in text and "have no metadata row" in text


def test_without_a_table_prepare_writes_the_paths_and_no_column(raw: Path, tmp_path: Path
                                                                ) -> None:
    prepare(raw, tmp_path / "processed", tmp_path / "reports",
            PrepareConfig(confounder_permutations=0), progress=False)
    joined = pd.read_csv(tmp_path / "processed" / M.METADATA_CSV)
    assert list(joined.columns) == ["path"] and len(joined) == 4 * 9
    report = json.loads((tmp_path / "reports" / "metrics" / "data_audit.json").read_text())
    assert "metadata" not in report


@pytest.mark.parametrize("text, match", [
    ("age,sex\n40,F\n", "no 'path' column"),
    ("path,age,age\nx.png,1,2\n", "more than once"),
    ("path\nx.png\n", "nothing to join"),
])
def test_a_table_that_cannot_be_joined_says_what_to_fix(tmp_path: Path, text: str, match: str
                                                        ) -> None:
    path = tmp_path / M.METADATA_CSV
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        M.read_table(path)


# ------------------------------------------------------------------------- encoder and audit
def test_the_encoder_learns_from_training_rows_only_and_marks_missing_values() -> None:
    train = pd.DataFrame({"age": ["40", "60", ""], "sex": ["F", "M", "F"]})
    enc = M.Encoder.fit(train, {"age": "numeric", "sex": "categorical"})
    assert enc.names == ["age", "age=missing", "sex=F", "sex=M", "sex=missing"]
    test = pd.DataFrame({"age": ["50", "", "70"], "sex": ["M", "", "X"]})
    x = enc.transform(test)
    assert x.shape == (3, 5) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], [0.0, 0.0, 2.0])  # mean 50, sd 10 from training rows
    np.testing.assert_array_equal(x[:, 1], [0, 1, 0])
    np.testing.assert_array_equal(x[:, 2:], [[0, 1, 0], [0, 0, 1], [0, 0, 1]])  # X unseen


def test_the_audit_flags_a_column_that_codes_the_class_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c", "d"]
    labels = np.repeat(classes, 30)
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(120)], "class": labels,
                          "code": [str(classes.index(c) * 10 + rng.normal()) for c in labels],
                          "noise": [str(v) for v in rng.normal(size=120)]})
    result = M.audit(frame, classes, {"code": "numeric", "noise": "numeric"}, seed=0,
                     permutations=20)
    assert result["columns"]["noise"]["finding"] is False
    assert result["columns"]["code"]["finding"] is True  # a linear read separates it
    assert "confounder" in result["columns"]["code"]["message"]
    assert "code" in result["findings"] and "noise" not in result["findings"]
