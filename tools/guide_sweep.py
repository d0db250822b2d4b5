"""The guided arm's sweep: the weight lam and the share of masked images, as queued DVC experiments.

    python -m tools.guide_sweep queue      # one `dvc exp run --queue` per point (nothing runs yet)
    dvc queue start -j 1                   # run them, each in its own temporary workspace
    dvc queue status                       # what ran; `dvc queue logs <name>` shows one's output
    python -m tools.guide_sweep collect    # dvc exp show --json -> reports/sweeps/guide_sweep.*

`make sweep-guide` does the three steps and waits for the queue in between. Each experiment
reruns only ``train_guided@scratch_batchnorm`` (every stage above it is restored from the DVC
cache; ``--allow-missing`` keeps the outputs git does not hold from rerunning them) with one
setting changed, on every seed of ``train_seeds``; its metrics file carries the
validation macro-F1 and the validation pointing game of Grad-CAM and HiResCAM of the plain and
the guided models, per seed (notebooks/04b_train_guided.ipynb). `collect` adds the committed
workspace's own run (the params.yaml point) and writes one row per point (mean and sd over
seeds) and the curve the report shows. Points are validation numbers: the sweep chooses
settings, the test split stays with evaluate and explain.

lam = 0 is the control: the same 8 extra epochs without the localisation term.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.dvc_queue import exp_show, runs

STAGE = "train_guided@scratch_batchnorm"
METRICS = "reports/metrics/train_guided_scratch_batchnorm.json"
OUT = Path("reports/sweeps")
# (lam, mask_share): lam from 0 (the control) to 1 with every mask, and 10 % and 1 % of the masks
# at the default lam (Rao et al. 2023 report guidance working with 1 % of images annotated).
POINTS: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.03, 1.0), (0.3, 1.0), (1.0, 1.0),
                                           (0.1, 0.1), (0.1, 0.01))
COLUMNS = ("lam", "mask_share", "n_seeds", "val_macro_f1", "val_macro_f1_sd",
           "gradcam_guided", "gradcam_guided_sd", "hirescam_guided", "hirescam_guided_sd",
           "gradcam_plain", "hirescam_plain", "experiment")


def queue(points: Sequence[tuple[float, float]], dvc: str = "dvc") -> list[str]:
    """Queue one experiment per point; returns the commands run."""
    commands = []
    for lam, share in points:
        name = f"guide-lam{lam:g}-share{share:g}".replace(".", "p")
        # --allow-missing: the executed notebooks and timings are cache: false outputs that git
        # ignores, so an experiment's temporary workspace lacks them and DVC would otherwise
        # retrain every stage above this one (measured: prepare and train_scratch reran).
        cmd = [dvc, "exp", "run", "--queue", "--allow-missing", "--name", name,
               "-S", f"guide.lam={lam}", "-S", f"guide.mask_share={share}", STAGE]
        subprocess.run(cmd, check=True)
        commands.append(" ".join(cmd))
    return commands


def row(name: str, params: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any] | None:
    """One point of the curve from an experiment's params.yaml and guided metrics, or None."""
    guide = params.get("guide", {})
    if not metrics or "val_macro_f1" not in metrics:
        return None

    def mean(key: str) -> Any:
        return (metrics.get(key) or {}).get("mean")

    def sd(key: str) -> Any:
        return (metrics.get(key) or {}).get("sd")

    return {"lam": guide.get("lam"), "mask_share": guide.get("mask_share"),
            "n_seeds": (metrics.get("val_macro_f1") or {}).get("n"),  # DVC drops lists
            "val_macro_f1": mean("val_macro_f1"), "val_macro_f1_sd": sd("val_macro_f1"),
            "gradcam_guided": mean("val_pointing_game_guided_gradcam"),
            "gradcam_guided_sd": sd("val_pointing_game_guided_gradcam"),
            "hirescam_guided": mean("val_pointing_game_guided_hirescam"),
            "hirescam_guided_sd": sd("val_pointing_game_guided_hirescam"),
            "gradcam_plain": mean("val_pointing_game_plain_gradcam"),
            "hirescam_plain": mean("val_pointing_game_plain_hirescam"), "experiment": name}


def rows_from_show(show: Any) -> list[dict[str, Any]]:
    """The points in `dvc exp show --json` output (the workspace and every experiment)."""
    out = {}
    for run in runs(show):
        params = (run["params"].get("params.yaml") or {}).get("data", {})
        metrics = (run["metrics"].get(METRICS) or {}).get("data", {})
        point = row(str(run["name"]), params, metrics)
        if point is not None:
            out.setdefault((point["lam"], point["mask_share"]), point)
    return sorted(out.values(), key=lambda r: (-r["mask_share"], r["lam"]))


def write(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """reports/sweeps/guide_sweep.csv and its figure."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    csv = out / "guide_sweep.csv"
    frame.to_csv(csv, index=False, float_format="%.4f")
    png = out / "guide_sweep.png"
    figure(frame, png)
    return csv, png


def figure(frame: Any, path: Path) -> None:
    """Validation pointing game (Grad-CAM, HiResCAM) and macro-F1 against lam (all masks) and
    against the share of masked images (default lam), mean ± sd over seeds."""
    import matplotlib.pyplot as plt

    from lib.figures import SAVE_DPI, readable_rc, save

    with plt.rc_context(readable_rc(SAVE_DPI)):
        fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.2), sharey=True)
        base = frame["lam"].isin([0.1]) & (frame["mask_share"] == 1.0)
        panels = ((axes[0], frame[frame["mask_share"] == 1.0], "lam", "λ (all masks; 0 = no term)"),
                  (axes[1], frame[frame["lam"] == 0.1], "mask_share", "share of tumour images "
                                                                      "with a mask (λ = 0.1)"))
        for ax, part, x, label in panels:
            part = part.sort_values(x)
            xs = range(len(part))  # evenly spaced: the values are a log-like grid with 0
            for col, name, colour in (("gradcam_guided", "Grad-CAM pointing game", "C0"),
                                      ("hirescam_guided", "HiResCAM pointing game", "C1"),
                                      ("val_macro_f1", "macro-F1", "C2")):
                ax.errorbar(xs, part[col], yerr=part[f"{col}_sd"], marker="o", color=colour,
                            label=name, capsize=3)
            ax.set_xticks(list(xs), [f"{v:g}" for v in part[x]])
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
            ax.set_ylim(0, 1.02)
        if base.any():
            plain = frame[base].iloc[0]
            for ax in axes:
                ax.axhline(plain["gradcam_plain"], color="C0", ls=":", lw=1)
                ax.axhline(plain["hirescam_plain"], color="C1", ls=":", lw=1)
        axes[0].set_ylabel("validation (mean ± sd over seeds)")
        axes[0].legend(frameon=False, loc="lower right")
        fig.suptitle("Guided scratch CNN: what λ and the share of masks buy (dotted: plain model)")
        fig.tight_layout()
        save(fig, path)
        plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("queue", "collect"))
    parser.add_argument("--dvc", default="dvc")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.command == "queue":
        for cmd in queue(POINTS, args.dvc):
            print(cmd)
        print("queued; run them with: dvc queue start -j 1")
        return 0
    rows = rows_from_show(exp_show(args.dvc))
    if not rows:
        print("no experiment has the guided metrics yet: queue and run the sweep first",
              file=sys.stderr)
        return 2
    csv, png = write(rows, args.out)
    print(f"{len(rows)} point(s) -> {csv}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
