"""Tests of bnbook.student: the student edition keeps the exercises and stubs, drops every
kind of solution and every output, and is a valid notebook."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from bnbook.student import main, student_notebook

STUB = "def my_forward(x):\n    \"\"\"Doc.\"\"\"\n    raise NotImplementedError"
SKIP = {"tags": ["skip-execution", "nbval-skip"]}


def small_notebook():
    solved = new_code_cell("def my_forward(x):\n    return x\n\ncheck(my_forward)",
                           execution_count=3,
                           outputs=[new_output("stream", name="stdout", text="check: passed\n")])
    cells = [
        new_markdown_cell("# A chapter\n\nSome prose."),
        new_code_cell("import numpy as np", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="set up\n")]),
        new_markdown_cell("## Exercises\n\n```{exercise}\n:label: ex-paper\n\nProve it.\n```\n\n"
                          "````{solution} ex-paper\n:class: dropdown\n\nBecause.\n\n"
                          "```python\nprint('inner fence')\n```\n````\n\nAfter the solution."),
        new_code_cell("print('checks the paper solution')", metadata={"tags": ["solution"]}),
        new_markdown_cell("```{exercise}\n:label: ex-code\n\nWrite it.\n```"),
        new_code_cell(STUB, metadata=SKIP),
        new_code_cell("check(my_forward)", metadata=SKIP),
        new_markdown_cell("````{solution-start} ex-code\n:class: dropdown\n````\n\nHow:"),
        solved,
        new_markdown_cell("````{solution-end}\n````"),
        new_markdown_cell("Closing words."),
    ]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                              "display_name": "Python 3",
                                                              "language": "python"}})


def test_solutions_are_gone_and_exercises_stay():
    student = student_notebook(small_notebook())
    text = "\n".join(c.source for c in student.cells)
    for gone in ("{solution", "Because.", "inner fence", "How:", "return x",
                 "checks the paper solution"):
        assert gone not in text
    for kept in ("Some prose.", "{exercise}", "Prove it.", "After the solution.", "Write it.",
                 STUB, "check(my_forward)", "Closing words."):
        assert kept in text
    stub = next(c for c in student.cells if c.source == STUB)
    assert stub.metadata["tags"] == SKIP["tags"]


def test_outputs_are_cleared_and_the_result_is_valid():
    student = student_notebook(small_notebook())
    code = [c for c in student.cells if c.cell_type == "code"]
    assert [c.source for c in code] == ["import numpy as np", STUB, "check(my_forward)"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    nbformat.validate(student)


def test_the_source_notebook_is_not_changed():
    nb = small_notebook()
    before = nbformat.writes(nb)
    student_notebook(nb)
    assert nbformat.writes(nb) == before


def test_command_writes_one_student_notebook_per_chapter(tmp_path, capsys):
    source, target = tmp_path / "chapters", tmp_path / "student"
    source.mkdir()
    nbformat.write(small_notebook(), source / "01_small.ipynb")
    main([str(source), str(target)])
    assert "wrote 1 student notebooks" in capsys.readouterr().out
    written = nbformat.read(target / "01_small.ipynb", as_version=4)
    nbformat.validate(written)
    assert not any("{solution" in c.source for c in written.cells)
