"""Issue 23: bad numbers that never become images, DICOM as scanners write it, blank images.

Every case is a file in its real format (.mat v7.3 via h5py, NIfTI via nibabel, DICOM via
pydicom) written in tmp_path and imported; each test fails on the importer before the issue
(NaN slices and constant slices written as black PNGs, DICOM found by name only, one frame only).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from lib.data import images as IMG
from lib.data import ingest
from lib.data.audit import FINDING_KINDS, inspect_image
from lib.data.prepare import PrepareConfig, prepare
from tests.test_data import save, simple_dataset, smooth
from tests.test_ingest import expected_8bit, read_groups, read_png, tree_hash, write_dcm

BLANK = "no signal: every pixel has the same value (a blank slice)"
FLAT = ("no signal: after windowing its 1st-99th percentiles lie less than 8 grey levels apart "
        "(a blank or near-constant slice)")


def strictly(call: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run an import with every warning an error: no numpy 'invalid value encountered in cast'."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call(*args, **kw)


def expected_finite(x: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """The documented rule on finite values: percentiles of the finite reference, NaN/inf -> 0."""
    ref = x if ref is None else ref
    finite = np.isfinite(x)
    out = expected_8bit(np.where(finite, x, 0.0), ref[np.isfinite(ref)])
    out[~finite] = 0
    return out


def skipped(result: ingest.IngestResult) -> dict[str, str]:
    return dict(result.skipped)


# ----------------------------------------------------------------------------- windowing


def test_window_helpers_leave_nan_out_and_never_warn() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1000, (10, 12))
    x[2, :] = np.nan
    x[5, 3], x[6, 4] = np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = IMG.window_percentile(x)
        dicom = IMG.window_dicom(x, 500, 400)
        assert IMG.window_percentile(np.full((3, 3), np.nan)).tolist() == [[0] * 3] * 3
    assert np.array_equal(got, expected_finite(x))
    assert (dicom[~np.isfinite(x)] == 0).all() and dicom.max() == 255
    assert IMG.nonfinite_count(x) == 14 and IMG.nonfinite_count(np.ones(3, np.int64)) == 0
    assert IMG.percentile_bounds(np.array([np.nan, np.inf])) is None
    assert IMG.dynamic_range(np.full((4, 4), 7, np.uint8)) == 0


def test_monochrome1_nan_is_background_after_inversion() -> None:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME1"
    raw = np.arange(20, dtype=np.float32).reshape(4, 5)
    raw[1, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = IMG.dicom_to_uint8(ds, raw)
    assert pixels[1, 1] == 0  # background, not 255 - 0 = white
    assert pixels[0, 0] == 255  # the lowest value is white in MONOCHROME1, shown inverted


# ----------------------------------------------------------------------------- figshare


def write_cjdata(path: Path, image: np.ndarray, label: int = 1, pid: str = "100",
                 mask: np.ndarray | None = None, drop: tuple[str, ...] = ()) -> None:
    """A MATLAB v7.3 cjdata file with a float (double) image, as MATLAB saves one; `drop`
    leaves fields out."""
    mask = np.zeros(image.shape, np.uint8) if mask is None else mask
    fields = {"image": image.T.astype(np.float64), "label": np.array([[float(label)]]),
              "PID": np.array([[ord(c) for c in pid]], dtype=np.uint16),
              "tumorMask": mask.T.astype(np.uint8), "tumorBorder": np.zeros((1, 4))}
    with h5py.File(path, "w", userblock_size=512) as f:
        cj = f.create_group("cjdata")
        for key, value in fields.items():
            if key not in drop:
                cj[key] = value


@pytest.fixture
def bad_figshare(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    src = tmp_path / "figshare"
    src.mkdir()
    images = {f"ok{i}": rng.uniform(0, 3000, (12, 16)) for i in range(2)}
    images["nan_rows"] = rng.uniform(0, 3000, (12, 16))
    images["nan_rows"][[0, 5, 11], :] = np.nan  # 3 of 12 rows: 25 %, written
    images["nan_rows"][3, 3] = np.inf
    images["mostly_nan"] = rng.uniform(0, 3000, (12, 16))
    images["mostly_nan"][:7, :] = np.nan  # 7 of 12 rows: 58 %
    images["zeros"] = np.zeros((12, 16))
    images["flat"] = np.full((12, 16), 1000.0)
    images["flat"][0, 0] = 4000.0  # one outlier: a 0.5-99.5 % window of 1000..1000, all black
    for i, (name, image) in enumerate(images.items()):
        write_cjdata(src / f"{name}.mat", image, label=1 + i % 3, pid=f"{200 + i}")
    write_cjdata(src / "no_mask.mat", images["ok0"], drop=("tumorMask",))
    write_cjdata(src / "no_label_mask.mat", images["ok0"], drop=("label", "tumorMask"))
    with h5py.File(src / "other.mat", "w", userblock_size=512) as f:
        f["x"] = np.zeros(3)
    return src, images


def test_figshare_nan_rows_are_background_and_recorded(tmp_path, bad_figshare) -> None:
    src, images = bad_figshare
    out = tmp_path / "raw"
    result = strictly(ingest.import_figshare, src, out, test_fraction=0.0)
    [png] = list(out.glob("*/*/figshare_nan_rows.png"))
    x = images["nan_rows"]
    assert np.array_equal(read_png(png), expected_finite(x))
    assert (read_png(png)[[0, 5, 11], :] == 0).all() and read_png(png).max() == 255
    [warning] = [w for w in result.warnings if "nan_rows" in w]
    assert "49 NaN or infinite pixel(s)" in warning and "set to 0 (background)" in warning
    for name in ("ok0", "ok1"):  # normal files: the rule as before, byte for byte
        [png] = list(out.glob(f"*/*/figshare_{name}.png"))
        assert np.array_equal(read_png(png), expected_8bit(images[name]))
    assert not [w for w in result.warnings if "ok0" in w or "ok1" in w]


def test_figshare_bad_slices_and_missing_fields_are_skipped_with_reasons(tmp_path,
                                                                         bad_figshare) -> None:
    src, _ = bad_figshare
    out = tmp_path / "raw"
    result = strictly(ingest.import_figshare, src, out, test_fraction=0.0)
    why = skipped(result)
    assert why[str(src / "mostly_nan.mat")].startswith(
        "more than 50% of its pixels are NaN or infinite: not an image")
    assert why[str(src / "zeros.mat")] == BLANK
    assert why[str(src / "flat.mat")] == FLAT
    assert why[str(src / "no_mask.mat")].startswith("cjdata has no 'tumorMask' field")
    assert why[str(src / "no_label_mask.mat")].startswith(
        "cjdata has no 'label', 'tumorMask' fields")
    assert why[str(src / "other.mat")].startswith("no 'cjdata' group")
    assert not any("KeyError" in r for r in why.values())
    written = {p.stem for p in out.glob("*/*/*.png") if not p.stem.endswith("_mask")}
    assert written == {"figshare_ok0", "figshare_ok1", "figshare_nan_rows"}
    for png in out.glob("*/*/*.png"):  # nothing black is written as an image
        if not png.stem.endswith("_mask"):
            assert IMG.dynamic_range(read_png(png)) >= IMG.MIN_DYNAMIC_RANGE


def test_blank_healthy_images_are_skipped(tmp_path, bad_figshare) -> None:
    src, _ = bad_figshare
    healthy = tmp_path / "healthy"
    save(healthy / "s1" / "ok.png", smooth(1, 40))
    save(healthy / "s2" / "black.png", np.zeros((40, 40), np.uint8))
    result = ingest.import_figshare(src, tmp_path / "raw", test_fraction=0.0, healthy=healthy)
    assert skipped(result)[str(healthy / "s2" / "black.png")].startswith("no signal")
    assert [p.name for p in (tmp_path / "raw").glob("*/notumor/*.png")] == ["healthy_s1__ok.png"]


# ----------------------------------------------------------------------------- nifti


def test_nifti_nan_voxels_are_left_out_and_bad_slices_skipped(tmp_path) -> None:
    rng = np.random.default_rng(4)
    src = tmp_path / "nifti"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    data = np.zeros((16, 12, 5), np.float32)
    data[2:14, 1:11, :] = rng.uniform(10, 500, size=(12, 10, 5))
    data[3, 2, 1], data[4, 2, 1], data[5, 5, 1] = np.nan, np.nan, np.inf  # z=1: 3 bad voxels
    data[:, :, 2] = np.nan  # z=2: nothing but NaN
    data[:, :, 3] = 250.0  # z=3: "brain" everywhere, but constant
    label = np.zeros((16, 12, 5), np.uint8)
    label[6:10, 4:8, :] = 1  # tumour in every slice
    nib.save(nib.Nifti1Image(data, np.eye(4)), src / "imagesTr" / "S1.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), src / "labelsTr" / "S1.nii.gz")
    out = tmp_path / "raw"
    result = strictly(ingest.import_nifti, src, out, "glioma", test_fraction=0.0)
    why = skipped(result)
    volume = str(src / "imagesTr" / "S1.nii.gz")
    assert why[f"{volume}#z=2"].startswith("more than 50% of its pixels are NaN or infinite")
    assert why[f"{volume}#z=3"] == BLANK
    assert len(why) == 2
    brain = data[(data != 0) & np.isfinite(data)]  # the window: finite brain voxels only
    for z in (0, 1, 4):
        [png] = list(out.glob(f"*/glioma/S1_z{z:03d}.png"))
        assert np.array_equal(read_png(png), expected_finite(np.rot90(data[:, :, z]), brain))
    assert result.warnings == [f"{volume}: 3 NaN or infinite pixel(s) in 1 written slice(s) "
                               "left out of the window and set to 0 (background)"]


# ----------------------------------------------------------------------------- dicom


def write_raw_dcm(path: Path, pixels: np.ndarray, patient: str) -> None:
    """An implicit-VR DICOM data set without preamble or file meta (old scanners, ACR-NEMA)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientID = patient
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, implicit_vr=True, little_endian=True)


def write_meta_only(path: Path, sop_class: str, **tags: Any) -> None:
    """A Part 10 file of any SOP class (a DICOMDIR here), with the DICM preamble."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    for key, value in tags.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_dicom_is_recognised_by_content_not_by_name(tmp_path) -> None:
    rng = np.random.default_rng(5)
    src = tmp_path / "dicom"
    px = {k: rng.integers(0, 1000, size=(8, 10)).astype(np.int16) for k in "abcd"}
    g = src / "glioma"
    write_dcm(g / "series1" / "IM0001", px["a"], "P1")
    write_dcm(g / "1.2.840.113619.2.55.3.604688119", px["b"], "P2")
    write_raw_dcm(g / "old.dcm", px["c"], "P3")  # no preamble: tried with force, imported
    write_dcm(g / "._IM0001", px["d"], "P4")  # hidden: a macOS resource fork's name
    write_dcm(g / ".trash" / "IM0009", px["d"], "P4")
    write_meta_only(g / "DICOMDIR", "1.2.840.10008.1.3.10", DirectoryRecordSequence=[])
    write_meta_only(g / "index.dcm", "1.2.840.10008.1.3.10", DirectoryRecordSequence=[])
    (g / "notes.txt").write_text("series notes")
    (g / "IM0002").write_bytes(b"\0" * 300)  # no suffix, no preamble
    (g / "junk.dcm").write_bytes(b"hello world, not a data set" * 4)  # forced read: no image
    before = tree_hash(src)
    out = tmp_path / "raw"
    result = strictly(ingest.import_dicom, src, out, test_fraction=0.0)
    assert tree_hash(src) == before
    names = sorted(p.name for p in out.glob("*/glioma/*.png"))
    assert names == ["1.2.840.113619.2.55.3.604688119.png", "old.png", "series1__IM0001.png"]
    for name, key in (("series1__IM0001", "a"), ("1.2.840.113619.2.55.3.604688119", "b"),
                      ("old", "c")):
        assert np.array_equal(read_png(out / "Training" / "glioma" / f"{name}.png"),
                              expected_8bit(px[key]))
    assert set(read_groups(out).values()) == {"dicom:P1", "dicom:P2", "dicom:P3"}
    why = skipped(result)
    assert why[str(g / "._IM0001")].startswith("hidden file or folder")
    assert why[str(g / ".trash" / "IM0009")].startswith("hidden file or folder")
    for dicomdir in ("DICOMDIR", "index.dcm"):  # by name, and by its SOP class
        assert "directory index" in why[str(g / dicomdir)]
        assert "imported from their own files" in why[str(g / dicomdir)]
    assert why[str(g / "notes.txt")] == "not a DICOM file (no DICM preamble)"
    assert why[str(g / "IM0002")] == "not a DICOM file (no DICM preamble)"
    assert why[str(g / "junk.dcm")].startswith("unreadable DICOM: no DICM preamble")
    assert len(why) == 7


def test_dicom_blank_and_nan_slices_are_skipped_or_repaired(tmp_path) -> None:
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(6)
    src = tmp_path / "dicom"
    ok = rng.integers(0, 1000, size=(8, 10)).astype(np.int16)
    write_dcm(src / "notumor" / "ok.dcm", ok, "P1")
    write_dcm(src / "notumor" / "zero.dcm", np.zeros((8, 10), np.int16), "P2")
    write_dcm(src / "notumor" / "dark.dcm", ok, "P3", WindowCenter=5000, WindowWidth=100)
    floats = rng.uniform(0, 100, (8, 10)).astype(np.float32)
    floats[0, :4] = np.nan
    write_meta_only(src / "notumor" / "float.dcm", "1.2.840.10008.5.1.4.1.1.30",
                    SOPInstanceUID=generate_uid(), PatientID="P4", Rows=8, Columns=10,
                    SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
                    BitsAllocated=32, FloatPixelData=floats.astype("<f4").tobytes())
    out = tmp_path / "raw"
    result = strictly(ingest.import_dicom, src, out, test_fraction=0.0)
    why = skipped(result)
    assert why[str(src / "notumor" / "zero.dcm")] == BLANK
    assert why[str(src / "notumor" / "dark.dcm")] == FLAT  # the file's window: all black
    assert np.array_equal(read_png(out / "Training" / "notumor" / "float.png"),
                          expected_finite(floats.astype(np.float64)))
    assert any("float.dcm: 4 NaN or infinite pixel(s)" in w for w in result.warnings)
    assert sorted(p.name for p in out.glob("*/*/*.png")) == ["float.png", "ok.png"]


def write_enhanced(path: Path, frames: np.ndarray, patient: str,
                   frame_windows: list[tuple[float, float] | None],
                   shared_window: tuple[float, float] | None = None,
                   rescale: tuple[float, float] | None = None) -> None:
    """An Enhanced MR Image Storage file: NumberOfFrames, 3-D pixel data, functional groups."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

    def group(window: tuple[float, float] | None, pvt: tuple[float, float] | None) -> Dataset:
        item = Dataset()
        if window is not None:
            voi = Dataset()
            voi.WindowCenter, voi.WindowWidth = window
            item.FrameVOILUTSequence = [voi]
        if pvt is not None:
            transform = Dataset()
            transform.RescaleSlope, transform.RescaleIntercept = pvt
            transform.RescaleType = "US"
            item.PixelValueTransformationSequence = [transform]
        return item

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedMRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "MR", patient
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SharedFunctionalGroupsSequence = [group(shared_window, rescale)]
    ds.PerFrameFunctionalGroupsSequence = [group(w, None) for w in frame_windows]
    ds.PixelData = frames.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_multiframe_dicom_gives_one_slice_per_frame(tmp_path) -> None:
    rng = np.random.default_rng(7)
    src = tmp_path / "dicom"
    a = rng.integers(0, 400, size=(4, 6, 8)).astype(np.int16)
    a[3] = 17  # a blank frame: skipped on its own
    write_enhanced(src / "glioma" / "enh.dcm", a, "E1",
                   frame_windows=[(100, 200), (500, 400), None, None],
                   shared_window=(300, 600), rescale=(2, -10))
    b = np.stack([rng.integers(0, 100, (6, 8)), rng.integers(1000, 5000, (6, 8))]
                 ).astype(np.int16)  # frames of very different ranges: windowed one by one
    write_enhanced(src / "glioma" / "IM_multi", b, "E2", frame_windows=[None, None])
    write_dcm(src / "notumor" / "single.dcm", rng.integers(0, 900, (6, 8)).astype(np.int16),
              "S1")
    out = tmp_path / "raw"
    result = strictly(ingest.import_dicom, src, out, test_fraction=0.5, seed=1)

    def png(name: str) -> np.ndarray:
        [path] = list(out.glob(f"*/glioma/{name}.png"))
        return read_png(path)

    value = a * 2.0 - 10  # the shared Pixel Value Transformation
    for k, (center, width) in enumerate([(100, 200), (500, 400), (300, 600)]):
        want = np.rint(np.clip((value[k] - (center - width / 2)) / width, 0, 1) * 255)
        assert np.array_equal(png(f"enh_f{k + 1:03d}"), want.astype(np.uint8)), k
    assert skipped(result) == {
        f"{src / 'glioma' / 'enh.dcm'}#frame=4": BLANK}
    for k in range(2):  # no window anywhere: the percentile rule on each frame itself
        assert np.array_equal(png(f"IM_multi_f{k + 1:03d}"), expected_8bit(b[k]))
    groups = read_groups(out)
    frames = {f: g for f, g in groups.items() if "glioma" in f}
    assert len(frames) == 5 and set(frames.values()) == {"dicom:E1", "dicom:E2"}
    for patient in ("dicom:E1", "dicom:E2"):  # all frames of a file in one split
        assert len({f.split("/")[0] for f, g in frames.items() if g == patient}) == 1
    assert [f for f in groups if "notumor" in f][0].endswith("/single.png")  # no _f suffix
    first = tree_hash(out)
    assert ingest.import_dicom(src, out, test_fraction=0.5, seed=1).written == 0
    assert tree_hash(out) == first


# ----------------------------------------------------------------------------- prepare


def test_inspect_image_flags_blank_images(tmp_path) -> None:
    rng = np.random.default_rng(8)
    noise = np.clip(128 + rng.integers(-2, 3, (64, 64)), 0, 255).astype(np.uint8)
    speck = np.zeros((64, 64), np.uint8)
    speck[:2, :10] = 255  # 20 of 4096 pixels (0.5 %): the 99th percentile is still black
    cases = {"black.png": np.zeros((64, 64), np.uint8), "grey.jpg": np.full((64, 64), 90, np.uint8),
             "noise.png": noise, "speck.png": speck}
    for name, array in cases.items():
        info = inspect_image(save(tmp_path / name, array), max_pixels=10**6)
        assert [k for k, _, _ in info.issues] == ["blank_image"], name
        assert info.status == "warn" and "delete it or replace it" in info.reason, name
    rgb = np.stack([smooth(2, 64)] * 3, axis=-1)
    for name, array in (("scan.png", smooth(1, 64)), ("scan_rgb.png", rgb)):
        assert inspect_image(save(tmp_path / name, array), max_pixels=10**6).status == "ok"
    tiny = inspect_image(save(tmp_path / "tiny.png", np.zeros((4, 4), np.uint8)), 10**6, 32)
    assert [k for k, _, _ in tiny.issues] == ["too_small"]  # excluded already: no pile-up


def test_prepare_reports_blank_images_with_a_reason(tmp_path) -> None:
    raw = simple_dataset(tmp_path / "raw", n_train=6, n_test=2)
    save(raw / "Training" / "benign" / "black.png", np.zeros((96, 96), np.uint8))
    flat = np.full((96, 96), 128, np.uint8)
    flat[::7, ::5] = 131
    save(raw / "Testing" / "malignant" / "flat.png", flat)
    manifest = prepare(raw, tmp_path / "p", tmp_path / "r",
                       PrepareConfig(confounder_permutations=0), progress=False)
    audit = json.loads((tmp_path / "r" / "metrics" / "data_audit.json").read_text())
    blank = {f["path"]: f["reason"] for f in audit["findings"] if f["kind"] == "blank_image"}
    assert set(blank) == {"Training/benign/black.png", "Testing/malignant/flat.png"}
    assert all("no anatomy" in r and "delete it or replace it" in r for r in blank.values())
    rows = manifest.set_index("path")
    assert (rows.loc[list(blank), "status"] == "warn").all()
    assert (rows.drop(index=list(blank))["status"] == "ok").all()
    md = (tmp_path / "r" / "data_audit.md").read_text(encoding="utf-8")
    assert f"### blank_image: {FINDING_KINDS['blank_image']} (2)" in md


def test_phantom_images_are_never_blank(tmp_path) -> None:
    """The embedded phantom (the study's data/raw) never trips the rule: its manifest stays."""
    from lib.data.phantom import PhantomConfig, generate

    generate(PhantomConfig(seed=9, n_train_per_class=3, n_test_per_class=1), tmp_path,
             progress=False)
    scans = [p for p in tmp_path.rglob("*.png") if not p.stem.endswith("_mask")]
    assert len(scans) == 16
    for path in scans:
        with Image.open(path) as img:
            assert IMG.dynamic_range(np.asarray(img.convert("L"))) >= 4 * IMG.MIN_DYNAMIC_RANGE
        assert inspect_image(path, max_pixels=10**6).status == "ok", path


def test_prepare_excludes_what_training_cannot_decode_and_names_sidecars(tmp_path) -> None:
    """A BMP/TIFF/GIF/WebP in a class folder is excluded with the way out (training decodes PNG
    and JPEG only), and the importers' top-level files are reported as what they are."""
    from PIL import Image as PILImage

    from lib.data.prepare import PrepareConfig, prepare
    from lib.tiny import tiny_dataset

    tiny = tiny_dataset(per_class=4, image_size=64, seed=1, workdir=tmp_path / "tiny")
    raw = tiny.raw_dir
    source = next((raw / "Training" / "glioma").glob("glioma_*[0-9].png"))
    for fmt, ext in (("BMP", ".bmp"), ("TIFF", ".tif"), ("WEBP", ".webp")):
        with PILImage.open(source) as img:
            img.convert("L").save(raw / "Training" / "glioma" / f"converted{ext}", fmt)
    (raw / "metadata.csv").write_text("path,plane\n")
    (raw / "feedback_provenance.csv").write_text("file\n")
    manifest = prepare(raw, tmp_path / "processed", tmp_path / "reports",
                       PrepareConfig(seed=0, confounder_permutations=0), progress=False)
    rows = manifest.set_index("path")
    for ext, fmt in ((".bmp", "BMP"), (".tif", "TIFF")):
        row = rows.loc[f"Training/glioma/converted{ext}"]
        assert row["status"] == "excluded" and row["reason"].startswith(
            f"{fmt} content: training decodes PNG and JPEG only"), row
    assert rows.loc["Training/glioma/converted.webp", "status"] == "excluded"  # either rule
    audit = (tmp_path / "reports" / "data_audit.md").read_text()
    assert "BRISC importer's plane" in audit and "app's feedback" in audit
