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
