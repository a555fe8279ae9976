"""Tests of bnbook.site.numbering: appendix items renumbered by the appendix letter, numbered
chapters and the preface left as Sphinx numbered them. (The built site is checked by
`make site-test`; the chapter numbers themselves come from _toc.yml.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from docutils import nodes

from bnbook.site import numbering as bn


@pytest.mark.parametrize("title, letter", [
    ("Appendix A: Computing the variance in floating point", "A"),
    ("  Appendix F: Sync batch norm", "F"),
    ("Appendix D", "D"),
    ("Preface", None),
    ("Appendices", None),
    ("An Appendix B: nested", None),
])
def test_appendix_letter(title, letter):
    assert bn.appendix_letter(title) == letter


def test_letter_numbers_keep_the_page_order():
    # Sphinx's shared counter for unnumbered pages: this page's figures were 5, 7 and 6.
    numbers = {"fig-late": (7,), "fig-first": (5,), "fig-middle": (6,)}
    assert bn.letter_numbers(numbers, "C") == {
        "fig-first": ("C", 1), "fig-middle": ("C", 2), "fig-late": ("C", 3)}


def title(text):
    return nodes.title(text, text)


def test_renumbering_touches_only_unnumbered_appendices():
    env = SimpleNamespace(
        titles={"chapters/00_preface": title("Preface"),
                "chapters/02_forward": title("The forward pass"),
                "chapters/A1": title("Appendix A: Variance"),
                "chapters/A2": title("Appendix B: Passes")},
        toc_secnumbers={"chapters/02_forward": {"": (2,), "#sec": (2, 1)}},
        toc_fignumbers={
            "chapters/00_preface": {"exercise": {"p1": (1,), "p2": (2,)}},
            "chapters/02_forward": {"figure": {"f": (2, 1)}, "exercise": {"e": (2, 1)}},
            "chapters/A1": {"figure": {"a1": (3,), "a2": (4,)}, "displaymath": {"eq": (1,)}},
            "chapters/A2": {"figure": {"b1": (5,)}, "exercise": {"x": (4,), "y": (3,)}},
        })
    assert bn._renumber_appendices(None, env) == []
    f = env.toc_fignumbers
    assert f["chapters/00_preface"] == {"exercise": {"p1": (1,), "p2": (2,)}}
    assert f["chapters/02_forward"] == {"figure": {"f": (2, 1)}, "exercise": {"e": (2, 1)}}
    assert f["chapters/A1"] == {"figure": {"a1": ("A", 1), "a2": ("A", 2)},
                                "displaymath": {"eq": ("A", 1)}}
    assert f["chapters/A2"] == {"figure": {"b1": ("B", 1)},
                                "exercise": {"y": ("B", 1), "x": ("B", 2)}}
    # What every renderer (Sphinx, sphinx-exercise) shows: '.'.join(map(str, number)).
    assert ".".join(map(str, f["chapters/A2"]["exercise"]["x"])) == "B.2"
