"""The student edition of the chapters: each notebook without its solutions.

``python -m bnbook.student chapters/ _build/student/`` (``make student``) writes, for every
``*.ipynb`` in the source folder, a copy in which

* every ``{solution}`` block of a Markdown cell is removed (the rest of the cell stays);
* a gated solution, from the cell that opens ``{solution-start}`` to the cell that closes
  ``{solution-end}``, is removed with the code cells between them;
* cells tagged ``solution`` (code that checks the solutions of pen-and-paper exercises) are
  removed;
* every output and execution count is cleared.

The exercises, their stubs (``raise NotImplementedError``) and the checker calls stay, so a
reader fills in the stubs and runs the checkers. A solution block is a MyST fence, three or
more backticks or colons followed by ``{solution}``, closed by the same fence.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat

__all__ = ["student_notebook", "write_student_editions", "main"]

SOLUTION_TAG = "solution"
_FENCE = r"(?P<fence>`{3,}|:{3,})"
_SOLUTION_BLOCK = re.compile(
    r"^[ \t]*" + _FENCE + r"\{solution\}.*?^[ \t]*(?P=fence)[ \t]*$\n?", re.M | re.S)
_GATE_START = re.compile(r"^[ \t]*(`{3,}|:{3,})\{solution-start\}", re.M)
_GATE_END = re.compile(r"^[ \t]*(`{3,}|:{3,})\{solution-end\}", re.M)


def _strip_solution_blocks(source: str) -> str:
    stripped = _SOLUTION_BLOCK.sub("", source)
    return re.sub(r"\n{3,}", "\n\n", stripped).strip("\n") if stripped != source else source


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without solutions and outputs (see the module docstring)."""
    out = nbformat.from_dict(nbformat.v4.new_notebook())
    out.metadata = nbformat.from_dict(dict(nb.metadata))
    out.nbformat, out.nbformat_minor = nb.nbformat, nb.nbformat_minor
    in_gated_solution = False
    for cell in nb.cells:
        cell = nbformat.from_dict(dict(cell))
        source = cell.source
        if cell.cell_type == "markdown" and _GATE_START.search(source):
            in_gated_solution = not _GATE_END.search(source)
            continue
        if in_gated_solution:
            if cell.cell_type == "markdown" and _GATE_END.search(source):
                in_gated_solution = False
            continue
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "markdown":
            cell.source = _strip_solution_blocks(source)
            if not cell.source.strip():
                continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        out.cells.append(cell)
    if in_gated_solution:
        raise ValueError("a {solution-start} block is never closed by {solution-end}")
    return out


def write_student_editions(source_dir: Path, target_dir: Path) -> list[Path]:
    """Write the student edition of every notebook in ``source_dir`` into ``target_dir``."""
    target_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(Path(source_dir).glob("*.ipynb")):
        nb = student_notebook(nbformat.read(path, as_version=4))
        nbformat.validate(nb)
        target = target_dir / path.name
        nbformat.write(nb, target)
        written.append(target)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bnbook.student", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of chapter notebooks (chapters/)")
    parser.add_argument("target", type=Path, help="folder for the student editions")
    args = parser.parse_args(argv)
    written = write_student_editions(args.source, args.target)
    print(f"wrote {len(written)} student notebooks to {args.target}")


if __name__ == "__main__":
    main()
