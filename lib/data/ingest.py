"""Importers: turn a real MRI dataset into the study's raw layout.

    python -m lib.data.ingest figshare SRC [--healthy DIR] [--out data/raw] [--test-fraction 0.2]
    python -m lib.data.ingest nifti SRC --label-class glioma [--healthy-slices] [--channel 0]
    python -m lib.data.ingest dicom SRC        # SRC/<class>/** DICOM files, found by content
    python -m lib.data.ingest brisc SRC [--resplit]
    python -m lib.data.ingest feedback feedback/ [--out data/raw]

Every importer writes ``<out>/{Training,Testing}/<class>/<name>.png`` (8-bit greyscale), a
``<name>_mask.png`` beside the image when the source has a tumour mask (binary 0/255, same size
as the image), and ``<out>/groups.csv`` (columns ``file`` = image path relative to out, posix;
``group`` = ``<format>:<patient or subject id>``). Classes are the study's: glioma, meningioma,
notumor, pituitary.

Rules shared by all importers:

* Training/Testing is assigned per GROUP (patient/subject), never per image, so a patient is
  never in both. The split is stratified by class, so that every class has test images: within
  each class, its sorted group ids are shuffled with one ``numpy.random.default_rng(seed)`` and
  the first ``round(test_fraction * n_groups)`` go to Testing (at least one group in each split
  when the class has two or more groups); see ``assign_splits``.
* SRC is only opened for reading; ``out`` may not lie inside SRC (nor SRC inside out).
* Idempotent: PNG bytes are a pure function of the source and the options; an existing file with
  identical bytes is left alone (counted as ``unchanged``), a different one is an error unless
  ``--overwrite``. An image already present in the *other* split (a different seed or test
  fraction) is also an error unless ``--overwrite``, which then removes it, so nothing is
  duplicated. ``groups.csv`` is merged (rows of other importers kept), so several importers can
  write into the same out folder one after the other.
* Everything not imported is returned as ``(source, reason)`` in ``IngestResult.skipped`` and
  summarised on stdout (a slice of a volume or a frame is ``<file>#z=<z>`` or ``#frame=<k>``).
* Numbers that are not images are findings, never black PNGs (``_to_8bit``, every importer):
  NaN and infinite values are left out of the window's percentiles; a slice with more than
  ``NONFINITE_MAX_FRACTION`` (0.5) of its pixels NaN or infinite is skipped ("... of its pixels
  are NaN or infinite": a broken reconstruction, or a volume that marks background with NaN,
  which must be converted to 0 first); fewer are set to 0 (background) after windowing and
  reported once per source file in ``IngestResult.warnings``; numpy never casts a NaN. A slice
  with no signal is skipped with its reason: constant, or, after windowing, a 1st-99th
  percentile span below ``MIN_DYNAMIC_RANGE`` (8 of 256 grey levels; prepare's ``blank_image``
  finding uses the same rule, so nothing an importer writes is flagged blank there). Healthy
  images copied with ``--healthy`` follow the no-signal rule too.

The ``feedback`` importer adds the app's feedback folder (lib.serve.feedback's layout) to an
existing raw folder: every recorded image goes to Training (a user's drawn lesion is training
signal, never test ground truth) with its mask, its own group, and one row of
``<out>/feedback_provenance.csv`` (who, when, what the model said, the image's md5); images
without a record, or whose bytes no longer match it, are skipped with the reason. It never
overwrites a file.

8-bit windowing rule (``window_percentile``): intensities are converted to float64, the 0.5th and
99.5th percentiles ``lo, hi`` of a reference sample's finite values are mapped linearly to 0 and
255, values are clipped to [0, 255] and rounded half to even (``numpy.rint``); a constant
reference (``hi <= lo``) gives an all-zero image, which the no-signal rule then skips. The
reference is the slice itself for figshare and for DICOM frames without a window; for NIfTI it
is the volume's non-zero (brain) voxels, so the slices of one subject share one window. DICOM
frames with a window (the frame's own, the shared one of an enhanced file, or the file's
WindowCenter/WindowWidth) use ``window_dicom``.

DICOM files are recognised by content (``_dicom_skip``): b"DICM" at byte 128, whatever the name
(``IM0001``, ``1.2.840.113619.2.55.3``, ``x.dcm``). A file without it is "not a DICOM file (no
DICM preamble)", except one named .dcm/.dicom/.ima, which is tried with pydicom's force=True
(raw implicit-VR files without preamble exist) and kept only if it has Rows and Columns. Hidden
files and folders (name starting with ".") are skipped with that reason; a DICOMDIR (by name, or
by its SOP class) is skipped as a directory index: the images it lists are imported from their
own files, which the walk finds anyway. An enhanced (multi-frame) file gives one slice per
frame, ``<name>_f<k>`` (k = 1, 2, ... as DICOM numbers frames), all in the file's group.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..splits import TRAINING
from .images import (
    MIN_DYNAMIC_RANGE,
    NONFINITE_MAX_FRACTION,
    dicom_to_uint8,
    dynamic_range,
    nonfinite_count,
    percentile_bounds,
    window_percentile,
)
from .ingest_base import (  # noqa: F401  (re-exported: the importers' shared names)
    CLASSES,
    GROUPS_CSV,
    IMPORTER_FILES,
    IngestError,
    IngestResult,
    Item,
    _check_paths,
    _hidden,
    _run,
    _Skip,
    _Writer,
    assign_splits,
)

FIGSHARE_LABELS: dict[int, str] = {1: "meningioma", 2: "glioma", 3: "pituitary"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MIN_BRAIN_FRACTION = 0.05  # NIfTI: a slice with less brain than this share of its area is skipped
FIGSHARE_FIELDS = ("image", "label", "PID", "tumorMask")  # what every cjdata group must hold
DICM_OFFSET = 128  # DICOM Part 10: a 128-byte preamble, then the four bytes b"DICM"
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")  # dropped from image names; tried without preamble
PIXEL_DATA_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")  # float: NaN
MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR
DICOMDIR_REASON = ("DICOMDIR: a directory index of a DICOM medium, not an image; the images it "
                   "lists are imported from their own files, which the folder walk finds")

# ----------------------------------------------------------------------------- windowing


def _no_signal(x: np.ndarray, pixels: np.ndarray) -> str:
    """Why a slice shows nothing, '' when it shows something: blank images are not written.

    Reasons carry no per-slice numbers, so that the summary counts them under one line."""
    values = np.asarray(x)
    if nonfinite_count(values):
        values = values[np.isfinite(values)]
    if values.size and values.min() == values.max():
        return "no signal: every pixel has the same value (a blank slice)"
    if dynamic_range(pixels) < MIN_DYNAMIC_RANGE:
        return (f"no signal: after windowing its 1st-99th percentiles lie less than "
                f"{MIN_DYNAMIC_RANGE} grey levels apart (a blank or near-constant slice)")
    return ""


def _to_8bit(x: np.ndarray, window: Callable[[np.ndarray], np.ndarray]
             ) -> tuple[np.ndarray | None, str, int]:
    """(pixels, '', non-finite pixels set to 0) or (None, why, n): numbers that are not images
    are skipped with the reason, never written as black PNGs (the module docstring's rules)."""
    bad = nonfinite_count(x)
    if bad > NONFINITE_MAX_FRACTION * x.size:
        return None, (f"more than {NONFINITE_MAX_FRACTION:.0%} of its pixels are NaN or "
                      "infinite: not an image (a failed reconstruction, or NaN used as "
                      "background: convert it to 0)"), bad
    pixels = window(x)
    why = _no_signal(x, pixels)
    return (None, why, bad) if why else (pixels, "", bad)


def _warn_nonfinite(result: IngestResult, source: str, pixels: int, slices: int) -> None:
    """Say that NaN/inf pixels of written slices became background, once per source file."""
    if pixels:
        result.warnings.append(f"{source}: {pixels} NaN or infinite pixel(s) in {slices} "
                               "written slice(s) left out of the window and set to 0 "
                               "(background)")


# ----------------------------------------------------------------------------- healthy images


def _healthy_items(folder: Path, result: IngestResult) -> Iterator[Item]:
    """Images of a folder as notumor, converted to 8-bit greyscale ("L") without windowing.

    Group: the first sub-folder under ``folder`` (one folder per subject), else the file stem
    (each image its own group, which cannot protect against a subject with several images).
    """
    for path in _visible_files(folder):
        rel = path.relative_to(folder)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            result.skipped.append((str(path), "not an image file"))
            continue
        if path.stem.endswith("_mask") or "_mask_" in path.stem:
            result.skipped.append((str(path), "mask file in a healthy folder"))
            continue
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("L"))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a reported skip
            result.skipped.append((str(path), f"unreadable image: {type(exc).__name__}"))
            continue
        why = _no_signal(pixels, pixels)
        if why:
            result.skipped.append((str(path), why))
            continue
        name = "healthy_" + "__".join(rel.with_suffix("").parts)
        yield Item("notumor", name, _healthy_group(folder, path), pixels, None, str(path))


def _visible_files(folder: Path) -> list[Path]:
    """The files under folder, sorted, hidden files and folders left out."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _healthy_group(folder: Path, path: Path) -> str:
    rel = path.relative_to(folder)
    return "healthy:" + (rel.parts[0] if len(rel.parts) > 1 else path.stem)


# ----------------------------------------------------------------------------- figshare


def _figshare_files(src: Path) -> list[Path]:
    return [src] if src.is_file() else sorted(p for p in src.rglob("*.mat") if not _hidden(p))


def _figshare_pid(cj: object) -> str:
    return "".join(chr(int(c)) for c in np.asarray(cj["PID"]).ravel()).strip()  # type: ignore


def _figshare_groups(src: Path) -> Iterator[tuple[str, str]]:
    """First pass: (patient id, class) of every file, read without the images."""
    import h5py

    for path in _figshare_files(src):
        try:
            with h5py.File(path, "r") as f:
                label = int(np.asarray(f["cjdata"]["label"]).ravel()[0])
                yield (f"figshare:{_figshare_pid(f['cjdata'])}",
                       FIGSHARE_LABELS.get(label, ""))
        except (OSError, KeyError, ValueError, TypeError, IndexError):
            continue


def _figshare_read(path: Path) -> tuple[np.ndarray, np.ndarray, int, str]:
    """(image, mask, label, patient id) of one .mat file; _Skip names what is missing."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "cjdata" not in f:
                raise _Skip("no 'cjdata' group: not a figshare brain-tumour .mat file")
            cj = f["cjdata"]
            missing = [k for k in FIGSHARE_FIELDS if k not in cj]
            if missing:
                names = ", ".join(f"'{k}'" for k in missing)
                raise _Skip(f"cjdata has no {names} field{'s' if len(missing) > 1 else ''} "
                            f"(a figshare file holds {', '.join(FIGSHARE_FIELDS)})")
            image = np.asarray(cj["image"]).T  # MATLAB is column-major: transpose
            mask = np.asarray(cj["tumorMask"]).T
            label = int(np.asarray(cj["label"]).ravel()[0])
            return image, mask, label, _figshare_pid(cj)
    except (OSError, KeyError, ValueError, IndexError, TypeError) as exc:
        raise _Skip(f"unreadable or not a cjdata v7.3 .mat file: {type(exc).__name__}") from exc


def _figshare_items(src: Path, result: IngestResult) -> Iterator[Item]:
    for path in _figshare_files(src):
        try:
            image, mask, label, pid = _figshare_read(path)
        except _Skip as skip:
            result.skipped.append((str(path), str(skip)))
            continue
        if label not in FIGSHARE_LABELS:
            result.skipped.append((str(path), f"label {label} is not 1, 2 or 3"))
        elif image.ndim != 2:
            result.skipped.append((str(path), f"image is {image.ndim}-D, not a 2-D slice"))
        elif mask.shape != image.shape:
            result.skipped.append((str(path), f"mask {mask.shape} != image {image.shape}"))
        elif not pid:
            result.skipped.append((str(path), "empty PID: cannot group by patient"))
        else:
            pixels, why, bad = _to_8bit(image, window_percentile)
            if pixels is None:
                result.skipped.append((str(path), why))
                continue
            _warn_nonfinite(result, str(path), bad, 1)
            yield Item(FIGSHARE_LABELS[label], f"figshare_{path.stem}", f"figshare:{pid}",
                       pixels, mask, str(path))


def import_figshare(src: Path | str, out: Path | str = "data/raw", test_fraction: float = 0.2,
                    seed: int = 42, healthy: Path | str | None = None,
                    overwrite: bool = False) -> IngestResult:
    """Cheng et al. figshare brain-tumour set (MATLAB v7.3 .mat files) -> raw layout.

    Reads ``cjdata/image`` (int16, windowed to 8 bit per slice by the percentile rule of the
    module docstring), ``cjdata/label`` (1 meningioma, 2 glioma, 3 pituitary), ``cjdata/PID``
    (uint16 character codes: the patient id, the group) and ``cjdata/tumorMask`` (the mask), all
    transposed from MATLAB's column-major storage. The set has NO healthy class: pass
    ``healthy=DIR`` (images copied into notumor, see ``_healthy_items`` for their groups) or run
    another importer (e.g. ``nifti --healthy-slices``) into the same out folder, otherwise the
    study has three classes only. Healthy groups are split together with the patients.
    """
    src, out = Path(src), Path(out)
    _check_paths(src, out)
    result = IngestResult("figshare", str(out))

    groups = list(_figshare_groups(src))
    if healthy is not None:
        _check_paths(Path(healthy), out)
        groups += [(_healthy_group(Path(healthy), p), "notumor")
                   for p in _visible_files(Path(healthy))]

    def items() -> Iterator[Item]:
        yield from _figshare_items(src, result)
        if healthy is not None:
            yield from _healthy_items(Path(healthy), result)

    _run(out, groups, items(), result, test_fraction, seed, overwrite)
    if healthy is None:
        result.warnings.append("figshare has no healthy (notumor) class: add one with --healthy "
                               "DIR or another importer into the same out folder")
    return result


# ----------------------------------------------------------------------------- nifti


def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _nifti_files(src: Path) -> list[Path]:
    images_dir = src / "imagesTr"
    if not images_dir.is_dir():
        raise IngestError(f"{images_dir} not found: expected imagesTr/ and labelsTr/ in {src}")
    return sorted(p for p in images_dir.iterdir()
                  if p.name.endswith((".nii", ".nii.gz")) and not _hidden(p))


def _nifti_items(src: Path, label_class: str, min_fraction: float, healthy_slices: bool,
                 channel: int, result: IngestResult) -> Iterator[Item]:
    import nibabel as nib

    labels_dir = src / "labelsTr"
    for path in _nifti_files(src):
        subject = _nifti_stem(path)
        label_path = next((labels_dir / f"{subject}{e}" for e in (".nii.gz", ".nii")
                           if (labels_dir / f"{subject}{e}").is_file()), None)
        if label_path is None:
            result.skipped.append((str(path), "no label map in labelsTr/"))
            continue
        try:
            img = nib.as_closest_canonical(nib.load(str(path)))
            lab = nib.as_closest_canonical(nib.load(str(label_path)))
            data = np.asarray(img.dataobj)
            labels = np.asarray(lab.dataobj)
        except Exception as exc:  # noqa: BLE001 - any unreadable volume is a reported skip
            result.skipped.append((str(path), f"unreadable NIfTI: {type(exc).__name__}"))
            continue
        if data.ndim == 4:
            if not 0 <= channel < data.shape[3]:
                result.skipped.append((str(path), f"channel {channel} not in 0..{data.shape[3]-1}"))
                continue
            data = data[..., channel]
        if data.ndim != 3 or labels.shape[:3] != data.shape:
            result.skipped.append((str(path), f"image {data.shape} and label {labels.shape} "
                                              "are not matching 3-D volumes"))
            continue
        yield from _nifti_slices(path, data, labels, label_class, min_fraction,
                                 healthy_slices, result)


def _nifti_slices(path: Path, data: np.ndarray, labels: np.ndarray, label_class: str,
                  min_fraction: float, healthy_slices: bool,
                  result: IngestResult) -> Iterator[Item]:
    """The axial slices of one subject's volume, windowed on its brain (non-zero) voxels."""
    subject = _nifti_stem(path)
    bounds = percentile_bounds(data[data != 0]) or (0.0, 0.0)  # none: no slice gets this far
    window = partial(window_percentile, bounds=bounds)
    fixed = [0, 0]  # NaN/inf pixels set to 0 in written slices, and those slices
    for z in range(data.shape[2]):
        where = f"{path}#z={z}"
        img2 = np.rot90(data[:, :, z])  # RAS: rows run anterior (top) to posterior
        lab2 = np.rot90(labels[:, :, z])
        bad = nonfinite_count(img2)
        brain = int(np.count_nonzero(np.isfinite(img2) & (img2 != 0)))
        if bad <= NONFINITE_MAX_FRACTION * img2.size and brain < MIN_BRAIN_FRACTION * img2.size:
            result.skipped.append((where, "little or no brain in the slice"))
            continue
        pixels, why, _ = _to_8bit(img2, window)
        tumour = int(np.count_nonzero(lab2 > 0))
        if pixels is None:
            result.skipped.append((where, why))
        elif tumour == 0 and not healthy_slices:
            result.skipped.append((where, "no tumour (notumor needs --healthy-slices)"))
        elif tumour and tumour / brain <= min_fraction:
            result.skipped.append((where, "tumour below --min-tumour-fraction"))
        else:
            fixed = [fixed[0] + bad, fixed[1] + (bad > 0)]
            yield Item(label_class if tumour else "notumor", f"{subject}_z{z:03d}",
                       f"nifti:{subject}", pixels, lab2 if tumour else None, where)
    _warn_nonfinite(result, str(path), *fixed)


def import_nifti(src: Path | str, out: Path | str = "data/raw", label_class: str = "glioma",
                 test_fraction: float = 0.2, seed: int = 42, min_tumour_fraction: float = 0.01,
                 healthy_slices: bool = False, channel: int = 0,
                 overwrite: bool = False) -> IngestResult:
    """BraTS / Medical Segmentation Decathlon volumes -> axial slices in the raw layout.

    SRC holds ``imagesTr/<subject>.nii[.gz]`` and ``labelsTr/<subject>.nii[.gz]``. Both are
    reoriented to RAS (``nibabel.as_closest_canonical``); axial slice z is ``volume[:, :, z]``
    rotated 90 degrees (anterior at the top). A 4-D image (Decathlon BrainTumour: FLAIR, T1w,
    T1gd, T2w) contributes channel ``channel`` only. Slices with brain (non-zero image) below
    5 % of the slice area are skipped. A slice whose tumour area (label > 0) over its brain area
    exceeds ``min_tumour_fraction`` becomes ``label_class`` with the label map as mask; a slice
    with some tumour at or below the threshold is skipped; a slice without tumour becomes notumor
    only with ``healthy_slices`` (slices of tumour patients: a possible shortcut, see the
    warning). The subject id is the group; windowing uses the subject's brain voxels.
    """
    if label_class not in CLASSES or label_class == "notumor":
        raise IngestError(f"--label-class must be a tumour class of {CLASSES}, got {label_class}")
    src, out = Path(src), Path(out)
    _check_paths(src, out)
    result = IngestResult("nifti", str(out))
    items = _nifti_items(src, label_class, min_tumour_fraction, healthy_slices, channel, result)
    groups = [f"nifti:{_nifti_stem(p)}" for p in _nifti_files(src)]
    _run(out, groups, items, result, test_fraction, seed, overwrite)
    if healthy_slices:
        result.warnings.append(
            "notumor slices come from the same tumour patients' volumes (other slice levels, "
            "same scanner and preprocessing): slice position or intensity can be a shortcut; "
            "the confounder audit should check it")
    return result


# ----------------------------------------------------------------------------- dicom




def _dicom_group(ds: object) -> str:
    """dicom:<PatientID>, else dicom:<StudyInstanceUID>, else '' (cannot be grouped)."""
    key = str(ds.get("PatientID", "") or ds.get("StudyInstanceUID", "") or "")  # type: ignore
    return f"dicom:{key}" if key else ""


def _has_dicm(path: Path) -> bool:
    """The DICOM Part 10 signature, b"DICM" after the 128-byte preamble: DICOM by content."""
    try:
        with path.open("rb") as fh:
            return fh.read(DICM_OFFSET + 4)[DICM_OFFSET:] == b"DICM"
    except OSError:
        return False


def _dicom_skip(folder: Path, path: Path) -> str:
    """Why a file under a class folder is not read as DICOM, '' when it is (by content)."""
    if any(part.startswith(".") for part in path.relative_to(folder).parts):
        return "hidden file or folder (name starts with '.', e.g. macOS ._ files): not imported"
    if path.name.upper() == "DICOMDIR":
        return DICOMDIR_REASON
    if _has_dicm(path) or path.suffix.lower() in DICOM_SUFFIXES:
        return ""
    return "not a DICOM file (no DICM preamble)"


def _dicom_files(folder: Path) -> list[Path]:
    """Every file under a class folder, hidden ones included (they are reported), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _dicom_read(path: Path, header_only: bool = False) -> Any:
    """pydicom's dataset; a file without the preamble (a raw or ACR-NEMA style .dcm) is read
    with force=True and kept only if it has Rows and Columns, its transfer syntax taken from
    how it parsed."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if _has_dicm(path):
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a forced read warns about every guessed element
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=header_only)
        if "Rows" not in ds or "Columns" not in ds:
            raise _Skip("unreadable DICOM: no DICM preamble, and read without one it holds no "
                        "image (no Rows/Columns)")
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else
                                          ExplicitVRBigEndian)
    return ds


def _dicom_groups(src: Path) -> Iterator[tuple[str, str]]:
    """First pass: (group, class) of every readable DICOM file in a class folder, headers only."""
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and p.name in CLASSES):
        for path in _dicom_files(folder):
            if _dicom_skip(folder, path):
                continue
            try:
                group = _dicom_group(_dicom_read(path, header_only=True))
            except Exception:  # noqa: BLE001 - reported by the import pass
                continue
            if group:
                yield group, folder.name


def _dicom_name(rel: Path) -> str:
    """Image name of a file: its path parts joined by '__', a DICOM suffix dropped (the dots
    of UID-named files such as 1.2.840.113619.2.55.3 are kept)."""
    parts = list(rel.parts)
    if rel.suffix.lower() in DICOM_SUFFIXES:
        parts[-1] = rel.stem
    return "__".join(parts)


def _dicom_frames(ds: Any, raw: np.ndarray) -> list[np.ndarray]:
    """The greyscale frames of a file's pixel data: one for a slice, NumberOfFrames for an
    enhanced (multi-frame) file; _Skip says why there are none (colour, odd shapes)."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if samples == 1 and raw.ndim == 2 and frames == 1:
        return [raw]
    if samples == 1 and raw.ndim == 3 and raw.shape[0] == frames:
        return list(raw)
    raise _Skip(f"pixel data is {raw.shape} ({samples} sample(s) per pixel, {frames} "
                "frame(s)): not greyscale frames")


def _dicom_open(path: Path) -> tuple[Any, list[np.ndarray], str]:
    """(dataset, frames, group) of one file; _Skip says why it is not imported."""
    try:
        ds = _dicom_read(path)
        meta = getattr(ds, "file_meta", None) or {}
        if (meta.get("MediaStorageSOPClassUID") == MEDIA_DIRECTORY_STORAGE
                or "DirectoryRecordSequence" in ds):
            raise _Skip(DICOMDIR_REASON)
        if not any(k in ds for k in PIXEL_DATA_ELEMENTS):
            raise _Skip("no pixel data")
        raw = np.asarray(ds.pixel_array)
    except _Skip:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a reported skip
        raise _Skip(f"unreadable DICOM: {type(exc).__name__}") from exc
    frames = _dicom_frames(ds, raw)
    group = _dicom_group(ds)
    if not group:
        raise _Skip("no PatientID or StudyInstanceUID: cannot group by patient")
    return ds, frames, group


def _dicom_file_items(folder: Path, path: Path, result: IngestResult) -> Iterator[Item]:
    """The slices of one DICOM file: itself, or ``<name>_f<k>`` per frame (k from 1)."""
    try:
        ds, frames, group = _dicom_open(path)
    except _Skip as skip:
        result.skipped.append((str(path), str(skip)))
        return
    name, multi = _dicom_name(path.relative_to(folder)), len(frames) > 1
    fixed = [0, 0]  # NaN/inf pixels set to 0 in written frames, and those frames
    for k, frame in enumerate(frames):
        where = f"{path}#frame={k + 1}" if multi else str(path)
        pixels, why, bad = _to_8bit(frame, partial(dicom_to_uint8, ds, frame=k))
        if pixels is None:
            result.skipped.append((where, why))
            continue
        fixed = [fixed[0] + bad, fixed[1] + (bad > 0)]
        yield Item(folder.name, f"{name}_f{k + 1:03d}" if multi else name, group, pixels,
                   None, where)
    _warn_nonfinite(result, str(path), *fixed)


def _dicom_items(src: Path, result: IngestResult) -> Iterator[Item]:
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not _hidden(p)):
        if folder.name not in CLASSES:
            n = sum(1 for p in folder.rglob("*") if p.is_file())
            result.skipped.append((str(folder), f"folder is not a class of {CLASSES} ({n} files)"))
            continue
        for path in _dicom_files(folder):
            why = _dicom_skip(folder, path)
            if why:
                result.skipped.append((str(path), why))
                continue
            yield from _dicom_file_items(folder, path, result)


def import_dicom(src: Path | str, out: Path | str = "data/raw", test_fraction: float = 0.2,
                 seed: int = 42, overwrite: bool = False) -> IngestResult:
    """A folder per class of DICOM files (``SRC/<class>/**``, by content) -> raw layout, no masks.

    Pixels: stored values * RescaleSlope + RescaleIntercept, then windowed with WindowCenter/
    WindowWidth (first value when multi-valued; ``window_dicom``) when present, else with the
    percentile rule of the module docstring; MONOCHROME1 is inverted. An enhanced (multi-frame)
    file gives one slice per frame, each with its own rescale and window (its per-frame
    functional group, else the shared one, else the file's; ``frame_rescale``, ``frame_window``)
    or the percentile rule on the frame. Group: PatientID, else StudyInstanceUID, else the file
    is skipped. Files that are not DICOM, hidden files, DICOMDIR, files without pixel data,
    unreadable or compressed beyond what pydicom decodes alone, colour files, bad-number or blank
    frames and folders that are not a study class are reported skips.
    """
    src, out = Path(src), Path(out)
    _check_paths(src, out)
    result = IngestResult("dicom", str(out))
    return _run(out, _dicom_groups(src), _dicom_items(src, result), result, test_fraction, seed,
                overwrite)


# ----------------------------------------------------------------------------- CLI


# ----------------------------------------------------------------------------- app feedback
FEEDBACK_RECORDS = "records"  # lib.serve.feedback's layout (lib.data may not import lib.serve)
FEEDBACK_PROVENANCE = "feedback_provenance.csv"
PROVENANCE_COLUMNS = ("file", "record", "label", "user", "time_utc", "model", "model_label",
                      "image_md5", "lesion_pixels")


def _feedback_item(src: Path, record_path: Path) -> tuple[Item | None, dict[str, str], str]:
    """One feedback record -> (the item to write, its provenance row, '') or (None, {}, why)."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        label, name, files = record["label"], record["name"], record["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, {}, (f"record unreadable ({type(exc).__name__}: an interrupted post or an "
                          "edited file); its image is not imported")
    if label not in CLASSES:
        return None, {}, f"unknown label {label!r}; the study's classes are {', '.join(CLASSES)}"
    image_path = src / files.get("image", "")
    if not files.get("image") or not image_path.is_file():
        return None, {}, f"the recorded image {files.get('image')!r} is missing"
    data = image_path.read_bytes()
    if hashlib.md5(data).hexdigest() != record.get("image_md5"):
        return None, {}, "the image's bytes no longer match its record (md5 differs): edited?"
    with Image.open(io.BytesIO(data)) as img:
        pixels = np.asarray(img.convert("L"))
    mask = None
    if files.get("mask"):
        if label == "notumor":
            return None, {}, "a lesion mask on an image labelled notumor"
        mask_path = src / files["mask"]
        if not mask_path.is_file():
            return None, {}, f"the recorded mask {files['mask']!r} is missing"
        with Image.open(mask_path) as img:
            mask = np.asarray(img.convert("L")) > 0
        if mask.shape != pixels.shape:
            return None, {}, f"mask {mask.shape} and image {pixels.shape} differ in size"
    said = record.get("model_said") or {}
    row = {"file": f"{TRAINING}/{label}/{name}.png", "record": f"{FEEDBACK_RECORDS}/{name}.json",
           "label": label, "user": record.get("user") or "", "time_utc": record.get("time_utc", ""),
           "model": said.get("model") or "", "model_label": said.get("label") or "",
           "image_md5": record["image_md5"], "lesion_pixels": str(int(mask.sum()) if mask is not
                                                                   None else 0)}
    return Item(label, name, f"feedback:{name}", pixels, mask, source=str(record_path)), row, ""


def _merge_provenance(out: Path, rows: list[dict[str, str]]) -> None:
    """Add rows to <out>/feedback_provenance.csv (keyed by file; existing rows kept)."""
    path = out / FEEDBACK_PROVENANCE
    merged: dict[str, dict[str, str]] = {}
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            merged = {r["file"]: r for r in csv.DictReader(fh)}
    merged.update({r["file"]: r for r in rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PROVENANCE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(merged[f] for f in sorted(merged))
    data = buf.getvalue().encode()
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def import_feedback(src: Path | str, out: Path | str = "data/raw") -> IngestResult:
    """The app's feedback folder into the raw layout's Training split, with provenance.

    Reads ``src/records/*.json`` (each names its image, optional mask, label and md5); never
    overwrites (a different file under the same name stops the import); a rerun writes nothing.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise IngestError(f"feedback folder not found: {src}")
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise IngestError(f"out folder {out} and feedback folder {src} overlap")
    if out.is_dir() and any(out.iterdir()) and not (out / TRAINING).is_dir():
        raise IngestError(f"{out} is not a raw layout (no {TRAINING}/ folder): feedback is added "
                          "to an existing dataset; give its raw folder with --out")
    result = IngestResult("feedback", str(out))
    writer = _Writer(out, result, overwrite=False)
    rows = []
    records = sorted((src / FEEDBACK_RECORDS).glob("*.json"))
    for path in records:
        item, row, why = _feedback_item(src, path)
        if item is None:
            result.skipped.append((path.relative_to(src).as_posix(), why))
            continue
        writer.write(item, TRAINING)
        rows.append(row)
    named = {r.stem for r in records}  # a record that failed is reported above, not here
    for image in sorted(src.glob("*/*.png")):
        stem = image.name.removesuffix(".png").removesuffix("_mask")
        if image.parent.name != FEEDBACK_RECORDS and stem not in named:
            result.skipped.append((image.relative_to(src).as_posix(),
                                   "no record in records/: provenance unknown, not imported"))
    if rows:
        writer.write_groups()
        _merge_provenance(out, rows)
        result.groups = {TRAINING: len(rows)}
    else:
        result.warnings.append("nothing imported: no usable record under "
                               f"{src / FEEDBACK_RECORDS}")
    return result


def main(argv: Sequence[str] | None = None) -> IngestResult:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("src", type=Path, help="the dataset (opened read-only)")
    common.add_argument("--out", type=Path, default=Path("data/raw"))
    common.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of groups (patients) in Testing")
    common.add_argument("--seed", type=int, default=42)
    common.add_argument("--overwrite", action="store_true",
                        help="replace files whose content differs, move images between splits")
    parser = argparse.ArgumentParser(prog="python -m lib.data.ingest", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="format", required=True)
    fig = sub.add_parser("figshare", parents=[common], help="Cheng et al. .mat (v7.3) files")
    fig.add_argument("--healthy", type=Path, help="folder of healthy images for notumor")
    nii = sub.add_parser("nifti", parents=[common], help="imagesTr/labelsTr NIfTI volumes")
    nii.add_argument("--label-class", required=True, choices=[c for c in CLASSES
                                                              if c != "notumor"])
    nii.add_argument("--min-tumour-fraction", type=float, default=0.01)
    nii.add_argument("--healthy-slices", action="store_true")
    nii.add_argument("--channel", type=int, default=0)
    sub.add_parser("dicom", parents=[common], help="SRC/<class>/** DICOM files (by content)")
    brisc = sub.add_parser("brisc", parents=[common], help="BRISC 2025 (Fateh et al. 2025): "
                           "classification_task + segmentation_task masks, planes")
    brisc.add_argument("--resplit", action="store_true",
                       help="re-split by --test-fraction instead of keeping BRISC's train/test")
    feedback = sub.add_parser("feedback", help="the app's feedback folder, into Training")
    feedback.add_argument("src", type=Path, help="the feedback folder (opened read-only)")
    feedback.add_argument("--out", type=Path, default=Path("data/raw"))
    args = parser.parse_args(argv)
    try:
        if args.format == "feedback":
            result = import_feedback(args.src, args.out)
            print(result.summary())
            return result
        common_kw = dict(out=args.out, test_fraction=args.test_fraction, seed=args.seed,
                         overwrite=args.overwrite)
        if args.format == "figshare":
            result = import_figshare(args.src, healthy=args.healthy, **common_kw)
        elif args.format == "brisc":
            from .brisc import import_brisc

            result = import_brisc(args.src, resplit=args.resplit, **common_kw)
        elif args.format == "nifti":
            result = import_nifti(args.src, label_class=args.label_class,
                                  min_tumour_fraction=args.min_tumour_fraction,
                                  healthy_slices=args.healthy_slices, channel=args.channel,
                                  **common_kw)
        else:
            result = import_dicom(args.src, **common_kw)
    except IngestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(result.summary())
    return result


if __name__ == "__main__":
    main()
