"""Tests of the student edition (bnbook.site.student, bnbook.site.jupyter_edition.student_edition): plain
Markdown with the website's exercise numbers and no solutions; executed unchanged under
nbclient it stops at the first unfinished exercise, and with every stub replaced by the
chapter's written-out solution it runs to the end; the writer refuses its source folder,
foreign files and broken notebooks before writing anything."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from bnbook.site import student
from bnbook.site.myst_to_markdown import blocks
from book_fixture import STUB, write_book

ROOT = Path(__file__).resolve().parents[2]
RAW_MYST = re.compile(r"\{[a-z][\w:-]*\}`|^\s*:(label|class|name):|```\{|^\([^)]*\)=$", re.M)


@pytest.fixture
def book(tmp_path):
    return write_book(tmp_path)


def built(book, executed=True):
    notebooks, _ = student.build_student_editions(
        book / "chapters", book / "out", book / "executed" if executed else None)
    return notebooks


def test_exercises_are_numbered_headings_and_solutions_are_gone(book):
    nb = built(book)["01_first_student.ipynb"]
    text = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    prose = re.sub(r"`[^`\n]+`", "", text)
    assert not RAW_MYST.search(prose)
    assert nb.cells[0].source.startswith("# Student edition: First")
    assert "### Exercise 1.1" in text and "### Exercise 1.2 (Doubling)" in text
    assert "The value is 0.12;" in text                           # glued from the executed copy
    for gone in ("Solution", "Because.", "How:", "student edition of this chapter",
                 "return 2 * x", "print('the end')"):
        assert gone not in text + "".join(c.source for c in nb.cells), gone
    code = [c for c in nb.cells if c.cell_type == "code"]
    stub = next(c for c in code if c.source == STUB)
    assert "tags" not in stub.metadata                             # executed like any cell
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata.bnbook.edition == "student"
    nbformat.validate(nb)


def test_without_an_executed_copy_the_text_says_the_value_comes_with_the_run(book):
    nb = built(book, executed=False)["01_first_student.ipynb"]
    assert "The value is *(computed when the notebook runs)*;" in nb.cells[5].source


def run(nb, cwd):
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()


def test_run_unchanged_it_stops_at_the_first_exercise(book):
    nb = built(book)["01_first_student.ipynb"]
    with pytest.raises(CellExecutionError, match="NotImplementedError"):
        run(nb, book)
    ran = [c for c in nb.cells if c.cell_type == "code" and c.execution_count]
    assert ran[-1].source == "check_double(my_double)"


def solutions_by_stub(chapter: Path) -> dict[str, str]:
    """Each stub's source -> the code of its exercise's written-out solution (the gate)."""
    nb = nbformat.read(chapter, as_version=4)
    stubs, solutions, label, gate = {}, {}, None, None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for block in blocks(cell.source):
                if block[0] == "directive" and block[1] == "exercise":
                    label = block[3].get("label")
                elif block[0] == "directive" and block[1] == "solution-start":
                    gate = block[2].strip()
                elif block[0] == "directive" and block[1] == "solution-end":
                    gate = None
        elif gate is not None:
            solutions[gate] = solutions.get(gate, "") + cell.source + "\n\n"
        elif "NotImplementedError" in cell.source and "skip-execution" in cell.metadata.get(
                "tags", []):
            stubs[cell.source] = label
    return {stub: solutions[label] for stub, label in stubs.items()}


def test_with_the_solutions_written_in_it_runs_to_the_end(book):
    nb = built(book)["01_first_student.ipynb"]
    answers = solutions_by_stub(book / "chapters" / "01_first.ipynb")
    for cell in nb.cells:
        cell.source = answers.get(cell.source, cell.source)
    run(nb, book)
    assert "check_double: passed" in "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


EXERCISE_CHAPTERS = ["02_forward", "03_backward", "04_inference", "08_other_norms",
                     "09_why_bn_works"]


@pytest.fixture(scope="module")
def real_editions(tmp_path_factory):
    notebooks, _ = student.build_student_editions(ROOT / "chapters",
                                                  tmp_path_factory.mktemp("student"))
    return notebooks


@pytest.mark.parametrize("chapter", EXERCISE_CHAPTERS)
def test_each_student_edition_stops_at_its_first_exercise_then_runs_with_its_solutions(
        real_editions, chapter):
    # One kernel, one pass: run the edition unchanged until a cell fails, which must be the
    # first checker, failing with the checker's own "not written yet" message; then write
    # every stub's solution in (written out in the chapter, not a call to the library) and
    # run that cell and the rest of the notebook to the end.
    nb = nbformat.from_dict(real_editions[f"{chapter}_student.ipynb"])
    answers = solutions_by_stub(ROOT / "chapters" / f"{chapter}.ipynb")
    assert answers, f"{chapter} has no code exercise"
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "chapters")}})
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    with client.setup_kernel():
        stopped = None
        for position, (index, cell) in enumerate(code):
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as error:
                stopped = position
                assert "not written yet" in str(error), str(error)[-600:]
                assert "Traceback" not in "".join(
                    o.get("traceback", [""])[-1] for o in cell.outputs if o.output_type == "error")
                break
        assert stopped is not None, f"{chapter}: the unchanged edition ran to the end"
        first_stub = next(p for p, (_, c) in enumerate(code) if c.source in answers)
        assert stopped == first_stub + 1, "it must stop at the checker after the first stub"
        for _, cell in code:
            cell.source = answers.get(cell.source, cell.source)
        for index, cell in code[first_stub:]:
            client.execute_cell(cell, index)


def test_refuses_to_write_into_its_source_folder(book, capsys):
    chapters = book / "chapters"
    before = {p.name: p.read_bytes() for p in chapters.iterdir()}
    assert student.main([str(chapters), str(chapters)]) == 2
    assert student.main([str(chapters), str(chapters / "inside")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("is (or is inside) the source folder" in e for e in err)
    assert {p.name: p.read_bytes() for p in chapters.iterdir()} == before


def test_refuses_to_overwrite_a_file_it_did_not_write(book, capsys):
    out = book / "out"
    out.mkdir()
    (out / "02_second_student.ipynb").write_text("my own notes")
    assert student.main([str(book / "chapters"), str(out)]) == 2
    assert "02_second_student.ipynb: exists and is not a student edition" in \
        capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["02_second_student.ipynb"]
    (out / "02_second_student.ipynb").unlink()
    assert student.main([str(book / "chapters"), str(out)]) == 0
    assert student.main([str(book / "chapters"), str(out)]) == 0      # its own: rewritten


def test_an_unclosed_gate_or_a_corrupt_notebook_is_named_before_anything_is_written(book, capsys):
    path = book / "chapters" / "01_first.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "solution-end" not in c.source]
    nbformat.write(nb, path)
    assert student.main([str(book / "chapters"), str(book / "out")]) == 2
    assert capsys.readouterr().err == \
        "error: 01_first: a {solution-start} is never closed by {solution-end}\n"
    (book / "chapters" / "02_second.ipynb").write_text("{broken")
    assert student.main([str(book / "chapters"), str(book / "out")]) == 2
    err = capsys.readouterr().err
    assert "02_second.ipynb: not a readable notebook" in err and err.count("\n") == 1
    assert not (book / "out").exists()
