"""Tests of bnbook.site.html: sphinx-thebe's scripts are dropped from a page's scripts, and
nothing else is."""

from __future__ import annotations

from sphinx.builders.html._assets import _JavaScript

from bnbook.site import html as book_html


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


def test_the_checked_in_favicon_is_what_draw_favicon_draws(tmp_path):
    from PIL import Image, ImageChops

    stored = Image.open(book_html.FAVICON)
    assert stored.format == "ICO"
    assert set(stored.info["sizes"]) == {(s, s) for s in book_html.FAVICON_SIZES}
    drawn = book_html.draw_favicon(max(book_html.FAVICON_SIZES))
    difference = ImageChops.difference(stored.convert("RGBA"), drawn).getextrema()
    assert max(high for _, high in difference) <= 2, difference
    book_html.write_favicon(tmp_path / "favicon.ico")
    assert Image.open(tmp_path / "favicon.ico").info["sizes"] == stored.info["sizes"]
    assert [p.name for p in tmp_path.iterdir()] == ["favicon.ico"]    # no temporary left


def test_the_favicon_is_copied_to_the_site_root(tmp_path):
    from types import SimpleNamespace

    out = tmp_path / "html"
    out.mkdir()
    app = SimpleNamespace(config=SimpleNamespace(html_favicon="code/bnbook/site/static/favicon.ico"),
                          builder=SimpleNamespace(format="html"), outdir=str(out),
                          confdir=str(book_html.STATIC.parents[3]))
    book_html._icon_at_root(app, RuntimeError("the build failed"))
    assert not (out / "favicon.ico").exists()
    book_html._icon_at_root(app, None)
    assert (out / "favicon.ico").read_bytes() == book_html.FAVICON.read_bytes()


def test_the_book_config_serves_the_stylesheet_and_the_icon():
    import yaml

    root = book_html.STATIC.parents[3]
    config = yaml.safe_load((root / "_config.yml").read_text())["sphinx"]["config"]
    static = [root / p for p in config["html_static_path"]]
    assert book_html.STATIC in [p.resolve() for p in static]
    for css in config["html_css_files"]:
        assert (book_html.STATIC / css).is_file()
    assert (root / config["html_favicon"]).resolve() == book_html.FAVICON
    css = (book_html.STATIC / "bnbook.css").read_text()
    for rule in ("overflow-wrap: anywhere", 'mjx-container[jax="CHTML"][display="true"]',
                 "overflow-x: auto", "figcaption", "height: auto !important"):
        assert rule in css, rule


def test_the_browser_editions_chapters_link_their_copies_under_the_title():
    from bnbook.site.html import _add_lite_links, lite_links

    links = lite_links("chapters/02_forward")
    assert 'href="../lite/notebooks/index.html?path=02_forward.ipynb"' in links
    assert 'href="../lite/notebooks/index.html?path=02_forward_student.ipynb"' in links
    assert 'href="../lite/start.html"' in links and "Run this page in your browser" in links
    assert lite_links("chapters/07_cifar10") is None and lite_links("index") is None
    context = {"body": "<section><h1>2. The forward pass</h1><p>Text</p></section>"}
    _add_lite_links(None, "chapters/02_forward", "page.html", context, None)
    assert context["body"].startswith("<section><h1>2. The forward pass</h1>\n<p class=")
    assert context["body"].endswith("<p>Text</p></section>")
