"""tools.seed_sweep: the queued commands, the workers and threads it picks, the environment it
gives the queue, and the rows it collects from `dvc exp show --json` (a real output of a sweep of
train_scratch@batchnorm, trimmed to the keys read). No dvc runs here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import dvc_queue as Q
from tools import seed_sweep as S

METRICS = "reports/metrics/train_scratch_batchnorm.json"


def _exp(rev: str, name: str | None, seeds: list[int], per_seed: dict) -> dict:
    """One record as DVC 3's `exp show --json` writes it (params, metrics and rev kept)."""
    return {"rev": rev, "name": name, "data": {
        "rev": rev, "params": {"params.yaml": {"data": {"train_seeds": seeds}}},
        "metrics": {METRICS: {"data": {"per_seed": per_seed}},
                    "reports/metrics/eda.json": {"data": {}}}}}


def _seed(best: int, acc: float, f1: float) -> dict:
    return {"best_epoch": best, "epochs_run": 20, "val": {"accuracy": acc, "macro_f1": f1}}


# From `dvc exp show --json` in a clone after `python -m tools.seed_sweep run --prefix j2t1`
# (2026-12-05): the committed workspace (3 seeds in one run) and three single-seed experiments.
SHOW = [
    _exp("workspace", None, [42, 43, 44], {"s42": _seed(17, 0.929167, 0.928055),
                                           "s43": _seed(14, 0.908333, 0.904632),
                                           "s44": _seed(19, 0.929167, 0.929941)}),
    {**_exp("ed339db33f00051368afd0357776425257b81ee1", "main", [42, 43, 44], {}),
     "experiments": [
         {"revs": [_exp("35bb8dd703e07b6999a86145fbc0215f7b324aec", "j2t1-s44", [44],
                        {"s44": _seed(19, 0.916667, 0.916632)})],
          "executor": {"state": "success", "name": "dvc-task"}, "name": "j2t1-s44"},
         {"revs": [_exp("3665909aefce3cd65ca4ebd1473ec0c49db7107b", "j2t1-s43", [43],
                        {"s43": _seed(18, 0.925, 0.92509)})],
          "executor": {"state": "success", "name": "dvc-task"}, "name": "j2t1-s43"},
         {"revs": [_exp("8679c80371bea1253d2d09bd9d13d2bef5f5c5e0", "j2t1-s42", [42],
                        {"s42": _seed(17, 0.925, 0.924422)})],
          "executor": {"state": "success", "name": "dvc-task"}, "name": "j2t1-s42"},
         # killed mid-run: DVC lists it with its own params but the parent's metrics
         {"revs": [{**_exp("c4fd14739527c6794fc80bc5d198856745f9c914", "j2t1b-s43", [43],
                           {"s42": _seed(17, 0.929167, 0.928055),
                            "s43": _seed(14, 0.908333, 0.904632),
                            "s44": _seed(19, 0.929167, 0.929941)}),
                    "error": {"msg": "Experiment run failed", "type": ""}}],
          "executor": {"state": "failed", "name": None}, "name": "j2t1b-s43"},
         {"revs": [_exp("77aa2ec167dab77fca864c697953a9acd3bbd4b6", "j2t1b-s42", [42],
                        {"s42": _seed(17, 0.925, 0.924422)})],
          "executor": {"state": "success", "name": "dvc-task"}, "name": "j2t1b-s42"}]},
]


def test_one_queued_experiment_per_seed_with_allow_missing() -> None:
    cmds = S.queue_commands("train_scratch@batchnorm", [42, 43], dvc=".venv/bin/dvc")
    assert cmds[0] == [".venv/bin/dvc", "exp", "run", "--queue", "--allow-missing", "--name",
                       "scratch-batchnorm-s42", "-S", "train_seeds=[42]",
                       "train_scratch@batchnorm"]
    assert cmds[1][6] == "scratch-batchnorm-s43" and cmds[1][8] == "train_seeds=[43]"
    assert S.queue_commands("train_transfer", [7], prefix="t")[0][6] == "t-s7"
    assert S.start_command(2) == ["dvc", "queue", "start", "-j", "2"]


def test_names_and_metrics_follow_the_stage() -> None:
    assert S.slug("train_scratch@dropout_batchnorm") == "scratch-dropout-batchnorm"
    assert S.slug("train_guided@scratch_batchnorm") == "guided-scratch-batchnorm"
    assert S.metrics_path("train_scratch@batchnorm") == METRICS
    assert S.metrics_path("train_transfer") == "reports/metrics/train_transfer.json"


@pytest.mark.parametrize(("cores", "n", "threads", "jobs", "want"), [
    (2, 3, None, None, (2, 1)),    # the default: one thread per worker, a worker per core
    (2, 1, None, None, (1, 1)),    # never more workers than experiments
    (8, 3, None, None, (3, 1)),
    (2, 3, 2, None, (1, 2)),       # 1 worker x 2 threads
    (16, 3, 4, None, (3, 4)),
    (4, 8, None, 2, (2, 2)),       # jobs given: the cores are shared out
    (1, 3, None, None, (1, 1)),
    (2, 3, 4, None, (1, 4)),       # more threads than cores still runs one worker
])
def test_workers_and_threads_from_the_cores(cores: int, n: int, threads: int | None,
                                            jobs: int | None, want: tuple[int, int]) -> None:
    assert S.choose(cores, n, threads, jobs) == want


def test_thread_env_caps_every_pool_and_keeps_the_rest() -> None:
    env = S.thread_env(1, {"PATH": "/x", "OMP_NUM_THREADS": "8"})
    assert env["PATH"] == "/x"
    assert {k: env[k] for k in S.THREAD_VARS} == {
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1"}


def test_collect_reads_one_row_per_seed_of_the_named_experiments(tmp_path: Path) -> None:
    rows = S.rows_from_show(SHOW, "train_scratch@batchnorm", prefix="j2t1")
    assert [(r["experiment"], r["seed"]) for r in rows] == [
        ("j2t1-s42", 42), ("j2t1-s43", 43), ("j2t1-s44", 44)]
    assert rows[0]["val_macro_f1"] == 0.924422 and rows[0]["best_epoch"] == 17
    assert rows[0]["rev"] == "8679c80371bea1253d2d09bd9d13d2bef5f5c5e0"
    stats = S.summary(rows)
    assert stats["n"] == 3 and stats["val_macro_f1_mean"] == pytest.approx(0.922048)
    assert stats["val_macro_f1_sd"] == pytest.approx(0.0047023, abs=1e-6)
    everything = {(r["experiment"], r["seed"]): r for r in
                  S.rows_from_show(SHOW, "train_scratch@batchnorm")}
    assert ("workspace", 43) in everything
    # the same seed at one thread gives the same numbers run after run
    assert everything[("j2t1b-s42", 42)]["val_macro_f1"] == rows[0]["val_macro_f1"]
    # the killed experiment's parent metrics are not taken for its own
    assert not any(name == "j2t1b-s43" for name, _ in everything)
    csv = S.write(rows, tmp_path / "seeds.csv")
    assert csv.read_text().splitlines()[0] == ",".join(S.COLUMNS)


def test_runs_skip_unfinished_experiments_and_keep_their_state() -> None:
    names = {r["name"]: r.get("state") for r in Q.runs(SHOW)}
    assert names["j2t1-s42"] == "success" and names["workspace"] is None
    assert "j2t1b-s43" not in names
    queued = {"revs": [_exp("abc", "q-s1", [1], {"s1": _seed(1, 0.5, 0.5)})],
              "executor": {"state": "queued"}, "name": "q-s1"}
    assert list(Q.runs([queued])) == []


def test_models_come_from_the_cache_listing_of_the_experiments_lock(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    listing = [{"md5": "aa" + "1" * 30, "relpath": "seed42.keras"}]
    for md5, text in (("dd" + "2" * 26 + ".dir", json.dumps(listing)), ("aa" + "1" * 30, "m")):
        path = cache / "files" / "md5" / md5[:2] / md5[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    lock = {"stages": {"train_scratch@batchnorm": {"outs": [
        {"path": "models/scratch_batchnorm", "md5": "dd" + "2" * 26 + ".dir"},
        {"path": "reports/training/scratch_batchnorm", "md5": "ee.dir"}]}}}
    (out,) = S.stage_models(lock, "train_scratch@batchnorm")
    ((rel, src),) = S.cache_files(cache, out)
    assert rel == "seed42.keras" and src.read_text() == "m"


STATUS = """Task     Name      Created    Status
95b5672  j2t1-s42  09:20 AM   Success
4287184  j2t1-s43  09:20 AM   Running
ce3724c  j2t1-s44  09:20 AM   Queued

Worker status: 1 active, 0 idle
"""


def test_the_queue_is_busy_while_a_task_is_queued_or_running() -> None:
    assert Q.busy(STATUS) and Q.workers(STATUS) == (1, 0)
    done = STATUS.replace("Running", "Success").replace("Queued", "Failed")
    assert not Q.busy(done)
    assert Q.workers("No experiment tasks in the queue.\n\nWorker status: 0 active, 0 idle") \
        == (0, 0)
    assert not Q.busy("No experiment tasks in the queue.\n")


def test_wait_polls_until_the_queue_is_empty_and_gives_up_on_a_stall() -> None:
    texts = iter([STATUS, STATUS, STATUS.replace("Running", "Success").replace("Queued",
                                                                               "Success")])
    naps: list[float] = []
    final = Q.wait(status=lambda dvc: next(texts), sleep=naps.append, poll_s=3)
    assert not Q.busy(final) and naps == [3, 3]
    with pytest.raises(RuntimeError, match="has not moved"):
        Q.wait(status=lambda dvc: STATUS, sleep=lambda s: None, stall_s=-1)


def test_a_queue_that_stopped_with_tasks_left_is_started_again() -> None:
    stopped = ("Task     Name      Created    Status\n"
               "95b5672  j2t1-s42  09:20 AM   Success\n"
               "ce3724c  j2t1-s44  09:20 AM   Queued\n\nWorker status: 0 active, 0 idle\n")
    assert Q.orphaned(stopped) and not Q.orphaned(STATUS)
    done = stopped.replace("Queued", "Success")
    texts = iter([stopped, stopped, stopped, STATUS, done])
    restarts: list[int] = []
    Q.wait(status=lambda dvc: next(texts), sleep=lambda s: None,
           restart=lambda: restarts.append(1), orphan_polls=3)
    assert restarts == [1]
