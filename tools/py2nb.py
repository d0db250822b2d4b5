"""Build a stripped notebook in the repo's format from a python file with '# %%' cell markers.

    python tools/py2nb.py source.py notebooks/NN_name.ipynb

`# %% [markdown]` starts a markdown cell (its lines lose their leading '# '), `# %% parameters`
a code cell tagged `parameters` for papermill, `# %%` a plain code cell. Cell ids are 0, 1, ...
so rebuilding an unchanged source gives the same bytes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

KERNEL = {"display_name": "Python 3.11 (brain-mri-study)", "language": "python",
          "name": "brain-mri-study"}


def _markdown(body: str) -> str:
    return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                     for line in body.splitlines())


def build(text: str) -> dict:
    cells = []
    for chunk in re.split(r"^# %%", text, flags=re.M)[1:]:
        header, _, body = chunk.partition("\n")
        body = body.strip("\n")
        source = {"id": str(len(cells)), "metadata": {}}
        if "[markdown]" in header:
            cells.append({"cell_type": "markdown", **source,
                          "source": _markdown(body).splitlines(keepends=True)})
            continue
        if "parameters" in header:
            source["metadata"] = {"tags": ["parameters"]}
        cells.append({"cell_type": "code", "execution_count": None, **source, "outputs": [],
                      "source": body.splitlines(keepends=True)})
    return {"cells": cells, "metadata": {"kernelspec": KERNEL, "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def main(argv: list[str]) -> int:
    src, out = Path(argv[0]), Path(argv[1])
    out.write_text(json.dumps(build(src.read_text()), indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
