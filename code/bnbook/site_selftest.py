"""The browser test tested: pages with planted bugs, each of which it must catch.

``make site-test`` runs this before it checks the book (``python -m bnbook.site_selftest``).
It writes a small site next to the built one: a clean page, with the ingredients of a
chapter (inline and display math, an image, an internal link and anchor, a table, a widget
output followed by the captioned figure of its default view), and one copy of it per planted
bug (:data:`PLANTS`). :func:`bnbook.site_test.run` then checks that site in Chromium. The
self-test passes when the clean page passes and every planted page fails with a message that
names its bug; a browser test that stopped seeing a kind of fault would pass the book
without this.

The planted site uses the real site's ``_static/`` (through a symbolic link) for MathJax, so
``make book`` must have run.

    python -m bnbook.site_selftest --site _build/html --out _build/site-test/selftest
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bnbook import site_test

__all__ = ["PLANTS", "Plant", "page_html", "write_planted_site", "verdicts", "main"]


@dataclass(frozen=True)
class Plant:
    """One planted bug: its name, a phrase the browser test's message must contain, and what
    it changes on the clean page (extra ``head`` and ``body`` HTML, the widget's figure
    dropped, MathJax left out)."""

    name: str
    phrase: str
    head: str = ""
    body: str = ""
    drop_figure: bool = False
    no_mathjax: bool = False


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
)

_WIDGET_VIEW = ('{"version_major": 2, "version_minor": 0, '
                '"model_id": "0123456789abcdef0123456789abcdef"}')


def page_html(plant: Plant | None = None, image: str = "default-view.png") -> str:
    """The clean page, or the clean page with ``plant``'s bug; it sits in ``chapters/``."""
    p = plant or Plant("", "")
    mathjax = "" if p.no_mathjax else (
        '<script>window.MathJax = {options: {processHtmlClass: "math", '
        'ignoreHtmlClass: "page"}};</script>\n'
        '<script defer src="../_static/mathjax/es5/tex-mml-chtml.js"></script>')
    figure = "" if p.drop_figure else (
        f'<figure><img src="../_images/{image}" alt="the default view">'
        "<figcaption>The explorer's default view.</figcaption></figure>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{p.name or "clean page"}</title>
{mathjax}
{p.head}
</head><body class="page"><section id="top"><h1>A page of the self-test</h1>
<p>Inline math <span class="math notranslate nohighlight">\\(\\mu_B\\)</span> and a display:</p>
<div class="math notranslate nohighlight">\\[\\hat x_i = \\frac{{x_i - \\mu_B}}
{{\\sqrt{{\\sigma_B^2 + \\epsilon}}}}\\]</div>
<p><a href="#top">this section</a>, <a href="clean.html#top">the clean page</a></p>
<table><thead><tr><th>method</th><th>m = 2</th></tr></thead>
<tbody><tr><td>BN</td><td>65.0</td></tr></tbody></table>
<div class="cell"><script type="{site_test.WIDGET_VIEW}">{_WIDGET_VIEW}</script></div>
{figure}
{p.body}
</section></body></html>
"""


def _page_name(i: int) -> str:
    return f"chapters/planted-{i:02d}.html"


def write_planted_site(root: Path, static: Path) -> dict[str, Plant | None]:
    """Write the clean page and one page per plant under ``root``, with ``_static`` a link to
    ``static`` (the built site's). Returns ``{page: plant}`` (``None`` for the clean page)."""
    import matplotlib.image
    import numpy as np

    if not (static / "mathjax").is_dir():
        raise FileNotFoundError(f"no MathJax under {static}: run `make book` first")
    (root / "chapters").mkdir(parents=True)
    (root / "_images").mkdir()
    os.symlink(static.resolve(), root / "_static", target_is_directory=True)
    matplotlib.image.imsave(root / "_images" / "default-view.png",
                            np.linspace(0, 1, 48 * 64 * 3).reshape(48, 64, 3))
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
    parser = argparse.ArgumentParser(prog="python -m bnbook.site_selftest",
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
            reports, seconds = site_test.run(Path(tmp), args.out, args.chromium)
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
