"""tools.guide_sweep: the queued commands, and the rows and curve it collects from
`dvc exp show --json` (its DVC 3 layout, trimmed to the keys read)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tools import guide_sweep as G


def exp(name: str, lam: float, share: float, gradcam: float | None) -> dict:
    metrics = {} if gradcam is None else {G.METRICS: {"data": {
        "val_macro_f1": {"mean": 0.93, "sd": 0.01, "n": 3},
        "val_pointing_game_guided_gradcam": {"mean": gradcam, "sd": 0.02},
        "val_pointing_game_guided_hirescam": {"mean": 0.9, "sd": 0.02},
        "val_pointing_game_plain_gradcam": {"mean": 0.2, "sd": 0.05},
        "val_pointing_game_plain_hirescam": {"mean": 0.8, "sd": 0.05}}}}
    return {"rev": "abc", "name": name, "data": {
        "params": {"params.yaml": {"data": {"guide": {"lam": lam, "mask_share": share}}}},
        "metrics": metrics}}


def test_rows_come_from_the_workspace_and_every_experiment_with_metrics(tmp_path: Path) -> None:
    show = [{"rev": "workspace", **exp("workspace", 0.1, 1.0, 0.9)},
            {"rev": "HEAD", "experiments": [{"revs": [exp("guide-lam0-share1", 0.0, 1.0, 0.2)]},
                                            {"revs": [exp("guide-lam1-share1", 1.0, 1.0, 0.95)]},
                                            {"revs": [exp("failed", 0.3, 1.0, None)]}]}]
    rows = G.rows_from_show(show)
    assert [(r["lam"], r["mask_share"]) for r in rows] == [(0.0, 1.0), (0.1, 1.0), (1.0, 1.0)]
    assert rows[0]["experiment"] == "guide-lam0-share1" and rows[0]["gradcam_guided"] == 0.2
    assert rows[1]["n_seeds"] == 3 and rows[1]["gradcam_plain"] == 0.2
    csv, png = G.write(rows, tmp_path)
    assert list(pd.read_csv(csv).columns) == list(G.COLUMNS) and png.stat().st_size > 1000


def test_queue_asks_dvc_for_one_named_experiment_per_point(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    seen = []
    monkeypatch.setattr(G.subprocess, "run", lambda cmd, check: seen.append(cmd))
    G.queue([(0.0, 1.0), (0.1, 0.01)])
    assert seen[0] == ["dvc", "exp", "run", "--queue", "--allow-missing", "--name",
                       "guide-lam0-share1", "-S", "guide.lam=0.0", "-S", "guide.mask_share=1.0",
                       G.STAGE]
    assert seen[1][6] == "guide-lam0p1-share0p01"
