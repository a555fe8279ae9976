"""The Jupyter edition and the student edition of the chapters: notebooks JupyterLab renders.

``python -m bnbook.site.jupyter_edition`` (run by ``make book`` after the website build) writes,
for every notebook chapter of ``_toc.yml`` in order, into ``_build/jupyter/`` (the folder
``make lab`` opens):

* ``NN_name.ipynb``, the **Jupyter edition**: the executed chapter
  (``_build/jupyter_execute/chapters/``) with its outputs, every Markdown cell converted by
  :mod:`bnbook.site.myst_to_markdown` (links, citations, glued numbers and figures written in, the
  website's numbers), solutions under "Solution to Exercise N.M" headings with their code
  collapsed, cells the website hides collapsed (``remove-cell``: source and outputs;
  ``remove-input``/``hide-input``: source), and no exercise stub or checker call (the cells
  tagged ``skip-execution``), so that Run All completes;
* ``NN_name_student.ipynb``, the **student edition** (see :func:`student_edition`), with the
  glued numbers of the executed chapter.

``python -m bnbook.site.student`` writes the student editions alone, before the website build
(the website links them). Both writers check and convert every notebook before writing any,
never write into the source folder, overwrite only notebooks they wrote (marked in the
notebook's metadata: ``bnbook.edition``), and write each file atomically. An error is one
line naming the notebook, exit status 2.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat

from bnbook.site import myst_to_markdown as m2m

__all__ = ["EditionError", "glue_outputs", "jupyter_edition", "student_edition",
           "load_book", "check_target", "write_notebooks", "main"]

SKIP_TAG, SOLUTION_TAG = "skip-execution", "solution"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
_RECORD_PREFIX = "application/papermill.record/"
STUDENT_INTRO = """# Student edition: {title}

This notebook is the chapter "{title}" of *Batch Normalization, derived, built and tested*
without its solutions. Each exercise has a heading with its number on the website; the code
exercises have a stub (`raise NotImplementedError`) followed by a checker call.

Run it from the top (Run All, or `jupyter execute {filename}`). It stops at the first exercise
you have not written yet, with the checker's message: replace that stub's
`raise NotImplementedError` with your code and run again. It needs the book's package
`bnbook` (the repository's `make lab` environment has it)."""


class EditionError(ValueError):
    """A notebook that cannot be made into an edition, or a target that must not be written."""


def glue_outputs(nb) -> dict[str, dict]:
    """Glue name -> the glued output (its MIME data without myst-nb's record prefix)."""
    glued = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            record = output.get("metadata", {}).get("scrapbook")
            if record:
                prefix = record.get("mime_prefix", _RECORD_PREFIX)
                data = {k[len(prefix):] if k.startswith(prefix) else k: v
                        for k, v in output.get("data", {}).items()}
                glued[record["name"]] = {"data": data, "metadata": output.get("metadata", {})}
    return glued


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _gates(source: str) -> tuple[bool, bool]:
    names = [b[1] for b in m2m.blocks(source) if b[0] == "directive"]
    return "solution-start" in names, "solution-end" in names


def _hide(cell, source=False, outputs=False) -> None:
    if not (source or outputs):
        return
    jupyter = cell.metadata.setdefault("jupyter", {})
    if source:
        jupyter["source_hidden"] = True
    if outputs:
        jupyter["outputs_hidden"] = True


def _code_cell(cell, keep_outputs: bool, in_solution: bool):
    cell = copy.deepcopy(cell)
    tags = set(_tags(cell))
    _hide(cell, source=bool(tags & {"remove-cell", "remove-input", "hide-input"}) or in_solution,
          outputs=bool(tags & {"remove-cell", "remove-output", "hide-output"}))
    if keep_outputs:
        cell.outputs = [o for o in cell.outputs
                        if "scrapbook" not in o.get("metadata", {})]
    else:
        cell.outputs, cell.execution_count = [], None
    return cell


def _markdown_cell(source: str, state: m2m.DocState):
    state.attachments = {}
    text = m2m.convert_markdown(source, state)
    if not text.strip():
        return None
    cell = nbformat.v4.new_markdown_cell(text)
    if state.attachments:
        cell.attachments = state.attachments
    return cell


def _new_notebook(cells, source_nb, edition: str, source_name: str):
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = nbformat.from_dict({
        "kernelspec": KERNELSPEC,
        "language_info": source_nb.metadata.get("language_info", {"name": "python"}),
        "bnbook": {"edition": edition, "source": source_name}})
    return nb


def _finish(cells, state: m2m.DocState):
    if state.cited:
        cells.append(nbformat.v4.new_markdown_cell(
            m2m.references_markdown(state.cited, state.bibliography)))
    return cells


def jupyter_edition(executed_nb, state: m2m.DocState):
    """The Jupyter edition of one executed chapter (see the module docstring)."""
    state.glue = glue_outputs(executed_nb)
    cells, in_solution = [], False
    for cell in executed_nb.cells:
        if cell.cell_type == "markdown":
            opens, closes = _gates(cell.source)
            in_solution = (in_solution or opens) and not closes
            new = _markdown_cell(cell.source, state)
        elif cell.cell_type == "code":
            new = None if SKIP_TAG in _tags(cell) else _code_cell(cell, True, in_solution)
        else:
            new = copy.deepcopy(cell)
        if new is not None:
            cells.append(new)
    return _edition(cells, in_solution, state, executed_nb, "jupyter")


def _without_self_reference(source: str) -> str:
    """The paragraphs of ``source`` that do not link the student edition itself."""
    paragraphs = source.split("\n\n")
    kept = [p for p in paragraphs if not ("{download}" in p and "_build/student/" in p)]
    return "\n\n".join(kept)


def student_edition(source_nb, state: m2m.DocState, glue: dict | None = None):
    """The student edition of one chapter: no solutions, no outputs, stubs and checkers kept
    and executed (their ``skip-execution`` and ``nbval-skip`` tags removed), a first cell that
    says how to run it; ``glue`` gives the glued values (None: the text says they appear when
    the notebook runs)."""
    state.glue, state.solutions = glue, False
    filename = student_filename(state.page.doc)
    cells = [nbformat.v4.new_markdown_cell(STUDENT_INTRO.format(
        title=state.page.title, filename=filename))]
    in_solution = False
    for cell in source_nb.cells:
        if cell.cell_type == "markdown":
            opens, closes = _gates(cell.source)
            if opens or in_solution:
                in_solution = not closes
                continue
            new = _markdown_cell(_without_self_reference(cell.source), state)
        elif cell.cell_type == "code":
            if SOLUTION_TAG in _tags(cell) or in_solution:
                continue
            new = _code_cell(cell, False, False)
            new.metadata["tags"] = [t for t in _tags(new) if t not in (SKIP_TAG, "nbval-skip")]
            if not new.metadata["tags"]:
                del new.metadata["tags"]
        else:
            new = copy.deepcopy(cell)
        if new is not None:
            cells.append(new)
    return _edition(cells, in_solution, state, source_nb, "student")


def _edition(cells, in_solution: bool, state: m2m.DocState, source_nb, kind: str):
    """The finished notebook of one edition, or an error if a solution gate was left open."""
    if in_solution:
        raise state.error("a {solution-start} is never closed by {solution-end}")
    return _new_notebook(_finish(cells, state), source_nb, kind, state.page.path.name)


def student_filename(doc: str) -> str:
    return f"{doc}_student.ipynb"


def read_notebook(path: Path):
    """``path`` as a notebook, or an :class:`EditionError` naming it."""
    try:
        return nbformat.read(path, as_version=4)
    except (OSError, json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
        raise EditionError(f"{path}: not a readable notebook ({type(exc).__name__})") from exc


def load_book(root: Path):
    """The book's index (numbers and labels) and bibliography, read from ``root``."""
    from pybtex.database import parse_file

    if not (root / "_toc.yml").exists():
        raise EditionError(f"{root}: no _toc.yml (give the book's root folder)")
    for page in m2m.toc_pages(root):
        if page.path.suffix == ".ipynb":
            read_notebook(page.path)
    index = m2m.book_index(root)
    bib_path = root / "references.bib"
    bibliography = parse_file(str(bib_path)) if bib_path.exists() else None
    return index, bibliography


def doc_state(page, index, bibliography, link, download) -> m2m.DocState:
    return m2m.DocState(page, index, bibliography=bibliography, link=link, download=download)


def check_target(out: Path, sources: list[Path], edition: str, name: str) -> None:
    """Refuse an output folder that is a source folder, or a file this writer did not write."""
    out_resolved = out.resolve()
    for folder in {p.parent.resolve() for p in sources}:
        if out_resolved == folder or folder in out_resolved.parents:
            raise EditionError(f"{out}: the output folder is (or is inside) the source "
                               f"folder {folder}; choose another")
    target = out / name
    if target.exists():
        try:
            marked = json.loads(target.read_text()).get("metadata", {}).get("bnbook", {})
        except (OSError, ValueError, AttributeError):
            marked = {}
        if not isinstance(marked, dict) or marked.get("edition") != edition:
            raise EditionError(f"{target}: exists and is not a {edition} edition written by "
                               f"bnbook; refusing to overwrite it")


def write_notebooks(notebooks: dict[str, object], out: Path) -> list[Path]:
    """Write every notebook (name -> notebook) into ``out``, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, nb in notebooks.items():
        nbformat.validate(nb)
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                nbformat.write(nb, stream)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(out / name)
    return written


def build_editions(root: Path, executed: Path, out: Path) -> dict[str, object]:
    """Every Jupyter and student edition, converted in memory (nothing is written)."""
    index, bibliography = load_book(root)
    pages = [p for p in index.pages.values() if p.path.suffix == ".ipynb"]
    notebooks, sources = {}, [p.path for p in pages] + [executed / "x.ipynb"]
    for page in pages:
        executed_path = executed / page.path.name
        if not executed_path.exists():
            raise EditionError(f"{executed_path}: no executed copy of {page.path.name} "
                               "(run make test, then make book)")
        executed_nb = read_notebook(executed_path)

        def download(path):
            return Path(path).name if "_build/student/" in path \
                else os.path.relpath(root / path.lstrip("/"), out)

        def link(doc, suffix=""):
            target = index.pages.get(doc)
            return f"{doc}{suffix}.ipynb" if target and target.path.suffix == ".ipynb" else None

        name, student = page.path.name, student_filename(page.doc)
        for target_name, edition in ((name, "jupyter"), (student, "student")):
            check_target(out, sources, edition, target_name)
        notebooks[name] = jupyter_edition(executed_nb, doc_state(
            page, index, bibliography, link, download))
        notebooks[student] = student_edition(read_notebook(page.path), doc_state(
            page, index, bibliography, lambda d: link(d, "_student"), download),
            glue_outputs(executed_nb))
    return notebooks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnbook.site.jupyter_edition",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="the book's folder, with _toc.yml and references.bib (.)")
    parser.add_argument("--executed", type=Path, default=Path("_build/jupyter_execute/chapters"),
                        help="the executed chapters (_build/jupyter_execute/chapters)")
    parser.add_argument("--out", type=Path, default=Path("_build/jupyter"),
                        help="the folder for the editions (_build/jupyter)")
    args = parser.parse_args(argv)
    try:
        notebooks = build_editions(args.root, args.executed, args.out)
        written = write_notebooks(notebooks, args.out)
    except (EditionError, m2m.ConversionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} notebooks (Jupyter and student editions) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
