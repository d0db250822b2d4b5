"""The reviewer's report: one self-contained HTML file built from the pipeline's outputs.

Everything is embedded (figures as base64 PNG, no CDN, fonts or scripts from elsewhere) so the file
opens offline. Sections are filled from files that exist; a stage not yet run shows as such.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape

from lib.config import load_params, repo_root

TEMPLATES = Path(__file__).parent / "templates"
KEY_PACKAGES = ("tensorflow-cpu", "keras", "tf-keras-vis", "scikit-learn", "numpy", "scipy",
                "pandas", "pillow", "nilearn", "dvc", "papermill", "matplotlib")
SPLITS = ("train", "val", "test")
EMPTY_SCRIPT = re.compile(r'<script src="">\s*</script>')


def data_uri(path: Path) -> str:
    """A PNG or SVG file as a data: URI, so the report carries its own figures."""
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def render_notebook(ipynb: Path, html: Path | None = None) -> Path:
    """Executed notebook → standalone HTML with no MathJax/require.js fetched from a CDN."""
    import nbformat
    from nbconvert import HTMLExporter

    html = html or ipynb.with_suffix(".html")
    exporter = HTMLExporter(template_name="lab", mathjax_url="", require_js_url="",
                            embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    html.write_text(EMPTY_SCRIPT.sub("", body))
    return html


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def reproducibility(root: Path, params: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs to rerun this exact study: code, data and model hashes, environment."""
    commit = _git(root, "rev-parse", "HEAD") or "not a git checkout"
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").is_file() else {}
    hashes = []
    data_dvc = root / "data.dvc"
    if data_dvc.is_file():
        for out in yaml.safe_load(data_dvc.read_text()).get("outs", []):
            hashes.append({"stage": "data.dvc", "path": out["path"], "md5": out.get("md5", "")})
    for stage, entry in sorted((lock or {}).get("stages", {}).items()):
        for out in entry.get("outs", []):
            hashes.append({"stage": stage, "path": out["path"], "md5": out.get("md5", "")})
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "hashes": hashes,
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "seeds": {"study": params.get("seed"),
                  "phantom": params.get("phantom", {}).get("seed")},
        "params_yaml": yaml.safe_dump(params, sort_keys=False),
    }


def figures(folder: Path) -> list[dict[str, str]]:
    """Every PNG/SVG in a folder, embedded, with a caption from its file name."""
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix in {".png", ".svg"})
    return [{"name": p.stem, "caption": p.stem.replace("_", " "), "src": data_uri(p)}
            for p in files]


def trained_models(reports: Path) -> list[dict[str, Any]]:
    """One row per training stage's metrics (validation only), with its learning curves."""
    rows = []
    for path in sorted((reports / "metrics").glob("train_*.json")):
        metrics = _read_json(path) or {}
        name = path.stem.removeprefix("train_")
        curves = reports / "training" / name / "training_curves.png"
        rows.append({"name": name, "metrics": metrics,
                     "curves": data_uri(curves) if curves.is_file() else None})
    return rows


def context(root: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Everything the template shows, read from the pipeline's outputs."""
    reports = root / "reports"
    notebooks = sorted((reports / "notebooks").glob("*.html"))
    audit = _read_json(reports / "metrics" / "data_audit.json")
    counts = (audit or {}).get("counts", {})
    kinds = counts.get("findings_by_kind", {})
    return {
        "title": "Brain-tumour classification on MRI: a reproducible, explainable study",
        "raw_dir": params.get("data", {}).get("raw_dir", "data/raw"),
        "phantom": params.get("phantom", {}),
        "audit": audit,
        "audit_counts": counts.get("usable", {}),
        "audit_splits": [s for s in SPLITS if s in counts.get("usable_total", {})],
        "audit_kinds": kinds,
        "audit_total": sum(kinds.values()),
        "eda": _read_json(reports / "metrics" / "eda.json"),
        "eda_figures": figures(reports / "figures" / "eda"),
        "augment_figures": figures(reports / "figures" / "augment"),
        "models": trained_models(reports),
        "pretrain": _read_json(reports / "metrics" / "pretrain.json"),
        "notebooks": [{"name": p.stem, "href": f"notebooks/{p.name}"} for p in notebooks],
        "repro": reproducibility(root, params),
    }


def build(root: Path | None = None, params_path: Path | None = None,
          out: Path | None = None) -> Path:
    """Render reports/index.html from whatever the pipeline has produced so far."""
    root = root or repo_root()
    params = load_params(params_path or root / "params.yaml")
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html.j2").render(**context(root, params))
    out = out or root / "reports" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.report", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="render reports/index.html")
    b.add_argument("--params", type=Path, default=None)
    b.add_argument("--out", type=Path, default=None)
    n = sub.add_parser("notebook", help="render an executed notebook to self-contained HTML")
    n.add_argument("ipynb", type=Path)
    n.add_argument("html", type=Path, nargs="?")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(f"wrote {build(params_path=args.params, out=args.out)}")
    else:
        print(f"wrote {render_notebook(args.ipynb, args.html)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
