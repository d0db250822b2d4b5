"""A real `dvc repro` of the whole pipeline on a tiny dataset, the way a researcher brings data.

In a temp copy of the repository: generate a tiny dataset into data/raw, `dvc add` it, push it to a
local DVC remote, commit, clone fresh, `dvc pull`, `dvc repro`. Then `dvc status` must be clean, a
second `dvc repro` must run nothing, and `dvc repro --force` must reproduce every metric exactly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run

pytestmark = pytest.mark.slow
TINY = {"n_train_per_class": 6, "n_test_per_class": 3, "image_size": 64}
# One of the four variants, the one with both switches (every random layer of the scratch CNN): the
# matrix still expands (train_scratch@dropout_batchnorm), each variant is the same code path with
# other switches (tests/test_models.py builds all four), and with transfer there are still two
# configurations to compare, each over two seeds.
VARIANTS = ("dropout_batchnorm",)
GUIDED = tuple(f"scratch_{v}" for v in VARIANTS)  # the guided arm on the scratch CNN only here
TRAINING_STAGES = ("augmentation", *(f"train_scratch@{v}" for v in VARIANTS), "pretext",
                   "pretrain", "train_transfer", *(f"train_guided@{m}" for m in GUIDED))
STUDY_STAGES = ("evaluate", "twins", "explain", "shortcut", "fusion", "claims")
SEEDS = (42, 43)  # two: every seed-aware statistic and the claims run on a real spread
CONFIGS = (*(f"scratch_{v}" for v in VARIANTS), "transfer", *(f"guided_{m}" for m in GUIDED))
MODEL_KEYS = tuple(f"{c}_s{s}" for c in CONFIGS for s in SEEDS)
FIRST_SEEDS = tuple(f"{c}_s{SEEDS[0]}" for c in CONFIGS)  # explained in full, with figures


def tiny_params(params: dict) -> dict:
    """Seconds-sized settings for every stage; the structure of the study stays the same."""
    params["phantom"].update(TINY)
    params["variants"] = list(VARIANTS)
    params["train_seeds"] = list(SEEDS)
    params["prepare"]["confounder_permutations"] = 10  # the audit runs, cheaply
    params["eda"]["samples_per_class"] = 2
    params["augment_preview"]["preview_n"] = 3
    params["train"].update(batch_size=8)
    params["train_scratch"].update(input_size=32, epochs=2, blocks=2, filters=4, dense_units=8)
    params["pretrain"].update(n_per_sequence=4, epochs=1, input_size=32)
    params["train_transfer"].update(input_size=32, phase1_epochs=1, phase2_epochs=1,
                                    fine_tune_layers=5)
    params["guide"].update(models=list(GUIDED), epochs=1)
    params["shortcut_test"].update(n_train_per_class=10, n_test_per_class=5)
    params["fusion"].update(image_models=list(GUIDED), epochs=10, patience=3)
    params["evaluate"].update(bootstrap_resamples=200, gallery_per_pair=2)
    # Two methods keep the stage's plumbing under test; every method is covered by
    # tests/test_explain.py and the nbval run of 06_explain.
    params["explain"].update(methods="gradcam,occlusion", sample_size=8, sanity_size=4,
                             smooth_samples=4, score_cam_max_n=8, bootstrap_resamples=200,
                             faithfulness_steps=5, gallery_per_class=2)
    return params


def tree_digest(folder: Path) -> str:
    digest = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def copy_checkout(dest: Path) -> None:
    """Tracked and not-ignored files only: what a clone of the working tree would hold."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not rel.startswith("data/raw"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pipeline")
    origin, remote, clone = base / "origin", base / "remote", base / "clone"
    origin.mkdir()
    copy_checkout(origin)
    params = tiny_params(yaml.safe_load((origin / "params.yaml").read_text()))
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], origin)
    run(["python", "-m", "lib.data.phantom", "--params", "params.yaml", "--out", "data/raw"],
        origin)
    raw_digest = tree_digest(origin / "data" / "raw")
    run(["dvc", "add", "-q", "data/raw"], origin)
    run(["dvc", "remote", "add", "-d", "local", str(remote)], origin)
    run(["dvc", "push", "-q"], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-q", "-m", "tiny study"], origin)

    run(["git", "clone", "-q", str(origin), str(clone)], base)
    assert not (clone / "data" / "raw").exists()
    run(["dvc", "pull", "-q", "data.dvc"], clone)
    repro = run(["dvc", "repro"], clone)
    return {"clone": clone, "raw_digest": raw_digest, "repro": repro.stdout}


def test_pulled_data_equals_pushed_data(study: dict) -> None:
    assert tree_digest(study["clone"] / "data" / "raw") == study["raw_digest"]


def test_repro_runs_every_stage_and_writes_outputs(study: dict) -> None:
    clone = study["clone"]
    for stage in ("prepare", "eda", *TRAINING_STAGES, *STUDY_STAGES, "report"):
        assert f"Running stage '{stage}'" in study["repro"]
    manifest = (clone / "data" / "processed" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 4 * (TINY["n_train_per_class"] + TINY["n_test_per_class"])
    eda = json.loads((clone / "reports" / "metrics" / "eda.json").read_text())
    assert eda["n_classes"] == 4
    assert eda["n_images"] == 4 * (TINY["n_train_per_class"] + TINY["n_test_per_class"])
    figures = sorted(p.name for p in (clone / "reports" / "figures" / "eda").glob("*.png"))
    assert {"eda_counts.png", "eda_samples.png", "eda_mean_images.png"} <= set(figures)
    html = (clone / "reports" / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= len(figures)
    assert (clone / "reports" / "notebooks" / "01_eda.html").is_file()


def test_executed_notebooks_show_their_figures_and_no_log_noise(study: dict) -> None:
    """What a student opens: every stage notebook draws figures, so each executed copy holds
    inline images, and its stream outputs are what a reader reads (a progress bar's last state,
    no TensorFlow banner), as lib.stage.tidy_outputs leaves them."""
    from lib.stage import is_noise

    executed = sorted((study["clone"] / "reports" / "notebooks").glob("*.ipynb"))
    assert len(executed) >= 6
    for path in executed:
        outputs = [o for c in json.loads(path.read_text())["cells"] for o in c.get("outputs", [])]
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert images, f"{path.name}: no figure is shown inline"
        streams = "".join("".join(o["text"]) for o in outputs if o["output_type"] == "stream")
        assert "\r" not in streams, f"{path.name}: progress-bar updates left in the page"
        assert not [line for line in streams.splitlines() if is_noise(line)], path.name


def test_metrics_are_visible_to_dvc(study: dict) -> None:
    out = run(["dvc", "metrics", "show", "--json"], study["clone"]).stdout
    assert "eda.json" in out and "n_images" in out


def metric_files(clone: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((clone / "reports" / "metrics").glob("*.json"))}


def test_status_is_clean_and_second_repro_runs_nothing(study: dict) -> None:
    clone = study["clone"]
    status = run(["dvc", "status"], clone).stdout
    assert "up to date" in status, status
    again = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in again, again
    assert "didn't change" in again or "up to date" in again


def test_training_stages_write_models_histories_and_metrics(study: dict) -> None:
    clone = study["clone"]
    for variant in VARIANTS:
        assert (clone / "models" / f"scratch_{variant}" / "seed42.keras").is_file()
        assert (clone / "reports" / "training" / f"scratch_{variant}" / "history_s42.csv").is_file()
        metrics = json.loads((clone / "reports" / "metrics" /
                              f"train_scratch_{variant}.json").read_text())
        assert metrics["variant"] == variant and metrics["seeds"] == list(SEEDS)
        per_seed = [metrics["per_seed"][f"s{s}"]["val"]["macro_f1"] for s in SEEDS]
        assert metrics["val_macro_f1"]["mean"] == pytest.approx(sum(per_seed) / len(SEEDS))
    assert (clone / "models" / "pretrain" / "backbone.weights.h5").is_file()
    pretrain = json.loads((clone / "reports" / "metrics" / "pretrain.json").read_text())
    assert pretrain["backbone"] == "MobileNetV3Small"
    transfer = json.loads((clone / "reports" / "metrics" / "train_transfer.json").read_text())
    assert transfer["weights"] == "pretrain" and transfer["weights_kind"] == "file"
    assert "pretrain stage" in transfer["weights_description"]
    assert (clone / "models" / "transfer" / "seed42.keras").is_file()
    assert (clone / "reports" / "figures" / "augment" / "augment_preview.png").is_file()
    assert not (clone / ".cache" / "train").exists() or not any((clone / ".cache" / "train")
                                                                 .iterdir())


def test_training_metrics_and_plots_are_visible_to_dvc(study: dict) -> None:
    out = json.loads(run(["dvc", "metrics", "show", "--json"], study["clone"]).stdout)
    shown = json.dumps(out)
    for name in ("train_scratch_batchnorm.json", "train_transfer.json", "pretrain.json"):
        assert name in shown
    plots = run(["dvc", "plots", "show", "--json"], study["clone"]).stdout
    assert "history_s42.csv" in plots and "augment_preview.png" in plots


def test_evaluate_scores_every_model_on_the_test_split(study: dict) -> None:
    clone = study["clone"]
    report = json.loads((clone / "reports" / "metrics" / "evaluate.json").read_text())
    assert sorted(report["models"]) == sorted(MODEL_KEYS)
    assert report["split"] == "test" and report["n_images"] == 4 * TINY["n_test_per_class"]
    assert report["best_model"] in MODEL_KEYS
    for key in MODEL_KEYS:
        assert (clone / "reports" / "predictions" / f"{key}.csv").is_file()
        assert (clone / "reports" / "plots" / "evaluate" / "confusion" /
                f"confusion_{key}.csv").is_file()
        shown = (clone / "reports" / "figures" / "evaluate" / f"confusion_{key}.png").is_file()
        assert shown == (key in FIRST_SEEDS), key  # figures: each configuration's first seed
    assert len(report["mcnemar"]) == len(MODEL_KEYS) * (len(MODEL_KEYS) - 1) // 2
    assert sorted(report["configurations"]) == sorted(CONFIGS)
    assert all(c["seeds"] == list(SEEDS) for c in report["configurations"].values())
    assert len(report["comparisons"]) == len(CONFIGS) * (len(CONFIGS) - 1) // 2
    assert sorted(report["ensembles"]) == sorted(CONFIGS)
    shown = run(["dvc", "metrics", "show", "--json"], clone).stdout
    assert "evaluate.json" in shown and "balanced_accuracy" in shown
    plots = run(["dvc", "plots", "show", "--json"], clone).stdout
    assert "confusion_transfer_s42.csv" in plots and "roc_transfer_s42.csv" in plots


def test_explain_scores_every_model_against_the_masks(study: dict) -> None:
    clone = study["clone"]
    report = json.loads((clone / "reports" / "metrics" / "explain.json").read_text())
    assert sorted(report["models"]) == sorted(FIRST_SEEDS)
    assert sorted(report["seeds"]) == sorted(MODEL_KEYS)  # the cheap part, on every seed
    assert all(len(c["localisation"]["gradcam"]["pointing_game"]["values"]) == len(SEEDS)
               for c in report["configurations"].values())
    for key, model in report["models"].items():
        gradcam = model["localisation"]["gradcam"]
        low, high = gradcam["pointing_game"]["ci"]
        assert low <= gradcam["pointing_game"]["value"] <= high, key
        assert gradcam["n"] == sum(c["n"] for c in gradcam["per_class"].values()), key
        assert "rate" in model["shortcut"], f"{key}: the phantom's healthy twins were not used"
        assert (clone / "reports" / "figures" / "explain" / f"gradcam_{key}.png").is_file()
    checks = report["target"]["checks"]
    assert report["target"]["met"] == all(c["met"] for c in checks.values())
    assert "explain.json" in run(["dvc", "metrics", "show", "--json"], clone).stdout


def test_claims_are_written_and_led_by_the_best_configuration(study: dict) -> None:
    clone = study["clone"]
    claims = json.loads((clone / "reports" / "metrics" / "claims.json").read_text())
    evaluate = json.loads((clone / "reports" / "metrics" / "evaluate.json").read_text())
    assert claims["claims"][0]["winner"] == evaluate["best_configuration"]
    ids = [c["id"] for c in claims["claims"]]
    assert len(ids) == len(set(ids))
    assert {f"test_macro_f1:{c}" for c in CONFIGS} <= {m["id"] for m in claims["metrics"]}
    html = (clone / "reports" / "index.html").read_text()
    assert claims["claims"][0]["statement"].split(":")[0] in html


def test_report_is_self_contained_and_matches_metrics(study: dict) -> None:
    from tests.test_report import check_report

    check_report(study["clone"] / "reports")


# Every stage that trains or samples is forced, except those whose only chance is pinned bit for
# bit by their own tests (each would add seconds to make test's six minutes): prepare's split
# (tests/test_data.py, test_prepare_twice_gives_identical_files), the EDA's sample
# (tests/test_eda.py, test_sample_records_is_seeded_and_capped), the augmentation preview's layers
# (tests/test_augment.py), the phantom's pretext set and twins (tests/test_phantom.py regenerates
# the default profile byte for byte), and pretrain, which trains the same backbone through the
# same seeded TrainStream and fit as train_transfer, forced here. The dropout + batchnorm variant
# has every random layer of the scratch CNN; evaluate bootstraps; explain samples, adds noise and
# scrambles. The guided arm's training (tests/test_guided.py: two runs, the same weights) and the
# shortcut stage (tests/test_shortcut.py) are pinned by their own tests.
FORCED = ("train_scratch@dropout_batchnorm", "train_transfer", "evaluate", "explain", "claims")
# Byte-compared outputs of those stages: every file except the executed notebooks and their HTML
# (papermill stamps times into them) and the model files (a .keras zip and its HDF5 weights carry
# save times; their weights are compared as arrays instead).
COMPARED = ("data/processed", "reports/metrics", "reports/training", "reports/predictions",
            "reports/plots", "reports/figures", "reports/data_audit.md", "models/pretrain")
NOT_BYTES = (".keras", ".h5", ".ipynb", ".html")


def output_bytes(clone: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name in COMPARED:
        root = clone / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and not path.name.endswith(NOT_BYTES) and "timings" not in path.parts:
                files[path.relative_to(clone).as_posix()] = path.read_bytes()
    return files


def model_weights(clone: Path) -> dict[str, list]:
    import h5py
    import numpy as np

    def arrays(h5: h5py.File) -> list:
        found: list = []
        h5.visititems(lambda n, o: found.append((n, np.asarray(o)))
                      if isinstance(o, h5py.Dataset) else None)
        return found

    out: dict[str, list] = {}
    for path in sorted((clone / "models").rglob("*.keras")):
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as fh, \
                h5py.File(fh, "r") as h5:
            out[path.relative_to(clone).as_posix()] = arrays(h5)
    return out


def same_weights(a: dict[str, list], b: dict[str, list]) -> list[str]:
    import numpy as np

    differ = [k for k in a if k not in b or len(a[k]) != len(b[k])
              or any(na != nb or not np.array_equal(x, y)
                     for (na, x), (nb, y) in zip(a[k], b[k], strict=True))]
    return differ + [k for k in b if k not in a]


def test_forced_repro_is_byte_identical(study: dict, tmp_path: Path) -> None:
    """Every stage that samples or trains, rerun in a copy of the clone, gives the same bytes (and
    the same weights) as the first run: the README's "bit-identical on one machine"."""
    clone = tmp_path / "again"
    shutil.copytree(study["clone"], clone, symlinks=True)
    before, weights = output_bytes(clone), model_weights(clone)
    written = {f"reports/metrics/{name}.json" for name in (
        "data_audit", "eda", "pretrain", "train_transfer", "evaluate", "explain", "claims",
        "shortcut", *(f"train_scratch_{v}" for v in VARIANTS),
        *(f"train_guided_{m}" for m in GUIDED))}
    assert written <= set(before)  # (the checkout also holds the committed files of the others)
    assert len(weights) == len(MODEL_KEYS) and before  # every seed of every configuration
    out = run(["dvc", "repro", "--force", "--single-item", *FORCED], clone).stdout
    assert all(f"Running stage '{name}'" in out for name in FORCED), out
    after = output_bytes(clone)
    assert sorted(after) == sorted(before)
    assert not [k for k in before if before[k] != after[k]], "outputs changed on a forced rerun"
    assert not same_weights(weights, model_weights(clone))


def test_the_byte_comparison_sees_a_changed_weight_or_file(study: dict) -> None:
    weights = model_weights(study["clone"])
    key = next(iter(weights))
    changed = {**weights, key: [(n, x + 1e-7) for n, x in weights[key]]}
    assert same_weights(weights, changed) == [key]
    files = output_bytes(study["clone"])
    assert any(k.endswith("manifest.csv") for k in files)
    assert any(k.startswith("reports/predictions/") for k in files)


def test_the_shortcut_stage_scores_both_arms_with_and_without_the_marker(study: dict) -> None:
    """The shortcut stage's output: both arms on every seed, the drop is marked minus clean, the
    guided minus plain differences, the audit's verdict, its figures, and its marked set on
    disk (Training carries the class's corner box)."""
    import numpy as np
    from PIL import Image

    from lib.data.phantom import marker_box

    clone = study["clone"]
    payload = json.loads((clone / "reports" / "metrics" / "shortcut.json").read_text())
    assert payload["seeds"] == list(SEEDS)
    for arm in ("plain", "guided"):
        for seed in SEEDS:
            row = payload[arm]["per_seed"][f"s{seed}"]
            assert row["drop"] == pytest.approx(row["f1_marked"] - row["f1_clean"], abs=2e-4)
            assert all(0 <= row[k] <= 1 for k in row if k != "drop")
        assert payload[arm]["f1_clean"]["n"] == len(SEEDS)
    assert set(payload["guided_minus_plain"]) == {"f1_clean", "drop", "gradcam_on_marker",
                                                  "hirescam_on_marker"}
    assert isinstance(payload["audit"]["flagged"], list) and payload["audit"]["messages"]
    assert {p.name for p in (clone / "reports" / "figures" / "shortcut").iterdir()} == {
        "shortcut_f1.png", "shortcut_maps.png"}
    raw = clone / ".cache" / "shortcut" / "raw" / "Training" / "glioma"
    image = np.asarray(Image.open(next(raw.glob("glioma_*[0-9].png"))))
    rows, cols = marker_box(image.shape[0], "glioma")
    assert (image[rows, cols] == 255).all()
    claims = {c["id"] for c in json.loads((clone / "reports" / "metrics" /
                                           "claims.json").read_text())["claims"]}
    assert {"target:shortcut_test:plain_drop", "target:shortcut_test:guided_drop"} <= claims


def test_the_fusion_stage_scores_every_arm_over_the_seeds(study: dict) -> None:
    """The fusion stage's output on the tiny phantom: its age and sex (drawn as phantom.metadata:
    cbtrus writes them), the metadata audit, every arm on every seed, and its claims."""
    clone = study["clone"]
    payload = json.loads((clone / "reports" / "metrics" / "fusion.json").read_text())
    assert payload["source"] == "phantom" and set(payload["columns"]) == {"age", "sex"}
    assert set(payload["audit"]["columns"]) == {"age", "sex", "all metadata"}
    assert set(payload["metadata_only"]["per_seed"]) == {f"s{s}" for s in SEEDS}
    for name in GUIDED:
        arms = payload["image_models"][name]["arms"]
        assert {a: set(v["per_seed"]) for a, v in arms.items()} == {
            a: {f"s{s}" for s in SEEDS} for a in ("image", "image_head", "fusion")}
    claims = json.loads((clone / "reports" / "metrics" / "claims.json").read_text())["claims"]
    assert sum(c["kind"] == "fusion" for c in claims) == 3 * len(GUIDED)
    assert "Image + metadata" in (clone / "reports" / "index.html").read_text()
