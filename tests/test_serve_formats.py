"""Every upload format the audit accepts, the app accepts (issue 23), and no upload is a 5xx.

Each upload is built with PIL from one greyscale test image of the served study
(tests/serve_study.py). What the app answers is held against what the prepare stage's audit
(``lib.data.audit.inspect_image``) says of the same bytes: accepted there, 200 here, and for a
lossless format the probabilities of the PNG; excluded there, the audit's reason here with a 4xx.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lib.data.audit import inspect_image
from lib.data.images import png_bytes
from lib.serve import launch
from lib.serve.api import create_app
from lib.serve.inference import Limits, model_bytes, read_upload
from lib.serve.service import Service
from tests.serve_study import CLASSES, shared_served_study


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return shared_served_study(tmp_path_factory)


@pytest.fixture(scope="module")
def service(study, tmp_path_factory) -> Service:
    return Service.open(study, tmp_path_factory.mktemp("feedback-formats"))


@pytest.fixture(scope="module")
def client(service):
    from fastapi.testclient import TestClient

    with TestClient(create_app(service, ui=False)) as c:
        yield c


@pytest.fixture(scope="module")
def pixels(study) -> np.ndarray:
    """The first glioma test image of the served study: uint8 grey, as load_image reads it."""
    first = sorted((study / "raw" / "Testing" / "glioma").glob("*.png"))[0]
    return np.asarray(Image.open(first).convert("L"))


@pytest.fixture(scope="module")
def png_probs(client, pixels) -> np.ndarray:
    """The probabilities of the PNG upload: what every lossless format must give."""
    return probs(post(client, encode(pixels, "PNG")))


def encode(pixels: np.ndarray, fmt: str, mode: str = "L", **kw: Any) -> bytes:
    """The image in `fmt` after PIL's convert(mode) (alpha 128 where the mode has one)."""
    img = Image.fromarray(pixels)
    if mode in ("RGBA", "LA"):
        img.putalpha(128)
        img = img.convert(mode)
    elif mode == "I;16":
        img = Image.fromarray(pixels.astype(np.uint16) * 257)
    elif mode != "L":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def post(client, data: bytes, name: str = "upload"):
    return client.post("/predict", files={"file": (name, data)})


def probs(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([response.json()["probabilities"][c] for c in CLASSES])


# name -> (PIL format, mode, save options, accepted by the audit, lossless)
VARIANTS: dict[str, tuple[str, str, dict[str, Any], bool, bool]] = {
    "png grey": ("PNG", "L", {}, True, True),
    "png rgb": ("PNG", "RGB", {}, True, True),
    "png palette": ("PNG", "P", {}, False, True),
    "png grey+alpha": ("PNG", "LA", {}, False, True),
    "png 16-bit": ("PNG", "I;16", {}, False, True),
    "jpeg grey": ("JPEG", "L", {"quality": 95}, True, False),
    "jpeg rgb": ("JPEG", "RGB", {}, True, False),
    "jpeg cmyk": ("JPEG", "CMYK", {}, False, False),
    "webp lossless": ("WEBP", "L", {"lossless": True}, True, True),  # PIL stores grey as RGB
    "webp lossless rgb": ("WEBP", "RGB", {"lossless": True}, True, True),
    "webp lossy": ("WEBP", "L", {"quality": 90}, True, False),
    "webp rgba": ("WEBP", "RGBA", {"lossless": True}, False, True),
    "tiff grey": ("TIFF", "L", {}, True, True),
    "tiff rgb": ("TIFF", "RGB", {}, True, True),
    "tiff lzw": ("TIFF", "L", {"compression": "tiff_lzw"}, True, True),
    "tiff deflate": ("TIFF", "L", {"compression": "tiff_adobe_deflate"}, True, True),
    "tiff 16-bit": ("TIFF", "I;16", {}, False, True),
    "tiff rgba": ("TIFF", "RGBA", {}, False, True),
    "bmp grey": ("BMP", "L", {}, True, True),
    "bmp rgb": ("BMP", "RGB", {}, True, True),
    "bmp 1-bit": ("BMP", "1", {}, False, True),
    "gif grey": ("GIF", "L", {"optimize": False}, True, True),  # opens as L
    "gif palette": ("GIF", "L", {}, False, True),  # optimized palette: opens as P
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_app_accepts_what_the_audit_accepts(client, pixels, png_probs, tmp_path, variant
                                                ) -> None:
    """The same bytes as a raw file for the audit and as an upload: accepted by both or refused
    by both with the audit's reason; a lossless format gives the PNG's probabilities exactly."""
    fmt, mode, kw, accepted, lossless = VARIANTS[variant]
    data = encode(pixels, fmt, mode, **kw)
    (tmp_path / "raw").write_bytes(data)
    info = inspect_image(tmp_path / "raw", Limits().max_pixels, Limits().min_side)
    assert (info.status != "excluded") == accepted, info.reason  # what the audit says today
    r = post(client, data, f"scan.{fmt.lower()}")
    if not accepted:
        assert r.status_code == 415 and r.json()["detail"] == info.reason, r.text
        return
    body = r.json()
    assert r.status_code == 200 and body["format"] == fmt, r.text
    assert body["image"] == {"height": 64, "width": 64}
    if lossless:
        np.testing.assert_array_equal(probs(r), png_probs)
    else:  # a lossy re-encode moves grey levels a little, not the verdict
        np.testing.assert_allclose(probs(r), png_probs, atol=0.05)


def test_decode_rule_keeps_png_and_jpeg_and_reencodes_the_rest(pixels) -> None:
    """``model_bytes``: the file itself where TF decodes it as training does, else a PNG of the
    shown pixels with its EXIF rotation already applied."""
    for fmt in ("PNG", "JPEG"):
        data = encode(pixels, fmt)
        assert model_bytes(data, fmt, pixels, 6) == (data, 6)
    for fmt in ("WEBP", "TIFF", "BMP", "GIF", "PPM"):
        assert model_bytes(b"any", fmt, pixels, 6) == (png_bytes(pixels), 1)
    upload = read_upload(encode(pixels, "WEBP", lossless=True))
    assert upload.format == "WEBP" and upload.data == png_bytes(pixels)
    np.testing.assert_array_equal(upload.pixels, pixels)


def test_rotated_webp_is_rotated_once(client, pixels) -> None:
    """A WebP with EXIF orientation 6: its pixels are re-encoded upright, so the model must not
    rotate them again; the prediction is the upright PNG's."""
    upright = np.ascontiguousarray(pixels[:, :48])  # not square: a second rotation would show
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = encode(np.ascontiguousarray(np.rot90(upright, 1)), "WEBP", lossless=True,
                    exif=exif.tobytes())
    a, b = post(client, encode(upright, "PNG")), post(client, stored, "rotated.webp")
    assert b.json()["image"] == a.json()["image"] == {"height": 64, "width": 48}
    np.testing.assert_array_equal(probs(b), probs(a))


def test_webp_feedback_stores_the_shown_pixels(client, service, pixels, png_probs) -> None:
    r = client.post("/feedback", files={"file": ("scan.webp", encode(pixels, "WEBP",
                                                                     lossless=True))},
                    data={"label": "glioma"})
    assert r.status_code == 201, r.text
    rec = r.json()
    stored = np.asarray(Image.open(service.feedback_dir / rec["files"]["image"]))
    np.testing.assert_array_equal(stored, pixels)
    assert rec["format"] == "WEBP"
    said = np.array([rec["model_said"]["probs"][c] for c in CLASSES])
    np.testing.assert_array_equal(said, png_probs)


# ----------------------------------------------------------------------------- refusals


def bad_crc_png(pixels: np.ndarray) -> bytes:
    """A PNG whose IDAT checksum is wrong: PIL reads it (the audit accepts it), TF's decoder
    refuses it, so only the wrapped decode error keeps this from being a 500."""
    data = bytearray(encode(pixels, "PNG"))
    at = data.index(b"IDAT")
    crc = at + 4 + struct.unpack(">I", data[at - 4:at])[0]
    data[crc] ^= 0xFF
    return bytes(data)


def corrupt_uploads(pixels: np.ndarray) -> dict[str, bytes]:
    """Broken files of every format: cut headers, cut data, garbled data, and non-images."""
    rng = np.random.default_rng(23)
    out = {"zero-byte": b"", "text": b"patient name, diagnosis\n",
           "random": rng.integers(0, 256, 512, dtype=np.uint8).tobytes(),
           "riff webp random": b"RIFF" + struct.pack("<I", 1004) + b"WEBP"
                               + rng.integers(0, 256, 1000, dtype=np.uint8).tobytes(),
           "riff vp8l random": b"RIFF" + struct.pack("<I", 1004) + b"WEBPVP8L"
                               + rng.integers(0, 256, 1000, dtype=np.uint8).tobytes(),
           "png bad crc": bad_crc_png(pixels)}
    for fmt, kw in (("PNG", {}), ("JPEG", {}), ("WEBP", {}), ("WEBP", {"lossless": True}),
                    ("TIFF", {}), ("BMP", {}), ("GIF", {"optimize": False})):
        good = encode(pixels, fmt, **kw)
        name = fmt.lower() + (" lossless" if kw.get("lossless") else "")
        out.update({f"{name} header cut": good[:16], f"{name} cut at 40": good[:40],
                    f"{name} half": good[: len(good) // 2],
                    f"{name} garbled": good[:30] + rng.integers(
                        0, 256, len(good) - 30, dtype=np.uint8).tobytes()})
    return out


@pytest.mark.parametrize(("case", "status", "reason"), [
    ("webp half", 422, "could not create decoder"),
    ("riff webp random", 422, "starts like a WEBP file but cannot be parsed"),
    ("text", 415, "not an image"),
    ("zero-byte", 400, "empty upload"),
    ("png bad crc", 422, "the model's decoder says"),
])
def test_broken_upload_is_a_4xx_with_a_reason(client, pixels, case, status, reason) -> None:
    data = corrupt_uploads(pixels)[case]
    r = post(client, data)
    assert r.status_code == status and reason in r.json()["detail"], r.text
    r = client.post("/feedback", files={"file": ("x", data)}, data={"label": "glioma"})
    assert r.status_code == status and reason in r.json()["detail"], r.text


def test_no_broken_upload_is_a_5xx(client, pixels) -> None:
    """Every broken file is refused with a 4xx and a reason, and the next request on the same
    client is answered."""
    good = encode(pixels, "PNG")
    answers = {}
    for case, data in corrupt_uploads(pixels).items():
        r = post(client, data)
        answers[case] = r.status_code
        if r.status_code != 200:  # some cut files still decode (PIL and TF agree on them)
            assert 400 <= r.status_code < 500 and r.json()["detail"], (case, r.text)
    assert all(code < 500 for code in answers.values()), answers
    assert post(client, good).status_code == 200  # the connection after each: the next test


def test_refusals_leave_the_real_servers_connection_usable(study, pixels, tmp_path) -> None:
    """Under uvicorn, as `make serve` runs it: a 500 used to reset the connection it was
    answered on. Each refusal is followed by a good upload on the same keep-alive client."""
    import httpx

    good = encode(pixels, "PNG")
    cases = [(encode(pixels, "WEBP", lossless=True), 200), (good[: len(good) // 2], 422),
             (corrupt_uploads(pixels)["webp half"], 422), (b"not an image", 415),
             (bad_crc_png(pixels), 422), (b"\0" * 40_000, 413),  # over --max-upload-mb
             (b"\0" * (2 * 2**20), 413)]  # over the request limit: refused before it is read
    with launch.running(study, tmp_path / "fb", tmp_path / "server.log", "--no-ui",
                        "--max-upload-mb", "0.03") as server, \
            httpx.Client(base_url=server.url, timeout=60) as http:
        for data, status in cases:
            r = http.post("/predict", files={"file": ("x", data)})
            assert r.status_code == status, r.text
            assert http.post("/predict", files={"file": ("x", good)}).status_code == 200
    assert "Traceback" not in (tmp_path / "server.log").read_text()
