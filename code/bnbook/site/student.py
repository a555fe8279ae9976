"""The student edition of the chapters: ``python -m bnbook.site.student chapters _build/student``.

``make student`` runs it before the website build (the chapters link their student edition
with ``{download}``). For every notebook chapter of ``_toc.yml`` (in the folder above
``chapters/``) it writes ``NN_name_student.ipynb``: the chapter without its solutions and
outputs, in plain Markdown (:mod:`bnbook.site.myst_to_markdown`: exercise headings with the
website's numbers, no MyST), with the exercise stubs and checker calls executed like any
cell, so that Run All (nbclient, ``jupyter nbconvert --execute``) stops at the first
unfinished exercise with the checker's message. See
:func:`bnbook.site.jupyter_edition.student_edition`.

``--executed`` names executed copies of the chapters (a folder of notebooks, or the
jupyter-cache folder ``make test`` fills, ``_build/.jupyter_cache``) from which the glued
numbers and figures of the prose are taken; a chapter without one says in its text that the
value appears when the notebook runs.

The writer reads and converts every chapter before writing anything; it never writes into
the source folder and never overwrites a notebook that is not a student edition it wrote.
An error is one line naming the notebook, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bnbook.site import jupyter_edition as je
from bnbook.site.myst_to_markdown import ConversionError

__all__ = ["executed_glue", "build_student_editions", "write_student_editions", "main"]


def executed_glue(executed: Path | None, page_path: Path, source_nb) -> dict | None:
    """The glued outputs of an executed copy of ``page_path``, or None when there is none."""
    if executed is None:
        return None
    if (executed / "global.db").exists():
        from jupyter_cache import get_cache

        try:
            _, merged = get_cache(str(executed)).merge_match_into_notebook(source_nb)
        except KeyError:
            return None
        return je.glue_outputs(merged)
    copy = executed / page_path.name
    return je.glue_outputs(je.read_notebook(copy)) if copy.exists() else None


def build_student_editions(source: Path, target: Path,
                           executed: Path | None = None) -> tuple[dict, list[str]]:
    """Every student edition of ``source``'s chapters, in memory, and the chapters that had
    no executed copy."""
    if not source.is_dir():
        raise je.EditionError(f"{source}: no such folder of chapters")
    index, bibliography = je.load_book(source.resolve().parent)
    pages = [p for p in index.pages.values()
             if p.path.suffix == ".ipynb" and p.path.parent.resolve() == source.resolve()]
    if not pages:
        raise je.EditionError(f"{source}: no chapter of _toc.yml is a notebook in this folder")
    notebooks, unexecuted = {}, []

    def link(doc):
        page = index.pages.get(doc)
        return je.student_filename(doc) if page and page.path.suffix == ".ipynb" else None

    def download(path):
        return None if "_build/student/" in path else \
            os.path.relpath(source.resolve().parent / path.lstrip("/"), target.resolve())

    for page in pages:
        name = je.student_filename(page.doc)
        je.check_target(target, [page.path], "student", name)
        source_nb = je.read_notebook(page.path)
        glue = executed_glue(executed, page.path, source_nb)
        if glue is None:
            unexecuted.append(page.path.name)
        notebooks[name] = je.student_edition(
            source_nb, je.doc_state(page, index, bibliography, link, download), glue)
    return notebooks, unexecuted


def write_student_editions(source: Path, target: Path, executed: Path | None = None):
    notebooks, unexecuted = build_student_editions(source, target, executed)
    return je.write_notebooks(notebooks, target), unexecuted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bnbook.site.student", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of chapter notebooks (chapters/)")
    parser.add_argument("target", type=Path, help="folder for the student editions")
    parser.add_argument("--executed", type=Path,
                        help="executed chapters: a folder of notebooks or a jupyter-cache")
    args = parser.parse_args(argv)
    try:
        written, unexecuted = write_student_editions(args.source, args.target, args.executed)
    except (je.EditionError, ConversionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} student notebooks to {args.target}")
    if unexecuted:
        print(f"no executed copy (glued numbers left to the run) of: {', '.join(unexecuted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
