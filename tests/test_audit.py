"""Tests of lib.data.audit on its own: judging single files and the near-duplicate search."""

from __future__ import annotations

import numpy as np
import pytest

from lib.data.audit import (
    TooManyPairsError,
    inspect_image,
    near_duplicate_pairs,
    rotated_match,
    rotated_matches,
)
from lib.data.prepare import PrepareConfig, build_manifest
from tests.test_data import SIZE, png_header_only, save, simple_dataset, smooth

# ---------------------------------------------------------------------------------------------
# Single files


def test_inspect_image_turns_pil_bomb_warning_into_a_finding(tmp_path):
    # 100 M pixels: above PIL's warning limit (~89 M), below its error limit, below max_pixels.
    p = png_header_only(tmp_path / "warn.png", 10_000, 10_000)
    info = inspect_image(p, max_pixels=10**9)
    assert info.status == "excluded" and info.issues[0][0] == "huge_image"
    assert "DecompressionBomb" in info.reason or "decompression bomb" in info.reason.lower()


def test_inspect_image_checks_size_before_decoding(tmp_path):
    p = save(tmp_path / "big.png", smooth(1, size=300))
    info = inspect_image(p, max_pixels=300 * 300 - 1)
    assert info.issues[0][0] == "huge_image" and info.width == 300 and info.phash == ""
    assert inspect_image(p, max_pixels=300 * 300).status == "ok"


def test_inspect_image_accepts_rgb_and_gray(tmp_path):
    rgb = np.stack([smooth(1)] * 3, axis=-1)
    for name, arr in (("g.png", smooth(1)), ("c.jpg", rgb), ("c.bmp", rgb), ("c.tiff", rgb)):
        info = inspect_image(save(tmp_path / name, arr), max_pixels=10**6)
        assert info.status == "ok", (name, info.reason)
        assert (info.width, info.height) == (SIZE, SIZE)


# ---------------------------------------------------------------------------------------------
# Duplicates


def test_near_duplicate_search_is_vectorised_and_exact():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    hashes[10] = hashes[5] ^ np.uint64(0b1011)  # distance 3
    hashes[2999] = hashes[0]
    pairs, nn = near_duplicate_pairs(hashes, 4, block=128, nn_sample=3000)
    assert {(5, 10, 3), (0, 2999, 0)} <= {tuple(p) for p in pairs.tolist()}
    assert nn[10] == 3 and nn[0] == 0 and nn[1] > 4
    # above nn_sample images, the nearest-neighbour distances are those of a seeded sample
    _, sampled = near_duplicate_pairs(hashes, 4, nn_sample=500, seed=3)
    rows = np.sort(np.random.default_rng(3).choice(3000, 500, replace=False))
    np.testing.assert_array_equal(sampled, nn[rows])
    brute = [(i, j) for i in range(200) for j in range(i + 1, 200)
             if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 20]
    small, _ = near_duplicate_pairs(hashes[:200], 20, block=64)
    assert sorted(map(tuple, small[:, :2].tolist())) == brute


def test_look_alike_images_are_not_near_duplicates(tmp_path):
    # Same anatomy, one has a small "lesion": pHash cannot tell them apart, the thumbnails can.
    raw = simple_dataset(tmp_path / "raw", n_train=4, n_test=2)
    a = smooth(0)
    b = a.copy()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    b[(yy - 40) ** 2 + (xx - 55) ** 2 <= 25] = 255
    save(raw / "Training" / "benign" / "look_a.png", a)
    save(raw / "Testing" / "benign" / "look_b.png", b)
    ia = inspect_image(raw / "Training" / "benign" / "look_a.png", 10**6)
    ib = inspect_image(raw / "Testing" / "benign" / "look_b.png", 10**6)
    assert bin(int(ia.phash, 16) ^ int(ib.phash, 16)).count("1") <= 4
    kinds = {}
    for near_max_diff in (0.5, 100.0):  # 100 = trust pHash alone
        _, audit = build_manifest(raw, PrepareConfig(near_max_diff=near_max_diff),
                                  progress=False)
        kinds[near_max_diff] = {(f["path"], f.get("other_path")) for f in audit["findings"]
                                if f["kind"].startswith("duplicate_near")}
    pair = ("Training/benign/look_a.png", "Testing/benign/look_b.png")
    assert pair not in kinds[0.5]
    assert pair in kinds[100.0]


def test_multi_index_search_finds_exactly_the_brute_force_pairs_on_clustered_hashes():
    """Look-alike scans share most pHash bits: clusters of hashes a few bits apart, where every
    chunk collides often. The pigeonhole search must still return every pair within the
    distance and nothing else, sorted by (i, j)."""
    rng = np.random.default_rng(1)
    centres = rng.integers(0, 2**63, 20, dtype=np.uint64)
    flips = rng.integers(0, 64, (400, 5)).astype(np.uint64)
    hashes = centres[rng.integers(0, 20, 400)].copy()
    for k in range(5):
        use = rng.random(400) < 0.5
        hashes[use] ^= np.uint64(1) << flips[use, k]
    for distance in (0, 2, 4, 7):
        pairs, _ = near_duplicate_pairs(hashes, distance)
        brute = [(i, j, bin(int(hashes[i]) ^ int(hashes[j])).count("1"))
                 for i in range(400) for j in range(i + 1, 400)
                 if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= distance]
        assert list(map(tuple, pairs.tolist())) == brute and len(brute) > 0


def test_near_duplicate_search_stops_at_max_pairs():
    with pytest.raises(TooManyPairsError, match="more than 5 image pairs"):
        near_duplicate_pairs(np.zeros(20, dtype=np.uint64), 0, max_pairs=5)


def test_rotated_matches_agrees_with_rotated_match_pair_by_pair():
    from PIL import Image

    from tests.test_data import phantom_image

    base = [phantom_image(k) for k in range(3)]
    thumbs = [np.asarray(Image.fromarray(b).resize((64, 64), Image.Resampling.BOX)) for b in base]
    for b in base:
        for deg in (3, -7):
            turned = Image.fromarray(b).rotate(deg, resample=Image.Resampling.BICUBIC)
            thumbs.append(np.asarray(turned.resize((64, 64), Image.Resampling.BOX)))
    thumbs = np.stack(thumbs)
    pairs = np.array([(i, j) for i in range(len(thumbs)) for j in range(len(thumbs)) if i != j])
    many = rotated_matches(thumbs, pairs, 1.0)
    one = [rotated_match(thumbs[i], thumbs[j], 1.0) for i, j in pairs.tolist()]
    assert many == one
    assert many[pairs.tolist().index([0, 3])] is not None  # a 3-degree copy is found
    assert many[pairs.tolist().index([0, 1])] is None  # another scan is not
