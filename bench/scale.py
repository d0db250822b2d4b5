"""The cost curve: seconds per image and peak memory of every stage as the data set grows.

Phantom sets (lib.data.phantom, 4:1 Training:Testing like the default profile) of growing size
and image side go through the study's own code, each stage in its own child process (its peak
RSS is the child's own ``ru_maxrss``):

- **prepare**: ``lib.data.prepare.prepare`` with params.yaml's ``prepare:`` group (inspection,
  pHash and thumbnails, mask checks, the near-duplicate search, the split, the confounder audit);
  the near-duplicate search (``near_duplicate_pairs``), the inspection and the confounder audit
  are timed apart by wrapping the functions prepare calls (lib/ is not changed);
- **train**: the train_scratch stage's path: ``TrainingData.from_manifest`` ->
  ``datasets`` (decode of the training split, augmentation policy) -> ``build_scratch``
  (batchnorm variant, params.yaml's architecture and ``input_size``) -> ``lib.train.fit.fit`` for 3
  epochs; seconds per image are the faster of epochs 2 and 3 (the first one traces; the faster
  one is the less disturbed by anything else on the machine) over the training images,
  validation included, and the decode (``load``) is apart;
- **predict**: ``lib.evaluate.predict.predict_frame`` over the test split (the evaluate stage's
  decode-and-predict, no cache), with the model the train child saved;
- **explain**: batched Grad-CAM (``lib.explain.methods.Explainer``, params.yaml's layer rule) of
  every test image for its predicted class, after one warm-up batch.

Targets (issue 24, item 4), printed as ratios like bench/run.py (at most 1 is met):
per-image cost flat within 20 % from the smallest to the largest N (ratio = cost at the largest
N / cost at the smallest / 1.2), and the peak memory of prepare and train independent of N (same
20 %; the slope in MiB per 1,000 images is printed beside it, since a fixed start-up cost can hide
linear growth in a ratio). The near-duplicate search is also timed alone on random 64-bit hashes
from 1k to 32k items: its exponent (log time / log N) says whether it is sub-quadratic (< 1.5
is the target; 2 is all pairs).

How the grid was chosen (2 cores, 2026-12-05): the generator writes about 180 images/s at 128 px
with 2 processes on an idle machine (110/s at 256 px, ~40/s at 512 px), so the largest set (8,000
images at 128 px, 45-110 s) is generated once and the smaller ones are hard-linked subsets of it
(the generator draws each image from its own seed, so a subset is the set it would generate at
that size). Sizes 1k, 2k, 4k, 8k at 128 px (the phantom's native side; the model input stays
params.yaml's 64 px) make the N sweep: 8k is where the quadratic parts start to show and still
fits in minutes; the side sweep (128, 256, 512 px) runs at 1,000 images, and two model input
sizes (128, 224 px: the full profile's) at 1,000 images of 256 px show what the input side costs
the model stages. The whole bench took 737 s on 2 cores shared with another job (an idle machine
should take about 8 minutes); ``--quick`` runs 1k and 2k only. The README table extrapolates
to 7,000 images with each stage's fixed part (a least-squares line over the N sweep) plus the
measured cost per image at each side (``extrapolate``).

Writes bench/results/scale.json and prints the tables; exit status 1 when a target is missed.
CLI: ``python bench/scale.py [--quick] [--out bench/results/scale.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "scale.json"

NS = (1000, 2000, 4000, 8000)       # images (Training + Testing) of the N sweep
SIDE = 128                          # raw side of the N sweep
SIDES = (128, 256, 512)             # raw sides of the side sweep, at N_SIDE images
N_SIDE = 1000
INPUTS = (128, 224)                 # model input sides, at N_SIDE images of INPUT_RAW_SIDE px
INPUT_RAW_SIDE = 256
TEST_SHARE = 0.2                    # Testing share of the phantom (default profile: 100 of 500)
STAGES = ("prepare", "train", "predict", "explain")
MEMORY_STAGES = ("prepare", "train")
FLAT = 1.2                          # per-image cost (and peak memory) at the largest N / smallest
SUBQUADRATIC = 1.5                  # exponent target of the near-duplicate search
DUP_NS = (1000, 2000, 4000, 8000, 16000, 32000)
EXTRAPOLATE_N = 7000                # the README table's data set (the Kaggle set's size)
STAGE_EPOCHS = 20                   # train_scratch.epochs, for the README table


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------
def phantom_counts(n: int, test_share: float = TEST_SHARE) -> tuple[int, int]:
    """(n_train_per_class, n_test_per_class) for about n images over the 4 classes."""
    n_test = max(1, round(n * test_share / 4))
    return max(1, round(n / 4) - n_test), n_test


def generate_set(out: Path, n: int, side: int, seed: int, workers: int = 2) -> float:
    """Generate the phantom of n images at `side` px into out; returns seconds."""
    from lib.data.phantom import PhantomConfig, generate

    n_train, n_test = phantom_counts(n)
    cfg = PhantomConfig(seed=seed, n_train_per_class=n_train, n_test_per_class=n_test,
                        image_size=side)
    start = time.perf_counter()
    generate(cfg, out, progress=False, workers=workers)
    return time.perf_counter() - start


def subset(src: Path, dst: Path, n: int) -> Path:
    """Hard links to the first images of each class of src: the phantom of n images."""
    from lib.data.phantom import CLASSES, MANIFEST

    n_train, n_test = phantom_counts(n)
    meta = json.loads((src / MANIFEST).read_text())
    for split, count in (("Training", n_train), ("Testing", n_test)):
        for cls in CLASSES:
            folder = dst / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            stems = sorted(p for p in (src / split / cls).glob("*.png")
                           if not p.stem.endswith("_mask"))[:count]
            for image in stems:
                for path in (image, image.with_name(f"{image.stem}_mask.png")):
                    os.link(path, folder / path.name)
            meta["counts"][split] = {c: count for c in CLASSES}
    meta["config"].update(n_train_per_class=n_train, n_test_per_class=n_test)
    (dst / MANIFEST).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return dst


# --------------------------------------------------------------------------------------------
# Stages (each runs in a child: `python bench/scale.py child <stage> <json args>`)
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def timing(module: Any, name: str, into: dict[str, float]) -> Iterator[None]:
    """Wrap module.name so that its calls add their seconds to into[name]."""
    original = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.perf_counter() - start

    setattr(module, name, wrapped)
    try:
        yield
    finally:
        setattr(module, name, original)


def stage_prepare(raw: str, work: str, params: dict[str, Any]) -> dict[str, Any]:
    import lib.data.prepare as P

    cfg = P.PrepareConfig.from_params(params["prepare"], params["seed"])
    parts: dict[str, float] = {}
    start = time.perf_counter()
    with timing(P, "inspect_image", parts), timing(P, "near_duplicate_pairs", parts), \
            timing(P, "confounder_audit", parts):
        manifest = P.prepare(Path(raw), Path(work) / "processed", Path(work) / "reports", cfg,
                             progress=False)
    seconds = time.perf_counter() - start
    audit = json.loads((Path(work) / "reports" / P.AUDIT_JSON).read_text())
    dup = audit.get("duplicates", audit)
    return {"seconds": seconds, "images": int(len(manifest)),
            "parts": {"inspect": parts.get("inspect_image", 0.0),
                      "duplicate_search": parts.get("near_duplicate_pairs", 0.0),
                      "confounder_audit": parts.get("confounder_audit", 0.0)},
            "phash_candidate_pairs": _find(dup, "phash_candidate_pairs"),
            "duplicate_pairs": _find(dup, "duplicate_pairs")}


def _find(node: Any, key: str) -> Any:
    """The first value of `key` anywhere in a nested dict (the audit's layout may move)."""
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for value in node.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def stage_train(raw: str, work: str, params: dict[str, Any], input_size: int,
                epochs: int = 3) -> dict[str, Any]:
    import keras

    from lib.train.augment import AugmentConfig, AugmentPolicy
    from lib.train.fit import TrainConfig, TrainingData, compile_model, fit
    from lib.train.models import ScratchConfig, build_scratch

    scratch = params["train_scratch"]
    cfg = TrainConfig.from_params(params["train"], epochs=epochs,
                                  learning_rate=scratch["learning_rate"])
    seed = int(params["train_seeds"][0])
    keras.utils.set_random_seed(seed)
    data = TrainingData.from_manifest(Path(work) / "processed" / "manifest.csv", raw, input_size)
    start = time.perf_counter()
    train, val = data.datasets(cfg.batch_size, channels=1, seed=seed,
                               augment=AugmentPolicy(AugmentConfig.from_params(params["augment"]),
                                                     seed))
    load = time.perf_counter() - start
    model = build_scratch(data.input_shape(1), data.n_classes,
                          ScratchConfig.from_params(scratch, "batchnorm"))

    class Timer(keras.callbacks.Callback):
        seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    timer = Timer()
    run_dir = Path(work) / f"fit{input_size}"
    shutil.rmtree(run_dir, ignore_errors=True)
    result = fit(compile_model(model, cfg), train, val, cfg, run_dir, extra_callbacks=[timer],
                 verbose=0)
    result.model.save(Path(work) / f"model{input_size}.keras")
    steady = timer.seconds[1:] or timer.seconds
    return {"seconds": min(steady), "load_seconds": load, "epoch_seconds": timer.seconds,
            "images": int(len(data.train)), "val_images": int(len(data.val)),
            "images_bytes": int(train.images.nbytes)}


def stage_predict(raw: str, work: str, params: dict[str, Any], input_size: int
                  ) -> dict[str, Any]:
    import keras

    from lib.data.manifest import class_names, load_manifest, split_frame
    from lib.evaluate.predict import predict_frame

    manifest = load_manifest(Path(work) / "processed" / "manifest.csv")
    test = split_frame(manifest, "test")
    model = keras.saving.load_model(Path(work) / f"model{input_size}.keras", compile=False)
    start = time.perf_counter()
    scores = predict_frame(model, test, raw, len(class_names(manifest)))
    return {"seconds": time.perf_counter() - start, "images": int(len(scores))}


def stage_explain(raw: str, work: str, params: dict[str, Any], input_size: int
                  ) -> dict[str, Any]:
    import keras

    from lib.data.inputs import load_arrays
    from lib.data.manifest import class_names, load_manifest, split_frame
    from lib.explain.methods import Explainer
    from lib.forward import predict_probs

    manifest = load_manifest(Path(work) / "processed" / "manifest.csv")
    test = split_frame(manifest, "test")
    model = keras.saving.load_model(Path(work) / f"model{input_size}.keras", compile=False)
    images, _ = load_arrays(test, Path(raw), image_size=input_size,
                            n_classes=len(class_names(manifest)))
    targets = predict_probs(model, images).argmax(axis=1)
    explain = params["explain"]
    start = time.perf_counter()
    explainer = Explainer(model, explain["layer"], min_grid=int(explain["min_grid"]))
    explainer.maps(images[:8], targets[:8], "gradcam")  # the clone and the tracing
    cold = time.perf_counter() - start
    start = time.perf_counter()
    maps = explainer.maps(images, targets, "gradcam")
    return {"seconds": time.perf_counter() - start, "cold_seconds": cold,
            "images": int(len(maps)), "layer": explainer.layer}


STAGE_FUNCS: dict[str, Callable[..., dict[str, Any]]] = {
    "prepare": stage_prepare, "train": stage_train, "predict": stage_predict,
    "explain": stage_explain}


def child(stage: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one stage in this process; add its peak RSS (MiB) and its children's. `args` may
    carry ``overrides``: {group: {key: value}} applied over params.yaml (the tests' tiny runs)."""
    from lib.config import load_params

    args = dict(args)
    params = load_params(REPO / "params.yaml")
    for group, values in (args.pop("overrides", None) or {}).items():
        params[group] = {**params[group], **values}
    record = STAGE_FUNCS[stage](params=params, **args)
    record["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record["children_peak_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return record


def run_stage(stage: str, in_process: bool = False, **args: Any) -> dict[str, Any]:
    """One stage in a fresh child process (or here, for tests: then peak_mib is this process's
    peak so far, not the stage's)."""
    if in_process:
        return child(stage, args)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "child", stage,
                           json.dumps(args)], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"stage {stage} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# The near-duplicate search alone
# --------------------------------------------------------------------------------------------
def duplicate_search_scaling(ns: Sequence[int] = DUP_NS, max_distance: int = 4,
                             seed: int = 0) -> dict[str, Any]:
    """Seconds of lib.data.audit.near_duplicate_pairs on n random 64-bit hashes, and the
    exponent b of seconds ~ n^b fitted on the two largest n (2 = all pairs)."""
    import numpy as np

    from lib.data.audit import near_duplicate_pairs

    rng = np.random.default_rng(seed)
    points = []
    for n in ns:
        hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        start = time.perf_counter()
        pairs, _ = near_duplicate_pairs(hashes, max_distance)
        points.append({"n": int(n), "seconds": time.perf_counter() - start,
                       "pairs_compared": n * (n - 1) // 2, "pairs_found": int(len(pairs))})
    return {"points": points, "exponent": exponent(points, "n", "seconds")}


def exponent(points: Sequence[dict[str, Any]], x: str, y: str) -> float | None:
    """log-log slope between the last two points (the largest sizes: start-up costs fade)."""
    if len(points) < 2:
        return None
    a, b = points[-2], points[-1]
    if min(a[x], b[x], a[y], b[y]) <= 0 or a[x] == b[x]:
        return None
    return math.log(b[y] / a[y]) / math.log(b[x] / a[x])


# --------------------------------------------------------------------------------------------
# Figures and targets
# --------------------------------------------------------------------------------------------
def per_image(record: dict[str, Any]) -> float | None:
    return record["seconds"] / record["images"] if record.get("images") else None


def ratios(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each stage over the N sweep: per-image cost and peak memory at the largest N over the
    smallest, each divided by FLAT (<= 1 meets the target), and the memory slope."""
    sweep = sorted((r for r in rows if r["sweep"] == "n"), key=lambda r: r["n"])
    out: dict[str, dict[str, Any]] = {}
    if len(sweep) < 2:
        return out
    first, last = sweep[0], sweep[-1]
    for stage in STAGES:
        a, b = first["stages"].get(stage), last["stages"].get(stage)
        if not a or not b:
            continue
        cost_a, cost_b = per_image(a), per_image(b)
        growth = cost_b / cost_a if cost_a and cost_b else None
        entry: dict[str, Any] = {
            "n_from": first["n"], "n_to": last["n"],
            "per_image_growth": growth,
            "marginal_ms_per_image": marginal(sweep, stage),
            "per_image_ratio": None if growth is None else growth / FLAT,
            "memory_growth": b["peak_mib"] / a["peak_mib"],
            "memory_mib_per_1k_images": (b["peak_mib"] - a["peak_mib"])
            / ((last["n"] - first["n"]) / 1000)}
        if stage in MEMORY_STAGES:
            entry["memory_ratio"] = entry["memory_growth"] / FLAT
        out[stage] = entry
    return out


def marginal(sweep: Sequence[dict[str, Any]], stage: str) -> list[float | None]:
    """Milliseconds per extra image between consecutive sizes of the N sweep: constant when the
    stage is linear plus a fixed start-up cost, rising when it is worse than linear."""
    out: list[float | None] = []
    for a, b in zip(sweep, sweep[1:], strict=False):
        ra, rb = a["stages"].get(stage), b["stages"].get(stage)
        if not ra or not rb or rb["images"] == ra["images"]:
            out.append(None)
            continue
        out.append(1e3 * (rb["seconds"] - ra["seconds"]) / (rb["images"] - ra["images"]))
    return out


def linear_fit(rows: Sequence[dict[str, Any]], stage: str) -> tuple[float, float] | None:
    """(fixed seconds, seconds per image) of a least-squares line through the stage's seconds
    over its images in the N sweep: the start-up part and the part that grows with N."""
    pts = [(r["stages"][stage]["images"], r["stages"][stage]["seconds"]) for r in rows
           if r["sweep"] == "n" and stage in r["stages"]]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return max(0.0, my - b * mx), b


def extrapolate(rows: Sequence[dict[str, Any]], n: int = EXTRAPOLATE_N,
                epochs: int = STAGE_EPOCHS, seeds: int = 3) -> list[dict[str, Any]]:
    """Estimated seconds of each stage for n images, per raw side (and model input): the README
    table. Each stage is its fixed part (``linear_fit`` of the N sweep) plus the row's own cost
    per image above that fixed part; the training stage is `seeds` x (decode + `epochs` epochs);
    training peak memory adds the N sweep's MiB per image, scaled by the input's pixels."""
    n_train_share = (1 - TEST_SHARE) * 0.85  # prepare.val_fraction 0.15 of Training
    counts = {"prepare": n, "train": n * n_train_share, "predict": n * TEST_SHARE,
              "explain": n * TEST_SHARE}
    fits = {stage: linear_fit(rows, stage) for stage in STAGES}
    sweep = sorted((r for r in rows if r["sweep"] == "n" and "train" in r["stages"]),
                   key=lambda r: r["n"])
    slope = None  # MiB per training image at the N sweep's input side
    if len(sweep) >= 2:
        a, b = sweep[0]["stages"]["train"], sweep[-1]["stages"]["train"]
        slope = (b["peak_mib"] - a["peak_mib"]) / (b["images"] - a["images"])
    out = []
    for row in rows:
        if row["sweep"] not in ("side", "input"):
            continue
        s = row["stages"]

        def estimate(stage: str, s: dict[str, Any] = s) -> float | None:
            rec = s.get(stage)
            if not rec or not rec["images"]:
                return None
            fixed = (fits[stage] or (0.0, 0.0))[0] if stage != "train" else 0.0
            fixed = min(fixed, rec["seconds"])
            return fixed + (rec["seconds"] - fixed) / rec["images"] * counts[stage]

        train = s.get("train")
        epoch = estimate("train")
        load = train["load_seconds"] / train["images"] * counts["train"] if train else None
        peak = None
        if train and slope is not None and sweep:
            scale = (row["input"] / sweep[0]["input"]) ** 2
            peak = train["peak_mib"] + slope * scale * (counts["train"] - train["images"])
        out.append({
            "side": row["side"], "input": row["input"], "n": n,
            "prepare_s": estimate("prepare"),
            "train_epoch_s": epoch,
            "train_stage_s": None if epoch is None else seeds * (load + epochs * epoch),
            "predict_s": estimate("predict"),
            "gradcam_s": estimate("explain"),
            "train_peak_mib": peak,
            "prepare_peak_mib": s.get("prepare", {}).get("peak_mib")})
    return out


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_tables(result: dict[str, Any]) -> None:
    print("\nper stage: milliseconds per image, peak MiB (child process)")
    print(f"{'sweep':<6} {'N':>6} {'side':>5} {'input':>5}  "
          + "  ".join(f"{s + ' ms/img':>17} {'MiB':>6}" for s in STAGES))
    for row in result["rows"]:
        cells = []
        for stage in STAGES:
            rec = row["stages"].get(stage)
            cells.append(f"{_fmt(per_image(rec) * 1e3 if rec else None, '17.3f')} "
                         f"{_fmt(rec['peak_mib'] if rec else None, '6.0f')}")
        print(f"{row['sweep']:<6} {row['n']:>6} {row['side']:>5} {row['input']:>5}  "
              + "  ".join(cells))
    print("\nprepare, seconds by part (N sweep)")
    for row in result["rows"]:
        if row["sweep"] == "n" and "prepare" in row["stages"]:
            p = row["stages"]["prepare"]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in p.get("parts", {}).items())
            print(f"  N {row['n']:>6}: {p['seconds']:.1f} s ({parts}); pHash candidates "
                  f"{p.get('phash_candidate_pairs')}")
    dup = result.get("duplicate_search")
    if dup:
        print("\nnear-duplicate search alone (random 64-bit hashes, all-pairs blocks):")
        for point in dup["points"]:
            print(f"  n {point['n']:>6}: {point['seconds']:7.3f} s "
                  f"({point['pairs_compared'] / max(point['seconds'], 1e-9) / 1e6:.0f} M pairs/s)")
    print(f"\n{'target':<44} {'measured':>9} {'limit':>6} {'ratio':>6}")
    for stage, r in result["ratios"].items():
        flag = "" if (r["per_image_ratio"] or 0) <= 1 else "  MISSED"
        print(f"{stage + ' per-image cost, N ' + str(r['n_from']) + ' -> ' + str(r['n_to']):<44} "
              f"{_fmt(r['per_image_growth']):>8}x {FLAT:5.1f}x {_fmt(r['per_image_ratio']):>6}"
              f"{flag}")
        steps = ", ".join(_fmt(m, ".2f") for m in r["marginal_ms_per_image"])
        print(f"    {stage} ms per extra image, between consecutive N: {steps}")
        if "memory_ratio" in r:
            flag = "" if r["memory_ratio"] <= 1 else "  MISSED"
            print(f"{stage + ' peak memory, N ' + str(r['n_from']) + ' -> ' + str(r['n_to']):<44} "
                  f"{r['memory_growth']:8.2f}x {FLAT:5.1f}x {r['memory_ratio']:6.2f}{flag}  "
                  f"(+{r['memory_mib_per_1k_images']:.0f} MiB per 1k images)")
    if dup and dup["exponent"] is not None:
        ratio = dup["exponent"] / SUBQUADRATIC
        flag = "" if ratio <= 1 else "  MISSED (quadratic)"
        print(f"{'near-duplicate search, time ~ N^b':<44} {dup['exponent']:8.2f}  "
              f"{SUBQUADRATIC:5.1f}  {ratio:6.2f}{flag}")
    fits = {stage: linear_fit(result["rows"], stage) for stage in STAGES}
    print("\nfixed part + cost per image (least squares over the N sweep)")
    for stage, fit in fits.items():
        if fit:
            print(f"  {stage:<8} {fit[0]:6.1f} s + {1e3 * fit[1]:6.2f} ms per image")
    if result["extrapolated"]:
        print(f"\nhow long will my dataset take: {EXTRAPOLATE_N} images, seconds (2 cores)")
        print(f"{'side':>5} {'input':>5} {'prepare':>8} {'epoch':>7} {'train 3x20':>10} "
              f"{'predict':>8} {'gradcam':>8} {'train MiB':>9}")
        for e in result["extrapolated"]:
            print(f"{e['side']:>5} {e['input']:>5} {_fmt(e['prepare_s'], '8.0f')} "
                  f"{_fmt(e['train_epoch_s'], '7.1f')} {_fmt(e['train_stage_s'], '10.0f')} "
                  f"{_fmt(e['predict_s'], '8.1f')} {_fmt(e['gradcam_s'], '8.1f')} "
                  f"{_fmt(e['train_peak_mib'], '9.0f')}")


def missed(result: dict[str, Any]) -> list[str]:
    out = [f"{s} per-image cost" for s, r in result["ratios"].items()
           if (r["per_image_ratio"] or 0) > 1]
    out += [f"{s} peak memory" for s, r in result["ratios"].items()
            if r.get("memory_ratio", 0) > 1]
    dup = result.get("duplicate_search") or {}
    if dup.get("exponent") is not None and dup["exponent"] > SUBQUADRATIC:
        out.append("near-duplicate search is not sub-quadratic")
    return out


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------
def grid(ns: Sequence[int] = NS, side: int = SIDE, sides: Sequence[int] = SIDES,
         n_side: int = N_SIDE, inputs: Sequence[int] = INPUTS,
         input_raw_side: int = INPUT_RAW_SIDE, input_size: int = 64
         ) -> list[dict[str, Any]]:
    """The measurement points: (sweep, n, raw side, model input side)."""
    points = [{"sweep": "n", "n": n, "side": side, "input": input_size} for n in ns]
    points += [{"sweep": "side", "n": n_side, "side": s, "input": input_size} for s in sides]
    points += [{"sweep": "input", "n": n_side, "side": input_raw_side, "input": i}
               for i in inputs]
    return points


def measure(points: Sequence[dict[str, Any]], root: Path, seed: int = 20261123,
            stages: Sequence[str] = STAGES, in_process: bool = False,
            log: Callable[[str], None] = print,
            overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run every stage at every point; a point equal to an earlier one (same n, side, input) is
    reused. Sets are generated once per side at its largest n, smaller ones are subsets.
    `overrides`: params.yaml values replaced in every stage ({group: {key: value}})."""
    largest: dict[int, int] = {}
    for p in points:
        largest[p["side"]] = max(largest.get(p["side"], 0), p["n"])
    generated: dict[int, dict[str, Any]] = {}
    for side, n in sorted(largest.items()):
        seconds = generate_set(root / f"raw{side}_{n}", n, side, seed)
        generated[side] = {"n": n, "seconds": seconds, "per_image_s": seconds / n}
        log(f"generated {n} images at {side} px in {seconds:.1f} s")
    done: dict[tuple[int, int, int], dict[str, Any]] = {}
    prepared: dict[tuple[int, int], Path] = {}
    rows = []
    for p in points:
        key = (p["n"], p["side"], p["input"])
        if key not in done:
            n, side = p["n"], p["side"]
            raw = root / f"raw{side}_{largest[side]}"
            if n != largest[side]:
                raw = subset(raw, root / f"raw{side}_{n}", n) \
                    if not (root / f"raw{side}_{n}").exists() else root / f"raw{side}_{n}"
            work = root / f"work{side}_{n}"
            work.mkdir(exist_ok=True)
            records: dict[str, Any] = {}
            for stage in stages:
                if stage == "prepare":
                    if (n, side) in prepared:
                        continue
                    args = {"raw": str(raw), "work": str(work)}
                else:
                    args = {"raw": str(raw), "work": str(work), "input_size": p["input"]}
                if overrides:
                    args["overrides"] = overrides
                records[stage] = run_stage(stage, in_process=in_process, **args)
                rec = records[stage]
                log(f"  N {n:>5} side {side:>3} input {p['input']:>3} {stage:<8} "
                    f"{rec['seconds']:7.2f} s, {rec['images']:>5} images, "
                    f"{1e3 * rec['seconds'] / max(rec['images'], 1):8.3f} ms/img, "
                    f"peak {rec['peak_mib']:6.0f} MiB")
            if "prepare" in records:
                prepared[(n, side)] = work
            else:  # shared with an earlier point of the same set
                earlier = next((d for k, d in done.items() if k[:2] == (n, side)), None)
                if earlier and "prepare" in earlier:
                    records = {"prepare": earlier["prepare"], **records}
            done[key] = records
        rows.append({**p, "stages": done[key]})
    return {"generated": generated, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["child"]:
        print(json.dumps(child(argv[1], json.loads(argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N 1k and 2k only, no side sweep")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    from lib.config import load_params

    input_size = int(load_params(REPO / "params.yaml")["train_scratch"]["input_size"])
    points = (grid(ns=NS[:2], sides=(), inputs=(), input_size=input_size) if args.quick
              else grid(input_size=input_size))
    root = Path(tempfile.mkdtemp(prefix="brain-mri-scale-"))
    start = time.perf_counter()
    try:
        result = measure(points, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result["duplicate_search"] = duplicate_search_scaling(DUP_NS[:3] if args.quick else DUP_NS)
    result["ratios"] = ratios(result["rows"])
    result["extrapolated"] = extrapolate(result["rows"])
    result["seconds"] = time.perf_counter() - start
    result["machine"] = {"cores": os.cpu_count(), "load_avg_at_end": os.getloadavg()}
    result["missed"] = missed(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_tables(result)
    print(f"\n{result['seconds']:.0f} s in all -> {args.out}")
    if result["missed"]:
        print("targets missed: " + "; ".join(result["missed"]))
    return 1 if result["missed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
