"""Summary of the last `mutmut run` (make mutation): counts by outcome, then every mutant that
survived (or was not killed for another reason) with its file, line and the line it changed.

Reads mutmut's results under mutants/ through mutmut's own helpers (mutmut is pinned in
requirements.txt); run it from the repository root: `python tools/mutation_report.py`.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections import Counter
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

ORDER = ("killed", "survived", "timeout", "no tests", "suspicious", "segfault", "skipped",
         "caught by type check", "check was interrupted by user", "not checked")
HUNK = re.compile(r"^@@ -(\d+)")


def function_spans(path: Path) -> dict[str, tuple[int, int]]:
    """Top-level function name -> (first line, last line) in the original source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name: (node.lineno, node.end_lineno or node.lineno) for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def function_of(name: str) -> str:
    """The source function a mutant belongs to: lib.stats.x_mean_ci__mutmut_3 -> mean_ci."""
    return name.rpartition(".")[2].split("__mutmut_")[0].removeprefix("x_")


def order(name: str, spans: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """Mutants in source order: by their function's first line, then by mutant number."""
    return spans.get(function_of(name), (0, 0))[0], int(name.rpartition("_")[2])


def locate(name: str, path: Path, lines: list[str], spans: dict[str, tuple[int, int]]
           ) -> tuple[int | None, str, str]:
    """(line in the source file, original line, mutated line) of one mutant, from its diff."""
    diff = get_diff_for_mutant(name, path=path).splitlines()
    old = next((d[1:] for d in diff if d.startswith("-") and not d.startswith("---")), "")
    new = next((d[1:] for d in diff if d.startswith("+") and not d.startswith("+++")), "")
    first, last = spans.get(function_of(name), (1, len(lines)))
    offset = 0  # where in the function the diff's hunk says the changed line is
    for d in diff:
        match = HUNK.match(d)
        if match:
            offset = int(match.group(1))
        elif d.startswith((" ", "-")) and not d.startswith("---"):
            if d.startswith("-"):
                break
            offset += 1
    hits = [i for i in range(first, last + 1) if lines[i - 1] == old]
    line = min(hits, key=lambda i: abs(i - (first + offset - 1))) if hits else None
    return line, old.strip(), new.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, help="the run's wall time, to print with it")
    args = parser.parse_args()
    counts: Counter[str] = Counter()
    rest: list[tuple[str, str, str, int | None, str, str]] = []
    per_file: dict[str, Counter[str]] = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        source = path.read_text(encoding="utf-8").splitlines()
        spans = function_spans(path)
        per_file[str(path)] = Counter()
        for name, code in sorted(data.exit_code_by_key.items(), key=lambda kv: order(kv[0], spans)):
            status = status_by_exit_code[code]
            counts[status] += 1
            per_file[str(path)][status] += 1
            if status != "killed":
                rest.append((status, name, str(path), *locate(name, path, source, spans)))
    total = sum(counts.values())
    if not total:
        raise SystemExit("no mutation results under mutants/: run `make mutation`")
    print(f"\nmutants: {total}  " + "  ".join(f"{s}: {counts[s]}" for s in ORDER if counts[s]))
    if args.seconds is not None:
        print(f"run time: {args.seconds // 60} min {args.seconds % 60:02d} s")
    for path, c in per_file.items():
        print(f"  {path}: {sum(c.values())} mutants, {c['killed']} killed, {c['survived']} "
              "survived" + ("" if sum(c.values()) else " (no functions: nothing to mutate)"))
    for status, name, path, line, old, new in rest:
        print(f"\n{status}: {name}  ({path}:{line if line is not None else '?'})\n"
              f"    - {old}\n    + {new}")


if __name__ == "__main__":
    main()
