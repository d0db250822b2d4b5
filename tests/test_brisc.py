"""lib.data.brisc: a tiny BRISC 2025 tree in its real layout (JPEG slices, PNG masks), imported."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.data import brisc, ingest
from lib.splits import TESTING, TRAINING

SHAPE = (40, 48)  # rows, columns: not square, so a transpose would show; >= prepare's min_side
CODES = {"glioma": "gl", "meningioma": "me", "pituitary": "pi", "no_tumor": "no"}
PLANE_CODES = ("ax", "co", "sa")
N_PER_SPLIT = {"train": 3, "test": 2}


def tree_hash(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def smooth(seed: int) -> np.ndarray:
    """A distinct smooth grey slice (distinct pHash per seed, like tests/test_data.py's)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize(SHAPE[::-1], Image.Resampling.BICUBIC))


def jpeg_bytes(grey: np.ndarray, colour: bool = False) -> bytes:
    """An RGB JPEG as BRISC ships them: a grey scan in three equal channels (or truly colour)."""
    rgb = np.stack([grey] * 3, axis=2)
    if colour:
        rgb[..., 0] = 255 - grey
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def stem(split: str, index: int, folder: str, plane: str) -> str:
    return f"brisc2025_{split}_{index:05d}_{CODES.get(folder, 'xx')}_{plane}_t1"


def add_image(src: Path, split: str, folder: str, name: str, data: bytes,
              mask: np.ndarray | None = None) -> Path:
    """A classification JPEG, and for a mask its segmentation image and PNG mask (0/255)."""
    path = src / "classification_task" / split / folder / f"{name}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mask is not None:
        seg = src / "segmentation_task" / split
        (seg / "images").mkdir(parents=True, exist_ok=True)
        (seg / "masks").mkdir(parents=True, exist_ok=True)
        (seg / "images" / f"{name}.jpg").write_bytes(data)
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(seg / "masks" / f"{name}.png")
    return path


def tumour_mask(seed: int) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[5 + seed % 7: 15 + seed % 7, 10: 22 + seed % 5] = True
    return mask


@pytest.fixture
def brisc_src(tmp_path: Path) -> tuple[Path, dict[str, tuple[str, str, str, np.ndarray | None]]]:
    """BRISC's layout: every tumour image has a mask, no_tumor images have none.

    Returns SRC and stem -> (split folder, class, plane, mask).
    """
    src = tmp_path / "BRISC2025"
    truth = {}
    seed = 0
    for split, n in N_PER_SPLIT.items():
        for folder in CODES:
            for _ in range(n):
                plane = PLANE_CODES[seed % 3]
                name = stem(split, seed, folder, plane)
                mask = None if folder == "no_tumor" else tumour_mask(seed)
                add_image(src, split, folder, name, jpeg_bytes(smooth(seed)), mask)
                truth[name] = (split, brisc.CLASS_FOLDERS[folder], plane, mask)
                seed += 1
    return src, truth


def read_csv(path: Path, key: str, value: str) -> dict[str, str]:
    with path.open(newline="") as fh:
        return {r[key]: r[value] for r in csv.DictReader(fh)}


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)


def expected_grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


# ----------------------------------------------------------------------------- the good case


def test_classes_split_planes_and_masks_round_trip(tmp_path, brisc_src) -> None:
    src, truth = brisc_src
    out = tmp_path / "raw"
    result = brisc.import_brisc(src, out)
    assert result.skipped == []
    assert set(brisc.CLASS_FOLDERS.values()) == set(ingest.CLASSES)
    assert result.images == {TRAINING: {c: 3 for c in ingest.CLASSES},
                             TESTING: {c: 2 for c in ingest.CLASSES}}
    assert result.groups == {TRAINING: 12, TESTING: 8}
    groups = read_csv(out / "groups.csv", "file", "group")
    planes = read_csv(out / brisc.METADATA_CSV, "path", "plane")
    assert set(groups) == set(planes) and len(groups) == len(truth)
    for name, (split, cls, plane, mask) in truth.items():
        rel = f"{brisc.SPLIT_FOLDERS[split]}/{cls}/{name}.png"
        assert groups[rel] == f"brisc:{name}"  # each image its own group: no patient ids
        assert planes[rel] == brisc.PLANES[plane]
        jpg = src / "classification_task" / split / [f for f, c in brisc.CLASS_FOLDERS.items()
                                                     if c == cls][0] / f"{name}.jpg"
        assert np.array_equal(read_png(out / rel), expected_grey(jpg))
        mask_png = out / rel.replace(".png", "_mask.png")
        if mask is None:
            assert not mask_png.exists()
        else:
            assert np.array_equal(read_png(mask_png), np.where(mask, 255, 0))
    assert not (out / TRAINING / "no_tumor").exists()
    assert any("no patient ids" in w for w in result.warnings)
    assert not any("colour" in w or "no mask" in w for w in result.warnings)


def test_rerun_is_idempotent_merges_csvs_and_leaves_the_source_untouched(tmp_path,
                                                                        brisc_src) -> None:
    src, truth = brisc_src
    before = tree_hash(src)
    out = tmp_path / "raw"
    (out / TRAINING).mkdir(parents=True)
    (out / "groups.csv").write_text("file,group\nTraining/glioma/other.png,figshare:9\n")
    (out / brisc.METADATA_CSV).write_text("path,plane\nTraining/glioma/other.png,axial\n")
    first = brisc.import_brisc(src, out)
    n_files = len(truth) + sum(m is not None for *_, m in truth.values())
    assert first.written == n_files and first.unchanged == 0
    snapshot = tree_hash(out)
    again = brisc.import_brisc(src, out)
    assert again.written == 0 and again.unchanged == n_files
    assert tree_hash(out) == snapshot and tree_hash(src) == before
    assert read_csv(out / "groups.csv", "file", "group")["Training/glioma/other.png"] == \
        "figshare:9"
    assert read_csv(out / brisc.METADATA_CSV, "path", "plane")["Training/glioma/other.png"] == \
        "axial"
    lines = (out / brisc.METADATA_CSV).read_text().splitlines()
    assert lines[0] == "path,plane" and lines[1:] == sorted(lines[1:])


def test_refuses_overlap_and_foreign_out_folders(tmp_path, brisc_src) -> None:
    src, _ = brisc_src
    before = tree_hash(src)
    with pytest.raises(ingest.IngestError, match="overlap"):
        brisc.import_brisc(src, src / "raw")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ingest.IngestError, match="no importer wrote"):
        brisc.import_brisc(src, foreign)
    with pytest.raises(ingest.IngestError, match="classification_task"):
        brisc.import_brisc(src / "segmentation_task", tmp_path / "raw")
    assert tree_hash(src) == before


def test_resplit_is_seeded_stratified_and_moves_only_with_overwrite(tmp_path,
                                                                    brisc_src) -> None:
    src, truth = brisc_src
    a, b = tmp_path / "a", tmp_path / "b"
    brisc.import_brisc(src, a, resplit=True, test_fraction=0.4, seed=1)
    brisc.import_brisc(src, b, resplit=True, test_fraction=0.4, seed=1)
    assert tree_hash(a) == tree_hash(b)
    groups = read_csv(a / "groups.csv", "file", "group")
    wanted = ingest.assign_splits([(f"brisc:{n}", c) for n, (_, c, _, _) in truth.items()],
                                  0.4, 1)
    assert {g: f.split("/")[0] for f, g in groups.items()} == wanted
    for cls in ingest.CLASSES:  # 5 images per class: round(0.4 * 5) = 2 in Testing
        assert sum(f.startswith(f"{TESTING}/{cls}/") for f in groups) == 2

    seed = next(s for s in range(2, 50) if ingest.assign_splits(
        [(f"brisc:{n}", c) for n, (_, c, _, _) in truth.items()], 0.4, s) != wanted)
    with pytest.raises(ingest.IngestError, match="other split"):
        brisc.import_brisc(src, a, resplit=True, test_fraction=0.4, seed=seed)
    moved = brisc.import_brisc(src, a, resplit=True, test_fraction=0.4, seed=seed,
                               overwrite=True)
    assert moved.removed > 0
    groups = read_csv(a / "groups.csv", "file", "group")
    planes = read_csv(a / brisc.METADATA_CSV, "path", "plane")
    assert set(planes) == set(groups) and len(groups) == len(truth)
    assert all((a / f).is_file() for f in groups)
    assert len(list(a.rglob("*.png"))) == len(tree_hash(b)) - 2  # no copy left behind


# ----------------------------------------------------------------------------- bad cases


def test_every_bad_case_is_a_reported_skip_with_its_reason(tmp_path, brisc_src) -> None:
    src, _ = brisc_src
    bad = {
        add_image(src, "train", "glioma", stem("train", 90, "glioma", "ax"),
                  jpeg_bytes(smooth(90)), np.ones((SHAPE[0] + 2, SHAPE[1]), bool)):
            "differ in size",
        add_image(src, "train", "no_tumor", stem("train", 91, "no_tumor", "ax"),
                  jpeg_bytes(smooth(91)), tumour_mask(1)): "no_tumor image with a non-empty mask",
        add_image(src, "test", "pituitary", stem("test", 92, "pituitary", "tr"),
                  jpeg_bytes(smooth(92))): "unknown plane code 'tr'",
        add_image(src, "test", "pituitary", stem("test", 93, "glioma", "ax"),
                  jpeg_bytes(smooth(93))): "disagrees with the folder",
        add_image(src, "test", "pituitary", "scan_0094", jpeg_bytes(smooth(94))):
            "does not end in _<class>_<plane>_t1",
        add_image(src, "train", "meningioma", stem("train", 95, "meningioma", "co"),
                  b"\xff\xd8\xff\xe0 truncated"): "unreadable image",
        add_image(src, "train", "astrocytoma", "brisc2025_train_00096_as_ax_t1",
                  jpeg_bytes(smooth(96))).parent: "not a class folder",
    }
    notes = src / "classification_task" / "train" / "glioma" / "notes.txt"
    notes.write_text("not an image")
    bad[notes] = "not a .jpg file"
    orphan = src / "segmentation_task" / "test" / "masks" / "brisc2025_test_00097_gl_ax_t1.png"
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(orphan)
    bad[orphan] = "mask without a classification image"
    no_mask = add_image(src, "train", "glioma", stem("train", 98, "glioma", "sa"),
                        jpeg_bytes(smooth(98)))
    colour = add_image(src, "test", "glioma", stem("test", 99, "glioma", "ax"),
                       jpeg_bytes(smooth(99), colour=True), tumour_mask(3))
    colour2 = add_image(src, "test", "glioma", stem("test", 100, "glioma", "co"),
                        jpeg_bytes(smooth(100), colour=True), tumour_mask(4))
    before = tree_hash(src)

    out = tmp_path / "raw"
    result = brisc.import_brisc(src, out)
    skipped = dict(result.skipped)
    assert set(skipped) == {str(p) for p in bad}, result.summary()
    for path, reason in bad.items():
        assert reason in skipped[str(path)], (path, skipped[str(path)])
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    skipped_stems = {p.stem for p in bad if p.suffix == ".jpg"}
    assert not {Path(w).stem.removesuffix("_mask") for w in written} & skipped_stems
    assert f"{TRAINING}/glioma/{no_mask.stem}.png" in written
    assert f"{TRAINING}/glioma/{no_mask.stem}_mask.png" not in written
    assert f"{TESTING}/glioma/{colour.stem}_mask.png" in written
    assert np.array_equal(read_png(out / TESTING / "glioma" / f"{colour.stem}.png"),
                          expected_grey(colour))
    [no_mask_warning] = [w for w in result.warnings if "have no mask" in w]
    assert no_mask_warning.startswith("1 tumour image(s)")
    [colour_warning] = [w for w in result.warnings if "colour" in w]  # once, counted
    assert colour_warning.startswith("2 image(s)") and str(colour2) not in colour_warning
    summary = result.summary()
    assert "skipped 9:" in summary and "differ in size" in summary
    assert tree_hash(src) == before


# ----------------------------------------------------------------------------- duplicates


def test_cross_split_duplicates_are_kept_and_prepare_finds_them(tmp_path, brisc_src) -> None:
    from lib.data.prepare import AUDIT_JSON, PrepareConfig, prepare

    src, _ = brisc_src
    data = jpeg_bytes(smooth(500))
    first = add_image(src, "train", "glioma", stem("train", 500, "glioma", "ax"), data,
                      tumour_mask(5))
    copy = add_image(src, "test", "glioma", stem("test", 501, "glioma", "ax"), data,
                     tumour_mask(5))
    out = tmp_path / "raw"
    result = brisc.import_brisc(src, out)
    assert result.skipped == []
    train_rel = f"{TRAINING}/glioma/{first.stem}.png"
    test_rel = f"{TESTING}/glioma/{copy.stem}.png"
    assert (out / train_rel).read_bytes() == (out / test_rel).read_bytes()  # both kept

    prepare(out, tmp_path / "processed", tmp_path / "reports",
            PrepareConfig(seed=0, confounder_permutations=0), progress=False)
    audit = json.loads((tmp_path / "reports" / AUDIT_JSON).read_text())
    [dup] = [f for f in audit["findings"] if f["kind"] == "duplicate_exact_cross_split"]
    assert {dup["path"], dup["other_path"]} == {train_rel, test_rel}
    assert audit["duplicates"]["exact_duplicate_pairs"] == 1
    # prepare does not know metadata.csv yet: it is reported as a stray top-level file
    stray = [f for f in audit["findings"] if f["kind"] == "stray_file"]
    assert [f["path"] for f in stray] == [brisc.METADATA_CSV]


# ----------------------------------------------------------------------------- CLI


def test_cli_prints_the_summary_and_exits_2_on_an_ingest_error(tmp_path, brisc_src,
                                                                capsys) -> None:
    src, truth = brisc_src
    out = tmp_path / "raw"
    result = ingest.main(["brisc", str(src), "--out", str(out), "--resplit",
                          "--test-fraction", "0.4", "--seed", "3"])
    printed = capsys.readouterr().out
    assert printed.strip() == result.summary()
    assert printed.startswith(f"brisc -> {out}: {result.written} file(s) written")
    assert sum(sum(v.values()) for v in result.images.values()) == len(truth)
    with pytest.raises(SystemExit) as exc:
        ingest.main(["brisc", str(src), "--out", str(src / "inside")])
    assert exc.value.code == 2
    assert "overlap" in capsys.readouterr().err
