"""Tests of bnbook.site.myst_to_markdown and bnbook.site.jupyter_edition on a small book
(tests/book_fixture.py): the website's numbering, each role and directive, the editions'
cells, and the writer's refusals."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from bnbook.site import jupyter_edition as je
from bnbook.site import myst_to_markdown as m2m
from book_fixture import PNG, STUB, write_book

RAW_MYST = re.compile(r"\{[a-z][\w:-]*\}`|^\s*:(label|class|name):|```\{|^\([^)]*\)=$", re.M)


@pytest.fixture
def book(tmp_path):
    return write_book(tmp_path)


def markdown(nb):
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_numbers_follow_the_websites_rules(book):
    index = m2m.book_index(book)
    pages = index.pages
    assert [pages[d].number for d in ("00_preface", "01_first", "02_second", "A1_extra")] == \
        [None, "1", "2", "A"]
    numbers = {label: (t.doc, t.number, t.text) for label, t in index.targets.items()}
    assert numbers["pre-ex"] == ("00_preface", "1", "Exercise 1")      # the preface: plain
    assert numbers["first-ex-paper"][1:] == ("1.1", "Exercise 1.1")
    assert numbers["first-ex-code"][1:] == ("1.2", "Exercise 1.2")
    assert numbers["second-ex"][1:] == ("2.1", "Exercise 2.1")          # per chapter
    assert numbers["extra-ex"][1:] == ("A.1", "Exercise A.1")          # the appendix letter
    assert numbers["one-f"][1:] == ("1.1", "Fig. 1.1")
    assert numbers["first-eq"][1:] == ("1.1", "(1.1)")
    assert numbers["first-sec"] == ("01_first", None, "A section")
    assert index.targets["first-sec"].anchor == "1.1.-A-section"
    assert [t.text for t in index.items["A1_extra"]] == ["Exercise A.1", "Fig. A.1"]


def editions(book):
    return je.build_editions(book, book / "executed", book / "out")


def test_jupyter_edition_converts_every_role_and_directive(book):
    nb = editions(book)["01_first.ipynb"]
    text = markdown(nb)
    prose = re.sub(r"`[^`\n]+`", "", text)                     # inline code may show MyST
    assert not RAW_MYST.search(prose), RAW_MYST.search(prose)
    for shown in ("# 1. First", "## 1.1. A section",
                  "See [Second](02_second.ipynb) and [the appendix](A1_extra.ipynb)",
                  "Smith [2020]", "[Doe and Roe, 2019, Lee *et al.*, 2018]",
                  "The value is 0.12;", "`{glue:text}` in code stays",
                  "![Fig. 1.1](attachment:one-fig.png)", "**Fig. 1.1:** A caption with $x$.",
                  "a = b \\tag{1.1}$$", "[Fig. 1.1](#one-f)", "[(1.1)](#equation-first-eq)",
                  "[A section](#1.1.-A-section)", "[Exercise 2.1](02_second.ipynb#Exercise-2.1)",
                  "> **Note**\n>\n> Mind $\\epsilon$.", "> **Warning**\n>\n> Careful.",
                  "[student edition of this chapter](01_first_student.ipynb)",
                  "### Exercise 1.1\n\nProve $1 = 1$.", "#### Solution to Exercise 1.1",
                  "Because.", "### Exercise 1.2 (Doubling)", "#### Solution to Exercise 1.2"):
        assert shown in text, shown
    figure = next(c for c in nb.cells if "attachments" in c)
    assert figure.attachments == {"one-fig.png": {"image/png": PNG}}
    references = nb.cells[-1].source
    assert references.startswith("## References")
    assert "Smith, 2020. Ann Smith" in references and "Müller" in references
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.bnbook == {"edition": "jupyter", "source": "01_first.ipynb"}


def test_jupyter_edition_hides_plumbing_and_drops_the_stubs(book):
    nb = editions(book)["01_first.ipynb"]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert STUB not in [c.source for c in code]
    assert "check_double(my_double)" not in [c.source for c in code]
    by_source = {c.source: c for c in code}
    glued = by_source["glue('one-value', 0.123456)"]
    assert glued.metadata.jupyter == {"source_hidden": True, "outputs_hidden": True}
    assert glued.outputs == []                                # the glue record is written in
    assert by_source["glue('one-fig', fig)"].metadata.jupyter == {"source_hidden": True}
    solution = next(c for c in code if c.source.startswith("def my_double"))
    assert solution.metadata.jupyter == {"source_hidden": True}
    assert any(c.source == "print('the end')" for c in code)
    nbformat.validate(nb)


def test_an_unknown_role_or_directive_names_the_page(book):
    state = m2m.DocState(m2m.book_index(book).pages["01_first"], m2m.book_index(book))
    with pytest.raises(m2m.ConversionError, match="01_first: .*role {unknown}"):
        m2m.convert_markdown("a {unknown}`x` b", state)
    with pytest.raises(m2m.ConversionError, match="01_first: .*directive {mystery}"):
        m2m.convert_markdown("```{mystery}\nx\n```", state)
    with pytest.raises(m2m.ConversionError, match="no-such-label"):
        m2m.convert_markdown("{ref}`no-such-label`", state)


def test_glue_text_uses_myst_nbs_formatting(book):
    index = m2m.book_index(book)
    state = m2m.DocState(index.pages["01_first"], index,
                         glue={"n": {"data": {"text/plain": "1234.5678"}},
                               "s": {"data": {"text/plain": "'a b'"}}})
    assert m2m.convert_markdown("{glue:text}`n:,.1f` {glue:text}`n` {glue:text}`s`", state) \
        == "1,234.6 1234.5678 a b"


def test_the_writer_refuses_its_source_and_foreign_files(book, capsys):
    args = ["--root", str(book), "--executed", str(book / "executed")]
    assert je.main(args + ["--out", str(book / "chapters")]) == 2
    assert "is (or is inside) the source folder" in capsys.readouterr().err
    assert je.main(args + ["--out", str(book / "executed")]) == 2
    capsys.readouterr()
    out = book / "out"
    out.mkdir()
    (out / "02_second.ipynb").write_text("{}")
    assert je.main(args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "02_second.ipynb: exists and is not a jupyter edition" in err
    assert err.count("\n") == 1 and sorted(p.name for p in out.iterdir()) == ["02_second.ipynb"]
    (out / "02_second.ipynb").unlink()
    assert je.main(args + ["--out", str(out)]) == 0
    assert je.main(args + ["--out", str(out)]) == 0              # its own files: rewritten
    written = sorted(p.name for p in out.iterdir())
    assert written == ["01_first.ipynb", "01_first_student.ipynb", "02_second.ipynb",
                       "02_second_student.ipynb", "A1_extra.ipynb", "A1_extra_student.ipynb"]


def test_a_corrupt_notebook_is_named_and_nothing_is_written(book, capsys):
    (book / "chapters" / "02_second.ipynb").write_text("{not json")
    out = book / "out"
    assert je.main(["--root", str(book), "--executed", str(book / "executed"),
                    "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "02_second.ipynb: not a readable notebook" in err and err.count("\n") == 1
    assert not out.exists()


def test_an_unclosed_solution_gate_is_named(book, capsys):
    path = book / "executed" / "01_first.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "solution-end" not in c.source]
    nbformat.write(nb, path)
    assert je.main(["--root", str(book), "--executed", str(book / "executed"),
                    "--out", str(book / "out")]) == 2
    assert "01_first: a {solution-start} is never closed" in capsys.readouterr().err
    assert not (book / "out").exists()


def test_a_missing_executed_copy_says_how_to_make_it(book, capsys):
    (book / "executed" / "02_second.ipynb").unlink()
    assert je.main(["--root", str(book), "--executed", str(book / "executed"),
                    "--out", str(book / "out")]) == 2
    assert "run make test, then make book" in capsys.readouterr().err


def test_written_files_are_marked_and_complete(book):
    out = book / "out"
    je.write_notebooks(editions(book), out)
    for path in out.iterdir():
        marked = json.loads(path.read_text())["metadata"]["bnbook"]["edition"]
        assert marked == ("student" if path.stem.endswith("_student") else "jupyter")
    assert not list(out.glob(".*"))                              # no temporary file left
