"""EDA statistics on inputs whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.eda import analysis as eda
from lib.stats import otsu_threshold


def test_otsu_separates_two_intensity_populations() -> None:
    rng = np.random.default_rng(0)
    low = np.clip(rng.normal(40, 5, 5000), 0, 255).astype(np.uint8)
    high = np.clip(rng.normal(180, 5, 5000), 0, 255).astype(np.uint8)
    threshold = otsu_threshold(np.concatenate([low, high]).reshape(100, 100))
    assert low.max() <= threshold < high.min()


def test_head_mask_is_the_largest_blob_with_holes_filled() -> None:
    img = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    head = (yy - 32) ** 2 + (xx - 32) ** 2 < 20**2
    img[head] = 200
    img[(yy - 32) ** 2 + (xx - 32) ** 2 < 5**2] = 0  # a dark hole inside (ventricle-like)
    img[2:4, 2:4] = 255  # a speck outside
    mask = eda.head_mask(img)
    assert mask[32, 32] and not mask[3, 3]
    assert abs(int(mask.sum()) - int(head.sum())) < 5


def test_kruskal_detects_a_shift_and_not_its_absence() -> None:
    rng = np.random.default_rng(1)
    same = pd.DataFrame({"class": np.repeat(["a", "b", "c"], 200), "mean": rng.normal(0, 1, 600)})
    shifted = same.assign(mean=same["mean"] + np.repeat([0.0, 0.0, 2.0], 200))
    null, effect = eda.kruskal_by_class(same, "mean"), eda.kruskal_by_class(shifted, "mean")
    assert null["p"] > 0.01 and abs(null["epsilon2"]) < 0.02
    assert effect["p"] < 1e-10 and effect["epsilon2"] > 0.3
    assert effect["n"] == 600 and effect["k"] == 3


def test_kruskal_with_one_class_is_reported_not_raised() -> None:
    one = pd.DataFrame({"class": ["a"] * 5, "mean": np.arange(5.0)})
    assert np.isnan(eda.kruskal_by_class(one, "mean")["H"])


def test_counts_table_orders_splits_and_totals() -> None:
    manifest = pd.DataFrame({"class": ["x", "x", "y", "y", "y"],
                             "split": ["test", "train", "train", "val", "train"]})
    table = eda.counts_table(manifest)
    assert list(table.columns) == ["train", "val", "test", "total"]
    assert table.loc["y"].tolist() == [2, 1, 0, 3]


@pytest.mark.parametrize("per_class", [1, 3])
def test_sample_records_is_seeded_and_capped(per_class: int) -> None:
    manifest = pd.DataFrame({"class": list("aaaabb"), "split": ["train"] * 6,
                             "path": [f"p{i}" for i in range(6)]})
    first = eda.sample_records(manifest, per_class, seed=3)
    assert first.equals(eda.sample_records(manifest, per_class, seed=3))
    assert first.groupby("class").size().to_dict() == {"a": per_class, "b": min(per_class, 2)}


# ---- lesion conspicuity ----------------------------------------------------------------------
def _head_with_lesion(contrast: float, centre: tuple[int, int] = (64, 64), seed: int = 0,
                      sd: float = 10.0, radius: int = 12) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """A 128 px noisy head (mean 100, sd `sd`) on black air, with a disc lesion whose mean is
    `contrast` above the tissue: conspicuity is contrast / sd by construction."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    head = (yy - 64) ** 2 + (xx - 64) ** 2 < 50**2
    lesion = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
    signal = np.where(head, 100.0, 0.0) + np.where(lesion & head, contrast, 0.0)
    image = np.where(head, signal + rng.normal(0, sd, signal.shape), 0.0)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), lesion & head, head


def _brute_force_conspicuity(image: np.ndarray, lesion: np.ndarray, head: np.ndarray,
                             ring_px: float) -> float:
    """The definition spelled out: distance of every pixel to its nearest lesion pixel."""
    pixels = np.argwhere(np.ones_like(lesion))
    inside = np.argwhere(lesion)
    nearest = np.sqrt(((pixels[:, None, :] - inside[None, :, :]) ** 2).sum(-1)).min(1)
    ring = (nearest.reshape(lesion.shape) <= ring_px) & ~lesion & head
    values = image.astype(float)
    return abs(values[lesion].mean() - values[ring].mean()) / values[ring].std()


@pytest.mark.parametrize("contrast", [15.0, 30.0, 60.0])
def test_conspicuity_of_a_bright_disc_is_contrast_over_noise(contrast: float) -> None:
    image, lesion, head = _head_with_lesion(contrast)
    assert eda.ring_width(128) == 3
    measured = eda.conspicuity(image, lesion)  # ring 3 px, head found by head_mask
    assert measured == pytest.approx(_brute_force_conspicuity(image, lesion, head, 3), rel=1e-9)
    # Over noise realisations it is contrast / sd up to sampling error (~600 ring pixels).
    values = [eda.conspicuity(*_head_with_lesion(contrast, seed=s)[:2], ring_px=5)
              for s in range(10)]
    assert np.median(values) == pytest.approx(contrast / 10.0, rel=0.08)
    assert min(values) > 0.75 * contrast / 10.0 and max(values) < 1.25 * contrast / 10.0


def test_a_lesion_with_no_contrast_has_conspicuity_near_zero() -> None:
    values = [eda.conspicuity(*_head_with_lesion(0.0, seed=s)[:2]) for s in range(5)]
    assert max(values) < 0.3 and np.median(values) < 0.15


def test_conspicuity_is_nan_without_a_lesion_and_the_ring_scales_with_size() -> None:
    image, lesion, _ = _head_with_lesion(30.0)
    assert np.isnan(eda.conspicuity(image, np.zeros_like(lesion)))
    assert [eda.ring_width(s) for s in (32, 64, 128, 256, 512)] == [2, 2, 3, 6, 12]


def test_the_ring_excludes_air_outside_the_head() -> None:
    # Lesion on the head's edge: half its ring would be black air without the head restriction.
    image, lesion, head = _head_with_lesion(30.0, centre=(64, 112))
    ring = eda.lesion_ring(lesion, eda.head_mask(image), ring_px=4)
    everywhere = eda.lesion_ring(lesion, np.ones_like(head), ring_px=4)
    assert ring.sum() > 50 and not (ring & ~head).any() and (everywhere & ~head).sum() > 20
    assert not (ring & lesion).any()
    assert eda.conspicuity(image, lesion, ring_px=4) == pytest.approx(3.0, rel=0.15)
    with_air = eda.conspicuity(image, lesion, ring_px=4, head=np.ones_like(head))
    assert with_air < 2.0  # air drags the ring's mean down and its sd up


CONSPICUITY_COLUMNS = ["n", "median", "q25", "q75", "iqr", "share_below_1"]


def test_conspicuity_table_on_real_data_is_per_class_with_unknown_sequence(tmp_path) -> None:
    """No phantom.json: nobody recorded the sequence, so every lesion is "unknown"."""
    from PIL import Image

    rows = []
    for cls, contrast in (("benign", 20.0), ("malignant", 40.0), ("normal", None)):
        folder = tmp_path / "Training" / cls
        folder.mkdir(parents=True)
        for k in range(3):
            image, lesion, _ = _head_with_lesion(contrast or 0.0, seed=k)
            Image.fromarray(image).save(folder / f"img{k}.png")
            mask = lesion if contrast is not None else np.zeros_like(lesion)
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"img{k}_mask.png")
            rows.append({"path": f"Training/{cls}/img{k}.png", "class": cls, "split": "train",
                         "mask": f"Training/{cls}/img{k}_mask.png",
                         "width": image.shape[1], "height": image.shape[0]})
    rows.append({"path": "Training/normal/img0.png", "class": "normal", "split": "val",
                 "mask": "", "width": image.shape[1], "height": image.shape[0]})
    # (an image without a mask file is skipped, not an error)
    stats_df = eda.survey(pd.DataFrame(rows), tmp_path, progress=False).stats
    per_image = eda.lesion_conspicuity(stats_df, tmp_path)
    assert set(per_image["sequence"]) == {eda.UNKNOWN_SEQUENCE}
    assert len(per_image) == 6 and set(per_image["ring_px"]) == {3}
    table = eda.conspicuity_table(per_image)
    assert list(table.columns) == CONSPICUITY_COLUMNS
    assert table.index.names == ["class", "sequence"]
    assert table.index.tolist() == [("benign", "unknown"), ("malignant", "unknown")]
    assert table.loc[("malignant", "unknown"), "median"] == pytest.approx(4.0, rel=0.15)
    assert table["share_below_1"].tolist() == [0.0, 0.0]
    kept = eda.conspicuity_summary(table)
    assert kept["benign"]["unknown"]["n"] == 3 and set(kept["benign"]["unknown"]) == {
        "n", "median", "q25", "q75", "iqr", "share_below_1"}


def test_conspicuity_table_of_no_lesions_is_empty_with_its_columns() -> None:
    empty = pd.DataFrame(columns=["path", "class", "split", "sequence", "ring_px", "conspicuity"])
    table = eda.conspicuity_table(empty)
    assert table.empty and list(table.columns) == CONSPICUITY_COLUMNS
    assert table.index.names == ["class", "sequence"] and eda.conspicuity_summary(table) == {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from lib.tiny import tiny_dataset

    return tiny_dataset(per_class=2, image_size=64, seed=5,
                        workdir=tmp_path_factory.mktemp("tiny-eda"))


def test_conspicuity_table_on_the_phantom_is_per_class_and_sequence(tiny) -> None:
    from lib.data import phantom
    from lib.data.manifest import load_manifest

    manifest = load_manifest(tiny.manifest_path)
    cfg = eda.phantom_config(tiny.raw_dir)
    assert cfg is not None
    stats_df = eda.survey(manifest, tiny.raw_dir, progress=False).stats
    per_image = eda.lesion_conspicuity(stats_df, tiny.raw_dir)
    tumours = manifest[manifest["class"] != "notumor"]
    assert sorted(per_image["path"]) == sorted(tumours["path"])  # notumor masks are empty
    for rec in per_image.itertuples():
        split, cls, name = rec.path.split("/")
        index = int(name.removesuffix(".png").split("_")[1])
        assert rec.sequence == phantom.draw_case(cfg, split, cls, index).sequence
    table = eda.conspicuity_table(per_image)
    assert list(table.columns) == CONSPICUITY_COLUMNS
    assert set(table.index.get_level_values("class")) == {"glioma", "meningioma", "pituitary"}
    assert set(table.index.get_level_values("sequence")) <= set(phantom.SEQUENCES)
    assert table["n"].sum() == len(per_image)
    kept = eda.summary(manifest, stats_df, {}, table)["conspicuity"]
    assert kept["ring_px_at_128"] == 3 and kept["splits"] == "all"
    assert set(kept["by_class_sequence"]) == {"glioma", "meningioma", "pituitary"}


def test_the_report_shows_the_plain_samples_before_the_outlined_ones(tmp_path) -> None:
    from lib import figures
    from lib.eda import figures as eda_figures
    from lib.report import build as report

    for name in ("eda_samples", "eda_samples_plain", "eda_conspicuity", "eda_counts", "eda_zzz"):
        fig = eda_figures.lesion_share(pd.DataFrame({"class": [], "lesion_share": []}))
        figures.save(fig, tmp_path / f"{name}.png", dpi=20)
    shown = report.eda_figures(tmp_path)
    assert [f["name"] for f in shown] == ["eda_counts", "eda_samples_plain", "eda_samples",
                                          "eda_conspicuity", "eda_zzz"]
    assert shown[1]["caption"].startswith("Sample slices") and shown[-1]["caption"] == "eda zzz"
