"""The report is one self-contained file: embedded figures, no links leaving the reports folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from lib import report
from tests.conftest import REPO


@pytest.fixture()
def outputs(tmp_path: Path) -> Path:
    """A fake repository root holding the files the report reads, as the stages write them."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    metrics, figures = tmp_path / "reports" / "metrics", tmp_path / "reports" / "figures" / "eda"
    metrics.mkdir(parents=True)
    figures.mkdir(parents=True)
    Image.new("L", (8, 8), 128).save(figures / "eda_counts.png")
    audit = {"counts": {"usable": {"a": {"train": 3, "val": 1, "test": 2}},
                        "usable_total": {"train": 3, "val": 1, "test": 2},
                        "findings_by_kind": {"corrupt": 2}, "status": {"ok": 6}},
             "params": {"duplicates": "report"}, "findings": []}
    (metrics / "data_audit.json").write_text(json.dumps(audit))
    eda = {"n_images": 6, "n_classes": 1, "lesion_share_of_head": {},
           "kruskal_mean_intensity": {"H": 1.5, "p": 0.2, "epsilon2": 0.01, "n": 6, "k": 2}}
    (metrics / "eda.json").write_text(json.dumps(eda))
    return tmp_path


def test_report_embeds_figures_and_numbers(outputs: Path) -> None:
    html = report.build(root=outputs).read_text()
    assert html.count('src="data:image/png;base64,') == 1
    assert "6 usable images in 1 classes" in html
    assert "<td>corrupt</td><td>2</td>" in html
    assert "H = 1.50" in html


def test_report_has_no_external_references(outputs: Path) -> None:
    html = report.build(root=outputs).read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs, "expected at least the embedded figure"
    for ref in refs:
        assert ref.startswith(("data:", "#", "notebooks/")), ref


def test_report_shows_trained_models_with_their_validation_scores(outputs: Path) -> None:
    metrics = {"model": "scratch", "variant": "batchnorm", "params": 1234, "seeds": [1, 2],
               "val_accuracy": {"mean": 0.8125, "sd": 0.01, "n": 2},
               "val_macro_f1": {"mean": 0.7777, "sd": 0.0123, "n": 2}}
    (outputs / "reports" / "metrics" / "train_scratch_batchnorm.json").write_text(
        json.dumps(metrics))
    curves = outputs / "reports" / "training" / "scratch_batchnorm"
    curves.mkdir(parents=True)
    Image.new("L", (8, 8), 50).save(curves / "training_curves.png")
    html = report.build(root=outputs).read_text()
    assert "<td>scratch_batchnorm</td><td>1, 2</td><td>1234</td>" in html
    assert "0.778 ± 0.012" in html and "0.812 ± 0.010" in html
    assert "Learning curves" in html and html.count('src="data:image/png;base64,') == 2
    assert "No training stage has run yet" not in html


def test_report_says_which_stages_have_not_run(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    html = report.build(root=tmp_path).read_text()
    assert "No training stage has run yet" in html
    assert "The EDA stage has not run yet" in html
    assert "The prepare stage has not run yet" in html


def test_rendered_notebook_fetches_nothing_from_a_cdn(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t $x^2$"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, tmp_path / "n.ipynb")
    html = report.render_notebook(tmp_path / "n.ipynb").read_text()
    assert "<h1" in html
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    assert '<script src="">' not in html
