"""The phantom generator keeps its promises: reproducible bytes, the Kaggle layout, masks that
match the lesions, class-specific lesion sites, healthy twins, and no nuisance shortcut by default
(while the deliberate shortcuts are detectable, so the shortcut test can fail)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import ndimage as ndi
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.data import phantom as P
from tests.conftest import REPO

TINY = P.PhantomConfig(seed=7, n_train_per_class=3, n_test_per_class=2, image_size=64)
MID = P.PhantomConfig(seed=11, image_size=128)  # for geometry checks: rasterisation is finer


def md5s(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two runs with the same seed (one with 2 workers) and one with another seed."""
    root = tmp_path_factory.mktemp("phantom")
    runs = {"a": (TINY, 1), "b": (TINY, 2), "other": (replace(TINY, seed=8), 1)}
    for name, (cfg, workers) in runs.items():
        P.generate(cfg, root / name, progress=False, workers=workers)
    return {name: root / name for name in runs}



def output_to_mni(draws: P.Draws, rows: np.ndarray, cols: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """MNI (x, y) in mm of output pixels: where a lesion lies (the phantom's own transform)."""
    matrix, offset, _ = P._output_transform(draws)
    ij = matrix @ np.vstack([np.ravel(rows), np.ravel(cols)]).astype(np.float64) + offset[:, None]
    return ij[0] + P._ORIGIN_MM[0], ij[1] + P._ORIGIN_MM[1]


def brain_mask_for(draws: P.Draws) -> np.ndarray:
    """Brain (incl. ventricles and enclosed cisterns) on the output grid, sampled as masks are."""
    sl = P._slice_at(draws.level_mm)
    return P._resample((sl.sdf_brain < 0).astype(np.float64), draws, order=0) > 0.5

@pytest.fixture(scope="module")
def cases() -> dict[str, list[tuple[P.Draws, np.ndarray, np.ndarray, np.ndarray]]]:
    """(draws, image, mask, brain mask) for 16 rendered cases per class at 128 px."""
    out: dict[str, list] = {}
    for cls in P.CLASSES:
        out[cls] = []
        for i in range(16):
            d = P.draw_case(MID, "Training", cls, i)
            image, mask = P.render(MID, d)
            out[cls].append((d, image, mask, brain_mask_for(d)))
    return out


def cv_predict(x: np.ndarray, y: np.ndarray, model) -> np.ndarray:
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return cross_val_predict(model, x, y, cv=folds)


def nuisance_matrix(cfg: P.PhantomConfig, n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    x = [P.draw_case(cfg, "Training", c, i).nuisance_vector() for c in P.CLASSES for i in range(n)]
    y = np.repeat(np.arange(len(P.CLASSES)), n)
    return np.array(x), y


# ------------------------------------------------------------------------------------ bytes
def test_same_seed_gives_byte_identical_files_and_other_seed_does_not(tiny_sets) -> None:
    a, b, other = md5s(tiny_sets["a"]), md5s(tiny_sets["b"]), md5s(tiny_sets["other"])
    assert len(a) == 4 * (3 + 2) * 2 + 1  # classes x images x (image, mask) + manifest
    assert a == b  # also: 1 vs 2 worker processes give the same bytes
    images = [k for k in a if k.endswith(".png") and not k.endswith("_mask.png")]
    assert images and all(a[k] != other[k] for k in images)


def test_one_case_regenerates_on_its_own(tiny_sets) -> None:
    image, mask = P.render_case(TINY, "Testing", "glioma", 1)
    folder = tiny_sets["a"] / "Testing" / "glioma"
    assert np.array_equal(np.asarray(Image.open(folder / "glioma_0001.png")), image)
    assert np.array_equal(np.asarray(Image.open(folder / "glioma_0001_mask.png")) > 0, mask)


# ----------------------------------------------------------------------------------- layout
def test_layout_balance_masks_and_image_format(tiny_sets) -> None:
    root = tiny_sets["a"]
    manifest = json.loads((root / P.MANIFEST).read_text())
    assert manifest["config"]["seed"] == TINY.seed
    for split, n in (("Training", 3), ("Testing", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(P.CLASSES)
        for cls in P.CLASSES:
            files = sorted((root / split / cls).iterdir())
            images = [f for f in files if not f.stem.endswith("_mask")]
            assert len(images) == n and manifest["counts"][split][cls] == n
            assert len(files) == 2 * n
            for f in images:
                assert f.name.startswith(f"{cls}_")
                mask_path = f.with_name(f"{f.stem}_mask.png")
                assert mask_path.is_file()
                with Image.open(f) as im, Image.open(mask_path) as mk:
                    assert im.mode == "L" and im.size == (64, 64)
                    assert mk.mode == "L" and mk.size == (64, 64)
                    assert set(np.unique(np.asarray(mk))) <= {0, 255}
                    assert not im.info  # no metadata chunks (text, time)


def test_refuses_foreign_folder_but_replaces_phantom_output(tmp_path: Path) -> None:
    cfg = P.PhantomConfig(seed=3, n_train_per_class=1, n_test_per_class=1, image_size=48)
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="does not look like a phantom"):
        P.generate(cfg, tmp_path, progress=False)
    assert not (tmp_path / "Training").exists()
    P.generate(cfg, tmp_path, progress=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    out = tmp_path / "again"
    P.generate(replace(cfg, n_train_per_class=2), out, progress=False)
    P.generate(cfg, out, progress=False)  # a phantom output is replaced, stale files go
    assert len(list((out / "Training" / "glioma").iterdir())) == 2


# ------------------------------------------------------------------------------------ masks
def test_masks_nonempty_exactly_for_tumours_inside_brain_and_sized(cases) -> None:
    lo, hi = MID.lesion_fraction
    for cls, rows in cases.items():
        for d, _image, mask, brain in rows:
            if cls == "notumor":
                assert d.lesion is None and not mask.any()
                continue
            assert mask.any() and not (mask & ~brain).any()
            share = mask.sum() / brain.sum()
            assert lo * 0.85 <= share <= hi * 1.15, (cls, d.index, share)
            assert share == pytest.approx(d.lesion.area_fraction, rel=0.15)


def test_lesions_sit_where_their_class_belongs(cases) -> None:
    n = MID.image_size
    glioma_depth, meningioma_depth = [], []
    for cls in P.TUMOUR_CLASSES:
        for d, _image, mask, brain in cases[cls]:
            depth = ndi.distance_transform_edt(brain)  # px to the nearest non-brain pixel
            rows, cols = np.nonzero(mask)
            cr, cc = rows.mean(), cols.mean()
            x, y = output_to_mni(d, np.array([cr]), np.array([cc]))
            centroid_depth = depth[int(round(cr)), int(round(cc))]
            if cls == "pituitary":
                assert abs(x[0]) < 4.0 and -8.0 < y[0] < 14.0  # midline sellar/suprasellar
                assert cr < (n - 1) / 2  # anterior half: anterior is at the top of the image
            elif cls == "meningioma":
                assert depth[mask].min() <= 1.0  # dural based: touches the brain outline
                meningioma_depth.append(centroid_depth)
            else:
                assert centroid_depth >= 4.0  # intra-axial, away from the outline
                glioma_depth.append(centroid_depth)
    assert np.median(glioma_depth) > 2 * np.median(meningioma_depth)


def test_healthy_twin_differs_only_around_the_lesion(cases) -> None:
    n = MID.image_size
    for cls in P.CLASSES:
        for d, image, mask, _brain in cases[cls][:8]:
            twin = P.healthy_twin(MID, d.split, cls, d.index)
            if cls == "notumor":
                assert np.array_equal(twin, image)
                continue
            # edema reaches ~2.3 R (perturbed), a meningioma's dural tail 1.9 R from the centre
            reach_mm = d.lesion.radius_mm * (3.5 if cls == "glioma" else 2.2) + 4.0
            reach_px = reach_mm * d.scale * n / P.FOV_MM
            far = ndi.distance_transform_edt(~mask) > reach_px
            assert far.mean() > 0.5
            assert np.array_equal(twin[far], image[far])
            diff = np.abs(image.astype(int) - twin.astype(int))
            assert diff[mask].mean() > 3.0  # the lesion changes the pixels it covers


# -------------------------------------------------------------------------------- shortcuts
def test_nuisance_draws_do_not_predict_the_class_by_default_but_level_shortcut_does() -> None:
    models = {
        "logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "forest": RandomForestClassifier(
            n_estimators=60, min_samples_leaf=3, random_state=0, n_jobs=1
        ),
    }
    x, y = nuisance_matrix(P.PhantomConfig())
    assert x.shape[1] >= 10 and np.isfinite(x).all()
    for name, model in models.items():
        acc = (cv_predict(x, y, model) == y).mean()
        assert acc < 0.25 + 0.10, f"{name}: nuisance draws predict the class ({acc:.2f})"
    xs, ys = nuisance_matrix(P.PhantomConfig(shortcut="level"))
    pred = cv_predict(xs, ys, models["forest"])
    pit = P.CLASSES.index("pituitary")
    assert (pred == ys).mean() > 0.42  # one class perfectly, the other three at chance
    assert (pred[ys == pit] == pit).mean() > 0.9


def test_size_shortcut_writes_notumor_at_another_size(tmp_path: Path) -> None:
    cfg = P.PhantomConfig(
        seed=5, n_train_per_class=1, n_test_per_class=1, image_size=48, shortcut="size"
    )
    P.generate(cfg, tmp_path, progress=False)
    for cls in P.CLASSES:
        for f in (tmp_path / "Training" / cls).iterdir():
            with Image.open(f) as im:
                assert im.size == ((72, 72) if cls == "notumor" else (48, 48))
    same = P.draw_case(P.PhantomConfig(image_size=48), "Training", "notumor", 0)
    assert same.image_size == 48


# --------------------------------------------------------------------------- not trivial
def test_global_intensity_does_not_separate_classes(cases) -> None:
    x = np.array([[img.mean(), img.std()] for cls in P.CLASSES for _, img, _, _ in cases[cls]])
    y = np.repeat(np.arange(len(P.CLASSES)), len(cases["glioma"]))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    acc = (cv_predict(x, y, model) == y).mean()
    assert acc < 0.5, f"mean/std alone separate the classes ({acc:.2f})"


def test_meningioma_enhances_on_t1c() -> None:
    seen = 0
    for i in range(60):
        d = P.draw_case(MID, "Training", "meningioma", i)
        if d.sequence != "T1c":
            continue
        image, mask = P.render(MID, d)
        ring = ndi.binary_dilation(mask, iterations=4) & ~mask & brain_mask_for(d)
        assert image[mask].mean() > image[ring].mean() + 10, i
        seen += 1
    assert seen >= 5


def test_sequences_have_their_contrast() -> None:
    """Deep CSF (ventricles) is dark on T1 and FLAIR and bright on T2, relative to white matter."""
    base = P.draw_case(MID, "Training", "notumor", 0)
    sl = P._slice_at(10.0)
    csf = (sl.sdf_brain < -15) & (sl.gm + sl.wm < 0.1)
    white = (sl.sdf_brain < -15) & (sl.wm > 0.95)
    ratios = {}
    for seq in P.SEQUENCES:
        d = replace(base, sequence=seq, level_mm=10.0, bias_amp=0.0)
        image, _ = P.render(MID, d)
        rows, cols = np.mgrid[: MID.image_size, : MID.image_size]
        x, y = output_to_mni(d, rows, cols)
        i = np.clip(np.rint(x + 98).astype(int), 0, csf.shape[0] - 1).reshape(rows.shape)
        j = np.clip(np.rint(y + 134).astype(int), 0, csf.shape[1] - 1).reshape(rows.shape)
        inner = ndi.binary_erosion(csf, iterations=1)[i, j]
        assert inner.sum() > 10
        ratios[seq] = image[inner].mean() / image[white[i, j]].mean()
    assert ratios["T2"] > 1.5 and ratios["T1"] < 0.8 and ratios["FLAIR"] < 0.5, ratios


def test_default_mix_is_t1c_and_weights_are_shared_by_every_class() -> None:
    """The default mirrors the figshare set (T1c only); a mix is drawn alike for every class."""
    assert {P.draw_case(P.PhantomConfig(), "Training", c, i).sequence
            for c in P.CLASSES for i in range(30)} == {"T1c"}
    even = P.PhantomConfig(sequences={"T1": 1, "T1c": 1, "T2": 1, "FLAIR": 1})
    for cls in P.CLASSES:
        seqs = [P.draw_case(even, "Training", cls, i).sequence for i in range(400)]
        shares = np.array([seqs.count(s) for s in P.SEQUENCES]) / len(seqs)
        assert np.all(np.abs(shares - 0.25) < 0.06), (cls, shares)
    # the same uniform draw picks the same sequence whatever the class (no sequence shortcut)
    x, _ = nuisance_matrix(even, n=60)
    assert x[:, 1:5].sum(axis=1).tolist() == [1.0] * len(x)
    half = P.PhantomConfig(sequences={"T1c": 3, "FLAIR": 1})  # missing sequences weigh 0
    seqs = [P.draw_case(half, "Testing", "glioma", i).sequence for i in range(400)]
    assert set(seqs) == {"T1c", "FLAIR"} and 0.65 < seqs.count("T1c") / 400 < 0.85


@pytest.mark.parametrize("value", [{"T3": 1}, {"T1c": -1}, {"T1c": 0}, [1, 0, 0, 0],
                                   {"T1c": "a lot"}])
def test_bad_sequence_weights_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="phantom.sequences"):
        P.PhantomConfig.from_params({**asdict(P.PhantomConfig()), "sequences": value})


def test_gliomas_enhance_clearly_or_are_dark_on_t1c_and_bright_on_flair() -> None:
    """Enhancing gliomas are clearly brighter than the tissue around them on T1c; the others
    (low grade) are darker than it on T1c and brighter on FLAIR: never invisible everywhere."""
    draws = [P.draw_case(MID, "Testing", "glioma", i) for i in range(60)]
    enhancing = [d for d in draws if d.lesion.enhancement > 0]
    assert 0.65 <= len(enhancing) / len(draws) <= 0.95
    assert min(d.lesion.enhancement for d in enhancing) >= P.GLIOMA_ENHANCEMENT[0]
    # low-grade gliomas are diagnosed large: none is a dot (realism, see LOWGRADE_MIN_FRACTION)
    assert all(d.lesion.area_fraction >= P.LOWGRADE_MIN_FRACTION - 1e-9
               for d in draws if d.lesion.enhancement == 0)
    for d in draws[:24]:
        ring_of = {}
        for seq in ("T1c", "FLAIR"):
            image, mask = P.render(MID, replace(d, sequence=seq))
            ring = ndi.binary_dilation(mask, iterations=3) & ~mask & brain_mask_for(d)
            # the brightest tenth: an enhancing rim around a necrotic core counts
            ring_of[seq] = (float(np.percentile(image[mask], 90)), float(image[ring].mean()))
        lesion, around = ring_of["T1c"]
        if d.lesion.enhancement > 0:
            assert lesion > around * 1.2, (d.index, ring_of)
        else:
            assert float(np.median(P.render(MID, d)[0][P.render(MID, d)[1]])) < around, d.index
            assert ring_of["FLAIR"][0] > ring_of["FLAIR"][1] * 1.15, (d.index, ring_of)


def test_normal_structures_enhance_on_t1c_in_every_class_and_in_twins() -> None:
    """Choroid plexus, sinuses and the stalk are brighter on T1c than on T1 in a healthy scan,
    and they are anatomy: a tumour image's twin has them too (they are not a class cue)."""
    base = replace(P.draw_case(MID, "Training", "notumor", 0), level_mm=-12.0, bias_amp=0.0,
                   noise_sigma=0.0, rotation_deg=0.0)
    t1 = P.render(MID, replace(base, sequence="T1"))[0].astype(float)
    t1c = P.render(MID, replace(base, sequence="T1c"))[0].astype(float)
    gain = t1c - t1
    assert (gain > 60).sum() >= 20  # structures light up (sinus band, stalk, plexus)
    structures = P._normal_structures(P._slice_at(-12.0), -12.0,
                                      np.ones_like(P._slice_at(-12.0).gm))
    assert {"sinus", "stalk", "vessel"} <= set(structures)
    # vessels are strands in the superficial sulci: a few hundred mm^2, never deep white matter
    vessel = P._slice_at(0.0).vessel
    assert 50 < vessel.sum() < 0.05 * (P._slice_at(0.0).sdf_brain < 0).sum()
    assert not vessel[P._slice_at(0.0).sdf_brain < -P.VESSEL_DEPTH_MM - 1].any()
    d = P.draw_case(MID, "Training", "glioma", 3)
    twin = P.render(MID, d, lesion=False)[0]
    notumor_like = P.render(MID, replace(d, lesion=None))[0]
    assert np.array_equal(twin, notumor_like)


def test_sequence_task_is_balanced_reproducible_and_separately_seeded() -> None:
    images, labels = P.generate_sequence_task(TINY, n_per_sequence=3, seed=99)
    assert images.shape == (12, 64, 64) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=4).tolist() == [3, 3, 3, 3]
    again, _ = P.generate_sequence_task(TINY, n_per_sequence=3, seed=99)
    other, _ = P.generate_sequence_task(TINY, n_per_sequence=3, seed=100)
    assert np.array_equal(images, again) and not np.array_equal(images, other)


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"shortcut": "orbits"}, "shortcut"),
        ({"lesion_fraction": [0.2, 0.1]}, "lesion_fraction"),
        ({"lesion_fraction": [0.1]}, "lesion_fraction"),
        ({"lesion_fraction": [0.0, 0.1]}, "lesion_fraction"),
        ({"image_size": 8}, "image_size"),
        ({"n_train_per_class": 2.5}, "n_train_per_class"),
        ({"noise": -1}, "noise"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_config_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        P.PhantomConfig.from_params({**asdict(P.PhantomConfig()), **change})


def test_params_yaml_phantom_group_is_valid() -> None:
    from lib.config import load_params, section

    cfg = P.PhantomConfig.from_params(section(load_params(REPO / "params.yaml"), "phantom"))
    assert isinstance(cfg.lesion_fraction, tuple) and len(cfg.lesion_fraction) == 2
    assert cfg.shortcut == "none"  # the committed profile must not teach a shortcut


def test_cli_generates_and_reports_errors(tmp_path: Path, capsys) -> None:
    args = [
        "--params",
        str(REPO / "params.yaml"),
        "--out",
        str(tmp_path / "raw"),
        "--quiet",
        "--set",
        "n_train_per_class=1",
        "--set",
        "n_test_per_class=1",
        "--set",
        "image_size=40",
        "--set",
        "lesion_fraction=[0.02, 0.05]",
    ]
    assert P.main(args) == 0
    pngs = list((tmp_path / "raw").rglob("*.png"))
    assert len(pngs) == 2 * 4 * 1 * 2  # splits x classes x images x (image, mask)
    cfg = json.loads((tmp_path / "raw" / P.MANIFEST).read_text())["config"]
    assert cfg["image_size"] == 40 and cfg["lesion_fraction"] == [0.02, 0.05]
    assert P.main([*args[:4], "--set", "shortcut=orbits", "--quiet"]) == 2
    assert "shortcut" in capsys.readouterr().err


# ------------------------------------------------------------------- the committed data (data.dvc)
DATA_DVC = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="module")
def default_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """params.yaml's phantom group with one image per class and split, written twice by the CLI
    (1 and 2 worker processes) into separate folders. A case is drawn from (seed, split, class,
    index) alone, so these are the default profile's first cases, file for file."""
    root = tmp_path_factory.mktemp("default-small")
    params = {**PARAMS, "phantom": {**PARAMS["phantom"], "n_train_per_class": 1,
                                    "n_test_per_class": 1}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    outs = []
    for workers in (1, 2):
        out = root / f"run-{workers}"
        assert P.main(["--params", str(root / "params.yaml"), "--out", str(out), "--quiet",
                       "--workers", str(workers)]) == 0
        outs.append(out)
    return outs[0], outs[1]


def test_default_profile_regenerates_byte_identically(default_small) -> None:
    a, b = (md5s(root) for root in default_small)
    assert len(a) == 2 * 4 * 1 * 2 + 1 and a == b  # splits x classes x (image, mask) + manifest
    assert "Training/glioma/glioma_0000.png" in a


def test_data_dvc_pins_the_default_profile() -> None:
    """What a fresh clone can check without the data: data.dvc tracks data.raw_dir, with as
    many files as params.yaml's phantom group writes."""
    ph = PARAMS["phantom"]
    assert DATA_DVC["path"] == PARAMS["data"]["raw_dir"]
    assert DATA_DVC["md5"].endswith(".dir")
    n_images = len(P.CLASSES) * (ph["n_train_per_class"] + ph["n_test_per_class"])
    assert DATA_DVC["nfiles"] == 2 * n_images + 1  # (image, mask) per case + phantom.json


def test_regenerated_cases_are_the_committed_bytes(default_small) -> None:
    """The generator's bytes match data.dvc: the first case of every class and split, from the
    CLI and from render_case + png_bytes, equals the file under data/raw, and data/raw's
    manifest is params.yaml's phantom group."""
    from lib.data.images import png_bytes

    raw = REPO / DATA_DVC["path"]
    if not (raw / P.MANIFEST).is_file():
        pytest.skip(f"{DATA_DVC['path']} is not checked out (a fresh clone: run `dvc pull` or "
                    "`make phantom`); only the regeneration itself was checked")
    committed = json.loads((raw / P.MANIFEST).read_text())
    cfg = P.PhantomConfig.from_params(PARAMS["phantom"])
    assert committed["generator"] == P.PHANTOM_GENERATOR
    small = json.loads((default_small[0] / P.MANIFEST).read_text())["config"]
    assert committed["config"] == {**small, "n_train_per_class": cfg.n_train_per_class,
                                   "n_test_per_class": cfg.n_test_per_class}
    regenerated = md5s(default_small[0])
    pngs = [rel for rel in regenerated if rel.endswith(".png")]
    assert len(pngs) == 16
    assert {rel: hashlib.md5((raw / rel).read_bytes()).hexdigest() for rel in pngs} == {
        rel: regenerated[rel] for rel in pngs}
    image, mask = P.render_case(cfg, "Training", "glioma", 0)
    folder = raw / "Training" / "glioma"
    assert png_bytes(image) == (folder / "glioma_0000.png").read_bytes()
    assert png_bytes(mask.astype(np.uint8) * 255) == (folder / "glioma_0000_mask.png").read_bytes()
