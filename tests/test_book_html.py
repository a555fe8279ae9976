"""Tests of bnbook.book_html: sphinx-thebe's scripts are dropped from a page's scripts, and
nothing else is."""

from __future__ import annotations

from sphinx.builders.html._assets import _JavaScript

from bnbook import book_html


def test_thebe_scripts_are_recognised():
    config = _JavaScript(None, body='const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js"')
    assert book_html.is_thebe_script(config)
    assert book_html.is_thebe_script(_JavaScript("sphinx-thebe.js", **{"async": "async"}))
    assert book_html.is_thebe_script(_JavaScript("https://unpkg.com/thebe@0.8.2/lib/index.js"))
    for other in (_JavaScript("mathjax/es5/tex-mml-chtml.js", defer="defer"),
                  _JavaScript(None, body="window.MathJax = {}"), _JavaScript("doctools.js")):
        assert not book_html.is_thebe_script(other)


def test_only_thebe_scripts_leave_the_page():
    keep = [_JavaScript("doctools.js"), _JavaScript(None, body="var DOCUMENTATION_OPTIONS = {}")]
    thebe = [_JavaScript(None, body="const THEBE_JS_URL = 'x'"), _JavaScript("sphinx-thebe.js")]
    context = {"script_files": [keep[0], thebe[0], thebe[1], keep[1], thebe[0]]}
    book_html._drop_thebe_scripts(None, "chapters/02_forward", "page.html", context, None)
    assert context["script_files"] == keep


def test_stored_widget_state_and_its_manager_leave_the_page():
    class App:
        class config:
            nb_ipywidgets_js = {"requirejs/require.js": {},
                                "jupyter-widgets/dist/embed-amd.js": {}}

    keep = [_JavaScript("doctools.js"), _JavaScript("mathjax/es5/tex-mml-chtml.js", defer="defer"),
            _JavaScript(None, body="window.MathJax = {}")]
    state = _JavaScript(None, type=book_html.WIDGET_STATE_TYPE, body='{"state": {}}')
    manager = [_JavaScript("_static/requirejs/require.js"),     # as Sphinx 7 lists them
               _JavaScript("jupyter-widgets/dist/embed-amd.js")]
    context = {"script_files": [keep[0], keep[1], state, manager[0], manager[1], keep[2]]}
    book_html._drop_widget_state(App, "chapters/08_other_norms", "page.html", context, None)
    assert context["script_files"] == keep
    # A page without stored state keeps everything (the manager is not added there anyway).
    context = {"script_files": keep + manager}
    book_html._drop_widget_state(App, "chapters/02_forward", "page.html", context, None)
    assert context["script_files"] == keep + manager
