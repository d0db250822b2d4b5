"""Importers: turn a real MRI dataset into the study's raw layout.

    python -m lib.data.ingest figshare SRC [--healthy DIR] [--out data/raw] [--test-fraction 0.2]
    python -m lib.data.ingest nifti SRC --label-class glioma [--healthy-slices] [--channel 0]
    python -m lib.data.ingest dicom SRC
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
  summarised on stdout.

The ``feedback`` importer adds the app's feedback folder (lib.serve.feedback's layout) to an
existing raw folder: every recorded image goes to Training (a user's drawn lesion is training
signal, never test ground truth) with its mask, its own group, and one row of
``<out>/feedback_provenance.csv`` (who, when, what the model said, the image's md5); images
without a record, or whose bytes no longer match it, are skipped with the reason. It never
overwrites a file.

8-bit windowing rule (``window_percentile``): intensities are converted to float64, the 0.5th and
99.5th percentiles ``lo, hi`` of a reference sample are mapped linearly to 0 and 255, values are
clipped to [0, 255] and rounded half to even (``numpy.rint``); a constant reference (``hi <= lo``)
gives an all-zero image. The reference is the slice itself for figshare and for DICOM files
without a window; for NIfTI it is the volume's non-zero (brain) voxels, so the slices of one
subject share one window. DICOM files with WindowCenter/WindowWidth use ``window_dicom``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..splits import TESTING, TRAINING
from .images import binary_mask, dicom_to_uint8, png_bytes, window_percentile

CLASSES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")
FIGSHARE_LABELS: dict[int, str] = {1: "meningioma", 2: "glioma", 3: "pituitary"}
GROUPS_CSV = "groups.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MIN_BRAIN_FRACTION = 0.05  # NIfTI: a slice with less brain than this share of its area is skipped


class IngestError(RuntimeError):
    """The import cannot go on safely (a conflicting file, out inside SRC, a bad option)."""


@dataclass
class Item:
    """One image to write: class, name (no extension), group id, 8-bit pixels, optional mask."""

    cls: str
    name: str
    group: str
    image: np.ndarray
    mask: np.ndarray | None = None
    source: str = ""


@dataclass
class IngestResult:
    """What an importer did: counts per split and class, groups, written files and skips."""

    format: str
    out: str
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    images: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> n
    groups: dict[str, int] = field(default_factory=dict)  # split -> number of groups
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.format} -> {self.out}: {self.written} file(s) written, "
                 f"{self.unchanged} unchanged, {self.removed} removed from the other split"]
        for split in (TRAINING, TESTING):
            per = self.images.get(split, {})
            counts = ", ".join(f"{c} {per[c]}" for c in sorted(per)) or "none"
            lines.append(f"  {split}: {self.groups.get(split, 0)} group(s); images: {counts}")
        reasons = Counter(reason for _, reason in self.skipped)
        lines.append(f"  skipped {len(self.skipped)}:")
        for reason, n in sorted(reasons.items()):
            example = next(src for src, r in self.skipped if r == reason)
            lines.append(f"    {n} x {reason} (e.g. {example})")
        lines.extend(f"  WARNING: {w}" for w in self.warnings)
        return "\n".join(lines)


# ----------------------------------------------------------------------------- windowing








# ----------------------------------------------------------------------------- splits and writing


def assign_splits(groups: Iterable[str | tuple[str, str]], test_fraction: float, seed: int
                  ) -> dict[str, str]:
    """Group id -> Training | Testing, stratified by class: within each class (in sorted order)
    a seeded shuffle of its sorted group ids sends round(test_fraction * n) groups to Testing,
    at least one and never all when the class has two or more groups.

    ``groups`` holds ids, or (id, class) pairs; a group seen under several classes (a patient
    with a tumour slice and a healthy slice) is split with its first class in sorted order. One
    random generator runs through the classes, so plain ids (one class) are split as before.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise IngestError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    stratum: dict[str, str] = {}
    for entry in sorted({(g, "") if isinstance(g, str) else tuple(g) for g in groups}):
        stratum.setdefault(entry[0], entry[1])
    rng = np.random.default_rng(seed)
    out = {}
    for cls in sorted(set(stratum.values())):
        ids = sorted(g for g, c in stratum.items() if c == cls)
        order = rng.permutation(len(ids))
        n_test = int(round(test_fraction * len(ids)))
        if len(ids) >= 2 and test_fraction > 0:
            n_test = min(max(n_test, 1), len(ids) - 1)
        test = {ids[i] for i in order[:n_test]}
        out.update({g: (TESTING if g in test else TRAINING) for g in ids})
    return dict(sorted(out.items()))




def _check_paths(src: Path, out: Path) -> None:
    if not src.exists():
        raise IngestError(f"source not found: {src}")
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise IngestError(f"out folder {out} and source {src} overlap: the source must stay "
                          "untouched, write somewhere else")
    if out.is_dir():
        foreign = sorted(e.name for e in out.iterdir()
                         if e.name not in (TRAINING, TESTING, GROUPS_CSV))
        if foreign:
            raise IngestError(f"out folder {out} holds {foreign[:5]}, which no importer wrote; "
                              "use an empty folder or one made by lib.ingest")


class _Writer:
    """Writes items idempotently into out and keeps the counts."""

    def __init__(self, out: Path, result: IngestResult, overwrite: bool) -> None:
        self.out, self.result, self.overwrite = out, result, overwrite
        self.groups: dict[str, str] = {}

    def _put(self, path: Path, data: bytes) -> None:
        if path.exists():
            if path.read_bytes() == data:
                self.result.unchanged += 1
                return
            if not self.overwrite:
                raise IngestError(f"{path} exists with different content (another importer, "
                                  "other options, or changed code); pass --overwrite to replace")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.result.written += 1

    def write(self, item: Item, split: str) -> None:
        other = TESTING if split == TRAINING else TRAINING
        rel = Path(split, item.cls, f"{item.name}.png")
        stale = self.out / other / item.cls / f"{item.name}.png"
        if stale.exists():
            if not self.overwrite:
                raise IngestError(f"{stale.relative_to(self.out).as_posix()} is in the other "
                                  "split (different seed or test fraction?); pass --overwrite "
                                  "to move it, or use a fresh out folder")
            for p in (stale, stale.with_name(f"{item.name}_mask.png")):
                if p.exists():
                    p.unlink()
                    self.result.removed += 1
            self.groups[Path(other, item.cls, f"{item.name}.png").as_posix()] = ""
        self._put(self.out / rel, png_bytes(item.image))
        if item.mask is not None:
            self._put(self.out / split / item.cls / f"{item.name}_mask.png",
                      png_bytes(binary_mask(item.mask)))
        self.groups[rel.as_posix()] = item.group
        per = self.result.images.setdefault(split, {})
        per[item.cls] = per.get(item.cls, 0) + 1

    def write_groups(self) -> None:
        path = self.out / GROUPS_CSV
        rows: dict[str, str] = {}
        if path.exists():
            with path.open(newline="") as fh:
                rows = {r["file"]: r["group"] for r in csv.DictReader(fh)}
        rows.update(self.groups)
        rows = {f: g for f, g in rows.items() if g}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", "group"])
        writer.writerows(sorted(rows.items()))
        data = buf.getvalue().encode()
        if path.exists() and path.read_bytes() == data:
            return
        self.out.mkdir(parents=True, exist_ok=True)  # merged rows: rewriting is always safe
        path.write_bytes(data)


def _run(out: Path, groups: Iterable[str | tuple[str, str]], items: Iterator[Item],
         result: IngestResult, test_fraction: float, seed: int, overwrite: bool) -> IngestResult:
    """Split the groups (found by a cheap first pass), then stream and write the items.

    Streaming keeps one image in memory at a time (a Decathlon set is ~75 000 slices); the
    groups of files that later turn out unreadable take part in the split, harmlessly.
    """
    splits = assign_splits(groups, test_fraction, seed)
    writer = _Writer(out, result, overwrite)
    n = 0
    for item in items:
        if item.group not in splits:  # the first pass and the import disagree: a bug, not data
            raise IngestError(f"{item.source}: group {item.group} was not seen by the first pass")
        writer.write(item, splits[item.group])
        n += 1
    if n:
        writer.write_groups()
    else:
        result.warnings.append("nothing imported: check SRC and the options")
    used = set(writer.groups.values())
    result.groups = dict(Counter(v for g, v in splits.items() if g in used))
    return result


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


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


def _figshare_items(src: Path, result: IngestResult) -> Iterator[Item]:
    import h5py

    for path in _figshare_files(src):
        try:
            with h5py.File(path, "r") as f:
                cj = f["cjdata"]
                image = np.asarray(cj["image"]).T  # MATLAB is column-major: transpose
                mask = np.asarray(cj["tumorMask"]).T
                label = int(np.asarray(cj["label"]).ravel()[0])
                pid = _figshare_pid(cj)
        except (OSError, KeyError, ValueError, IndexError, TypeError) as exc:
            result.skipped.append((str(path), f"unreadable or not a cjdata v7.3 .mat file: "
                                              f"{type(exc).__name__}"))
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
            yield Item(FIGSHARE_LABELS[label], f"figshare_{path.stem}", f"figshare:{pid}",
                       window_percentile(image), mask, str(path))


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
        brain_all = data[data != 0]
        for z in range(data.shape[2]):
            where = f"{path}#z={z}"
            img2 = np.rot90(data[:, :, z])  # RAS: rows run anterior (top) to posterior
            lab2 = np.rot90(labels[:, :, z])
            brain = int(np.count_nonzero(img2))
            if brain < MIN_BRAIN_FRACTION * img2.size:
                result.skipped.append((where, "little or no brain in the slice"))
                continue
            tumour = int(np.count_nonzero(lab2 > 0))
            name = f"{subject}_z{z:03d}"
            pixels = window_percentile(img2, brain_all)
            if tumour == 0:
                if healthy_slices:
                    yield Item("notumor", name, f"nifti:{subject}", pixels, None, where)
                else:
                    result.skipped.append((where, "no tumour (notumor needs --healthy-slices)"))
            elif tumour / brain > min_fraction:
                yield Item(label_class, name, f"nifti:{subject}", pixels, lab2, where)
            else:
                result.skipped.append((where, "tumour below --min-tumour-fraction"))


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


def _dicom_files(folder: Path) -> list[Path]:
    return [p for p in _visible_files(folder) if p.suffix.lower() == ".dcm"]


def _dicom_groups(src: Path) -> Iterator[tuple[str, str]]:
    """First pass: (group, class) of every readable .dcm in a class folder, headers only."""
    import pydicom

    for folder in sorted(p for p in src.iterdir() if p.is_dir() and p.name in CLASSES):
        for path in _dicom_files(folder):
            try:
                group = _dicom_group(pydicom.dcmread(path, stop_before_pixels=True))
            except Exception:  # noqa: BLE001 - reported by the import pass
                continue
            if group:
                yield group, folder.name




def _dicom_items(src: Path, result: IngestResult) -> Iterator[Item]:
    import pydicom

    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not _hidden(p)):
        if folder.name not in CLASSES:
            n = sum(1 for p in folder.rglob("*") if p.is_file())
            result.skipped.append((str(folder), f"folder is not a class of {CLASSES} ({n} files)"))
            continue
        for path in _visible_files(folder):
            rel = path.relative_to(folder)
            if path.suffix.lower() != ".dcm":
                result.skipped.append((str(path), "not a .dcm file"))
                continue
            try:
                ds = pydicom.dcmread(path)
                if "PixelData" not in ds:
                    result.skipped.append((str(path), "no pixel data"))
                    continue
                raw = np.asarray(ds.pixel_array)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is a reported skip
                result.skipped.append((str(path), f"unreadable DICOM: {type(exc).__name__}"))
                continue
            if raw.ndim != 2:
                result.skipped.append((str(path), f"pixel data is {raw.shape}, not one "
                                                  "greyscale frame"))
                continue
            group = _dicom_group(ds)
            if not group:
                result.skipped.append((str(path), "no PatientID or StudyInstanceUID: cannot "
                                                  "group by patient"))
                continue
            pixels = dicom_to_uint8(ds, raw)
            name = "__".join(rel.with_suffix("").parts)
            yield Item(folder.name, name, group, pixels, None, str(path))


def import_dicom(src: Path | str, out: Path | str = "data/raw", test_fraction: float = 0.2,
                 seed: int = 42, overwrite: bool = False) -> IngestResult:
    """A folder per class of DICOM slices (``SRC/<class>/**/*.dcm``) -> raw layout, no masks.

    Pixels: stored values * RescaleSlope + RescaleIntercept, then windowed with the file's
    WindowCenter/WindowWidth (first value when multi-valued; ``window_dicom``) when present,
    else with the percentile rule of the module docstring; MONOCHROME1 is inverted. Group:
    PatientID, else StudyInstanceUID, else the file is skipped. Files without pixel data,
    unreadable or compressed beyond what pydicom decodes alone, multi-frame or colour files and
    folders that are not a study class are reported skips.
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
    sub.add_parser("dicom", parents=[common], help="SRC/<class>/**/*.dcm")
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
