"""Tests of bnbook.site.page_checks, the verdicts the browser test draws from what a page shows:
test machinery in visible code, Markdown tables left as text, TeX escapes left in typeset
math, cut-off equations, sideways scroll, soft or squashed images, and the favicon. The
browser part runs in `make site-test` (its self-test plants one of each) and in
site/test_check.py's hang test."""

from __future__ import annotations

import pytest

from bnbook.site import page_checks as sp


def test_plumbing_lines_finds_markers_asserts_and_glue_calls():
    code = ['# NBVAL_CHECK_OUTPUT\nprint(round(err, 3))',
            'err = abs(y - ref).max()\nassert err < 1e-10, "forward"\nif ok: assert done',
            'glue("fwd-err", err, display=False)\nmyst_nb.glue("x", 1)\nglue_value("n", n)',
            'from myst_nb import glue\ndef glue_table(rows):\n    pass\n'
            'assertion = "an assert in a string is not a statement"\nreassert(x)']
    found = sp.plumbing_lines(code)
    assert found["a test marker"] == ["# NBVAL_CHECK_OUTPUT"]
    assert found["an assert"] == ['assert err < 1e-10, "forward"', "if ok: assert done"]
    assert found["a glue call"] == ['glue("fwd-err", err, display=False)',
                                    'myst_nb.glue("x", 1)', 'glue_value("n", n)']
    assert sp.plumbing_lines(["y = batch_norm(x)\nprint(y.mean())"]) == {
        "a test marker": [], "an assert": [], "a glue call": []}


@pytest.mark.parametrize("text, rows", [
    ("| method | m = 2 |\n| :--- | ---: |\n| BN | 65.0 |", 1),
    ("| a | b |\n|---|---|\n| 1 | 2 |\n\n| c |\n| \u2014 |", 2),
    ("| a | b |\n| 1 | 2 |", 0),                     # no delimiter row: not a table
    ("loss ---- 0.5\n----------", 0),
])
def test_markdown_table_rows(text, rows):
    assert sp.markdown_table_rows([text]) == rows


def test_raw_tex_commands_and_math_escapes():
    assert sp.raw_tex_commands(r"Two facts: \mathrm{d}x sums to zero and \hat x, 5 \ 6") == [
        "\\hat", "\\mathrm"]
    assert sp.raw_tex_commands("no TeX here, C:/data") == []
    texts = ["running\\_mean", "running\\_mean", "running_var", "a\\{b", "back \\ slash"]
    assert sp.math_escapes(texts) == ["running\\_mean", "a\\{b"]


def _layout(equations=(), page=1280, view=1280, sticking=()):
    return {"equations": list(equations), "pageWidth": page, "viewWidth": view,
            "sticking": list(sticking), "images": []}


def test_layout_failures_name_the_equation_and_what_sticks_out():
    assert sp.layout_failures(_layout(), 1280) == []
    wide = {"verdict": "overflows", "width": 954, "box": 688, "what": "display equation (4.5)",
            "where": "#folding"}
    cut = {"verdict": "clipped", "width": 422, "box": 358, "what": "inline math", "where": ""}
    failures = sp.layout_failures(_layout([wide, cut]), 1280)
    assert failures == [
        "at 1280 px: display equation (4.5) in #folding is 954 px wide, wider than the 688 px "
        "text column, with no scrollbar",
        "at 1280 px: inline math is 422 px wide and cut off by a 358 px box with no scrollbar"]
    sticking = [{"what": "code.docutils", "text": "bnbook.numpy_norms.batch_norm_backward_staged",
                 "right": 405}]
    (failure,) = sp.layout_failures(_layout(page=405, view=390, sticking=sticking), 390)
    assert failure.startswith("at 390 px: the page scrolls sideways (405 px wide): code.docutils")
    assert sp.layout_failures(_layout(page=391, view=390), 390) == []     # rounding


def _image(natural, shown, natural_height, shown_height):
    return {"src": "a.png", "natural": natural, "shown": shown,
            "naturalHeight": natural_height, "shownHeight": shown_height}


def test_density_failures():
    assert sp.density_failures([_image(1600, 800, 600, 300), _image(1600, 672, 600, 252),
                                _image(1599, 800, 600, 300)]) == []
    (soft,) = sp.density_failures([_image(800, 672, 300, 252)])
    assert "1.19x, below 2x" in soft
    for shown, shown_height in ((342, 300), (800, 600)):
        (distorted,) = sp.density_failures([_image(1600, shown, 600, shown_height)])
        assert f"shown {shown}x{shown_height} px, distorted from its 1600x600 px" in distorted
    assert sp.density_failures([_image(0, 0, 0, 0)]) == []              # not shown


def test_favicon_failures(tmp_path):
    assert "404" in sp.favicon_failures(tmp_path)[0]
    (tmp_path / "favicon.ico").write_text("<html>not found</html>")
    assert "neither an ICO nor a PNG" in sp.favicon_failures(tmp_path)[0]
    (tmp_path / "favicon.ico").write_bytes(b"\x00\x00\x01\x00" + bytes(20))
    assert sp.favicon_failures(tmp_path) == []


def test_every_wait_in_the_page_scripts_is_bounded():
    # The content script awaits MathJax and the images only through `within` (a race with
    # a timer); a bare `await` of a page's promise could hang the test for ever.
    awaits = [line.strip() for line in sp.CONTENT_SCRIPT.splitlines() if "await " in line]
    assert awaits and all("await within(" in a for a in awaits), awaits
    assert "await" not in sp.LAYOUT_SCRIPT
