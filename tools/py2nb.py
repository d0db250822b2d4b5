"""Build a stripped notebook in the repo's format from a python file with '# %%' cell markers."""
import json, sys, re
src, out = sys.argv[1], sys.argv[2]
text = open(src).read()
cells = []
for i, chunk in enumerate(re.split(r"^# %%", text, flags=re.M)[1:]):
    header, _, body = chunk.partition("\n")
    body = body.strip("\n")
    kind = "markdown" if "[markdown]" in header else "code"
    if kind == "markdown":
        body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.splitlines())
    lines = body.splitlines(keepends=True)
    cell = {"cell_type": kind, "id": str(len(cells)), "metadata": {}, "source": lines}
    if "parameters" in header:
        cell["metadata"] = {"tags": ["parameters"]}
    if kind == "code":
        cell["execution_count"] = None
        cell["outputs"] = []
        cell = {"cell_type": "code", "execution_count": None, "id": cell["id"], "metadata": cell["metadata"], "outputs": [], "source": lines}
    cells.append(cell)
nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3.11 (brain-mri-study)", "language": "python", "name": "brain-mri-study"}, "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
with open(out, "w") as f:
    json.dump(nb, f, indent=1, ensure_ascii=False)
    f.write("\n")
