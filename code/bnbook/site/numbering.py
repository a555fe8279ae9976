"""Sphinx extension of the book's build: the appendices number their items with their letter.

The chapters are numbered by the table of contents (``_toc.yml``: the parts holding chapters
1-7 are ``numbered``), and Sphinx's ``numfig`` numbers every figure, table, equation and
exercise (sphinx-exercise registers exercises with ``numfig``) within its chapter: Fig. 6.3,
Exercise 2.1, equation (3.4). The preface and the appendices are not numbered chapters.
Sphinx numbers the items of such pages on one counter that runs on from page to page, so
Appendix B would continue where Appendix A stopped. This extension renumbers the items of
every unnumbered page whose title starts with ``Appendix X`` as ``X.1``, ``X.2``, ... per
kind of item, in the order Sphinx found them, so that the reader sees Fig. A.1 and
Exercise B.2 under the titles "Appendix A: ..." and "Appendix B: ...". Any other unnumbered
page (the preface) keeps Sphinx's plain numbers: its exercises are Exercise 1, 2, 3.

Enabled in ``_config.yml`` (``sphinx.extra_extensions``).
"""

from __future__ import annotations

import re

__all__ = ["APPENDIX_TITLE", "appendix_letter", "letter_numbers", "setup"]

#: An appendix's title: "Appendix A: ..." (the letter is the appendix's number).
APPENDIX_TITLE = re.compile(r"^Appendix ([A-Z])\b")


def appendix_letter(title: str) -> str | None:
    """The letter of an appendix title (``"Appendix C: Tolerances"`` -> ``"C"``), else None."""
    match = APPENDIX_TITLE.match(title.strip())
    return match.group(1) if match else None


def letter_numbers(numbers: dict[str, tuple], letter: str) -> dict[str, tuple]:
    """Renumber one page's items of one kind as ``(letter, 1)``, ``(letter, 2)``, ...

    Args:
        numbers: node id -> Sphinx's number tuple for the page's items of one kind (figures,
            say); their order is the order of the items on the page.
        letter: the appendix letter.
    """
    ordered = sorted(numbers, key=lambda node_id: numbers[node_id])
    return {node_id: (letter, k) for k, node_id in enumerate(ordered, start=1)}


def _renumber_appendices(app, env) -> list[str]:
    for docname, by_kind in env.toc_fignumbers.items():
        if env.toc_secnumbers.get(docname) or docname not in env.titles:
            continue                                    # a numbered chapter keeps its numbers
        letter = appendix_letter(env.titles[docname].astext())
        if letter is None:
            continue
        for kind, numbers in by_kind.items():
            by_kind[kind] = letter_numbers(numbers, letter)
    return []


def setup(app):
    # After Sphinx's own numbering (TocTreeCollector, on the same event at priority 500).
    app.connect("env-get-updated", _renumber_appendices, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
