"""The browser test tested: pages with planted bugs, each of which it must catch.

``make site-test`` runs this before it checks the book (``python -m bnbook.site.selftest``).
It writes a small site next to the built one: a clean page, with the ingredients of a
chapter (inline and display math, an image stored at twice its display size, an internal link
and anchor, a table, a widget output followed by the captioned figure of its default view, an
icon, and what must not be mistaken for a bug: a folded code cell with an assert, a glue call
and a test marker, a folded solution with an assert, TeX inside a code block, a wide equation in a box that scrolls), and one
copy of it per planted bug (:data:`PLANTS`). :func:`bnbook.site.check.run` then checks that site in Chromium. The
self-test passes when the clean page passes and every planted page fails with a message that
names its bug; a browser test that stopped seeing a kind of fault would pass the book
without this.

The planted site uses the real site's ``_static/`` (through a symbolic link) for MathJax, so
``make book`` must have run.

    python -m bnbook.site.selftest --site _build/html --out _build/site-test/selftest
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bnbook.site import check as site_test

__all__ = ["PLANTS", "Plant", "page_html", "write_planted_site", "verdicts", "main"]


@dataclass(frozen=True)
class Plant:
    """One planted bug: its name, a phrase the browser test's message must contain, and what
    it changes on the clean page (extra ``head`` and ``body`` HTML, the widget's figure
    dropped, MathJax left out, the icon link left out)."""

    name: str
    phrase: str
    head: str = ""
    body: str = ""
    drop_figure: bool = False
    no_mathjax: bool = False
    no_icon: bool = False


def _cell(source: str, output: str = "", folded: bool = False) -> str:
    """A code cell as myst-nb writes it, optionally folded (``hide-input``)."""
    code = (f'<div class="cell_input"><div class="highlight"><pre>{source}</pre></div></div>')
    if folded:
        code = f"<details><summary>Show code cell source</summary>{code}</details>"
    out = (f'<div class="cell_output"><div class="output stream"><pre>{output}</pre></div></div>'
           if output else "")
    return f'<div class="cell docutils container">{code}{out}</div>'


# An equation about 1100 px wide, wider than the clean page's 700 px column.
_WIDE_TEX = " + ".join(f"\\gamma_{{{i}}} \\hat x_{{{i}}}" for i in range(1, 25))

PLANTS = (
    Plant("a link to a page that does not exist", "missing_page.html",
          body='<a href="missing_page.html">missing</a>'),
    Plant("a link to an anchor that does not exist", "no-such-anchor",
          body='<a href="clean.html#no-such-anchor">missing anchor</a>'),
    Plant("a script from a CDN", "cdn.example.org",
          head='<script src="https://cdn.example.org/lib.js"></script>'),
    Plant("an image that does not load", "missing.png",
          body='<img src="../_images/missing.png" alt="">'),
    Plant("an uncaught exception", "planted exception",
          body='<script>throw new Error("planted exception")</script>'),
    Plant("a console error", "planted console error",
          body='<script>console.error("planted console error")</script>'),
    Plant("TeX outside the math elements", "raw TeX delimiter",
          body=r"<p>left raw: \(y = \gamma \hat x + \beta\)</p>"),
    Plant("a TeX error", "TeX error",
          body=r'<span class="math notranslate nohighlight">\(\frac{1}\)</span>'),
    Plant("a Markdown table left as text", "Markdown table",
          body="<p>| method | m = 2 |<br>| :--- | ---: |<br>| BN | 65.0 |</p>"),
    Plant("a Markdown output as myst-nb leaves it unparsed", "Markdown table",
          body="<p>| method | m = 2 |\n| :\u2014 | \u2014: |\n| BN | 65.0 |</p>"),
    Plant("a widget output without its figure", "widget output", drop_figure=True),
    Plant("math without MathJax", "MathJax did not start", no_mathjax=True),
    Plant("a visible code input with a test marker", "with a test marker",
          body=_cell("# NBVAL_CHECK_OUTPUT\nprint(round(err, 3))")),
    Plant("a visible code input with an assert", "with an assert",
          body=_cell("err = abs(ours - theirs).max()\nassert err < 1e-10")),
    Plant("a visible code input with a glue call", "with a glue call",
          body=_cell('glue("fwd-err", err, display=False)')),
    Plant("a Markdown table in a cell's output", "Markdown table",
          body=_cell("print(markdown_table(rows))",
                     "| method | m = 2 |\n| :--- | ---: |\n| BN | 65.0 |")),
    Plant("a literal backslash before _ in typeset math", "literal backslash",
          body=r'<p><span class="math notranslate nohighlight">\(\text{running\_mean}\)</span></p>'),
    Plant("a display equation wider than the column, no scrollbar", "wider than the",
          body=f'<div class="math notranslate nohighlight">\\[{_WIDE_TEX}\\]</div>'),
    Plant("a display equation cut off by its box", "cut off by",
          body=f'<div style="overflow: hidden"><div class="math notranslate nohighlight">'
               f'\\[{_WIDE_TEX}\\]</div></div>'),
    Plant("a page that scrolls sideways at 390 px", "scrolls sideways",
          body='<p>See <code style="white-space: nowrap">'
               'bnbook.numpy_norms.batch_norm_inference_affine_for_channels_last</code>.</p>'),
    Plant("a page without a favicon", "declares no icon", no_icon=True),
    Plant("an image at 1x on a HiDPI screen", "below 2x",
          body='<img src="../_images/one-x.png" width="64" alt="a 1x image">'),
    Plant("an image distorted by its display size", "distorted",
          body='<img src="../_images/default-view.png" style="width: 64px; height: 20px" alt="">'),
    Plant("MathJax that never finishes", "did not finish within", no_mathjax=True,
          head="<script>window.MathJax = {startup: {promise: new Promise(() => {})}};</script>"),
)

#: How long the self-test waits for MathJax and images (the hanging plant waits this long).
WAIT_MS = 10_000

_WIDGET_VIEW = ('{"version_major": 2, "version_minor": 0, '
                '"model_id": "0123456789abcdef0123456789abcdef"}')


def page_html(plant: Plant | None = None, image: str = "default-view.png") -> str:
    """The clean page, or the clean page with ``plant``'s bug; it sits in ``chapters/``."""
    p = plant or Plant("", "")
    icon = "" if p.no_icon else '<link rel="icon" href="../favicon.ico">'
    mathjax = "" if p.no_mathjax else (
        '<script>window.MathJax = {options: {processHtmlClass: "math", '
        'ignoreHtmlClass: "page"}};</script>\n'
        '<script defer src="../_static/mathjax/es5/tex-mml-chtml.js"></script>')
    figure = "" if p.drop_figure else (
        f'<figure><img src="../_images/{image}" width="64" alt="the default view">'
        "<figcaption>The explorer's default view.</figcaption></figure>")
    folded = _cell('# NBVAL_CHECK_OUTPUT\nassert err < 1e-10\nglue("fwd-err", err)',
                   "0.0", folded=True)
    # A solution folded as sphinx-togglebutton folds it (hidden, no height), a checked cell in it.
    folded += ('<div class="solution admonition"><p class="admonition-title">Solution</p>'
               '<section style="visibility: hidden; height: 0; overflow: hidden">'
               + _cell("assert check_solution(answer)") + "</section></div>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{p.name or "clean page"}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
{icon}
{mathjax}
{p.head}
</head><body class="page"><main><article class="bd-article" style="max-width: 700px">
<section id="top"><h1>A page of the self-test</h1>
<p>Inline math <span class="math notranslate nohighlight">\\(\\mu_B\\)</span> and a display:</p>
<div class="math notranslate nohighlight">\\[\\hat x_i = \\frac{{x_i - \\mu_B}}
{{\\sqrt{{\\sigma_B^2 + \\epsilon}}}}\\]</div>
<p><a href="#top">this section</a>, <a href="clean.html#top">the clean page</a></p>
<table><thead><tr><th>method</th><th>m = 2</th></tr></thead>
<tbody><tr><td>BN</td><td>65.0</td></tr></tbody></table>
<div class="cell"><script type="{site_test.WIDGET_VIEW}">{_WIDGET_VIEW}</script></div>
{figure}
{folded}
<pre>\\text{{running\\_mean}} is how not to write it</pre>
<div style="overflow-x: auto"><div class="math notranslate nohighlight">\\[{_WIDE_TEX}\\]</div></div>
{p.body}
</section></article></main></body></html>
"""


def _page_name(i: int) -> str:
    return f"chapters/planted-{i:02d}.html"


def write_planted_site(root: Path, static: Path) -> dict[str, Plant | None]:
    """Write the clean page and one page per plant under ``root``, with ``_static`` a link to
    ``static`` (the built site's). Returns ``{page: plant}`` (``None`` for the clean page)."""
    import matplotlib.image
    import numpy as np

    from bnbook.site.html import write_favicon

    if not (static / "mathjax").is_dir():
        raise FileNotFoundError(f"no MathJax under {static}: run `make book` first")
    (root / "chapters").mkdir(parents=True)
    (root / "_images").mkdir()
    os.symlink(static.resolve(), root / "_static", target_is_directory=True)
    # Shown 64 px wide: the default view at twice that, the planted 1x image at that.
    matplotlib.image.imsave(root / "_images" / "default-view.png",
                            np.linspace(0, 1, 96 * 128 * 3).reshape(96, 128, 3))
    matplotlib.image.imsave(root / "_images" / "one-x.png",
                            np.linspace(0, 1, 48 * 64 * 3).reshape(48, 64, 3))
    write_favicon(root / "favicon.ico")
    pages: dict[str, Plant | None] = {"chapters/clean.html": None}
    pages.update({_page_name(i): plant for i, plant in enumerate(PLANTS, start=1)})
    for page, plant in pages.items():
        (root / page).write_text(page_html(plant), encoding="utf-8")
    return pages


def verdicts(pages: dict[str, Plant | None], errors: dict[str, list[str]]) -> list[tuple]:
    """``(page, bug, ok, first matching or first error)`` per page: the clean page is ok with
    no errors, a planted page when one of its errors contains the plant's phrase."""
    rows = []
    for page, plant in pages.items():
        errs = errors.get(page, [])
        if plant is None:
            rows.append((page, "(none: the clean page)", not errs, errs[0] if errs else ""))
            continue
        hits = [e for e in errs if plant.phrase in e]
        rows.append((page, plant.name, bool(hits), (hits or errs or ["not caught"])[0]))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnbook.site.selftest",
                                     description="Check that the browser test catches "
                                                 "planted bugs.")
    parser.add_argument("--site", type=Path, default=Path("_build/html"),
                        help="the built site, whose _static/ the planted pages use")
    parser.add_argument("--out", type=Path, default=Path("_build/site-test/selftest"))
    parser.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="bnbook-planted-") as tmp:
            pages = write_planted_site(Path(tmp), args.site / "_static")
            reports, seconds = site_test.run(Path(tmp), args.out, args.chromium, WAIT_MS)
    except (FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = verdicts(pages, {r.page: r.errors for r in reports})
    width = max(len(r[1]) for r in rows)
    for page, bug, ok, message in rows:
        print(f"{'ok    ' if ok else 'FAILED'} {bug:{width}s}  {message[:90]}")
    caught = sum(ok for page, _, ok, _ in rows if pages[page] is not None)
    clean_ok = rows[0][2]
    print(f"\nself-test: {caught} of {len(PLANTS)} planted bugs caught, the clean page "
          f"{'passed' if clean_ok else 'FAILED'} ({seconds:.0f} s)")
    return 0 if clean_ok and caught == len(PLANTS) else 1


if __name__ == "__main__":
    sys.exit(main())
