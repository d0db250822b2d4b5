"""The repository's metadata: licence, citation file, README citation, and the Makefile's interface.

- LICENSE is the MIT licence pyproject.toml declares, held by the project's authors.
- CITATION.cff is valid CFF 1.2.0 for this version and cites what the study uses: each saliency
  method of lib/explain/methods.py, each importer's dataset, the phantom's template, the default
  backbone, and the tools at the versions the lock pins.
- The README's BibTeX entry is the same work as CITATION.cff.
- `make help` lists every target; `make setup TF_PACKAGE=...` installs that TensorFlow build at the
  lock's version instead of tensorflow-cpu, and plain `make setup` is what it always was (both read
  from `make -n`, nothing is installed); `make exps` keeps a readable set of `dvc exp show` columns.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import tomllib
from collections import Counter
from pathlib import Path

import yaml

from tests.conftest import REPO

CFF_TYPES = {  # reference types of the CFF 1.2.0 schema that this file may use
    "article", "book", "conference-paper", "data", "database", "generic", "manual", "report",
    "software", "software-code", "thesis", "unpublished", "website",
}
# What the study names, and how its reference is recognised: (what, title fragment, DOI or None).
DATA_REFS = {
    "MNI152 template (the phantom)": ("MNI152", None),
    "MNI152 paper, 2009": ("brain templates from birth to adulthood",
                           "10.1016/S1053-8119(09)70884-5"),
    "MNI152 paper, 2011": ("atlases for pediatric studies", "10.1016/j.neuroimage.2010.07.033"),
    "Kaggle Brain Tumor MRI Dataset": ("Brain Tumor MRI Dataset", "10.34740/KAGGLE/DSV/2645886"),
}
# The importers of lib/data/ingest.py and the public data each reads (dicom: your own scans).
IMPORTER_REFS = {
    "figshare": [("brain tumor dataset", "10.6084/m9.figshare.1512427.v5"),
                 ("Tumor Region Augmentation and Partition", "10.1371/journal.pone.0140381")],
    "nifti": [("segmentation algorithms", "10.48550/arXiv.1902.09063"),
              ("The Medical Segmentation Decathlon", "10.1038/s41467-022-30695-9")],
    "dicom": [],
    "brisc": [("BRISC: Annotated Dataset for Brain Tumor Segmentation and Classification",
               "10.48550/arXiv.2506.14318")],
    "feedback": [],  # the app's own feedback: no dataset to cite
}
# lib/explain/methods.py's METHODS, and the scores lib/explain/scores.py computes.
METHOD_REFS = {
    "gradcam": ("Grad-CAM: Visual Explanations", "10.1109/ICCV.2017.74"),
    "gradcam++": ("Grad-CAM++", "10.1109/WACV.2018.00097"),
    "hirescam": ("Use HiResCAM instead of Grad-CAM", "10.48550/arXiv.2011.08891"),
    "scorecam": ("Score-CAM", "10.1109/CVPRW50498.2020.00020"),
    "smoothgrad": ("SmoothGrad", "10.48550/arXiv.1706.03825"),
    "occlusion": ("Visualizing and Understanding Convolutional Networks",
                  "10.1007/978-3-319-10590-1_53"),
    "pointing game": ("Top-down Neural Attention by Excitation Backprop",
                      "10.1007/978-3-319-46493-0_33"),
    "deletion/insertion": ("RISE", "10.48550/arXiv.1806.07421"),
    "sanity check": ("Sanity Checks for Saliency Maps", "10.48550/arXiv.1810.03292"),
}
# The default transfer backbone (params.yaml) and its paper.
BACKBONE_REFS = {"MobileNetV3": ("Searching for MobileNetV3", "10.1109/ICCV.2019.00140")}
# Software cited with a version: the version must be the lock's pin.
SOFTWARE = {"tf-keras-vis": "tf-keras-vis", "DVC": "dvc", "Nilearn": "nilearn",
            "papermill": "papermill"}


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)$", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def expected_holder() -> str:
    """Who holds the copyright: pyproject's authors, or, as long as it names none, its authors as
    a group under the project's name."""
    project = pyproject()
    names = [a["name"] for a in project.get("authors", []) if "name" in a]
    return ", ".join(names) if names else f"The {project['name']} authors"


def cff() -> dict:
    return yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))


def find_ref(refs: list[dict], title_part: str, doi: str | None) -> dict | None:
    for ref in refs:
        if title_part.lower() in str(ref.get("title", "")).lower():
            if doi is None or str(ref.get("doi", "")).lower() == doi.lower():
                return ref
    return None


def person(author: dict) -> str:
    return author.get("name") or f"{author.get('given-names', '')} {author['family-names']}"


# --- LICENSE ---------------------------------------------------------------------------------

def test_license_is_mit_held_by_the_projects_authors() -> None:
    text = (REPO / "LICENSE").read_text()
    lines = text.splitlines()
    assert lines[0] == "MIT License"
    field = pyproject()["license"]  # PEP 621: {text = "MIT"}, or PEP 639: "MIT"
    assert (field.get("text") if isinstance(field, dict) else field) == "MIT"
    holder = re.fullmatch(r"Copyright \(c\) (\d{4}) (.+)", lines[2])
    assert holder, f"LICENSE line 3 is not a copyright line: {lines[2]!r}"
    assert holder.group(1) == "2026"
    assert holder.group(2) == expected_holder()
    body = " ".join(text.split())  # the MIT text's operative sentences, as published
    for sentence in (
        "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
        "software and associated documentation files (the \"Software\"), to deal in the Software "
        "without restriction",
        "The above copyright notice and this permission notice shall be included in all copies "
        "or substantial portions of the Software.",
        "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND",
    ):
        assert sentence in body, f"LICENSE lacks the MIT sentence: {sentence[:50]}..."


# --- CITATION.cff ------------------------------------------------------------------------------

def test_citation_cff_is_cff_1_2_for_this_version() -> None:
    data = cff()
    assert data["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "version", "date-released", "license"):
        assert data.get(key), f"CITATION.cff lacks {key}"
    assert str(data["version"]) == pyproject()["version"]
    assert data["license"] == "MIT"
    assert isinstance(data["date-released"], dt.date)
    assert [person(a) for a in data["authors"]] == [expected_holder()]
    readme_title = (REPO / "README.md").read_text().splitlines()[0]
    assert readme_title.startswith("# Brain-tumour classification on MRI")
    assert data["title"].startswith("Brain-tumour classification on MRI")
    for ref in data["references"]:  # what CFF 1.2.0 requires of a reference
        assert ref.get("type") in CFF_TYPES, ref.get("title")
        assert ref.get("title") and ref.get("authors"), ref
        for author in ref["authors"]:
            assert author.get("name") or author.get("family-names"), (ref["title"], author)
        if "doi" in ref:
            assert re.fullmatch(r"10\.\d{4,9}/\S+", str(ref["doi"])), ref["doi"]
        if "year" in ref:
            assert isinstance(ref["year"], int), ref["title"]


def explain_methods() -> tuple[str, ...]:
    """lib/explain/methods.py's METHODS, read without importing TensorFlow."""
    tree = ast.parse((REPO / "lib" / "explain" / "methods.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "METHODS":
            return ast.literal_eval(node.value)
    raise AssertionError("METHODS not found in lib/explain/methods.py")


def importers() -> list[str]:
    return re.findall(r'add_parser\("([\w-]+)"', (REPO / "lib/data/ingest.py").read_text())


def test_citation_cites_each_dataset_and_method_the_study_uses() -> None:
    refs = cff()["references"]
    missing = []
    wanted = dict(DATA_REFS)
    methods = explain_methods()
    assert methods, "no saliency methods found"
    for method in methods:
        assert method in METHOD_REFS, f"saliency method {method} has no reference here: add it"
    wanted.update({f"method {m}": METHOD_REFS[m] for m in METHOD_REFS})
    for name in importers():
        assert name in IMPORTER_REFS, f"importer {name} has no reference here: add its dataset"
        wanted.update({f"importer {name}: {t}": (t, d) for t, d in IMPORTER_REFS[name]})
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    backbone = params["train_transfer"]["backbone"]
    family = next((f for f in BACKBONE_REFS if backbone.startswith(f)), None)
    assert family, f"the default backbone {backbone} has no reference here: add its paper"
    wanted[f"backbone {backbone}"] = BACKBONE_REFS[family]
    for what, (title, doi) in wanted.items():
        if find_ref(refs, title, doi) is None:
            missing.append(f"{what}: {title!r} (doi {doi})")
    kaggle = find_ref(refs, *DATA_REFS["Kaggle Brain Tumor MRI Dataset"])
    assert kaggle and [person(a) for a in kaggle["authors"]] == ["Masoud Nickparvar"]
    assert not missing, "CITATION.cff does not cite:\n" + "\n".join(missing)


def test_citation_cites_the_tools_at_the_locked_versions() -> None:
    refs = cff()["references"]
    pins = lock_pins()
    for title, package in SOFTWARE.items():
        ref = next((r for r in refs if r["type"] == "software" and title in r["title"]), None)
        assert ref, f"CITATION.cff does not cite {title}"
        assert str(ref.get("version")) == pins[package], (
            f"{title} is cited at {ref.get('version')}, the lock pins {pins[package]}")


# --- README ------------------------------------------------------------------------------------

def test_readme_how_to_cite_matches_citation_cff() -> None:
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## How to cite\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "README has no '## How to cite' section"
    body = section.group(1)
    bib = re.search(r"```bibtex\n(.*?)```", body, re.S)
    assert bib, "the How to cite section has no bibtex block"
    fields = dict(re.findall(r"^\s*(\w+)\s*=\s*(.+?),?$", bib.group(1), re.M))
    plain = {k: v.replace("{", "").replace("}", "").strip() for k, v in fields.items()}
    data = cff()
    assert plain["title"] == data["title"]
    assert plain["author"] == expected_holder() == person(data["authors"][0])
    assert plain["year"] == str(data["date-released"].year)
    assert str(data["version"]) in plain["note"]
    assert "CITATION.cff" in body
    assert "please also cite the datasets and methods" in " ".join(body.split()).lower()


# --- Makefile ----------------------------------------------------------------------------------

def make(*args: str) -> str:
    """`make` in the repository with a clean environment: no make variables or flags inherited
    from a make that runs these tests, no TF_PACKAGE from the shell."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "TF_PACKAGE",
                        "EXPS_ARGS", "VENV")}
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def makefile_targets() -> tuple[set[str], set[str], set[str]]:
    """(.PHONY targets, targets of every rule, targets whose rule line has a ## comment)."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    phony: set[str] = set()
    rules: set[str] = set()
    documented: set[str] = set()
    for line in text.splitlines():
        if line.startswith(".PHONY:"):
            phony.update(line.split(":", 1)[1].split())
            continue
        match = re.match(r"^([A-Za-z][\w-]*(?:\s+[A-Za-z][\w-]*)*)\s*:(?![:=])(.*)$", line)
        if not match or re.match(r"\s*(export\s|[\w.-]+\s*[:?+]?=)", match.group(2)):
            continue  # not a rule, or a target-specific variable
        names = match.group(1).split()
        rules.update(names)
        if "## " in match.group(2):
            documented.update(names)
    return phony, rules, documented


def test_make_help_lists_every_target() -> None:
    phony, rules, documented = makefile_targets()
    assert {"help", "setup", "repro", "test", "exps"} <= phony
    assert phony == rules, (f"rules not in .PHONY: {sorted(rules - phony)}; "
                            f".PHONY names without a rule: {sorted(phony - rules)}")
    help_text = make("help")
    listed = dict(re.findall(r"^\s*make ([\w-]+)\s+(\S.*)$", help_text, re.M))
    wanted = phony | documented
    assert not wanted - set(listed), f"make help does not list: {sorted(wanted - set(listed))}"
    assert not set(listed) - wanted, f"make help lists unknown: {sorted(set(listed) - wanted)}"
    assert "TF_PACKAGE" in help_text


def dry_setup(venv: Path, *overrides: str) -> list[str]:
    out = make("-n", "setup", f"VENV={venv}", "PYTHON=python3", *overrides)
    return out.replace("\\\n", " ").splitlines()


def pip_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " -m pip " in line]


def tf_pin() -> str:
    return lock_pins()["tensorflow-cpu"]


def test_plain_make_setup_installs_the_lock_as_before(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    lines = dry_setup(venv)
    pips = pip_lines(lines)
    assert len(pips) == 2, pips
    assert pips[0].endswith("pip install --disable-pip-version-check -q -r requirements.txt")
    assert pips[1].endswith("pip install --disable-pip-version-check -q --no-deps "
                            "--no-build-isolation -e .")
    assert any(line.startswith(f"test -x {venv}/bin/python || python3 -m venv {venv}")
               for line in lines)
    assert any("ipykernel install" in line for line in lines)
    assert any("nbstripout --install" in line for line in lines)
    assert lines[-1] == f"touch {venv}/.installed"
    assert not [line for line in lines if "tf-package" in line or "uninstall" in line]


def test_make_setup_tf_package_installs_that_build_at_the_locked_version(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    lines = dry_setup(venv, "TF_PACKAGE=tensorflow")
    installs = pip_lines(lines)
    assert any(f"'tensorflow=={tf_pin()}'" in line for line in installs), installs
    for line in installs:  # neither the lock itself nor tensorflow-cpu is installed
        args = shlex.split(line)
        assert "requirements.txt" not in [args[i + 1] for i, a in enumerate(args[:-1])
                                          if a == "-r"], line
        assert not [a for a in args if re.match(r"tensorflow[-_]cpu\b", a, re.I)], line
    filtered = next(line for line in lines if line.startswith("grep -v"))
    src, dst = shlex.split(filtered)[-3], shlex.split(filtered)[-1]
    assert src == "requirements.txt" and f"-r {dst} " in installs[0]
    pattern = re.compile(shlex.split(filtered)[-4], re.I)  # the grep pattern drops only the pin
    dropped = [r for r in (REPO / "requirements.txt").read_text().splitlines() if pattern.search(r)]
    assert dropped == [f"tensorflow_cpu=={tf_pin()}"] or dropped == [f"tensorflow-cpu=={tf_pin()}"]
    assert f"echo 'tensorflow' > {venv}/.tf-package" in lines
    assert lines[-1] == f"touch {venv}/.installed-tensorflow"


def test_switching_tf_package_reinstalls_and_the_choice_is_kept(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()  # a CPU venv, up to date
    assert "pip" not in make("-n", "setup", f"VENV={venv}")
    to_gpu = dry_setup(venv, "TF_PACKAGE=tensorflow[and-cuda]")
    assert any(line.endswith("pip uninstall --disable-pip-version-check -y -q tensorflow-cpu")
               for line in to_gpu), to_gpu
    assert any(f"'tensorflow[and-cuda]=={tf_pin()}'" in line for line in to_gpu)
    assert f"rm -f {venv}/.installed" in to_gpu
    # after that setup: its stamp and its choice; a plain make keeps the GPU build
    (venv / ".installed").unlink()
    (venv / ".installed-tensorflow-and-cuda").touch()
    (venv / ".tf-package").write_text("tensorflow[and-cuda]\n")
    assert "pip" not in make("-n", "setup", f"VENV={venv}")
    back = dry_setup(venv, "TF_PACKAGE=tensorflow-cpu")
    assert any(line.endswith("pip uninstall --disable-pip-version-check -y -q tensorflow")
               for line in back), back
    assert any(line.endswith("-q -r requirements.txt") for line in pip_lines(back))
    assert f"rm -f {venv}/.tf-package" in back and back[-1] == f"touch {venv}/.installed"


def flat_keys(data: object, prefix: str = "", keep_lists: bool = True) -> list[str]:
    """Leaf names as DVC writes them: nested keys joined with dots. DVC shows a list in
    params.yaml as one value and leaves a list in a metrics file out."""
    if isinstance(data, dict):
        return [name for key, value in data.items()
                for name in flat_keys(value, f"{prefix}{key}.", keep_lists)]
    return [prefix[:-1]] if keep_lists or not isinstance(data, list) else []


def dvc_columns() -> dict[tuple[str, str], str]:
    """(file, leaf) -> the column header `dvc exp show` gives it: the bare leaf name, or
    `file:leaf` when two files share the name (dvc.repo.experiments.show._normalize_headers)."""
    leaves = {"params.yaml": flat_keys(yaml.safe_load((REPO / "params.yaml").read_text()))}
    for path in sorted((REPO / "reports" / "metrics").glob("*.json")):
        leaves[str(path.relative_to(REPO))] = flat_keys(json.loads(path.read_text()),
                                                        keep_lists=False)
    count = Counter(name for names in leaves.values() for name in set(names))
    return {(file, name): name if count[name] == 1 else f"{file}:{name}"
            for file, names in leaves.items() for name in names}


def test_make_exps_keeps_a_readable_set_of_columns(tmp_path: Path) -> None:
    command = make("-n", "exps", f"VENV={tmp_path}").strip().splitlines()[-1]
    args = shlex.split(command)
    assert args[:3] == [f"{tmp_path}/bin/dvc", "exp", "show"]
    assert args[args.index("--drop") + 1] == ".*"  # everything but what --keep protects
    keeps = [args[i + 1] for i, a in enumerate(args) if a == "--keep"]
    assert keeps, "make exps keeps no column"
    keep = re.compile("|".join(keeps))  # as dvc exp show joins and matches them
    assert keep.match("Experiment")

    evaluate, explain = "reports/metrics/evaluate.json", "reports/metrics/explain.json"
    configurations = json.loads((REPO / evaluate).read_text())["configurations"]
    wanted = {(evaluate, f"configurations.{c}.{m}.mean") for c in configurations
              for m in ("val_macro_f1", "test_macro_f1")}
    wanted |= {("params.yaml", name) for name in (
        "train_seeds", "variants", "train_scratch.epochs", "train_scratch.learning_rate",
        "train_transfer.phase1_epochs", "train_transfer.phase2_epochs",
        "train_transfer.phase1_learning_rate", "train_transfer.phase2_learning_rate")}
    wanted |= {(evaluate, "best_configuration"), (explain, "headline_method"),
               (explain, "target.checks.headline_pointing_game.measured"),
               (explain, "target.checks.shortcut_rate.measured")}
    for file, name in sorted(wanted):  # kept under either header DVC may give it
        assert keep.match(name) and keep.match(f"{file}:{name}"), f"drops {file}:{name}"
    headers = dvc_columns()
    kept = sorted(h for h in headers.values() if keep.match(h))
    assert {headers[w] for w in wanted} <= set(kept)
    assert len(kept) + 1 < 30, f"{len(kept) + 1} columns: {kept}"  # + Experiment
    assert not keep.match(f"{explain}:best_configuration")


def test_readme_documents_gpu_install_and_make_exps() -> None:
    text = (REPO / "README.md").read_text()
    assert re.search(r"^### GPU install$", text, re.M)
    assert "make setup TF_PACKAGE='tensorflow[and-cuda]'" in text
    assert "`make exps`" in text
