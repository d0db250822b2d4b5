"""Training: input pipeline, a tiny fit that learns, bit-identical reruns, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lib.data.images import load_image
from lib.data.inputs import RowFile, TrainStream, load_arrays, make_dataset
from lib.data.manifest import DataError, class_names, split_frame
from lib.tiny import tiny_dataset
from lib.train import fit as train
from lib.train.augment import AugmentConfig, AugmentPolicy
from lib.train.models import ScratchConfig, build_scratch
from tests.conftest import REPO

TINY_MODEL = ScratchConfig(blocks=2, filters=4, kernel_size=3, dense_units=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return tiny_dataset(per_class=6, image_size=64, seed=3,
                        workdir=tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def data(tiny) -> train.TrainingData:
    return train.TrainingData.from_manifest(tiny.manifest_path, tiny.raw_dir, image_size=32)


# ---------------------------------------------------------------- input pipeline
def test_pipeline_decodes_resizes_and_one_hot_encodes(data: train.TrainingData) -> None:
    ds = make_dataset(data.train, data.raw_dir, image_size=32, n_classes=4, batch_size=5)
    x, y = next(iter(ds))
    assert x.shape == (5, 32, 32, 1) and x.dtype.name == "float32"
    assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 255.0 and float(np.max(x)) > 50
    assert np.allclose(np.asarray(y).sum(axis=1), 1.0)
    assert list(np.asarray(y).argmax(axis=1)) == list(data.train["label"][:5])
    n = sum(int(b[0].shape[0]) for b in ds)
    assert n == len(data.train)  # nothing dropped, nothing repeated


def _epochs(stream: TrainStream, first: int, last: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per epoch: the concatenated images and labels that dataset(first, last) yields."""
    batches = list(stream.dataset(first, last).as_numpy_iterator())
    out = []
    for e in range(last - first):
        chunk = batches[e * stream.steps:(e + 1) * stream.steps]
        out.append((np.concatenate([b[0] for b in chunk]), np.concatenate([b[1] for b in chunk])))
    return out


def test_train_stream_epochs_are_a_function_of_the_epoch(data: train.TrainingData) -> None:
    """Epoch e is the same batches whether the stream starts at 0 or at e (a resumed run), each
    epoch visits every image once, and epochs differ in order and augmentation."""
    policy = AugmentPolicy(AugmentConfig(), 9)
    stream, _ = data.datasets(5, channels=3, seed=9, augment=policy)
    whole = _epochs(stream, 0, 3)
    resumed = _epochs(TrainStream(stream.images, stream.labels, 4, 5, 9, 3,
                                  AugmentPolicy(AugmentConfig(), 9)), 2, 3)
    np.testing.assert_array_equal(whole[2][0], resumed[0][0])
    np.testing.assert_array_equal(whole[2][1], resumed[0][1])
    assert whole[0][0].shape == (len(data.train), 32, 32, 3)
    order = [stream.order(e) for e in range(3)]
    assert all(sorted(o) == list(range(len(data.train))) for o in order)
    assert not np.array_equal(order[0], order[1])
    np.testing.assert_array_equal(whole[1][1].argmax(axis=1), stream.labels[order[1]])
    assert not np.array_equal(whole[0][0], whole[1][0])


def test_the_training_split_is_read_from_disk_batch_by_batch_with_the_same_pixels(
        data: train.TrainingData) -> None:
    """The decoded training split lives in a file (memory does not grow with the number of
    images: bench/scale.py) and gives the batches an in-memory copy gives, augmentation and all;
    the validation split is cached in a file too."""
    stream, val = data.datasets(5, channels=1, seed=4, augment=AugmentPolicy(AugmentConfig(), 4))
    assert isinstance(stream.images, RowFile)
    in_memory = load_arrays(data.train, data.raw_dir, image_size=data.image_size,
                            n_classes=data.n_classes)[0]
    assert stream.images.shape == in_memory.shape
    np.testing.assert_array_equal(stream.images[[3, 0, 3]], in_memory[[3, 0, 3]])
    np.testing.assert_array_equal(stream.images[1:4], in_memory[1:4])
    assert stream.images.nbytes == in_memory.nbytes
    twin = TrainStream(in_memory, stream.labels, data.n_classes, 5, 4, 1,
                       AugmentPolicy(AugmentConfig(), 4))
    for (a, ya), (b, yb) in zip(_epochs(stream, 0, 2), _epochs(twin, 0, 2), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ya, yb)
    list(val)  # the first pass writes the cache file
    assert any(p.name.startswith("val.cache") for p in data.work_dir.iterdir())


def test_train_stream_refuses_bad_labels_and_channels(data: train.TrainingData) -> None:
    images, labels = load_arrays(data.train, data.raw_dir, image_size=16, n_classes=4)
    with pytest.raises(DataError, match="labels outside"):
        TrainStream(images, labels, 2, 4, 0)
    with pytest.raises(ValueError, match="channels"):
        TrainStream(images, labels, 4, 4, 0, channels=2)
    with pytest.raises(DataError, match="no training images"):
        TrainStream(images[:0], labels[:0], 4, 4, 0)


def test_pipeline_matches_pil_pixels_and_makes_rgb(data: train.TrainingData) -> None:
    x, labels = load_arrays(data.train.head(3), data.raw_dir, image_size=64, n_classes=4)
    first = load_image(data.raw_dir, data.train["path"][0]).astype(np.float32)
    assert np.abs(x[0, ..., 0] - first).max() <= 1.0  # same size: decode only, no resampling
    assert list(labels) == list(data.train["label"][:3])
    rgb, _ = load_arrays(data.train.head(2), data.raw_dir, image_size=32, n_classes=4,
                         channels=3)
    assert rgb.shape == (2, 32, 32, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_shuffle_is_seeded_and_differs_between_epochs(data: train.TrainingData) -> None:
    def epochs(seed: int) -> list[np.ndarray]:
        ds = make_dataset(data.train, data.raw_dir, image_size=16, n_classes=4, batch_size=64,
                          shuffle=True, seed=seed)
        return [np.asarray(x).reshape(len(x), -1).sum(1) for _ in range(2) for x, _ in ds]

    a, b, c = epochs(1), epochs(1), epochs(2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])  # reshuffled every epoch
    assert sorted(a[0]) == sorted(a[1]) and len(a[0]) == len(data.train)
    assert not np.array_equal(a[0], c[0])


def test_split_and_class_names_errors(tiny) -> None:
    from lib.data.manifest import load_manifest

    manifest = load_manifest(tiny.manifest_path)
    assert class_names(manifest) == ["glioma", "meningioma", "notumor", "pituitary"]
    with pytest.raises(ValueError, match="unknown split"):
        split_frame(manifest, "holdout")
    with pytest.raises(DataError, match="no usable 'val'"):
        split_frame(manifest[manifest["split"] != "val"], "val")
    with pytest.raises(DataError, match="labels outside"):
        make_dataset(split_frame(manifest, "train"), tiny.raw_dir, image_size=16, n_classes=2,
                     batch_size=4)


# ---------------------------------------------------------------- configuration
def test_train_config_reads_groups_and_rejects_bad_values() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = train.TrainConfig.from_params(params["train"], epochs=3, learning_rate=0.01)
    assert (cfg.epochs, cfg.learning_rate) == (3, 0.01)
    assert cfg.batch_size == params["train"]["batch_size"]
    with pytest.raises(ValueError, match="train.optimizer"):
        train.TrainConfig(1, 0.1, optimizer="sgd")
    with pytest.raises(ValueError, match="train.monitor"):
        train.TrainConfig(1, 0.1, monitor="loss")
    with pytest.raises(ValueError, match="unknown key"):
        train.TrainConfig.from_params({**params["train"], "epoch": 3})
    assert train.TrainConfig(1, 0.1, monitor="val_macro_f1").mode == "max"
    assert train.TrainConfig(1, 0.1, monitor="val_loss").mode == "min"


def test_class_weights_balance_counts() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    weights = train.class_weights(labels, 3, "balanced")
    assert weights == pytest.approx({0: 6 / 9, 1: 2.0, 2: 1.0})
    assert train.class_weights(labels, 3, "none") is None
    with pytest.raises(ValueError, match="every class"):
        train.class_weights(labels, 4, "balanced")


def test_mean_sd_and_history_dedupe(tmp_path: Path) -> None:
    summary = train.summarise_seeds({s: {"val": {"accuracy": a, "macro_f1": a}}
                                     for s, a in [(1, 0.8), (2, 0.9), (3, 1.0)]})
    assert summary["val_macro_f1"] == {"mean": 0.9, "sd": 0.1, "n": 3}  # rounded to 6 decimals
    assert train.summarise_seeds({1: {"val": {"accuracy": 0.5, "macro_f1": 0.5}}}
                                 )["val_accuracy"]["sd"] is None
    (tmp_path / "h.csv").write_text("epoch,loss\n0,2.0\n1,1.5\n1,1.4\n2,1.0\n")
    hist = train.read_history(tmp_path / "h.csv")
    assert list(hist["epoch"]) == [0, 1, 2] and hist["loss"][1] == 1.4


# ---------------------------------------------------------------- fitting
def _fit(data: train.TrainingData, tmp: Path, seed: int, epochs: int = 4,
         augment: bool = True, learning_rate: float = 3e-3) -> train.FitResult:
    train.seed_everything(seed)
    policy = AugmentPolicy(AugmentConfig(), seed) if augment else None
    train_ds, val_ds = data.datasets(8, channels=1, seed=seed, augment=policy)
    cfg = train.TrainConfig(epochs=epochs, batch_size=8, learning_rate=learning_rate,
                            patience=epochs)
    model = train.compile_model(build_scratch(data.input_shape(1), 4, TINY_MODEL), cfg)
    return train.fit(model, train_ds, val_ds, cfg, tmp / f"run-{seed}-{augment}", verbose=0)


def test_tiny_fit_reduces_training_loss(data: train.TrainingData, tmp_path: Path) -> None:
    result = _fit(data, tmp_path, seed=0, epochs=10, augment=False, learning_rate=1e-2)
    loss = result.history["loss"].to_numpy()
    assert len(loss) == 10
    assert loss[-1] < 0.9 * loss[0] and loss[-1] < loss[:3].min(), loss  # seeded: no flakes
    assert 0 <= result.best_epoch < 10
    assert (tmp_path / "run-0-False" / "final.keras").is_file()


@pytest.mark.slow  # three fits
def test_same_seed_gives_identical_weights(data: train.TrainingData, tmp_path: Path) -> None:
    a = _fit(data, tmp_path / "a", seed=5, epochs=3)
    b = _fit(data, tmp_path / "b", seed=5, epochs=3)
    c = _fit(data, tmp_path / "c", seed=6, epochs=3)
    wa, wb, wc = (r.model.get_weights() for r in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(wa, wc, strict=True))
    pd.testing.assert_frame_equal(a.history, b.history)


def test_finished_run_is_reused_not_retrained(data: train.TrainingData, tmp_path: Path) -> None:
    first = _fit(data, tmp_path, seed=1, epochs=2)
    again = _fit(data, tmp_path, seed=1, epochs=2)
    assert again.seconds < first.seconds
    assert all(np.array_equal(x, y) for x, y in
               zip(first.model.get_weights(), again.model.get_weights(), strict=True))


RESUME_SCRIPT = """
import os, signal, sys
from pathlib import Path
import keras
import numpy as np
from lib.train import fit as train
from lib.train.augment import AugmentConfig, AugmentPolicy
from lib.train.models import ScratchConfig, build_scratch

manifest, raw, run_dir, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
kill_at = os.environ.get("KILL_AT")  # "epoch,batch": SIGKILL there, as hard as a power cut

class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if kill_at and (self.epoch, batch) == tuple(map(int, kill_at.split(","))):
            os.kill(os.getpid(), signal.SIGKILL)

data = train.TrainingData.from_manifest(manifest, raw, image_size=32)
train.seed_everything(0)
train_ds, val_ds = data.datasets(4, channels=1, seed=0, augment=AugmentPolicy(AugmentConfig(), 0))
# plateau patience 0: the schedule acts within 8 epochs (the test checks that it did)
cfg = train.TrainConfig(epochs=8, learning_rate=3e-3, batch_size=4, patience=4, lr_patience=0)
model = train.compile_model(build_scratch(
    data.input_shape(1), 4, ScratchConfig(blocks=2, filters=4, dense_units=8, dropout=0.3,
                                          use_dropout=True, use_batchnorm=True)), cfg)
result = train.fit(model, train_ds, val_ds, cfg, run_dir, extra_callbacks=[Kill()], verbose=0)
np.savez(out, *result.model.get_weights())
result.history.to_csv(out.with_suffix(".csv"), index=False)
print("finished", result.epochs_run, result.resumed_at, flush=True)
"""


@pytest.mark.slow  # three real subprocesses, one killed mid-epoch: make test, not test-fast
def test_killed_training_resumes_into_the_uninterrupted_model(tiny, tmp_path: Path) -> None:
    """Killed (SIGKILL) at a random batch of a random epoch, then rerun: the final weights and the
    whole history (learning rate included) are byte-identical to a run never interrupted."""
    script = tmp_path / "resume_me.py"
    script.write_text(textwrap.dedent(RESUME_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}

    def run(name: str, run_dir: Path, **extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(script), str(tiny.manifest_path), str(tiny.raw_dir),
               str(run_dir), str(tmp_path / f"{name}.npz")]
        return subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True,
                              timeout=300)

    whole = run("whole", tmp_path / "whole")
    assert whole.returncode == 0, whole.stdout + whole.stderr
    history = pd.read_csv(tmp_path / "whole.csv")
    assert history["learning_rate"].nunique() > 1  # the plateau schedule acted
    epochs = len(history)
    rng = np.random.default_rng(int(time.time()))  # a different kill point on every run
    kill = (int(rng.integers(1, epochs - 1)), int(rng.integers(0, 3)))
    killed = run("killed", tmp_path / "cut", KILL_AT=f"{kill[0]},{kill[1]}")
    assert killed.returncode == -signal.SIGKILL, (kill, killed.stdout + killed.stderr)
    resumed = run("resumed", tmp_path / "cut")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming an interrupted run at epoch {kill[0]}" in resumed.stdout, kill
    a, b = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "resumed.npz")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a.files), f"weights differ, kill {kill}"
    assert (tmp_path / "whole.csv").read_text() == (tmp_path / "resumed.csv").read_text(), kill


def test_save_seed_and_summary(data: train.TrainingData, tmp_path: Path) -> None:
    result = _fit(data, tmp_path, seed=2, epochs=2)
    _, val_ds = data.datasets(8, channels=1, seed=2)
    out = train.save_seed(result, val_ds, data.names, 2, tmp_path / "models", tmp_path / "hist")
    assert (tmp_path / "models" / "seed2.keras").is_file()
    assert (tmp_path / "hist" / "history_s2.csv").is_file()
    assert set(out["val"]["f1"]) == set(data.names)
    summary = train.summarise_seeds({2: out, 3: out})
    assert summary["val_macro_f1"]["sd"] == 0.0 and summary["seeds"] == [2, 3]
    json.dumps(summary)  # serialisable as a DVC metric


# ---------------------------------------------------------------- the per-seed loop
def test_train_seeds_is_the_explicit_loop_and_cleans_up(data: train.TrainingData,
                                                        tmp_path: Path) -> None:
    """One seed of train_seeds gives the weights of the steps written out by hand, saves the model
    and history where asked and removes its resume folder."""
    cfg = train.TrainConfig(epochs=2, learning_rate=1e-3, batch_size=8, patience=2)

    def build() -> object:
        return build_scratch(data.input_shape(1), 4, TINY_MODEL)

    runs = train.train_seeds(data, [3], build, cfg, stage="scratch_test", key=("k",),
                             models_dir=tmp_path / "models", history_dir=tmp_path / "hist",
                             resume_root=tmp_path / "root", verbose=0)
    train.seed_everything(3)
    train_ds, val_ds = data.datasets(8, channels=1, seed=3)
    by_hand = train.fit(train.compile_model(build(), cfg), train_ds, val_ds, cfg,
                        tmp_path / "by_hand", verbose=0)
    import keras

    saved = keras.models.load_model(tmp_path / "models" / "seed3.keras")
    assert all(np.array_equal(x, y) for x, y in
               zip(saved.get_weights(), by_hand.model.get_weights(), strict=True))
    assert (tmp_path / "hist" / "history_s3.csv").is_file()
    assert list(runs.per_seed) == [3] and list(runs.histories) == ["seed 3"]
    assert runs.per_seed[3]["epochs_run"] == 2 and "trainable_layers_phase2" not in runs.per_seed[3]
    pd.testing.assert_frame_equal(runs.histories["seed 3"], by_hand.history)
    assert runs.summary()["seeds"] == [3]
    assert not list((tmp_path / "root" / train.RESUME_ROOT).iterdir())  # resume folder removed


@pytest.mark.slow  # two phases of a MobileNetV3Small: about 12 s
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's own
def test_fit_two_phase_freezes_then_fine_tunes(data: train.TrainingData, tmp_path: Path) -> None:
    """Phase 1 trains the head only (backbone weights and BN statistics unchanged); phase 2
    changes the top backbone layers only; the history is both phases, epochs numbered on."""
    from lib.train import models as M

    train.seed_everything(0)
    train_ds, val_ds = data.datasets(8, channels=3, seed=0)
    model = M.build_transfer("MobileNetV3Small", data.input_shape(3), 4, M.NO_WEIGHTS)
    phase1 = train.TrainConfig(epochs=1, batch_size=8, learning_rate=1e-2, patience=5)
    tune = train.FineTune(train.TrainConfig(epochs=1, batch_size=8, learning_rate=1e-2,
                                            patience=5), layers=6, train_bn=True)

    def backbone_weights(m: object) -> dict[str, list[np.ndarray]]:
        return {la.name: [np.array(w) for w in la.get_weights()]
                for la in M.backbone_layers(m) if la.weights}

    def moved(a: dict, b: dict) -> set[str]:
        return {n for n in a if not all(np.array_equal(x, y) for x, y in zip(a[n], b[n],
                                                                             strict=True))}

    start = backbone_weights(model)
    head_start = [np.array(w) for w in model.get_layer("predictions").get_weights()]
    runs = [tmp_path / "p1", tmp_path / "p2"]
    result, n_open = train.fit_two_phase(model, train_ds, val_ds, phase1, tune, runs, verbose=0)

    import keras

    first = keras.models.load_model(runs[0] / "final.keras")  # phase 1's best model
    after1, after2 = backbone_weights(first), backbone_weights(result.model)
    assert moved(start, after1) == set()  # phase 1: the backbone did not move, BN stats included
    assert not all(np.array_equal(x, y) for x, y in zip(
        head_start, first.get_layer("predictions").get_weights(), strict=True))  # the head did
    top = [la.name for la in M.backbone_layers(model) if la.weights][-6:]
    assert n_open == 6
    assert moved(after1, after2) and moved(after1, after2) <= set(top)  # phase 2: top layers only
    bns = [result.model.get_layer(n) for n in top]
    assert all(la.momentum == pytest.approx(0.9) for la in bns
               if isinstance(la, keras.layers.BatchNormalization))

    history = result.history
    assert list(history["phase"]) == [1, 2]
    assert list(history["epoch"]) == [0, 1]  # phase 2 numbers its epochs after phase 1's
    assert result.epochs_run == 2 and 0 <= result.best_epoch <= 1
    assert train.read_history(runs[1] / "history.csv")["epoch"].tolist() == [1]

