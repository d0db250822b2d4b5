"""The REST API of the app (lib.serve.api): every endpoint, every refusal a 4xx with its reason.

One tiny served study (tests/serve_study.py) is built once for the module; the app runs
in-process under TestClient, and once for real under uvicorn for a bounded load test.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.evaluate.metrics import apply_temperature
from lib.evaluate.predict import predict_frame
from lib.serve import apidocs, launch
from lib.serve.api import create_app
from lib.serve.inference import Limits
from lib.serve.service import Service
from tests.serve_study import CLASSES, shared_served_study
from tests.test_ingest import tree_hash, write_dcm

MiB = 2**20


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return shared_served_study(tmp_path_factory)


@pytest.fixture(scope="module")
def service(study, tmp_path_factory) -> Service:
    return Service.open(study, tmp_path_factory.mktemp("feedback"))


@pytest.fixture(scope="module")
def client(service):
    from fastapi.testclient import TestClient

    with TestClient(create_app(service, ui=False)) as c:
        yield c


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims width x height (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def image_file(study: Path, cls: str = "glioma", i: int = 0) -> Path:
    return study / "raw" / "Testing" / cls / f"{cls}_{i:04d}.png"


def post(client, data: bytes, name: str = "x.png", **params):
    return client.post("/predict", params=params, files={"file": (name, data)})


def grey(study: Path) -> np.ndarray:
    return np.asarray(Image.open(image_file(study)).convert("L"))


# ----------------------------------------------------------------------------- read-only


def test_health_models_and_docs(client) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["models"] == ["scratch-batchnorm", "scratch-none"]
    assert health["default"] == "scratch-batchnorm"  # evaluate.json's best_model
    models = client.get("/models").json()
    assert models["classes"] == CLASSES and models["default"] == "scratch-batchnorm"
    cards = {c["artifact"]: c for c in models["models"]}
    assert set(cards) == {"scratch-batchnorm", "scratch-none"}
    bn = cards["scratch-batchnorm"]
    assert bn["key"] == "scratch_batchnorm_s0" and bn["best"] and bn["trained"]
    assert bn["temperature"] == 0.8 and bn["test_macro_f1"] == pytest.approx(0.6)
    assert bn["ece"] == 0.2 and bn["ece_calibrated"] == 0.1 and len(bn["md5"]) == 32
    assert bn["input_size"] == 32 and bn["input_channels"] == 1
    assert bn["labels"] == ["test", "batchnorm"] and "batchnorm" in bn["description"]
    # local Swagger UI files (tests/test_serve_study.py), else a 503 naming the package
    assert client.get("/docs").status_code == (200 if apidocs.assets_dir() else 503)
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/models", "/model-card", "/predict", "/feedback"} <= set(paths)
    assert client.get("/", follow_redirects=False).headers["location"] == "/docs"


# ----------------------------------------------------------------------------- predict


def test_predict_equals_the_study_and_its_temperature(client, service, study) -> None:
    frame = pd.read_csv(study / "processed" / "manifest.csv", keep_default_na=False)
    frame = frame[frame["split"] == "test"].head(3).reset_index(drop=True)
    for artifact in ("scratch-batchnorm", "scratch-none"):
        loaded = service.model(artifact)
        expected = predict_frame(loaded.model, frame, study / "raw", len(CLASSES))
        calibrated = apply_temperature(expected, loaded.card.temperature)
        for i, rel in enumerate(frame["path"]):
            body = post(client, (study / "raw" / rel).read_bytes(), model=artifact).json()
            got = np.array([body["probabilities"][c] for c in CLASSES])
            got_cal = np.array([body["probabilities_calibrated"][c] for c in CLASSES])
            np.testing.assert_allclose(got, expected[i], atol=1e-5)
            np.testing.assert_allclose(got_cal, calibrated[i], atol=1e-5)
            assert body["label"] == CLASSES[int(expected[i].argmax())]
            assert body["model"] == artifact and body["temperature"] == loaded.card.temperature
            assert body["method"] is None and body["overlay_png_base64"] is None
            ood = body["ood"]  # its verdicts: tests/test_serve_study.py
            assert ood["available"] and ood["threshold"] == loaded.ood.reference.threshold
            assert ood["unlike_training"] == (ood["distance"] > ood["threshold"])


def test_model_input_equals_make_dataset_for_png_and_jpeg(service, study, tmp_path) -> None:
    """PNG and JPEG keep their own bytes (inference.model_bytes): the model input of an upload
    is bit for bit what make_dataset gives for the same file in a raw folder, grey or RGB, with
    an EXIF rotation applied as the manifest's `orientation` column applies it. RGB and JPEG are
    the cases where TF's decode differs from PIL's by a grey level, so a re-encode would show."""
    from lib.data.audit import inspect_image
    from lib.data.inputs import make_dataset
    from lib.serve.inference import model_input, read_upload

    upright = grey(study)[:, :48]
    rgb = np.dstack([upright, np.roll(upright, 3, axis=1), upright[::-1]])
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {"grey.png": (upright, "PNG", {}), "rgb.png": (rgb, "PNG", {}),
             "grey.jpg": (upright, "JPEG", {"quality": 90}), "rgb.jpg": (rgb, "JPEG", {}),
             "rotated.jpg": (np.ascontiguousarray(np.rot90(rgb, 1)), "JPEG",
                             {"exif": exif.tobytes()})}
    for name, (pixels, fmt, kw) in files.items():
        Image.fromarray(pixels).save(tmp_path / name, fmt, **kw)
    limits = service.limits
    orientation = [inspect_image(tmp_path / n, limits.max_pixels, limits.min_side).orientation
                   for n in files]
    assert orientation == [1, 1, 1, 1, 6]
    frame = pd.DataFrame({"path": list(files), "label": 0, "orientation": orientation})
    for artifact in ("scratch-batchnorm", "scratch-none"):
        loaded = service.model(artifact)
        [(expected, _)] = make_dataset(frame, tmp_path, image_size=loaded.size,
                                       n_classes=len(CLASSES), batch_size=len(files),
                                       channels=loaded.channels, cache=False)
        for i, name in enumerate(files):
            upload = read_upload((tmp_path / name).read_bytes(), limits)
            assert upload.data == (tmp_path / name).read_bytes()  # the file itself
            np.testing.assert_array_equal(model_input(loaded, upload)[0], expected[i],
                                          err_msg=name)


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_predict_with_a_saliency_map(client, study, method) -> None:
    body = post(client, image_file(study).read_bytes(), method=method, alpha=0.5).json()
    assert body["method"] == method and body["image"] == {"height": 64, "width": 64}
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"])))
    assert overlay.size == (64, 64) and overlay.mode == "RGB"
    assert 0 <= body["peak"]["row"] < 64 and 0 <= body["peak"]["col"] < 64
    plain = post(client, image_file(study).read_bytes()).json()
    assert body["probabilities"] == pytest.approx(plain["probabilities"], abs=1e-6)


def test_dicom_upload(client, study, tmp_path) -> None:
    pixels = (grey(study).astype(np.int16) * 7 - 300)
    write_dcm(tmp_path / "slice.dcm", pixels, "P1")
    body = post(client, (tmp_path / "slice.dcm").read_bytes(), "slice.dcm").json()
    assert body["format"] == "DICOM" and body["image"] == {"height": 64, "width": 64}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-5


def dicom_bytes(tmp_path: Path, case: str) -> bytes:
    """A DICOM upload the app must refuse: header only, two frames, or pixel data cut short."""
    path = tmp_path / f"{case}.dcm"
    frame = np.arange(64 * 64, dtype=np.int16).reshape(64, 64)
    if case == "no pixel data":  # e.g. a structured report
        write_dcm(path, None, "P1")
    elif case == "multi-frame":
        write_dcm(path, np.vstack([frame, frame[::-1]]), "P1")
        import pydicom

        ds = pydicom.dcmread(path)
        ds.Rows, ds.NumberOfFrames = 64, 2  # the same bytes read as two 64x64 frames
        ds.save_as(path, enforce_file_format=True)
    else:  # cut short: the header says 64 x 64, the pixel data holds half of that
        write_dcm(path, frame, "P1")
        import pydicom

        ds = pydicom.dcmread(path)
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


@pytest.mark.parametrize(("case", "reason"), [
    ("no pixel data", "DICOM file without pixel data"),
    ("multi-frame", "multi-frame DICOM (2 frames): the app classifies one slice"),
    ("cut short", "unreadable DICOM file"),
])
def test_dicom_without_one_frame_is_refused_with_a_reason(client, tmp_path, case, reason
                                                          ) -> None:
    data = dicom_bytes(tmp_path, case)
    assert data[128:132] == b"DICM"
    r = post(client, data, "scan.dcm")
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]
    r = client.post("/feedback", files={"file": ("scan.dcm", data)}, data={"label": "glioma"})
    assert r.status_code == 422 and reason in r.json()["detail"]


def test_exif_orientation_gives_the_upright_prediction(client, study) -> None:
    upright = grey(study)[:, :48]  # not square: a wrong rotation changes the image's shape
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # orientation 6 turns it back clockwise
    exif = Image.Exif()
    exif[0x0112] = 6

    def jpeg(pixels: np.ndarray, **kw) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=100, **kw)
        return buf.getvalue()

    a = post(client, jpeg(upright), "up.jpg").json()
    b = post(client, jpeg(stored, exif=exif.tobytes()), "rotated.jpg").json()
    assert b["image"] == a["image"] == {"height": 64, "width": 48}
    assert b["label"] == a["label"]
    # two JPEG encodings of the same pixels differ by one grey level here and there (measured:
    # at most 1e-3 in probability); a missed rotation would change the image itself
    np.testing.assert_allclose([b["probabilities"][c] for c in CLASSES],
                               [a["probabilities"][c] for c in CLASSES], atol=2e-3)


# ----------------------------------------------------------------------------- refusals


def bad_uploads(pixels: np.ndarray) -> dict[str, tuple[bytes, int, str]]:
    good = png(pixels)
    return {
        "text": (b"patient name, diagnosis\n", 415, "not an image"),
        "empty": (b"", 400, "empty upload"),
        "truncated": (good[: len(good) // 2], 422, "truncated"),
        "corrupt": (good[:40] + b"\0" * 200, 422, "corrupt"),
        "16-bit": (png(pixels.astype(np.uint16) * 200), 415, "16-bit"),
        "rgba": (png(np.dstack([pixels] * 3 + [np.full_like(pixels, 255)])), 415, "RGBA"),
        "tiny": (png(pixels[:10, :10]), 422, "min_side"),
        "huge": (png_claiming(8000, 8000), 413, "pixels"),  # over prepare.max_pixels (40 M)
        "bomb": (png_claiming(50000, 50000), 413, "decompression bomb"),
    }


@pytest.mark.parametrize("case", list(bad_uploads(np.zeros((64, 64), np.uint8))))
def test_bad_upload_is_refused_with_a_reason(client, study, case) -> None:
    data, status, reason = bad_uploads(grey(study))[case]
    r = post(client, data)
    assert r.status_code == status, r.text
    assert reason.lower() in r.json()["detail"].lower()


def test_unknown_model_method_and_options(client, study) -> None:
    data = image_file(study).read_bytes()
    r = post(client, data, model="resnet")
    assert r.status_code == 404 and "unknown model 'resnet'" in r.json()["detail"]
    assert "scratch-none" in r.json()["detail"]
    r = post(client, data, method="lime")
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["query", "method"] and "gradcam" in error["msg"]
    assert post(client, data, method="gradcam", alpha=2).status_code == 422
    r = client.post("/predict")  # no file at all
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]


def test_upload_size_limits(service, study) -> None:
    from fastapi.testclient import TestClient

    small = dataclasses.replace(service, limits=dataclasses.replace(service.limits,
                                                                    max_bytes=2000))
    client = TestClient(create_app(small, ui=False))
    data = image_file(study).read_bytes()
    assert len(data) > 2000
    r = post(client, data)
    assert r.status_code == 413 and "exceeds the limit of 2,000 bytes" in r.json()["detail"]
    big = b"\0" * (2 * 2000 + MiB + 1)  # the declared Content-Length alone is refused
    r = post(client, big)
    assert r.status_code == 413 and "request body of" in r.json()["detail"]
    assert post(client, png(np.zeros((40, 40), np.uint8))).status_code == 200
    assert Limits().max_bytes == 20 * MiB


# ----------------------------------------------------------------------------- feedback


def feedback(client, data: bytes, label: str, mask: bytes | None = None, **form):
    files = {"file": ("x.png", data)}
    if mask is not None:
        files["mask"] = ("mask.png", mask)
    return client.post("/feedback", files=files, data={"label": label, **form})


def test_feedback_is_stored_in_the_raw_layout_never_overwritten(client, service, study) -> None:
    raw_before = tree_hash(study / "raw")
    pixels = grey(study)
    lesion = np.zeros_like(pixels)
    lesion[20:30, 10:25] = 200
    r = feedback(client, png(pixels), "glioma", png(lesion), user="dr who", model="scratch-none")
    assert r.status_code == 201, r.text
    rec = r.json()
    fb = service.feedback_dir
    assert rec["label"] == "glioma" and rec["user"] == "dr who" and rec["lesion_pixels"] == 150
    assert rec["model_said"]["model"] == "scratch-none"
    assert set(rec["model_said"]["probs"]) == set(CLASSES)
    assert rec["files"] == {"image": f"glioma/{rec['name']}.png",
                            "mask": f"glioma/{rec['name']}_mask.png"}
    assert np.array_equal(np.asarray(Image.open(fb / rec["files"]["image"])), pixels)
    stored = np.asarray(Image.open(fb / rec["files"]["mask"]))
    assert set(np.unique(stored)) == {0, 255} and (stored > 0).sum() == 150
    assert json.loads((fb / "records" / f"{rec['name']}.json").read_text()) == rec
    again = feedback(client, png(pixels), "glioma", png(lesion), user="dr who").json()
    assert again["name"] != rec["name"] and again["image_md5"] == rec["image_md5"]
    assert (fb / again["files"]["image"]).is_file() and (fb / rec["files"]["image"]).is_file()
    healthy = feedback(client, png(pixels), "notumor", png(np.zeros_like(pixels))).json()
    assert healthy["files"] == {"image": f"notumor/{healthy['name']}.png"}  # empty drawing
    assert tree_hash(study / "raw") == raw_before


@pytest.mark.parametrize("case", ["label", "mask size", "lesion on notumor", "mask not png",
                                  "user"])
def test_bad_feedback_is_refused_with_a_reason(client, service, study, case) -> None:
    before = sorted(p.name for p in service.feedback_dir.rglob("*"))
    pixels = grey(study)
    lesion = np.zeros_like(pixels)
    lesion[5:9, 5:9] = 255
    label, mask, form, reason = {
        "label": ("cancer", None, {}, "unknown label 'cancer'"),
        "mask size": ("glioma", png(lesion[:40]), {}, "does not match the image"),
        "lesion on notumor": ("notumor", png(lesion), {}, "lesion was drawn"),
        "mask not png": ("glioma", b"scribble", {}, "unreadable mask"),
        "user": ("glioma", None, {"user": "<script>"}, "user must be"),
    }[case]
    r = feedback(client, png(pixels), label, mask, **form)
    assert r.status_code == 422 and reason in r.json()["detail"], r.text
    assert sorted(p.name for p in service.feedback_dir.rglob("*")) == before


def test_feedback_names_used_up_in_one_second_is_429(service, study, tmp_path, monkeypatch
                                                       ) -> None:
    """The store tries 1000 names per image and second; then the API answers 429 (retry later)
    and writes nothing."""
    from datetime import UTC, datetime

    from fastapi.testclient import TestClient

    from lib.data.images import png_bytes
    from lib.serve import feedback as fb

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    monkeypatch.setattr(fb, "datetime", type("Fixed", (datetime,), {
        "now": classmethod(lambda cls, tz=None: now)}))
    pixels = grey(study)
    stem = f"fb-20260102T030405-{hashlib.md5(png_bytes(pixels)).hexdigest()[:10]}"
    records = tmp_path / "fb" / "records"
    records.mkdir(parents=True)
    for k in range(1000):
        (records / (f"{stem}.json" if k == 0 else f"{stem}-{k}.json")).write_text("{}")
    before = sorted((tmp_path / "fb").rglob("*"))
    client = TestClient(create_app(dataclasses.replace(service, feedback_dir=tmp_path / "fb"),
                                   ui=False))
    r = feedback(client, png(pixels), "glioma")
    assert r.status_code == 429 and "too many feedback items" in r.json()["detail"], r.text
    assert sorted((tmp_path / "fb").rglob("*")) == before and len(before) == 1001
    assert "429" in client.get("/openapi.json").json()["paths"]["/feedback"]["post"]["responses"]


def test_feedback_folder_inside_raw_data_is_refused(study) -> None:
    raw = study / "raw"  # the served study's data.raw_dir
    for folder in (raw, raw / "Training" / "feedback"):
        with pytest.raises(ValueError, match="raw data is never written"):
            Service.open(study, folder)


# ----------------------------------------------------------------------------- the UI


def test_ui_is_mounted_and_root_redirects(service) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(service, ui=True)) as client:
        assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
        assert client.get("/ui/").status_code == 200
        assert client.get("/health").status_code == 200


# ----------------------------------------------------------------------------- real server


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS"))) / 1024


def test_the_server_binds_localhost_unless_told(monkeypatch) -> None:
    """No authentication is built in, so the default address is this machine only: what
    `python -m lib.serve` parses and what it hands uvicorn."""
    import types

    import uvicorn

    from lib.serve import __main__ as cli
    from lib.serve import api
    from lib.serve import service as service_module

    assert cli.parse([]).host == "127.0.0.1"
    assert cli.parse(["--host", "0.0.0.0"]).host == "0.0.0.0"
    fake = types.SimpleNamespace(registry=types.SimpleNamespace(loaded={}, default="m"),
                                 feedback_dir=Path("fb"))
    monkeypatch.setattr(service_module.Service, "open", classmethod(lambda cls, *a, **k: fake))
    monkeypatch.setattr(api, "create_app", lambda service, ui: "app")
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert cli.main(["--port", "8123", "--no-ui"]) == 0
    assert calls == [("app", {"host": "127.0.0.1", "port": 8123, "log_level": "warning"})]


def listening_hosts(port: int) -> set[str]:
    """Local addresses of the sockets listening on a TCP port (Linux /proc/net/tcp{,6})."""
    import ipaddress

    hosts = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/net/{table}")
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                # /proc writes each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                hosts.add(str(ipaddress.ip_address(raw)))
    return hosts


def test_no_trained_models_is_one_clear_line(tmp_path) -> None:
    (tmp_path / "dvc.yaml").write_text("artifacts:\n  m:\n    path: models/m/seed1.keras\n"
                                       "    type: model\n")
    (tmp_path / "params.yaml").write_text("data: {}\n")
    proc = launch.start(tmp_path, launch.free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert out.strip().splitlines()[-1].startswith("error: ") and "make repro" in out
    assert "Traceback" not in out


@pytest.mark.slow
def test_real_server_under_load(study, tmp_path) -> None:
    import httpx

    with launch.running(study, tmp_path / "fb", tmp_path / "server.log") as server:
        url, proc = server.url, server.proc
        # launched as `make serve` runs it (no --host): listening on the loopback address only
        assert listening_hosts(int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}
        files = [(study / "raw" / "Testing" / c / f"{c}_0000.png").read_bytes() for c in CLASSES]

        def one(i: int) -> int:
            with httpx.Client(base_url=url, timeout=30) as c:
                return c.post("/predict", files={"file": ("x.png", files[i % 4])}).status_code

        rss = []
        with ThreadPoolExecutor(4) as pool:
            for half in range(2):
                codes = list(pool.map(one, range(half * 150, (half + 1) * 150)))
                assert codes == [200] * 150
                rss.append(rss_mib(proc.pid))
        assert rss[1] - rss[0] < 50, f"RSS grew from {rss[0]:.0f} to {rss[1]:.0f} MiB"
        assert httpx.get(f"{url}/", follow_redirects=True).status_code == 200  # the UI
