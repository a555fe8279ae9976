"""Tests of the browser test's plain parts (bnbook.site.check): which files are pages, what a
page links to and loads, how links resolve, and that broken links, missing anchors, absolute
links and outside scripts are reported. The browser part runs in `make site-test`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnbook.site import check as st

PAGE = """<!DOCTYPE html><html><head>
<link rel="stylesheet" href="../_static/styles/theme.css?digest=abc">
<link rel="icon" href="../_static/favicon.png">
<link rel="canonical" href="https://example.org/book/">
<script src="../_static/mathjax/es5/tex-mml-chtml.js" defer></script>
</head><body>
<section id="the-forward-pass"><h1>The forward pass</h1>
<p>Inline <span class="math notranslate nohighlight">\\(x\\)</span> and
<div class="math notranslate nohighlight">\\[y\\]</div></p>
<a class="reference internal" href="#the-forward-pass">here</a>
<a href="03_backward.html#the-backward-pass">next</a>
<a href="03_backward.html">next page</a>
<a href="../index.html">home</a>
<a href="../_downloads/abc/02_forward.ipynb">download</a>
<a href="https://creativecommons.org/licenses/by/4.0/">licence</a>
<a href="mailto:someone@example.org">mail</a>
<a name="old-anchor"></a>
<img src="../_images/fig.png" alt="">
<script type="application/vnd.jupyter.widget-view+json">{"model_id": "1"}</script>
</section></body></html>"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "html"
    write(root / "index.html", '<html><body id="top"><a href="chapters/02_forward.html">x</a></body></html>')
    write(root / "search.html", "<html></html>")
    write(root / "chapters/02_forward.html", PAGE)
    write(root / "chapters/03_backward.html", '<section id="the-backward-pass"></section>')
    write(root / "_static/webpack-macros.html", "<html></html>")
    write(root / "_static/styles/theme.css", "")
    write(root / "_static/favicon.png", "")
    write(root / "_static/mathjax/es5/tex-mml-chtml.js", "")
    write(root / "_images/fig.png", "")
    write(root / "_downloads/abc/02_forward.ipynb", "{}")
    write(root / "_sources/chapters/02_forward.html", "<html></html>")
    return root


def ids_from(root):
    return lambda target: st.parse_page((root / target).read_text()).ids


def test_pages_are_every_html_file_but_the_asset_folders(site):
    assert st.site_pages(site) == ["chapters/02_forward.html", "chapters/03_backward.html",
                                   "index.html", "search.html"]


def test_the_browser_editions_apps_are_not_pages_of_the_book(site):
    (site / "lite" / "repl").mkdir(parents=True)
    (site / "lite" / "repl" / "index.html").write_text("<html><body>JupyterLite</body></html>")
    assert "lite/repl/index.html" not in st.site_pages(site) and "index.html" in st.site_pages(site)


def test_parse_page_finds_ids_links_resources_math_and_widgets():
    parsed = st.parse_page(PAGE)
    assert {"the-forward-pass", "old-anchor"} <= parsed.ids
    assert parsed.math == 2 and parsed.widget_views == 1 and parsed.widget_states == 0
    assert ("a", "href", "03_backward.html#the-backward-pass") in parsed.links
    # The canonical link is metadata, not something the browser fetches.
    assert [url for _, url in parsed.resources] == [
        "../_static/styles/theme.css?digest=abc", "../_static/favicon.png",
        "../_static/mathjax/es5/tex-mml-chtml.js", "../_images/fig.png"]


@pytest.mark.parametrize("page, url, expected", [
    ("chapters/02_forward.html", "03_backward.html#sec", ("chapters/03_backward.html", "sec")),
    ("chapters/02_forward.html", "#x", ("chapters/02_forward.html", "x")),
    ("chapters/02_forward.html", "", ("chapters/02_forward.html", "")),
    ("chapters/02_forward.html", "../index.html", ("index.html", "")),
    ("chapters/02_forward.html", "../_static/a.css?v=1", ("_static/a.css", "")),
    ("chapters/02_forward.html", "a%20b.html#c%20d", ("chapters/a b.html", "c d")),
    ("chapters/02_forward.html", "./", ("chapters", "")),
    ("index.html", "./", ("", "")),
    ("index.html", "../outside.html", ("../outside.html", "")),
    ("index.html", "https://example.org/x", None),
    ("index.html", "//cdn.example.org/x.js", None),
    ("index.html", "mailto:a@b.c", None),
    ("index.html", "javascript:void(0)", None),
    ("index.html", "data:image/png;base64,AAAA", None),
])
def test_resolve_link(page, url, expected):
    assert st.resolve_link(page, url) == expected


def test_absolute_links_are_refused():
    with pytest.raises(ValueError, match="relative links only"):
        st.resolve_link("index.html", "/chapters/02_forward.html")


def test_a_site_whose_links_resolve_passes(site):
    page = "chapters/02_forward.html"
    checked, failures = st.check_links(site, page, st.parse_page(PAGE), ids_from(site))
    assert failures == []
    # 9 distinct internal targets: 3 links of the body with 2 anchors, index, the download,
    # the stylesheet, the icon, MathJax and the image; external and mailto links not counted.
    assert checked == 9
    assert st.external_resources(st.parse_page(PAGE)) == []


@pytest.mark.parametrize("link, message", [
    ('<a href="04_inference.html">x</a>', "chapters/04_inference.html does not exist"),
    ('<a href="03_backward.html#no-such-section">x</a>', "has no id 'no-such-section'"),
    ('<a href="#missing">x</a>', "has no id 'missing'"),
    ('<img src="../_images/missing.png">', "_images/missing.png does not exist"),
    ('<a href="../../elsewhere.html">x</a>', "leaves the site"),
    ('<a href="/index.html">x</a>', "relative links only"),
])
def test_broken_links_are_reported(site, link, message):
    html = f'<html><body id="top">{link}</body></html>'
    _, failures = st.check_links(site, "chapters/02_forward.html", st.parse_page(html),
                                 ids_from(site))
    assert len(failures) == 1 and message in failures[0]


def test_a_folder_link_needs_its_index(site):
    html = '<a href="../_static/">x</a><a href="./">y</a>'
    _, failures = st.check_links(site, "chapters/02_forward.html", st.parse_page(html),
                                 ids_from(site))
    assert sorted(failures) == [
        "<a href='../_static/'>: _static/index.html does not exist",
        "<a href='./'>: chapters/index.html does not exist"]


@pytest.mark.parametrize("tag", [
    '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>',
    '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
    '<img src="http://example.org/a.png">',
    '<script src="//cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js"></script>',
])
def test_scripts_stylesheets_and_images_from_outside_are_reported(tag):
    failures = st.external_resources(st.parse_page(f"<html><head>{tag}</head></html>"))
    assert len(failures) == 1 and "from outside the site" in failures[0]


def test_summary_table_has_a_row_per_page_and_counts_errors():
    reports = [st.PageReport("index.html", "0/0", "1/1", 12, "-", "0/0/0", [], 0.42),
               st.PageReport("chapters/02_forward.html", "80/80", "5/5", 40, "1 (static)",
                             "4/7/0", ["console error: x", "image did not load: y"], 3.0)]
    table = st.format_summary(reports).splitlines()
    assert table[0].split() == ["page", "equations", "images", "links", "widgets", "plumbing",
                                "errors", "seconds"]
    assert set(table[1]) <= {"-", " "}
    assert table[2].split() == ["index.html", "0/0", "1/1", "12", "-", "0/0/0", "0", "0.4"]
    assert table[3].split() == ["chapters/02_forward.html", "80/80", "5/5", "40", "1", "(static)",
                                "4/7/0", "2", "3.0"]


def test_a_redirect_page_is_recognised_and_its_target_checked(site):
    html = '<html><head><meta http-equiv="Refresh" content="0; url=chapters/02_forward.html" /></head></html>'
    parsed = st.parse_page(html)
    assert parsed.redirect == "chapters/02_forward.html"
    assert st.check_links(site, "index.html", parsed, ids_from(site)) == (1, [])
    broken = st.parse_page(html.replace("02_forward", "99_missing"))
    _, failures = st.check_links(site, "index.html", broken, ids_from(site))
    assert failures == ["<meta refresh='chapters/99_missing.html'>: chapters/99_missing.html does not exist"]


def test_chromium_flags_keep_the_browser_off_the_network():
    for flag in ("--headless", "--no-sandbox", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"):
        assert flag in st.CHROMIUM_FLAGS


def test_main_without_a_site_says_to_build_it(tmp_path, capsys):
    assert st.main(["--site", str(tmp_path / "nothing")]) == 2
    assert "make book" in capsys.readouterr().err


def test_no_chapter_stores_widget_state():
    """The committed notebooks carry no widget state: the site does not use it (it shows a
    figure of each widget's default view; bnbook.site.html drops stored state from the pages),
    and it only bloats the notebooks and their diffs. Executing a notebook with nbclient
    stores it; remove ``metadata.widgets`` before committing."""
    import nbformat

    chapters = Path(__file__).resolve().parents[2] / "chapters"
    notebooks = sorted(chapters.glob("*.ipynb"))
    assert notebooks, f"no notebooks under {chapters}"
    stored = [p.name for p in notebooks if "widgets" in nbformat.read(p, 4).metadata]
    assert not stored, f"widget state stored in {stored}: remove metadata.widgets"


def test_a_page_whose_mathjax_never_settles_fails_instead_of_hanging(tmp_path):
    """A page whose ``MathJax.startup.promise`` never settles used to hang the browser test
    for ever (page.evaluate has no timeout). Now the wait is bounded and the failure names
    the page. Run in a child process with a deadline, so that a hang fails this test."""
    import subprocess
    import sys

    site = tmp_path / "site"
    write(site / "chapters/stuck.html",
          '<html><head><link rel="icon" href="../favicon.ico">'
          "<script>window.MathJax = {startup: {promise: new Promise(() => {})}};</script>"
          '</head><body><span class="math">\\(x\\)</span></body></html>')
    (site / "favicon.ico").write_bytes(b"\x00\x00\x01\x00" + bytes(20))
    script = ("import sys; from pathlib import Path; from bnbook.site import check as st\n"
              "reports, _ = st.run(Path(sys.argv[1]), Path(sys.argv[2]), wait_ms=2000)\n"
              "print('\\n'.join(f'{r.page}: {e}' for r in reports for e in r.errors))")
    done = subprocess.run([sys.executable, "-c", script, str(site), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("chapters/stuck.html: chapters/stuck.html: MathJax (MathJax.startup.promise) did "
            "not finish within 2 s") in done.stdout
