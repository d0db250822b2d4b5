"""Every reference to a file of the repository resolves: a clone must stand alone.

A document, docstring, comment or notebook that names `docs/...`, `lib/...`, `DESIGN.md` and so on
must name something the repository holds (README, docs/architecture.md, dvc.yaml's comments, the
code's docstrings). Paths the study writes (reports/, data/, models/) are outputs, not references.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import REPO

TOP_DIRS = ("docs", "lib", "tests", "notebooks", "bench", "tools", ".ci")
TOP_FILES = ("README.md", "DESIGN.md", "ARCHITECTURE.md", "Makefile", "params.yaml", "dvc.yaml",
             "data.dvc", "environment.yml", "pyproject.toml", "requirements.in",
             "requirements.txt", "CITATION.cff", "LICENSE")
PATH = re.compile(r"(?<![\w/.$-])((?:" + "|".join(re.escape(d) for d in TOP_DIRS)
                  + r")/[A-Za-z0-9_./-]*[A-Za-z0-9_/]|(?:"
                  + "|".join(re.escape(f) for f in TOP_FILES) + r")(?![\w.-]))")
TEXT_SUFFIXES = (".md", ".py", ".yaml", ".yml", ".ipynb", ".toml", ".j2", ".cff", ".txt", ".in")


def references(text: str) -> set[str]:
    """Repository paths named in a text; templates with placeholders are skipped."""
    found = set()
    for match in PATH.finditer(text):
        ref = match.group(1)
        end = match.end()
        if text[end:end + 1] in "<{*$" or any(c in ref for c in "<{*$"):
            continue
        if text[max(0, match.start() - 9):match.start()].endswith(("href=\"", "href='")):
            continue  # a link inside the rendered report, relative to reports/
        found.add(ref.rstrip("."))
    return found


def tracked_texts() -> list[str]:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    return [f for f in files if (f.endswith(TEXT_SUFFIXES) or f in ("Makefile", ".ci/run"))
            and f != "tests/test_docs.py"]  # this file names missing files on purpose


def test_every_file_reference_resolves() -> None:
    missing = []
    for name in tracked_texts():
        path = REPO / name
        if not path.is_file():
            continue
        for ref in sorted(references(path.read_text(encoding="utf-8", errors="replace"))):
            if not (REPO / ref).exists():
                missing.append(f"{name}: {ref}")
    assert not missing, "references to files the repository does not hold:\n" + "\n".join(missing)


def test_the_reference_check_sees_a_missing_file() -> None:
    text = "see DESIGN.md §3, docs/architecture.md and lib/data/nope.py; lib/<stage>/x.py"
    assert references(text) == {"DESIGN.md", "docs/architecture.md", "lib/data/nope.py"}
    assert not (REPO / "DESIGN.md").exists() and not (REPO / "lib/data/nope.py").exists()


@pytest.mark.parametrize("ref", ["docs/architecture.md", "README.md"])
def test_the_design_document_is_in_the_repository(ref: str) -> None:
    assert (REPO / ref).is_file()


def test_the_readme_status_block_is_the_committed_claims() -> None:
    """The README's status sentences are lib.claims' rendering of the committed claims.json,
    not hand-typed numbers (`python -m lib.claims readme` rewrites the block)."""
    import json

    from lib.claims import README_END, README_START, status_markdown

    claims = REPO / "reports" / "metrics" / "claims.json"
    text = (REPO / "README.md").read_text()
    block = text.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    assert block == status_markdown(json.loads(claims.read_text())).strip(), (
        "README.md's status block is stale: run `python -m lib.claims readme`")


# ---- numbers the README states ---------------------------------------------------------------
METRIC_NUMBER = re.compile(r"(?<![\w.])0\.\d{2,3}(?!\d)")  # a score, a rate, a drift
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
# Paragraphs whose every number tests/test_docs.py checks against a committed file (below).
CHECKED = ("- **Across CPU kinds: the claims.**", "- **Why 3 seeds.**",
           "| image model | as trained |", "- The metadata alone scores")


def readme_paragraphs(text: str) -> list[str]:
    """The README's prose paragraphs (list items split apart), without the generated status
    block and without code blocks."""
    from lib.claims import README_END, README_START

    text = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END), "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return [p.strip() for p in re.split(r"\n\s*\n|\n(?=- )", text) if p.strip()]


def undated_numbers(text: str) -> list[str]:
    return [p[:80] for p in readme_paragraphs(text)
            if METRIC_NUMBER.search(p) and not DATE.search(p) and not p.startswith(CHECKED)]


def test_every_study_number_in_the_readme_is_generated_checked_or_dated() -> None:
    """A number about the study is either in the generated status block, in a paragraph whose
    numbers a test checks against the metrics files, or in a paragraph that says when it was
    measured (a dated example: it will not move with the next run)."""
    missing = undated_numbers((REPO / "README.md").read_text())
    assert not missing, f"README paragraphs with study numbers and no date: {missing}"


def test_the_number_check_sees_an_undated_paragraph() -> None:
    text = ("Intro.\n\nTest macro-F1 was 0.932 on transfer.\n\n- item measured 2026-12-05: "
            "0.91\n\n```\n0.5 in code\n```\n")
    assert undated_numbers(text) == ["Test macro-F1 was 0.932 on transfer."]


def paragraph(start: str) -> str:
    return next(p for p in readme_paragraphs((REPO / "README.md").read_text())
                if p.startswith(start))


def test_readme_crosscheck_numbers_are_the_crosscheck_file() -> None:
    import json

    check = json.loads((REPO / "reports" / "crosscheck.json").read_text())
    text = " ".join(paragraph(CHECKED[0]).split())
    assert f"all {check['n_claims']} claims the same" in text and check["n_claims_differ"] == 0
    assert f"all {check['n_metrics']} seed-aware numbers" in text
    assert check["n_metrics_outside"] == 0
    assert f"the rerun took {check['seconds'] / 60:.1f} min" in text
    means = {m["id"]: m for m in check["metrics"]}
    for name, key in (("scratch batchnorm", "scratch_batchnorm"), ("transfer", "transfer")):
        m = means[f"test_macro_f1:{key}"]
        assert f"{name} {m['mean_a']:.3f} → {m['mean_b']:.3f}" in text, name


def test_readme_seed_spread_is_the_evaluation_s() -> None:
    import json

    configs = json.loads((REPO / "reports" / "metrics" / "evaluate.json").read_text())
    sd = {k: v["test_macro_f1"]["sd"] for k, v in configs["configurations"].items()}
    scratch = [v for k, v in sd.items() if k.startswith("scratch_")]
    text = " ".join(paragraph(CHECKED[1]).split())
    assert (f"sd {min(scratch):.3f}-{max(scratch):.3f} for the scratch variants and "
            f"{sd['transfer']:.3f} for transfer") in text


def test_readme_fusion_numbers_are_the_fusion_stage_s() -> None:
    """The Image + metadata table and the metadata-alone line print reports/metrics/fusion.json."""
    import json

    fu = json.loads((REPO / "reports" / "metrics" / "fusion.json").read_text())
    table = paragraph(CHECKED[2])
    for name, result in fu["image_models"].items():
        arms, add = result["arms"], result["comparisons"][0]
        cells = [f"{arms[a]['macro_f1']['mean']:.3f} ± {arms[a]['macro_f1']['sd']:.3f}"
                 for a in ("image", "image_head", "fusion")]
        assert f"| {name} | " + " | ".join(cells) + f" | {add['estimate']:+.3f} " in table, name
    line = " ".join(paragraph(CHECKED[3]).split())
    alone = fu["metadata_only"]["macro_f1"]
    assert f"macro-F1 {alone['mean']:.3f} ± {alone['sd']:.3f}" in line
    for column in ("age", "sex"):
        assert fu["audit"]["columns"][column]["message"] in line
