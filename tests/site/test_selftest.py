"""Tests of the browser test's self-test (bnbook.site.selftest): its pages and its verdicts.
The browser part runs in `make site-test`."""

from __future__ import annotations

import pytest

from bnbook.site import selftest as sst
from bnbook.site import check as st


def test_every_plant_changes_the_clean_page_and_names_a_distinct_bug():
    clean = sst.page_html()
    assert len(sst.PLANTS) >= 24
    assert len({p.name for p in sst.PLANTS}) == len(sst.PLANTS)
    for plant in sst.PLANTS:
        assert sst.page_html(plant) != clean, plant.name
        assert plant.phrase, plant.name


def test_the_clean_page_has_what_a_chapter_has():
    parsed = st.parse_page(sst.page_html())
    assert parsed.math == 3 and parsed.widget_views == 1 and parsed.widget_states == 0
    assert "top" in parsed.ids and parsed.icon == "../favicon.ico"
    assert ("script", "../_static/mathjax/es5/tex-mml-chtml.js") in parsed.resources
    assert ("img", "../_images/default-view.png") in parsed.resources
    assert not st.external_resources(parsed)
    without = st.parse_page(sst.page_html(sst.Plant("no figure", "x", drop_figure=True)))
    assert ("img", "../_images/default-view.png") not in without.resources


def test_planted_site_layout(tmp_path):
    static = tmp_path / "built" / "_static"
    (static / "mathjax" / "es5").mkdir(parents=True)
    (static / "mathjax" / "es5" / "tex-mml-chtml.js").write_text("// MathJax")
    root = tmp_path / "planted"
    pages = sst.write_planted_site(root, static)
    assert list(pages)[0] == "chapters/clean.html" and pages["chapters/clean.html"] is None
    assert st.site_pages(root) == sorted(pages)           # the link to _static adds no page
    assert (root / "_static").resolve() == static.resolve()
    assert (root / "_images" / "default-view.png").stat().st_size > 0
    assert st.site_page.favicon_failures(root) == []
    links, failures = st.check_links(root, "chapters/clean.html",
                                     st.parse_page((root / "chapters/clean.html").read_text()),
                                     lambda p: st.parse_page((root / p).read_text()).ids)
    assert links and not failures


def test_planted_site_needs_the_built_site(tmp_path):
    with pytest.raises(FileNotFoundError, match="make book"):
        sst.write_planted_site(tmp_path / "planted", tmp_path / "no-site" / "_static")


def test_verdicts():
    a, b = sst.PLANTS[0], sst.PLANTS[1]
    pages = {"chapters/clean.html": None, "p1.html": a, "p2.html": b}
    rows = sst.verdicts(pages, {"p1.html": [f"x {a.phrase} y"], "p2.html": ["something else"]})
    assert [r[2] for r in rows] == [True, True, False]
    assert rows[2][3] == "something else"
    rows = sst.verdicts(pages, {"chapters/clean.html": ["console error: boom"]})
    assert rows[0][2] is False and rows[2][3] == "not caught"


def test_the_clean_page_shows_no_plumbing_but_a_plant_does():
    """The clean page folds its cell with an assert, a glue call and a marker (as hide-input
    does), keeps TeX in a code block and a wide equation in a scrolling box: none of that is
    a bug. The plumbing plants put the same lines in a visible cell."""
    clean = sst.page_html()
    assert "<details>" in clean and "assert err" in clean and "running\\_mean" in clean
    by_name = {p.name: p for p in sst.PLANTS}
    for name, kind in [("a visible code input with a test marker", "a test marker"),
                       ("a visible code input with an assert", "an assert"),
                       ("a visible code input with a glue call", "a glue call")]:
        plant = by_name[name]
        assert "<details>" not in plant.body and kind in plant.phrase
        code = plant.body.split("<pre>")[1].split("</pre>")[0]
        assert st.site_page.plumbing_lines([code])[kind], name
    table = by_name["a Markdown table in a cell's output"].body
    assert st.site_page.markdown_table_rows([table.split("cell_output")[1]]) == 1
