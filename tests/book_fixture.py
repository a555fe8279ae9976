"""A two-chapter book with an appendix and a preface, written into a temporary folder, for the
tests of bnbook.site.myst_to_markdown, bnbook.site.jupyter_edition and bnbook.site.student. The numbers the
tests expect are the website's rules applied by hand (see the comments)."""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

TOC = """format: jb-book
root: chapters/index
defaults:
  numbered: 2
parts:
  - numbered: false
    chapters:
      - file: chapters/00_preface
  - caption: One
    chapters:
      - file: chapters/01_first
  - caption: Two
    chapters:
      - file: chapters/02_second
  - caption: Appendices
    numbered: false
    chapters:
      - file: chapters/A1_extra
"""

BIB = """@article{smith2020one, author = {Smith, Ann}, title = {One author}, journal = {J}, year = {2020}}
@article{doe2019two, author = {Doe, John and Roe, Jane}, title = {Two}, journal = {J}, year = {2019}}
@article{lee2018many, author = {Lee, A. and M{\\"u}ller, B. and Kim, C.}, title = {Three},
  journal = {J}, year = {2018}}
"""

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 16).decode()
STUB = "def my_double(x):\n    \"\"\"2 x.\"\"\"\n    raise NotImplementedError"
SKIP = {"tags": ["skip-execution", "nbval-skip"]}
CHECK = ("glue, fig = (lambda name, value: None), None\n\n\ndef check_double(f):\n    assert f(2) == 4, 'my_double(2) is not 4'\n"
         "    print('check_double: passed')")


def glue_output(name, data):
    prefix = "application/papermill.record/"
    return new_output("display_data", data={prefix + k: v for k, v in data.items()},
                      metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def first_chapter(executed: bool):
    glue_cell = new_code_cell("glue('one-value', 0.123456)", metadata={"tags": ["remove-cell"]})
    fig_cell = new_code_cell("glue('one-fig', fig)", metadata={"tags": ["hide-input"]})
    if executed:
        glue_cell.outputs = [glue_output("one-value", {"text/plain": "0.123456"})]
        fig_cell.outputs = [glue_output("one-fig", {"image/png": PNG, "text/plain": "<Figure>"})]
    cells = [
        new_markdown_cell("(first-title)=\n# First\n\nSee {doc}`02_second` and "
                          "{doc}`the appendix <A1_extra>`; {cite:t}`smith2020one` and "
                          "{cite}`doe2019two,lee2018many`."),
        new_code_cell(CHECK, metadata={"tags": ["hide-input"]}),
        glue_cell, fig_cell,
        new_markdown_cell("(first-sec)=\n## A section\n\nThe value is {glue:text}`one-value:.2f`; "
                          "`{glue:text}` in code stays.\n\n```{glue:figure} one-fig\n:name: one-f\n\n"
                          "A caption with $x$.\n```\n\n$$\na = b\n$$ (first-eq)\n\n"
                          "{numref}`one-f`, {eq}`first-eq`, {ref}`first-sec`, {ref}`second-ex`."),
        new_markdown_cell(":::{note}\nMind $\\epsilon$.\n:::\n\n```{warning}\nCareful.\n```"),
        new_markdown_cell("## Exercises\n\nThe {download}`student edition of this chapter "
                          "</_build/student/01_first_student.ipynb>` is this notebook without "
                          "the solutions.\n\n```{exercise}\n:label: first-ex-paper\n\n"
                          "Prove $1 = 1$.\n```\n\n```{solution} first-ex-paper\n:class: dropdown\n\n"
                          "Because.\n```\n\n```{exercise} Doubling\n:label: first-ex-code\n\n"
                          "Write `my_double`.\n```"),
        new_code_cell(STUB, metadata=SKIP),
        new_code_cell("check_double(my_double)", metadata=SKIP),
        new_markdown_cell("````{solution-start} first-ex-code\n:class: dropdown\n````\n\nHow:"),
        new_code_cell("def my_double(x):\n    return 2 * x\n\ncheck_double(my_double)"),
        new_markdown_cell("````{solution-end}\n````"),
        new_code_cell("print('the end')", metadata={"tags": ["solution"]}),
    ]
    return new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})


def second_chapter():
    return new_notebook(cells=[
        new_markdown_cell("# Second\n\n## Intro\n\n## Exercises\n\n```{exercise}\n"
                          ":label: second-ex\n\nAgain.\n```\n\nBack to {ref}`first-title`.")])


def appendix():
    return new_notebook(cells=[new_markdown_cell(
        "# Appendix A: Extra\n\n```{exercise}\n:label: extra-ex\n\nMore.\n```\n\n"
        "```{glue:figure} extra-fig\n\nAn appendix figure.\n```")])


def write_book(root: Path, executed: bool = True) -> Path:
    """The fixture book under ``root``; with ``executed``, executed copies in root/executed."""
    chapters = root / "chapters"
    chapters.mkdir(parents=True)
    (root / "_toc.yml").write_text(TOC)
    (root / "references.bib").write_text(BIB)
    (chapters / "00_preface.md").write_text("# Preface\n\n```{exercise}\n:label: pre-ex\n\n"
                                           "Read.\n```\n")
    nbformat.write(first_chapter(False), chapters / "01_first.ipynb")
    nbformat.write(second_chapter(), chapters / "02_second.ipynb")
    extra = appendix()
    nbformat.write(extra, chapters / "A1_extra.ipynb")
    if executed:
        done = root / "executed"
        done.mkdir()
        nbformat.write(first_chapter(True), done / "01_first.ipynb")
        nbformat.write(second_chapter(), done / "02_second.ipynb")
        extra.cells.insert(0, new_code_cell("glue('extra-fig', fig)", outputs=[
            glue_output("extra-fig", {"image/png": PNG})]))
        nbformat.write(extra, done / "A1_extra.ipynb")
    return root
