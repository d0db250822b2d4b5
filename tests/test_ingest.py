"""lib.ingest: real formats written in tmp_path, imported, and checked for a faithful round trip."""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from lib.data import ingest
from tests.conftest import REPO, run


def tree_hash(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def expected_8bit(x: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """The documented rule, written out again: 0.5th-99.5th percentile -> 0-255, clipped."""
    ref = x if ref is None else ref
    lo, hi = np.percentile(ref.astype(float), [0.5, 99.5])
    return np.rint(np.clip((x.astype(float) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)


def read_groups(out: Path) -> dict[str, str]:
    with (out / "groups.csv").open(newline="") as fh:
        return {r["file"]: r["group"] for r in csv.DictReader(fh)}


def assert_groups_disjoint(out: Path) -> dict[str, str]:
    groups = read_groups(out)
    splits: dict[str, set[str]] = {}
    for file, group in groups.items():
        assert (out / file).is_file(), file
        splits.setdefault(group, set()).add(file.split("/")[0])
    assert all(len(s) == 1 for s in splits.values()), splits
    return groups


# ----------------------------------------------------------------------------- figshare


def write_mat(path: Path, image: np.ndarray, label: int, pid: str, mask: np.ndarray) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte user block, column-major."""
    with h5py.File(path, "w", userblock_size=512) as f:
        cj = f.create_group("cjdata")
        cj["image"] = image.T.astype(np.int16)
        cj["label"] = np.array([[float(label)]])
        cj["PID"] = np.array([[ord(c) for c in pid]], dtype=np.uint16)
        cj["tumorMask"] = mask.T.astype(np.uint8)
        cj["tumorBorder"] = np.zeros((1, 4))


@pytest.fixture
def figshare_src(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple]]:
    rng = np.random.default_rng(0)
    src = tmp_path / "figshare"
    src.mkdir()
    truth = {}
    for i in range(8):
        image = rng.integers(-50, 3000, size=(12, 16)).astype(np.int16)  # not square: transpose
        mask = np.zeros((12, 16), np.uint8)
        mask[2:5, 3 + i % 5:9] = 1
        label, pid = 1 + i % 3, f"{100000 + i // 2}"  # two slices per patient
        write_mat(src / f"{i + 1}.mat", image, label, pid, mask)
        truth[f"figshare_{i + 1}"] = (image, mask, label, pid)
    (src / "999.mat").write_bytes(b"MATLAB 7.3 MAT-file, but truncated")
    healthy = tmp_path / "healthy"
    for subject in ("s1", "s2"):
        (healthy / subject).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(
            healthy / subject / "a.png")
    return src, healthy, truth


def test_figshare_round_trip_groups_and_idempotence(tmp_path, figshare_src, capsys) -> None:
    src, healthy, truth = figshare_src
    out = tmp_path / "raw"
    before = tree_hash(src), tree_hash(healthy)
    argv = ["figshare", str(src), "--out", str(out), "--healthy", str(healthy), "--seed", "3",
            "--test-fraction", "0.4"]
    result = ingest.main(argv)
    assert "skipped 1" in capsys.readouterr().out
    assert (tree_hash(src), tree_hash(healthy)) == before
    assert [s for s, _ in result.skipped] == [str(src / "999.mat")]
    assert "not a cjdata v7.3 .mat file" in result.skipped[0][1]
    groups = assert_groups_disjoint(out)
    assert {g for g in groups.values()} == {f"figshare:{100000 + i}" for i in range(4)} | {
        "healthy:s1", "healthy:s2"}
    assert len(groups) == 10 and set(result.groups) == {"Training", "Testing"}
    for name, (image, mask, label, pid) in truth.items():
        [png] = list(out.glob(f"*/*/{name}.png"))
        assert png.parent.name == ingest.FIGSHARE_LABELS[label]
        assert np.array_equal(read_png(png), expected_8bit(image))
        assert np.array_equal(read_png(png.with_name(f"{name}_mask.png")), mask * 255)
        assert groups[png.relative_to(out).as_posix()] == f"figshare:{pid}"
    assert len(list(out.glob("*/notumor/healthy_s*__a.png"))) == 2
    first = tree_hash(out)
    again = ingest.main(argv)
    assert again.written == 0 and again.unchanged == result.written
    assert tree_hash(out) == first


def test_figshare_refuses_conflicts_and_moves_with_overwrite(tmp_path, figshare_src) -> None:
    src, _, _ = figshare_src
    out = tmp_path / "raw"
    first = ingest.import_figshare(src, out, test_fraction=0.5, seed=1)
    assert any("no healthy" in w for w in first.warnings)
    with pytest.raises(ingest.IngestError, match="other split"):
        ingest.import_figshare(src, out, test_fraction=0.5, seed=2)
    moved = ingest.import_figshare(src, out, test_fraction=0.5, seed=2, overwrite=True)
    assert moved.removed > 0
    assert len(list(out.glob("*/*/figshare_?.png"))) == 8  # moved, not duplicated
    assert len(read_groups(out)) == 8
    assert_groups_disjoint(out)
    with pytest.raises(ingest.IngestError, match="overlap"):
        ingest.import_figshare(src, src / "raw")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ingest.IngestError, match="no importer wrote"):
        ingest.import_figshare(src, tmp_path / "other")


def test_assign_splits_is_deterministic_and_by_group() -> None:
    groups = [f"p{i}" for i in range(10)]
    a = ingest.assign_splits(reversed(groups), 0.2, seed=7)
    assert a == ingest.assign_splits(groups, 0.2, seed=7)
    assert sum(v == "Testing" for v in a.values()) == 2
    assert list(ingest.assign_splits(["x", "y"], 0.01, 0).values()).count("Testing") == 1


def test_assign_splits_is_stratified_by_class() -> None:
    """Every class with two or more groups gets test groups in its own share, even when an
    unstratified shuffle would leave one out; a group seen under two classes gets its first."""
    pairs = [(f"{c}{i}", c) for c, n in (("glioma", 12), ("meningioma", 3), ("notumor", 2))
             for i in range(n)] + [("glioma0", "notumor")]
    for seed in range(20):
        split = ingest.assign_splits(pairs, 0.25, seed)
        tested = {c: sum(split[g] == "Testing" for g, k in set(pairs) if k == c and
                         not (g == "glioma0" and k == "notumor")) for c in ("glioma",
                                                                           "meningioma",
                                                                           "notumor")}
        assert tested == {"glioma": 3, "meningioma": 1, "notumor": 1}, (seed, tested)
    ids = [f"p{i}" for i in range(10)]  # plain ids: one class, the rule as before
    order = np.random.default_rng(7).permutation(10)
    assert {g for g, v in ingest.assign_splits(ids, 0.2, 7).items() if v == "Testing"} == \
        {sorted(ids)[i] for i in order[:2]}


# ----------------------------------------------------------------------------- nifti


def test_nifti_slices_masks_channel_and_healthy_warning(tmp_path) -> None:
    rng = np.random.default_rng(1)
    src = tmp_path / "Task01_BrainTumour"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    volumes = {}
    for s in range(3):
        data = np.zeros((16, 12, 5, 2), np.float32)
        data[2:14, 1:11, :4, :] = rng.uniform(10, 500, size=(12, 10, 4, 2))  # z=4: no brain
        label = np.zeros((16, 12, 5), np.uint8)
        label[4:8, 3:6, 1] = 2      # 12 px / 120 brain px: tumour slice
        label[5:9, 2:4, 2] = 1      # 8 px: tumour slice
        label[6, 6, 3] = 3          # 1 px < 1 %: ambiguous, skipped
        nib.save(nib.Nifti1Image(data, np.eye(4)), src / "imagesTr" / f"BRATS_00{s}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), src / "labelsTr" / f"BRATS_00{s}.nii.gz")
        volumes[f"BRATS_00{s}"] = (data, label)
    (src / "imagesTr" / "BRATS_009.nii.gz").write_bytes(b"not gzip")
    (src / "labelsTr" / "BRATS_009.nii.gz").write_bytes(b"not gzip")
    (src / "imagesTr" / "._BRATS_000.nii.gz").write_bytes(b"macOS resource fork")
    before = tree_hash(src)
    out = tmp_path / "raw"
    result = ingest.import_nifti(src, out, "glioma", test_fraction=0.34, seed=0,
                                 healthy_slices=True, channel=1)
    assert tree_hash(src) == before
    assert any("shortcut" in w and "confounder audit" in w for w in result.warnings)
    reasons = {r for _, r in result.skipped}
    assert reasons == {"little or no brain in the slice", "tumour below --min-tumour-fraction",
                       "unreadable NIfTI: ImageFileError"}
    assert (str(src / "imagesTr" / "BRATS_009.nii.gz"), "unreadable NIfTI: ImageFileError") in \
        result.skipped
    assert sum(r == "tumour below --min-tumour-fraction" for _, r in result.skipped) == 3
    groups = assert_groups_disjoint(out)
    assert set(groups.values()) == {f"nifti:{s}" for s in volumes}
    for subject, (data, label) in volumes.items():
        brain = data[..., 1][data[..., 1] != 0]
        for z, cls in ((0, "notumor"), (1, "glioma"), (2, "glioma")):
            [png] = list(out.glob(f"*/{cls}/{subject}_z{z:03d}.png"))
            want = expected_8bit(np.rot90(data[:, :, z, 1]), brain)
            assert np.array_equal(read_png(png), want)
            mask = png.with_name(f"{subject}_z{z:03d}_mask.png")
            if cls == "glioma":
                assert np.array_equal(read_png(mask), np.rot90(label[:, :, z] > 0) * 255)
            else:
                assert not mask.exists()
    first = tree_hash(out)
    again = ingest.import_nifti(src, out, "glioma", test_fraction=0.34, seed=0,
                                healthy_slices=True, channel=1)
    assert again.written == 0 and tree_hash(out) == first
    plain = ingest.import_nifti(src, tmp_path / "raw2", "glioma")
    assert "notumor" not in plain.images.get("Training", {})
    assert any(r.startswith("no tumour") for _, r in plain.skipped)


# ----------------------------------------------------------------------------- dicom


def write_dcm(path: Path, pixels: np.ndarray | None, patient: str | None, **tags) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    if patient is not None:
        ds.PatientID = patient
    for key, value in tags.items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = tags.get("PhotometricInterpretation", "MONOCHROME2")
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = pixels.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_dicom_windowing_groups_and_skips_via_cli(tmp_path) -> None:
    rng = np.random.default_rng(2)
    src = tmp_path / "dicom"
    px = {name: rng.integers(-100, 1200, size=(8, 10)).astype(np.int16)
          for name in ("a", "b", "c", "d", "e")}
    write_dcm(src / "glioma" / "pat1" / "a.dcm", px["a"], "P1",
              WindowCenter=[300, 40], WindowWidth=[600, 80])
    write_dcm(src / "glioma" / "pat2" / "b.dcm", px["b"], "P2",
              RescaleSlope=2, RescaleIntercept=-10, WindowCenter=500, WindowWidth=1000)
    write_dcm(src / "notumor" / "c.dcm", px["c"], "P3")
    write_dcm(src / "notumor" / "d.dcm", px["d"], None, StudyInstanceUID="1.2.3")
    write_dcm(src / "pituitary" / "report.dcm", None, "P4")
    write_dcm(src / "pituitary" / "E.DCM", px["e"], "P5", PhotometricInterpretation="MONOCHROME1")
    (src / "meningioma").mkdir()
    (src / "meningioma" / "broken.dcm").write_bytes(b"\0" * 50)
    (src / "other").mkdir()
    (src / "other" / "x.dcm").write_bytes(b"")
    before = tree_hash(src)
    out = tmp_path / "raw"
    cmd = [sys.executable, "-m", "lib.data.ingest", "dicom", str(src), "--out", str(out),
           "--seed", "5", "--test-fraction", "0.5"]
    proc = run(cmd, cwd=REPO)
    assert "no pixel data" in proc.stdout and "unreadable DICOM" in proc.stdout
    assert tree_hash(src) == before
    groups = assert_groups_disjoint(out)
    assert sorted(groups.values()) == ["dicom:1.2.3", "dicom:P1", "dicom:P2", "dicom:P3",
                                       "dicom:P5"]
    want = {  # first of the multi-valued window: [300 - 600/2, 300 + 600/2] -> 0-255
        "glioma/pat1__a": np.rint(np.clip((px["a"] - 0.0) / 600, 0, 1) * 255),
        # modality value 2 * x - 10, window [500 - 1000/2, 500 + 1000/2]
        "glioma/pat2__b": np.rint(np.clip((px["b"] * 2.0 - 10 - 0.0) / 1000, 0, 1) * 255),
        "notumor/c": expected_8bit(px["c"]),
        "notumor/d": expected_8bit(px["d"]),
        "pituitary/E": 255 - expected_8bit(px["e"]),  # MONOCHROME1: high values are dark
    }
    for name, pixels in want.items():
        [png] = list(out.glob(f"*/{name}.png"))
        assert np.array_equal(read_png(png), pixels.astype(np.uint8)), name
    assert not list(out.glob("*/*/*_mask.png"))
    first = tree_hash(out)
    run(cmd, cwd=REPO)
    assert tree_hash(out) == first
    result = ingest.import_dicom(src, out, test_fraction=0.5, seed=5)
    skipped = dict(result.skipped)
    assert skipped[str(src / "pituitary" / "report.dcm")] == "no pixel data"
    assert skipped[str(src / "meningioma" / "broken.dcm")].startswith("unreadable DICOM")
    assert "not a class" in skipped[str(src / "other")]
    assert result.written == 0


def test_two_importers_share_one_out_folder(tmp_path, figshare_src) -> None:
    src, _, _ = figshare_src
    healthy = tmp_path / "dicom"
    for i in range(2):  # a gradient: a constant slice is skipped as "no signal" (issue 23)
        pixels = (np.arange(36).reshape(6, 6) * (i + 1)).astype(np.int16)
        write_dcm(healthy / "notumor" / f"h{i}.dcm", pixels, f"H{i}")
    out = tmp_path / "raw"
    ingest.import_figshare(src, out, seed=4)
    ingest.import_dicom(healthy, out, seed=4)
    first = tree_hash(out)
    assert {g.split(":")[0] for g in assert_groups_disjoint(out).values()} == {"figshare", "dicom"}
    assert ingest.import_figshare(src, out, seed=4).written == 0
    assert tree_hash(out) == first


# ----------------------------------------------------------------------------- to the explanations


def test_an_imported_set_reaches_the_explanation_scores(tmp_path) -> None:
    """figshare (.mat, masks, patients) + healthy PNGs -> import -> prepare -> explain's scores.

    The phantom's tumour slices and masks are written as MATLAB v7.3 files, two slices per
    patient; the split is by patient, every tumour image keeps its mask, and the explanation
    scores are computed on the imported masks (the healthy-twin control says why it is skipped).
    """
    from lib.data.manifest import load_manifest
    from lib.data.phantom import PhantomConfig, generate
    from lib.data.prepare import PrepareConfig, prepare
    from lib.explain import study as es
    from tests.test_explain import small_config, untrained_model

    phantom = tmp_path / "phantom"
    generate(PhantomConfig(seed=5, n_train_per_class=6, n_test_per_class=3, image_size=64),
             phantom, progress=False)
    src, healthy = tmp_path / "figshare", tmp_path / "healthy"
    src.mkdir()
    codes = {name: code for code, name in ingest.FIGSHARE_LABELS.items()}
    scans = sorted(p for p in phantom.rglob("*.png") if not p.stem.endswith("_mask"))
    n = 0
    for path in scans:
        cls = path.parent.name
        pixels = read_png(path).astype(np.int16) * 4
        if cls == "notumor":
            (healthy / f"s{n // 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(read_png(path)).save(healthy / f"s{n // 2}" / path.name)
        else:
            mask = read_png(path.with_name(path.stem + "_mask.png")) > 0
            write_mat(src / f"{n + 1}.mat", pixels, codes[cls], f"{700 + n // 2}", mask)
        n += 1
    out = tmp_path / "raw"
    result = ingest.import_figshare(src, out, test_fraction=0.3, seed=1, healthy=healthy)
    assert not result.skipped
    prepare(out, tmp_path / "processed", tmp_path / "reports",
            PrepareConfig(seed=0, confounder_permutations=0), progress=False)
    manifest = load_manifest(tmp_path / "processed" / "manifest.csv")
    assert len(manifest) == len(scans) and "group" in manifest.columns
    tumour = manifest[manifest["class"] != "notumor"]
    assert (tumour["mask"] != "").all() and tumour["mask"].notna().all()
    assert manifest.groupby("group")["source_split"].nunique().max() == 1  # split by patient

    test = es.SplitImages.load(tmp_path / "processed" / "manifest.csv", out, 6, 0)
    twins, reason = es.healthy_twins(test, None)
    assert twins is None and reason
    res = es.explain_model(untrained_model(), "scratch_tiny_s0", test, small_config(), twins,
                           reason)
    n_tumour = int((test.frame["class"] != "notumor").sum())
    assert n_tumour > 0
    gradcam = res.metrics["localisation"]["gradcam"]
    assert gradcam["n"] == n_tumour
    assert 0 <= gradcam["energy_in_mask"]["value"] <= 1
    assert res.metrics["shortcut"] == {"skipped": reason}  # no twins for imported data: says why
