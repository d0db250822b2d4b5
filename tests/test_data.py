"""Tests of the prepare stage: every audit finding, the split, the policies and the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from lib.data import images as IMG
from lib.data import inputs as INP
from lib.data import manifest as MAN
from lib.data import prepare as D
from lib.data.audit import FINDING_KINDS
from lib.data.manifest import DataError
from lib.data.prepare import PrepareConfig, prepare


def quick(**kw: object) -> PrepareConfig:
    """prepare's settings without the confounder audit (100 permutations by default): the tests
    of the audit ask for it explicitly."""
    return PrepareConfig(confounder_permutations=0, **kw)

SIZE = 96


# ---------------------------------------------------------------------------------------------
# Builders of tiny data sets


def smooth(seed: int, size: int = SIZE) -> np.ndarray:
    """A distinct, smooth grayscale image: pHash of two seeds differ by >> 4 bits."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def save(path: Path, array: np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, fmt, **kw)
    return path


def save_mask(image_path: Path, array: np.ndarray, suffix: str = ".png") -> Path:
    mask = ((array > 180) * 255).astype(np.uint8)
    return save(image_path.with_name(image_path.stem + "_mask" + suffix), mask)


def noisy_jpeg(path: Path, array: np.ndarray, seed: int) -> Path:
    """A near duplicate: the same image with mild noise, re-encoded as JPEG."""
    rng = np.random.default_rng(seed)
    noisy = np.clip(array + rng.normal(0, 3, array.shape), 0, 255).astype(np.uint8)
    return save(path, noisy, "JPEG", quality=90)


def truncated(path: Path, array: np.ndarray, fmt: str) -> Path:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    raw = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw[: len(raw) // 2])
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims a huge size but holds no pixel data: a cheap decompression bomb."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def simple_dataset(root: Path, classes=("benign", "malignant"), n_train=12, n_test=4,
                   masks: bool = False, seed0: int = 0) -> Path:
    seed = seed0
    for split, n in (("Training", n_train), ("Testing", n_test)):
        for cls in classes:
            for k in range(n):
                arr = smooth(seed)
                seed += 1
                p = save(root / split / cls / f"{cls}_{k:03d}.png", arr)
                if masks:
                    save_mask(p, arr)
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """Content hash of every file and folder under root (mtimes deliberately left out)."""
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        out[rel_dir + "/"] = "dir"
        for name in filenames:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# What the messy data set plants, as (kind, path); used by several tests.
EXPECTED = {
    ("zero_byte", "Training/glioma/zero.png"),
    ("corrupt", "Training/glioma/trunc.png"),
    ("corrupt", "Training/glioma/trunc.jpg"),
    ("not_an_image", "Training/glioma/text.jpg"),
    ("mode_16bit", "Training/glioma/i16.png"),
    ("mode_16bit", "Training/glioma/float.tif"),
    ("mode_16bit", "Training/glioma/int32.tif"),
    ("mode_alpha", "Training/glioma/rgba.png"),
    ("mode_alpha", "Training/glioma/la.png"),
    ("mode_palette", "Training/glioma/palette.png"),
    ("mode_cmyk", "Training/glioma/cmyk.jpg"),
    ("mode_1bit", "Training/glioma/bw.png"),
    ("huge_image", "Training/glioma/big.png"),
    ("huge_image", "Training/glioma/bomb.png"),
    ("non_image_extension", "Training/glioma/notes.txt"),
    ("hidden_ignored", ".DS_Store"),
    ("hidden_ignored", "Training/glioma/.DS_Store"),
    ("hidden_ignored", "Training/glioma/.ipynb_checkpoints"),
    ("hidden_ignored", "Training/.ipynb_checkpoints"),
    ("nested_file", "Training/glioma/extra/deep.png"),
    ("unknown_folder", "Validation"),
    ("stray_file", "README.txt"),
    ("stray_file", "Training/loose.png"),
    ("orphan_mask", "Training/glioma/lost_mask.png"),
    ("mask_unreadable", "Training/glioma/g01_mask.png"),
    ("mask_size_mismatch", "Training/glioma/g02_mask.png"),
    ("missing_mask", "Training/glioma/g09.png"),
    ("class_without_masks", "Training/notumor"),
    ("class_without_masks", "Testing/notumor"),
    ("duplicate_exact_within_split", "Training/glioma/g03.png"),
    ("duplicate_near_within_split", "Training/glioma/g04.png"),
    ("duplicate_exact_cross_split", "Training/notumor/n00.png"),
    ("duplicate_near_cross_split", "Training/notumor/n01.png"),
    ("extension_mismatch", "Training/notumor/png_named.jpg"),
}
EXCLUDED_KINDS = {"zero_byte", "corrupt", "not_an_image", "mode_16bit", "mode_alpha",
                  "mode_palette", "mode_cmyk", "mode_1bit", "huge_image", "non_image_extension"}
MESSY_CFG = PrepareConfig(max_pixels=150 * 150, confounder_permutations=5)  # the audit too


def messy_dataset(root: Path) -> Path:
    """Every kind of bad file next to enough good ones for every class and split."""
    tg = root / "Training" / "glioma"
    tn = root / "Training" / "notumor"
    for k in range(10):
        arr = smooth(100 + k)
        p = save(tg / f"g{k:02d}.png", arr)
        if k == 1:
            (tg / "g01_mask.png").write_text("not a mask")
        elif k == 2:
            save(tg / "g02_mask.png", np.zeros((SIZE // 2, SIZE // 2), np.uint8))
        elif k != 9:
            save_mask(p, arr)
    save(tg / "g03_copy.png", smooth(103))  # same pixels, same encoder -> same bytes
    save_mask(tg / "g03_copy.png", smooth(103))
    noisy_jpeg(tg / "g04_near.jpg", smooth(104), seed=1)
    save_mask(tg / "g04_near.jpg", smooth(104))
    for k in range(10):
        save(tn / f"n{k:02d}.png", smooth(200 + k))
    buf = io.BytesIO()
    Image.fromarray(smooth(299)).save(buf, "PNG")
    (tn / "png_named.jpg").write_bytes(buf.getvalue())

    base = smooth(1)
    (tg / "zero.png").write_bytes(b"")
    truncated(tg / "trunc.png", base, "PNG")
    truncated(tg / "trunc.jpg", base, "JPEG")
    (tg / "text.jpg").write_text("this is a note, not a scan\n")
    save(tg / "i16.png", (base.astype(np.uint16) * 200))
    save(tg / "float.tif", base.astype(np.float32))
    save(tg / "int32.tif", base.astype(np.int32))
    Image.fromarray(base).convert("RGBA").save(tg / "rgba.png")
    Image.fromarray(base).convert("LA").save(tg / "la.png")
    Image.fromarray(base).convert("P").save(tg / "palette.png")
    Image.fromarray(base).convert("CMYK").save(tg / "cmyk.jpg")
    Image.fromarray(base).convert("1").save(tg / "bw.png")
    save(tg / "big.png", smooth(3, size=200))  # 40k px > max_pixels of MESSY_CFG
    png_header_only(tg / "bomb.png", 20_000, 20_000)  # PIL's own bomb guard fires
    (tg / "notes.txt").write_text("scanner notes")
    (tg / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    save(tg / ".ipynb_checkpoints" / "g00-checkpoint.png", smooth(100))
    save(root / "Training" / ".ipynb_checkpoints" / "x.png", smooth(5))
    save(tg / "extra" / "deep.png", smooth(6))
    save(tg / "lost_mask.png", np.zeros((SIZE, SIZE), np.uint8))
    save(root / "Training" / "loose.png", smooth(7))

    sg = root / "Testing" / "glioma"
    sn = root / "Testing" / "notumor"
    for k in range(4):
        arr = smooth(300 + k)
        save_mask(save(sg / f"t{k:02d}.png", arr), arr)
        save(sn / f"u{k:02d}.png", smooth(400 + k))
    save(sn / "n00_copy.png", smooth(200))  # exact duplicate of a Training image
    noisy_jpeg(sn / "n01_near.jpg", smooth(201), seed=2)  # near duplicate of one

    save(root / "Validation" / "glioma" / "v.png", smooth(8))
    (root / "README.txt").write_text("downloaded from somewhere")
    (root / ".DS_Store").write_bytes(b"\x00")
    return root


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> dict:
    """The messy set prepared once (report policy); shared by the read-only tests below."""
    base = tmp_path_factory.mktemp("messy")
    raw = messy_dataset(base / "raw")
    before = tree_digest(raw)
    manifest = D.prepare(raw, base / "processed", base / "reports", MESSY_CFG, progress=False)
    audit = json.loads((base / "reports" / "metrics" / "data_audit.json").read_text())
    return {"base": base, "raw": raw, "before": before, "manifest": manifest, "audit": audit}


# ---------------------------------------------------------------------------------------------
# The audit


def test_every_planted_problem_is_found_with_a_reason(messy):
    found = {(f["kind"], f["path"]) for f in messy["audit"]["findings"]}
    missing = EXPECTED - found
    assert not missing, f"not reported: {sorted(missing)}"
    for f in messy["audit"]["findings"]:
        assert f["kind"] in FINDING_KINDS
        assert len(f["reason"]) > 15, f
    counts = messy["audit"]["counts"]["findings_by_kind"]
    assert counts == dict(sorted(pd.Series([f["kind"] for f in messy["audit"]["findings"]])
                                 .value_counts().items()))


def test_bad_files_are_excluded_rows_with_reasons(messy):
    m = messy["manifest"].set_index("path")
    for kind, path in EXPECTED:
        if kind in EXCLUDED_KINDS:
            assert m.loc[path, "status"] == "excluded", (kind, path)
            assert m.loc[path, "split"] == ""
            assert m.loc[path, "reason"], path
    assert "alpha would be discarded" in m.loc["Training/glioma/rgba.png", "reason"]
    assert "16-bit" in m.loc["Training/glioma/i16.png", "reason"]
    assert "text" in m.loc["Training/glioma/text.jpg", "reason"]
    assert "truncated" in m.loc["Training/glioma/trunc.jpg", "reason"]
    assert "PIL" in m.loc["Training/glioma/bomb.png", "reason"]
    ok = m[m["status"] == "ok"]
    assert set(ok["mode"]) <= {"L", "RGB"} and len(ok) > 20
    assert (ok["reason"] == "").all()
    assert ok["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert ok["md5"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert m.loc["Training/notumor/png_named.jpg", "status"] == "warn"


def test_masks_are_paired_and_checked(messy):
    m = messy["manifest"].set_index("path")
    assert m.loc["Training/glioma/g00.png", "mask"] == "Training/glioma/g00_mask.png"
    assert m.loc["Testing/glioma/t03.png", "mask"] == "Testing/glioma/t03_mask.png"
    for path in ("g01", "g02", "g09"):  # unreadable, wrong size, missing
        row = m.loc[f"Training/glioma/{path}.png"]
        assert row["status"] == "warn" and row["mask"] == "" and "localisation" in row["reason"]
    assert (m.loc[m["class"] == "notumor", "mask"] == "").all()
    assert not m.index.str.contains("_mask").any()


def test_no_file_disappears_and_raw_dir_is_unchanged(messy):
    raw, audit, m = messy["raw"], messy["audit"], messy["manifest"]
    assert tree_digest(raw) == messy["before"]
    known = set(m["path"]) | set(m["mask"]) | {f["path"] for f in audit["findings"]} | {
        f.get("other_path", "") for f in audit["findings"]}
    for p in raw.rglob("*"):
        if p.is_file():
            rel = p.relative_to(raw)
            covered = rel.as_posix() in known or any(a.as_posix() in known for a in rel.parents)
            assert covered, f"{rel} is neither in the manifest nor in the findings"


def test_outputs_are_written_and_portable(messy):
    base = messy["base"]
    text = (base / "reports" / "metrics" / "data_audit.json").read_text()
    assert str(base) not in text and str(messy["raw"]) not in text
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    keys = [(f["kind"], f["path"], f.get("other_path", "")) for f in messy["audit"]["findings"]]
    assert keys == sorted(keys)
    md = (base / "reports" / "data_audit.md").read_text()
    assert "| glioma |" in md and "### mode_alpha" in md and "### duplicate_near_cross_split" in md
    on_disk = MAN.load_manifest(base / "processed" / "manifest.csv", usable_only=False)
    assert list(on_disk.columns) == MAN.MANIFEST_COLUMNS
    assert on_disk["path"].tolist() == sorted(on_disk["path"])
    pd.testing.assert_frame_equal(on_disk, messy["manifest"])
    usable = MAN.load_manifest(base / "processed" / "manifest.csv")
    assert (usable["status"] != "excluded").all() and set(usable["split"]) == set(D.SPLITS)
    c = messy["audit"]["counts"]
    assert sum(c["status"].values()) == c["manifest_rows"] == len(on_disk)
    assert messy["audit"]["classes"] == ["glioma", "notumor"]
    assert messy["audit"]["params"]["max_pixels"] == MESSY_CFG.max_pixels


def test_duplicates_report_warns_both_copies(messy):
    m = messy["manifest"].set_index("path")
    train, test = m.loc["Training/notumor/n00.png"], m.loc["Testing/notumor/n00_copy.png"]
    assert train["status"] == test["status"] == "warn"
    assert "Testing/notumor/n00_copy.png" in train["reason"]
    assert "Training/notumor/n00.png" in test["reason"]
    assert train["split"] in ("train", "val") and test["split"] == "test"
    near = m.loc["Training/notumor/n01.png"]
    assert near["status"] == "warn" and "n01_near.jpg" in near["reason"]
    dup = [f for f in messy["audit"]["findings"] if f["kind"] == "duplicate_exact_cross_split"]
    assert dup[0]["other_path"] == "Testing/notumor/n00_copy.png"


def test_within_split_duplicates_stay_on_one_side(messy):
    m = messy["manifest"].set_index("path")
    for a, b in (("g03.png", "g03_copy.png"), ("g04.png", "g04_near.jpg")):
        assert m.loc[f"Training/glioma/{a}", "split"] == m.loc[f"Training/glioma/{b}", "split"]
        assert m.loc[f"Training/glioma/{b}", "status"] == "warn"


def test_duplicates_drop_keeps_the_test_copy(tmp_path):
    raw = messy_dataset(tmp_path / "raw")
    cfg = quick(max_pixels=MESSY_CFG.max_pixels, duplicates="drop")
    m = D.prepare(raw, tmp_path / "p", tmp_path / "r", cfg, progress=False).set_index("path")
    for train, test in (("n00.png", "n00_copy.png"), ("n01.png", "n01_near.jpg")):
        dropped = m.loc[f"Training/notumor/{train}"]
        assert dropped["status"] == "excluded" and dropped["split"] == ""
        assert f"Testing/notumor/{test}" in dropped["reason"] and "drop" in dropped["reason"]
        kept = m.loc[f"Testing/notumor/{test}"]
        assert kept["status"] == "ok" and kept["split"] == "test"
    # within-split duplicates are not a leak: kept under either policy
    assert m.loc["Training/glioma/g03_copy.png", "status"] == "warn"


def test_bad_duplicates_policy_names_the_allowed_values():
    with pytest.raises(ValueError, match="drop, report"):
        quick(duplicates="delete")


# ---------------------------------------------------------------------------------------------
# The split


def split_dataset(root: Path) -> Path:
    """Two unbalanced classes with duplicate groups inside Training."""
    seed = 1000
    for cls, n in (("cat", 41), ("dog", 27)):
        for k in range(n):
            save(root / "Training" / cls / f"{cls}{k:03d}.png", smooth(seed))
            seed += 1
        for k in range(5):
            save(root / "Testing" / cls / f"{cls}_t{k}.png", smooth(seed))
            seed += 1
    for k in range(3):  # three groups: an exact pair, a near pair, a triple
        src = root / "Training" / "cat" / f"cat{k:03d}.png"
        arr = np.asarray(Image.open(src))
        save(src.with_name(f"cat{k:03d}_copy.png"), arr)
        if k:
            noisy_jpeg(src.with_name(f"cat{k:03d}_near.jpg"), arr, seed=k)
    return root


@pytest.fixture(scope="module")
def split_raw(tmp_path_factory) -> Path:
    return split_dataset(tmp_path_factory.mktemp("split") / "raw")


def _split_of(raw: Path, seed: int, val_fraction: float = 0.15) -> pd.DataFrame:
    cfg = quick(seed=seed, val_fraction=val_fraction)
    m, audit = D.build_manifest(raw, cfg, progress=False)
    assert not audit["errors"]
    return m


def test_split_is_seeded(split_raw):
    a, b = _split_of(split_raw, 1), _split_of(split_raw, 1)
    c = _split_of(split_raw, 2)
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()
    assert set(a.loc[a["source_split"] == "Testing", "split"]) == {"test"}
    assert set(a.loc[a["source_split"] == "Training", "split"]) == {"train", "val"}


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("val_fraction", [0.15, 0.3])
def test_split_is_stratified_and_group_aware(split_raw, seed, val_fraction):
    m = _split_of(split_raw, seed, val_fraction)
    train = m[m["source_split"] == "Training"]
    for cls, rows in train.groupby("class"):
        n_val = (rows["split"] == "val").sum()
        assert abs(n_val - val_fraction * len(rows)) <= 1, (cls, n_val, len(rows))
    side = m.set_index("path")["split"]
    for k in range(3):
        group = [p for p in side.index if p.startswith(f"Training/cat/cat{k:03d}")]
        assert len(group) == (2 if k == 0 else 3)
        assert side[group].nunique() == 1, side[group]


# ---------------------------------------------------------------------------------------------
# Classes


def test_class_names_come_from_folders_and_masks_pair(tmp_path):
    raw = simple_dataset(tmp_path / "raw", masks=True)
    (raw / "Training" / "benign" / "benign_000_mask.png").unlink()
    m = D.prepare(raw, tmp_path / "p", tmp_path / "r", quick(), progress=False)
    assert sorted(m["class"].unique()) == ["benign", "malignant"]
    assert dict(zip(m["class"], m["label"], strict=True)) == {"benign": 0, "malignant": 1}
    assert (m["mask"] == m["path"].str.replace(".png", "_mask.png", regex=False)).sum() == 31
    row = m.set_index("path").loc["Training/benign/benign_000.png"]
    assert row["status"] == "warn" and "mask" in row["reason"]
    assert (m["status"] == "ok").sum() == 31
    audit = json.loads((tmp_path / "r" / "metrics" / "data_audit.json").read_text())
    assert [f["kind"] for f in audit["findings"]] == ["missing_mask"]


def test_class_with_only_corrupt_files_raises_after_writing(tmp_path):
    raw = simple_dataset(tmp_path / "raw")
    for k in range(3):
        truncated(raw / "Testing" / "broken" / f"b{k}.png", smooth(k), "PNG")
        save(raw / "Training" / "broken" / f"ok{k}.png", smooth(900 + k))
    (raw / "Testing" / "broken" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError) as err:
        D.prepare(raw, tmp_path / "p", tmp_path / "r", quick(), progress=False)
    msg = str(err.value)
    assert "'broken'" in msg and "test" in msg and "3x corrupt" in msg and "1x zero_byte" in msg
    assert isinstance(err.value, ValueError)
    audit = json.loads((tmp_path / "r" / "metrics" / "data_audit.json").read_text())
    assert audit["counts"]["usable"]["broken"]["test"] == 0
    assert any("broken" in e for e in audit["errors"])
    assert (tmp_path / "p" / "manifest.csv").is_file()


def test_empty_and_one_sided_classes_are_reported(tmp_path):
    raw = simple_dataset(tmp_path / "raw")
    (raw / "Training" / "ghost").mkdir()
    (raw / "Training" / "ghost" / ".DS_Store").write_bytes(b"\x00")
    with pytest.raises(DataError, match="'ghost'"):
        D.prepare(raw, tmp_path / "p", tmp_path / "r", quick(), progress=False)
    audit = json.loads((tmp_path / "r" / "metrics" / "data_audit.json").read_text())
    found = {(f["kind"], f["path"]) for f in audit["findings"]}
    assert ("empty_class_folder", "Training/ghost") in found
    assert ("class_missing_in_split", "Testing/ghost") in found
    assert audit["classes"] == ["benign", "ghost", "malignant"]


def test_refuses_to_write_inside_raw_dir(tmp_path):
    raw = simple_dataset(tmp_path / "raw", n_train=3, n_test=1)
    before = tree_digest(raw)
    with pytest.raises(DataError, match="inside the raw"):
        D.prepare(raw, raw / "processed", tmp_path / "r", quick(), progress=False)
    assert tree_digest(raw) == before


# ---------------------------------------------------------------------------------------------
# Determinism, loaders, config, CLI


def test_prepare_twice_gives_identical_files(tmp_path):
    raw = messy_dataset(tmp_path / "raw")
    outs = []
    for run in ("a", "b"):
        D.prepare(raw, tmp_path / run / "p", tmp_path / run / "r", MESSY_CFG, progress=False)
        outs.append([(tmp_path / run / rel).read_bytes() for rel in
                     ("p/manifest.csv", "r/metrics/data_audit.json", "r/data_audit.md")])
    assert outs[0] == outs[1]
    assert len(outs[0][0]) > 1000


def test_load_image_and_mask(tmp_path):
    arr = smooth(3)
    rgb = np.stack([arr, arr, arr], axis=-1)
    save(tmp_path / "a" / "x.png", rgb)
    save_mask(tmp_path / "a" / "x.png", arr)
    img = IMG.load_image(tmp_path, "a/x.png")
    assert img.dtype == np.uint8 and img.shape == (SIZE, SIZE)
    assert np.abs(img.astype(int) - arr).max() <= 1
    mask = IMG.load_mask(tmp_path, "a/x_mask.png", img.shape)
    assert mask.dtype == bool and mask.shape == img.shape and mask.any() and not mask.all()
    assert not IMG.load_mask(tmp_path, "", img.shape).any()
    assert IMG.load_mask(tmp_path, None, (4, 5)).shape == (4, 5)
    with pytest.raises(DataError):
        IMG.load_mask(tmp_path, "a/x_mask.png", (3, 3))


def test_config_from_params(tmp_path):
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    cfg = PrepareConfig.from_params(params["prepare"], params["seed"])
    assert cfg.seed == params["seed"]
    assert cfg.val_fraction == params["prepare"]["val_fraction"]
    assert cfg.duplicates in D.DUPLICATE_POLICIES
    with pytest.raises(ValueError, match="'prepare:' has unknown key.*duplicate.*known: "):
        PrepareConfig.from_params({"duplicate": "drop"}, 1)
    with pytest.raises(ValueError, match="val_fraction"):
        PrepareConfig.from_params({"val_fraction": 1.5}, 1)


def _write_params(root: Path) -> Path:
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump({
        "seed": 3,
        "data": {"raw_dir": "raw", "processed_dir": "data/processed"},
        "prepare": {"val_fraction": 0.2, "duplicates": "drop", "phash_max_distance": 4,
                    "max_pixels": 1_000_000, "confounder_permutations": 0},
    }))
    return p


def test_cli_writes_outputs(tmp_path, capsys):
    simple_dataset(tmp_path / "raw")
    assert D.main(["--params", str(_write_params(tmp_path)), "--no-progress"]) == 0
    assert (tmp_path / "data" / "processed" / "manifest.csv").is_file()
    audit = json.loads((tmp_path / "reports" / "metrics" / "data_audit.json").read_text())
    assert audit["params"]["seed"] == 3 and audit["params"]["duplicates"] == "drop"
    assert (tmp_path / "reports" / "data_audit.md").is_file()
    out = capsys.readouterr().out
    assert "usable: train" in out and "benign" in out


def test_cli_reports_an_empty_class_without_traceback(tmp_path, capsys):
    raw = simple_dataset(tmp_path / "raw")
    for p in (raw / "Testing" / "malignant").iterdir():
        p.write_bytes(p.read_bytes()[:40])
    assert D.main(["--params", str(_write_params(tmp_path)), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "'malignant'" in err and "test" in err and "corrupt" in err
    assert "Traceback" not in err
    assert (tmp_path / "reports" / "metrics" / "data_audit.json").is_file()


def _resize_test_images() -> list[np.ndarray]:
    """uint8 images that stress a resize: noise, hard 0/255 edges, odd sizes, up and down."""
    from lib.data import phantom as P

    rng = np.random.default_rng(11)
    checker = (np.indices((45, 61)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image, _ = P.render_case(P.PhantomConfig(image_size=96), "Training", "glioma", 0)
    return [rng.integers(0, 256, (37, 53)).astype(np.uint8), checker,
            np.full((20, 20), 255, np.uint8), smooth(3, 150), image]


@pytest.mark.parametrize("size", [24, 64, 160])
def test_resize_to_model_is_bit_identical_to_the_three_former_resizes(tmp_path, size) -> None:
    """lib.data.inputs._decode, lib.data.inputs.to_model_input and the augmentation notebook each
    resized on
    their own before resize_to_model; their former code is the reference here (the first two
    bit for bit)."""
    import tensorflow as tf

    from lib.data.inputs import to_model_input

    images = _resize_test_images()
    for k, image in enumerate(images):
        path = save(tmp_path / f"r{k}.png", image)
        # lib.data.inputs._decode before: decode, cast, antialiased resize, clip
        raw = tf.io.decode_image(tf.io.read_file(str(path)), channels=1, expand_animations=False)
        old_decode = tf.clip_by_value(tf.image.resize(tf.cast(raw, tf.float32), (size, size),
                                                      antialias=True), 0.0, 255.0).numpy()
        np.testing.assert_array_equal(INP._decode(str(path), size).numpy(), old_decode)
        # lib.data.inputs.to_model_input before: the same on the in-memory array
        x = tf.cast(image[..., None], tf.float32)
        old_explain = tf.clip_by_value(tf.image.resize(x, (size, size), antialias=True),
                                       0.0, 255.0).numpy()
        new = INP.resize_to_model(image[..., None], size).numpy()
        np.testing.assert_array_equal(new, old_explain)
        np.testing.assert_array_equal(to_model_input([image], size, 1)[0], old_explain)
        # notebooks/02_augmentation.ipynb before: the resize without the clip, so it differs only
        # where the antialiasing overshoots 0-255 (by < 1e-4 of a grey level), which training
        # never sees: the preview now shows the training pixels exactly
        old_notebook = tf.image.resize(image[..., None], (size, size), antialias=True)[..., 0]
        np.testing.assert_array_equal(new[..., 0], np.clip(old_notebook.numpy(), 0.0, 255.0))
        assert np.abs(new[..., 0] - old_notebook.numpy()).max() < 1e-4
        assert new.dtype == np.float32 and new.shape == (size, size, 1)


# ---------------------------------------------------------------------------------------------
# Robustness battery: non-UTF-8 names, tiny images, EXIF orientation, label conflicts, groups


def png_bytes(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG", **kw)
    return buf.getvalue()


def phantom_image(k: int, cls: str = "glioma") -> np.ndarray:
    from lib.data import phantom as P

    image, _ = P.render_case(P.PhantomConfig(image_size=SIZE), "Training", cls, k)
    return image


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def robust_dataset(root: Path) -> Path:
    """simple_dataset plus every bad input the robustness checks cover (each once)."""
    simple_dataset(root, n_train=12, n_test=4)
    tb = root / "Training" / "benign"
    broot = os.fsencode(root)
    # 1. names that are not UTF-8 (a file and a whole class folder)
    with open(broot + b"/Training/benign/bad\xff.png", "wb") as fh:
        fh.write(png_bytes(smooth(900)))
    os.mkdir(broot + b"/Training/cl\xe9")
    with open(broot + b"/Training/cl\xe9/x.png", "wb") as fh:
        fh.write(png_bytes(smooth(901)))
    # 2. too small
    save(tb / "tiny.png", np.full((1, 1), 128, np.uint8))
    save(tb / "thin.png", np.full((8, 200), 128, np.uint8))
    # 3. EXIF orientation 6 (stored rotated; shown upright)
    upright = smooth(902)
    Image.fromarray(np.rot90(upright, k=1)).save(tb / "exif6.jpg", "JPEG", quality=95,
                                                 exif=exif_with(6))
    # 4. the same scan under two classes, lightly rotated
    scan = phantom_image(0)
    save(tb / "scan.png", scan)
    save(root / "Training" / "malignant" / "scan_rot.png",
         np.asarray(Image.fromarray(scan).rotate(3, resample=Image.Resampling.BICUBIC)))
    return root


ROBUST_EXPECTED = {
    ("non_utf8_name", "Training/benign/bad\\xff.png"),
    ("non_utf8_name", "Training/cl\\xe9"),
    ("too_small", "Training/benign/tiny.png"),
    ("too_small", "Training/benign/thin.png"),
    ("exif_orientation", "Training/benign/exif6.jpg"),
    ("label_conflict", "Training/benign/scan.png"),
}


@pytest.fixture(scope="module")
def robust(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("robust")
    raw = robust_dataset(base / "raw")
    before = tree_digest(raw)
    manifest = D.prepare(raw, base / "processed", base / "reports", quick(),
                         progress=False)
    audit = json.loads((base / "reports" / "metrics" / "data_audit.json").read_text())
    return {"base": base, "raw": raw, "before": before, "manifest": manifest, "audit": audit}


def test_robust_inputs_are_findings_and_nothing_is_lost(robust):
    raw, audit, m = robust["raw"], robust["audit"], robust["manifest"]
    found = {(f["kind"], f["path"]) for f in audit["findings"]}
    assert ROBUST_EXPECTED <= found, sorted(ROBUST_EXPECTED - found)
    assert all(f["kind"] in FINDING_KINDS and len(f["reason"]) > 15 for f in audit["findings"])
    assert tree_digest(raw) == robust["before"]  # nothing renamed or written
    known = set(m["path"]) | {f["path"] for f in audit["findings"]}
    for p in raw.rglob("*"):
        if p.is_file():
            rel = D._shown(p.relative_to(raw).as_posix())
            assert rel in known or any(D._shown(a.as_posix()) in known
                                       for a in Path(rel).parents), rel
    md = (robust["base"] / "reports" / "data_audit.md").read_text(encoding="utf-8")
    assert "bad\\xff.png" in md and "### label_conflict" in md and "by image" in md
    on_disk = (robust["base"] / "processed" / "manifest.csv").read_text(encoding="utf-8")
    assert "bad" not in on_disk  # not a row: the name cannot be written or read back


def test_too_small_images_are_excluded_with_size_and_minimum(robust):
    m = robust["manifest"].set_index("path")
    for path, size in (("tiny.png", "1x1"), ("thin.png", "200x8")):
        row = m.loc[f"Training/benign/{path}"]
        assert row["status"] == "excluded" and row["split"] == ""
        assert size in row["reason"] and "min_side = 32" in row["reason"]
    with pytest.raises(ValueError, match="min_side"):
        quick(min_side=0)


def test_label_conflict_is_reported_under_both_policies(robust, tmp_path):
    for audit in (robust["audit"], D.build_manifest(
            robust["raw"], quick(duplicates="drop"), progress=False)[1]):
        conflict = [f for f in audit["findings"] if f["kind"] == "label_conflict"]
        assert len(conflict) == 1
        assert conflict[0]["other_path"] == "Training/malignant/scan_rot.png"
        assert "rotated" in conflict[0]["reason"] and "benign" in conflict[0]["reason"]
    # an exact copy in another class is a label conflict as well
    raw = simple_dataset(tmp_path / "raw", n_train=6, n_test=2)
    save(raw / "Testing" / "malignant" / "copy.png", smooth(0))  # = Training/benign/benign_000
    before = tree_digest(raw)
    _, audit = D.build_manifest(raw, quick(), progress=False)
    kinds = {(f["kind"], f["path"]) for f in audit["findings"]}
    assert ("label_conflict", "Testing/malignant/copy.png") in kinds or (
        "label_conflict", "Training/benign/benign_000.png") in kinds
    assert tree_digest(raw) == before


def test_exif_orientation_is_applied_in_audit_and_model_path(robust):
    m = robust["manifest"].set_index("path")
    assert "orientation" in m.columns and m.loc["Training/benign/exif6.jpg", "orientation"] == 6
    assert m.loc["Training/benign/exif6.jpg", "status"] == "ok"
    assert (m.drop(index="Training/benign/exif6.jpg")["orientation"] == 1).all()
    on_disk = MAN.load_manifest(robust["base"] / "processed" / "manifest.csv")
    assert on_disk["orientation"].dtype == "int64"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_rotated_image_gives_the_pixels_of_its_upright_copy(tmp_path, orientation):
    """PNG carries EXIF too and is lossless, so every orientation can be checked exactly."""
    from PIL import ImageOps

    stored = np.random.default_rng(orientation).integers(0, 256, (40, 56)).astype(np.uint8)
    (tmp_path / "rot.png").write_bytes(png_bytes(stored, exif=exif_with(orientation)))
    with Image.open(tmp_path / "rot.png") as img:
        upright = np.asarray(ImageOps.exif_transpose(img))
    save(tmp_path / "up.png", upright)
    np.testing.assert_array_equal(IMG.load_image(tmp_path, "rot.png"), upright)
    frame = pd.DataFrame({"path": ["rot.png", "up.png"], "label": [0, 0],
                          "orientation": [orientation, 1]})
    x, _ = INP.load_arrays(frame, tmp_path, image_size=48, n_classes=1)
    np.testing.assert_array_equal(x[0], x[1])
    info = D.inspect_image(tmp_path / "rot.png", 10**6)
    assert info.orientation == orientation
    assert (info.width, info.height) == upright.shape[::-1]
    assert info.phash == D.inspect_image(tmp_path / "up.png", 10**6).phash


def test_exif_rotated_jpeg_matches_its_upright_copy(tmp_path):
    from PIL import ImageOps

    Image.fromarray(np.rot90(smooth(5), k=1)).save(tmp_path / "r.jpg", "JPEG", quality=95,
                                                   exif=exif_with(6))
    with Image.open(tmp_path / "r.jpg") as img:
        save(tmp_path / "u.png", np.asarray(ImageOps.exif_transpose(img).convert("L")))
    frame = pd.DataFrame({"path": ["r.jpg", "r.jpg", "u.png"], "label": [0, 0, 0],
                          "orientation": [6, 1, 1]})
    x, _ = INP.load_arrays(frame, tmp_path, image_size=SIZE, n_classes=1)
    # the model path turns the stored JPEG exactly as PIL does (90 degrees clockwise) ...
    np.testing.assert_array_equal(x[0], np.rot90(x[1], k=-1))
    # ... and matches the upright copy (decoded by PIL) up to the decoders' JPEG rounding:
    # TensorFlow's default IDCT is not PIL's (~1.6 grey levels on average here, also for
    # upright JPEGs); a wrong turn would differ by tens of levels
    diff = np.abs(x[0] - x[2])
    assert diff.mean() < 3.0 and np.percentile(diff, 99) < 10.0
    np.testing.assert_array_equal(IMG.load_image(tmp_path, "r.jpg"),
                                  IMG.load_image(tmp_path, "u.png"))


# Patient groups


def grouped_dataset(root: Path) -> Path:
    """Two classes, 3 images per patient; patient p05 of each class is also in Testing."""
    seed = 5000
    rows = ["file,group"]
    for cls in ("benign", "malignant"):
        for patient in range(12):
            for k in range(3):
                rel = f"Training/{cls}/{cls}_p{patient:02d}_{k}.png"
                save(root / rel, smooth(seed))
                seed += 1
                rows.append(f"{rel},{cls}-p{patient:02d}")
        for patient in range(12, 15):
            rel = f"Testing/{cls}/{cls}_p{patient:02d}.png"
            save(root / rel, smooth(seed))
            seed += 1
            rows.append(f"{rel},{cls}-p{patient:02d}")
        rel = f"Testing/{cls}/{cls}_p05_test.png"
        save(root / rel, smooth(seed))
        seed += 1
        rows.append(f"{rel},{cls}-p05")
    save(root / "Training" / "benign" / "nogroup.png", smooth(seed))
    rows.append("Training/benign/ghost.png,benign-p99")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_groups_split_by_patient_and_report_leakage(tmp_path_factory, seed):
    raw = grouped_dataset(tmp_path_factory.mktemp("groups") / "raw")
    before = tree_digest(raw)
    m, audit = D.build_manifest(raw, quick(seed=seed), progress=False)
    assert tree_digest(raw) == before and not audit["errors"]
    assert "group" in m.columns
    train = m[m["source_split"] == "Training"]
    sides = train.groupby("group")["split"].nunique()
    assert (sides == 1).all(), sides[sides > 1]
    for cls, rows in train.groupby("class"):
        n_val = (rows["split"] == "val").sum()
        assert 3 <= n_val <= 9, (cls, n_val)  # whole patients of 3 images, ~15 % of 36
    assert audit["split"] == "by group (25 groups, from groups.csv)"
    kinds = {(f["kind"], f["path"]) for f in audit["findings"]}
    assert ("group_leakage", "Training/benign/benign_p05_0.png") in kinds
    assert ("group_leakage", "Training/malignant/malignant_p05_0.png") in kinds
    assert ("group_missing", "Training/benign/nogroup.png") in kinds
    assert ("groups_file", "groups.csv") in kinds  # the ghost row
    assert not any(f["path"] == "groups.csv" and f["kind"] == "stray_file"
                   for f in audit["findings"])
    leaked = m[m["path"].str.contains("_p05_")]
    assert (leaked["status"] == "warn").all() and (leaked["split"] != "").all()
    again, _ = D.build_manifest(raw, quick(seed=seed), progress=False)
    assert again["split"].tolist() == m["split"].tolist()


def test_group_leakage_drop_excludes_the_training_side(tmp_path):
    raw = grouped_dataset(tmp_path / "raw")
    m, audit = D.build_manifest(raw, quick(group_leakage="drop"), progress=False)
    m = m.set_index("path")
    for cls in ("benign", "malignant"):
        for k in range(3):
            row = m.loc[f"Training/{cls}/{cls}_p05_{k}.png"]
            assert row["status"] == "excluded" and row["split"] == ""
            assert "group_leakage=drop" in row["reason"]
        assert m.loc[f"Testing/{cls}/{cls}_p05_test.png", "split"] == "test"
    with pytest.raises(ValueError, match="group_leakage"):
        quick(group_leakage="delete")


def test_without_groups_the_split_is_by_image_and_no_group_column(robust):
    assert "group" not in robust["manifest"].columns
    assert robust["audit"]["split"] == "by image"


def test_a_bad_groups_file_is_a_finding_and_the_split_falls_back_to_images(tmp_path):
    raw = simple_dataset(tmp_path / "raw", n_train=6, n_test=2)
    (raw / "groups.csv").write_text("image;patient\nTraining/benign/benign_000.png;p1\n")
    before = tree_digest(raw)
    m, audit = D.build_manifest(raw, quick(), progress=False)
    assert tree_digest(raw) == before and not audit["errors"]
    bad = [f for f in audit["findings"] if f["kind"] == "groups_file"]
    assert len(bad) == 1 and "'file' and 'group'" in bad[0]["reason"]
    assert audit["split"] == "by image" and "group" not in m.columns


def _groups_as_manifest(raw: Path, extra: str = "") -> dict[str, str]:
    """Turn grouped_dataset's groups.csv into a <raw>/manifest.csv (path, class, group)."""
    rows = pd.read_csv(raw / "groups.csv", dtype=str)
    (raw / "groups.csv").unlink()
    frame = pd.DataFrame({"path": rows["file"], "class": rows["file"].str.split("/").str[1],
                          "group": rows["group"]})
    (raw / "manifest.csv").write_text(frame.to_csv(index=False) + extra)
    return dict(zip(rows["file"], rows["group"], strict=True))


@pytest.mark.parametrize("seed", [0, 42])
def test_groups_from_a_manifest_column_split_by_patient_and_report_leakage(tmp_path, seed):
    raw = grouped_dataset(tmp_path / "raw")
    expected = _groups_as_manifest(raw)
    before = tree_digest(raw)
    m, audit = D.build_manifest(raw, quick(seed=seed), progress=False)
    assert tree_digest(raw) == before and not audit["errors"]
    assert audit["split"] == "by group (25 groups, from manifest.csv)"
    got = dict(zip(m["path"], m["group"], strict=True))
    assert all(got[p] == g for p, g in expected.items() if p in got)
    assert got["Training/benign/nogroup.png"] == ""
    train = m[m["source_split"] == "Training"]
    assert (train.groupby("group")["split"].nunique() == 1).all()
    kinds = {(f["kind"], f["path"]) for f in audit["findings"]}
    assert ("group_leakage", "Training/benign/benign_p05_0.png") in kinds
    assert ("group_leakage", "Training/malignant/malignant_p05_0.png") in kinds
    assert ("group_missing", "Training/benign/nogroup.png") in kinds
    assert ("groups_file", "manifest.csv") in kinds  # the ghost row
    assert not any(f["kind"] == "stray_file" for f in audit["findings"])
    # the same split as with groups.csv
    twin = grouped_dataset(tmp_path / "twin")
    g, g_audit = D.build_manifest(twin, quick(seed=seed), progress=False)
    assert g["split"].tolist() == m["split"].tolist()
    assert g_audit["split"] == "by group (25 groups, from groups.csv)"


def test_a_manifest_exported_by_prepare_is_a_group_source(tmp_path):
    """The manifest a prepare run wrote (with its group column) groups the next run the same."""
    raw = grouped_dataset(tmp_path / "raw")
    first = prepare(raw, tmp_path / "p1", tmp_path / "r1", quick(), progress=False)
    exported = (tmp_path / "p1" / "manifest.csv").read_bytes()
    (raw / "groups.csv").unlink()
    (raw / "manifest.csv").write_bytes(exported)
    before = tree_digest(raw)
    second = prepare(raw, tmp_path / "p2", tmp_path / "r2", quick(), progress=False)
    assert tree_digest(raw) == before
    assert second["group"].tolist() == first["group"].tolist()
    assert second["split"].tolist() == first["split"].tolist()
    md = (tmp_path / "r2" / "data_audit.md").read_text(encoding="utf-8")
    assert "from manifest.csv" in md


def test_groups_csv_wins_over_a_manifest_group_column(tmp_path):
    raw = grouped_dataset(tmp_path / "raw")
    truth = pd.read_csv(raw / "groups.csv", dtype=str)
    # a manifest that puts every image in one group: used, it would give a single group
    pd.DataFrame({"path": truth["file"], "group": "everyone"}).to_csv(raw / "manifest.csv",
                                                                      index=False)
    before = tree_digest(raw)
    m, audit = D.build_manifest(raw, quick(), progress=False)
    assert tree_digest(raw) == before and not audit["errors"]
    assert audit["split"] == "by group (25 groups, from groups.csv)"
    assert "everyone" not in set(m["group"])
    unused = [f for f in audit["findings"] if f["path"] == "manifest.csv"]
    assert [f["kind"] for f in unused] == ["groups_file"]
    assert "groups.csv" in unused[0]["reason"] and "not used" in unused[0]["reason"]


@pytest.mark.parametrize("content", [
    b"path,class\nTraining/benign/benign_000.png,benign\n",  # no group column
    b"group,patient\np1,x\n",                                 # no path/file column
    b"\xff\xfe\x00\x00 not text",                              # not UTF-8
    b"",                                                        # empty
])
def test_a_manifest_without_groups_is_a_stray_file(tmp_path, content):
    raw = simple_dataset(tmp_path / "raw", n_train=6, n_test=2)
    (raw / "manifest.csv").write_bytes(content)
    before = tree_digest(raw)
    m, audit = D.build_manifest(raw, quick(), progress=False)
    assert tree_digest(raw) == before and not audit["errors"]
    assert audit["split"] == "by image" and "group" not in m.columns
    about = [f for f in audit["findings"] if f["path"] == "manifest.csv"]
    assert [f["kind"] for f in about] == ["stray_file"] and "not used" in about[0]["reason"]


def test_a_ragged_group_manifest_is_findings_not_a_crash(tmp_path):
    raw = grouped_dataset(tmp_path / "raw")
    _groups_as_manifest(raw, extra="Training/benign/nogroup.png,benign,p1,surplus,fields\n"
                                   "Training/benign/benign_p00_0.png\n")
    m, audit = D.build_manifest(raw, quick(), progress=False)
    assert not audit["errors"] and audit["split"].endswith("from manifest.csv)")
    assert m.set_index("path").loc["Training/benign/nogroup.png", "group"] == "p1"
    kinds = {(f["kind"], f["path"]) for f in audit["findings"]}
    assert ("groups_file", "Training/benign/benign_p00_0.png") in kinds  # empty group


# Several masks per image (BUSI names one per lesion: <name>_mask.png, <name>_mask_1.png, ...)


def _blob(y: int, x: int, r: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (((yy - y) ** 2 + (xx - x) ** 2 <= r * r) * 255).astype(np.uint8)


def busi_dataset(root: Path) -> tuple[Path, list[np.ndarray]]:
    """simple_dataset with masks, where malignant_000 has three lesion masks and one image has
    a mask_1 of the wrong size, an orphan mask_1 and a mask_1 under two extensions."""
    simple_dataset(root, n_train=6, n_test=2, masks=True)
    tm = root / "Training" / "malignant"
    blobs = [_blob(20, 20), _blob(50, 70), _blob(75, 30)]
    save(tm / "malignant_000_mask.png", blobs[0])
    save(tm / "malignant_000_mask_1.png", blobs[1])
    save(tm / "malignant_000_mask_2.png", blobs[2])
    save(tm / "malignant_001_mask_1.png", np.zeros((SIZE // 2, SIZE), np.uint8))  # wrong size
    save(tm / "ghost_mask_1.png", blobs[1])  # no ghost.* image
    save(tm / "malignant_002_mask_1.png", blobs[1])
    save(tm / "malignant_002_mask_1.jpg", blobs[1])
    for k in (10, 2):  # numeric order: _mask, _mask_2, _mask_10
        save(tm / f"malignant_003_mask_{k}.png", _blob(10 + k, 40))
    return root, blobs


@pytest.fixture(scope="module")
def busi(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("busi")
    raw, blobs = busi_dataset(base / "raw")
    before = tree_digest(raw)
    manifest = D.prepare(raw, base / "processed", base / "reports", quick(),
                         progress=False)
    audit = json.loads((base / "reports" / "metrics" / "data_audit.json").read_text())
    return {"base": base, "raw": raw, "before": before, "manifest": manifest, "audit": audit,
            "blobs": blobs}


def test_busi_masks_are_joined_and_or_merged(busi):
    m, raw = busi["manifest"].set_index("path"), busi["raw"]
    t = "Training/malignant/malignant_000"
    assert m.loc[f"{t}.png", "mask"] == f"{t}_mask.png|{t}_mask_1.png|{t}_mask_2.png"
    assert m.loc[f"{t}.png", "status"] == "ok"
    merged = IMG.load_mask(raw, m.loc[f"{t}.png", "mask"], (SIZE, SIZE))
    expected = (busi["blobs"][0] > 0) | (busi["blobs"][1] > 0) | (busi["blobs"][2] > 0)
    assert np.array_equal(merged, expected) and merged.sum() > (busi["blobs"][0] > 0).sum()
    t3 = "Training/malignant/malignant_003"
    assert m.loc[f"{t3}.png", "mask"] == f"{t3}_mask.png|{t3}_mask_2.png|{t3}_mask_10.png"
    assert not m.index.str.contains("_mask").any()  # no mask became a row
    on_disk = MAN.load_manifest(busi["base"] / "processed" / "manifest.csv")
    assert on_disk.set_index("path").loc[f"{t}.png", "mask"] == m.loc[f"{t}.png", "mask"]


def test_busi_bad_and_orphan_masks_are_findings(busi):
    m, audit = busi["manifest"].set_index("path"), busi["audit"]
    found = {(f["kind"], f["path"]): f for f in audit["findings"]}
    t = "Training/malignant/"
    bad = found[("mask_size_mismatch", t + "malignant_001_mask_1.png")]
    assert bad["other_path"] == t + "malignant_001.png"
    row = m.loc[t + "malignant_001.png"]
    assert row["status"] == "warn" and row["mask"] == "" and "localisation" in row["reason"]
    unused = found[("orphan_mask", t + "malignant_001_mask.png")]  # good, but not enough alone
    assert "malignant_001_mask_1.png" in unused["reason"]
    assert "ghost" in found[("orphan_mask", t + "ghost_mask_1.png")]["reason"]
    second = found[("orphan_mask", t + "malignant_002_mask_1.jpg")]
    assert "second" in second["reason"] and "malignant_002_mask_1.png" in second["reason"]
    assert m.loc[t + "malignant_002.png", "mask"] == (
        f"{t}malignant_002_mask.png|{t}malignant_002_mask_1.png")
    assert tree_digest(busi["raw"]) == busi["before"]
    known = {p for cell in busi["manifest"]["mask"] for p in MAN.mask_paths(cell)}
    known |= set(busi["manifest"]["path"]) | {f["path"] for f in audit["findings"]}
    for p in busi["raw"].rglob("*"):
        assert not p.is_file() or p.relative_to(busi["raw"]).as_posix() in known, p


def test_load_mask_checks_every_part(busi):
    raw, t = busi["raw"], "Training/malignant/malignant_001"
    with pytest.raises(DataError, match="malignant_001_mask_1.png"):
        IMG.load_mask(raw, f"{t}_mask.png|{t}_mask_1.png", (SIZE, SIZE))
    assert IMG.load_mask(raw, f"{t}_mask.png", (SIZE, SIZE)).any()
    assert MAN.mask_paths("") == [] and MAN.mask_paths(float("nan")) == []
    assert MAN.mask_paths("a.png") == ["a.png"]
    assert MAN.mask_paths("a.png|b.png") == ["a.png", "b.png"]


def test_single_masks_keep_their_plain_manifest_value(tmp_path):
    """One <name>_mask.png per image (the phantom's layout): the column is the bare path."""
    raw = simple_dataset(tmp_path / "raw", masks=True)
    m = D.prepare(raw, tmp_path / "p", tmp_path / "r", quick(), progress=False)
    assert (m["mask"] == m["path"].str.replace(".png", "_mask.png", regex=False)).all()
    text = (tmp_path / "p" / "manifest.csv").read_text(encoding="utf-8")
    assert "|" not in text and ",Training/benign/benign_000_mask.png,ok," in text


def test_prepare_writes_the_confounder_audit(tmp_path: Path) -> None:
    """The audit runs on the usable images and lands in data_audit.json and data_audit.md."""
    from lib.tiny import tiny_dataset

    tiny = tiny_dataset(per_class=6, seed=5, workdir=tmp_path / "tiny")
    cfg = PrepareConfig(seed=5, confounder_permutations=20)
    manifest = prepare(tiny.raw_dir, tmp_path / "out", tmp_path / "reports", cfg, progress=False)
    audit = json.loads((tmp_path / "reports" / "metrics" / "data_audit.json").read_text())
    conf = audit["confounders"]
    assert conf["n_images"] == int((manifest["status"] != "excluded").sum())
    assert conf["permutations"] == 20 and conf["verdict"] == "no confounder found"
    assert "## Confounders" in (tmp_path / "reports" / "data_audit.md").read_text()
    skipped = prepare(tiny.raw_dir, tmp_path / "out2", tmp_path / "reports2",
                      quick(seed=5), progress=False)
    assert len(skipped) == len(manifest)
    assert json.loads((tmp_path / "reports2" / "metrics" / "data_audit.json").read_text()
                      )["confounders"] is None

