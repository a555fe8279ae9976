"""The website, tested in a real browser: ``make site-test`` (``python -m bnbook.site.check``).

It serves the built site (``_build/html``, from ``make book``) on a free localhost port,
opens every page in Debian's Chromium (headless, driven by Playwright with
``executable_path``; Playwright's own browser download is never used), and checks on each:

* **no console errors**, no uncaught exceptions, no failed or refused request: a request to
  any other host than the local server is blocked and counts as a failure, so a page that
  needs the network (a CDN script, a web font) fails here as it would offline;
* **every equation typeset**: after MathJax's ``startup.promise``, each Sphinx math element
  holds a MathJax rendering, none is a TeX error (``mjx-merror``), no raw ``\\(``,
  ``\\[``, ``$$`` or TeX command (``\\mathrm``) is left in the page's text outside code,
  and no typeset text shows a backslash escape (``\\text{running\\_mean}``);
* **every table rendered**: no Markdown table's delimiter row (``| :--- | ---: |``) is left in
  the page's text outside code or in a cell's output (``print(markdown_table(...))``);
* **no plumbing**: no visible code input shows an nbval marker, an ``assert`` or a glue
  call (a folded ``hide-input`` cell or a solution's fold is not visible);
* **every image loaded** (``naturalWidth > 0``), with at least twice the pixels of its
  displayed width, and not distorted;
* **the layout fits**, at 1280 and at 390 px wide (:data:`site_page.VIEWPORTS`): no page
  scrolls sideways, and no equation is wider than the text column or cut off by its box
  unless it sits in a box that scrolls;
* **a favicon**: every page declares one, and the site's root has ``favicon.ico``;
* **widgets**: on a page with widget outputs, either the widget manager drew them (when the
  notebook stored widget state) or, as in this book, each widget output is followed by a
  loaded, captioned figure of its default view; no "Failed to display Jupyter Widget" or
  similar text shows;
* **every internal link resolves**: relative, inside the site, to an existing file, and to an
  existing ``id`` when it names one; scripts, stylesheets and images are never ``http(s)``.

The pages are every ``.html`` file under the site except Sphinx's template fragments in
``_static/`` (and ``_sources/``, ``_downloads/``, ``_images/``, which hold no pages):
the chapters, ``index.html``, ``genindex.html`` and ``search.html``. A full-page screenshot
of each at each width goes to ``_build/site-test/screenshots/<width>/``. Every wait has a
limit (a page whose MathJax never finishes fails, named, instead of hanging the test). The
summary table is printed (its ``plumbing`` column counts visible markers/asserts/glue calls),
and the run exits 1 with the list of failures if any check failed.

The link and page logic is plain Python on HTML text (tested in ``tests/site/test_check.py``);
:func:`check_page_in_browser` holds what needs the browser, and :mod:`bnbook.site.page_checks` the
in-page scripts and the verdicts on what they measure.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import posixpath
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from bnbook.site import page_checks as site_page

__all__ = ["CHROMIUM_FLAGS", "SKIPPED_FOLDERS", "site_pages", "parse_page", "ParsedPage",
           "resolve_link", "check_links", "external_resources", "PageReport",
           "format_summary", "serve", "check_page_in_browser", "run", "main"]

#: Chromium's flags: headless as root in a container, nothing fetched in the background.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync")
#: Folders of the built site that hold no pages of the book: assets, and ``lite/``, the browser
#: edition (JupyterLite's apps, tested by :mod:`bnbook.lite_test`, ``make lite-test``).
SKIPPED_FOLDERS = ("_static", "_sources", "_downloads", "_images", "lite")
#: Text that a failed widget leaves on a page (ipywidgets' and the html-manager's messages,
#: and the plain-text repr of a widget shown instead of the widget).
WIDGET_ERROR_TEXT = ("Failed to display Jupyter Widget", "Error displaying widget",
                     "Loading widget...", "VBox(children=", "HBox(children=", "Image(value=")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: Where a URL leaves the site: any scheme or a protocol-relative ``//host``.
EXTERNAL_PREFIXES = ("http:", "https:", "//", "ftp:")
NON_NAVIGATING = ("mailto:", "javascript:", "data:", "tel:")
#: Tags and attributes that make the browser fetch something when the page loads.
RESOURCE_ATTRS = {"script": "src", "img": "src", "iframe": "src", "source": "src",
                  "video": "src", "audio": "src", "embed": "src"}
FETCHED_LINK_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon",
                     "shortcut", "apple-touch-icon", "manifest"}


# --- pages and links: plain Python on HTML text -----------------------------------------------

def site_pages(root: Path) -> list[str]:
    """The site's pages, as paths relative to ``root`` with ``/``, sorted."""
    root = Path(root)
    pages = []
    for path in root.rglob("*.html"):
        rel = path.relative_to(root).as_posix()
        if rel.split("/", 1)[0] not in SKIPPED_FOLDERS:
            pages.append(rel)
    return sorted(pages)


@dataclass
class ParsedPage:
    """What the checks need from one page's HTML.

    Attributes:
        ids: every ``id`` (and ``name`` of an ``<a>``), the targets of ``#fragment`` links.
        links: ``(tag, attribute, value)`` of every ``href``/``src`` in the page.
        resources: ``(tag, url)`` of what the browser fetches on load (scripts, stylesheets,
            icons, images, frames).
        math: number of Sphinx math elements (``class="math"``).
        widget_views, widget_states: numbers of widget-view and widget-state scripts.
        redirect: the URL of a ``<meta http-equiv="refresh">`` (the site's root
            ``index.html`` is one, to the first page), or ``""``.
        icon: the ``href`` of the page's ``<link rel="icon">`` (its favicon), or ``""``.
    """

    ids: set[str] = field(default_factory=set)
    links: list[tuple[str, str, str]] = field(default_factory=list)
    resources: list[tuple[str, str]] = field(default_factory=list)
    math: int = 0
    widget_views: int = 0
    widget_states: int = 0
    redirect: str = ""
    icon: str = ""


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.page = ParsedPage()

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        page = self.page
        if "id" in a:
            page.ids.add(a["id"])
        if tag == "a" and "name" in a:
            page.ids.add(a["name"])
        for attr in ("href", "src"):
            if attr in a:
                page.links.append((tag, attr, a[attr]))
        if RESOURCE_ATTRS.get(tag) in a and a[RESOURCE_ATTRS[tag]]:
            page.resources.append((tag, a[RESOURCE_ATTRS[tag]]))
        rels = set(a.get("rel", "").lower().split())
        if tag == "link" and rels & FETCHED_LINK_RELS:
            page.resources.append((tag, a.get("href", "")))
        if tag == "link" and "icon" in rels and not page.icon:
            page.icon = a.get("href", "")
        if "math" in a.get("class", "").split():
            page.math += 1
        if tag == "script" and a.get("type") == WIDGET_VIEW:
            page.widget_views += 1
        if tag == "script" and a.get("type") == WIDGET_STATE:
            page.widget_states += 1
        if tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            _, _, url = a.get("content", "").partition("url=")
            page.redirect = url.strip().strip("'\"")
            page.links.append(("meta", "refresh", page.redirect))


def parse_page(html: str) -> ParsedPage:
    """Parse one page's HTML (see :class:`ParsedPage`)."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.page


def resolve_link(page: str, url: str) -> tuple[str, str] | None:
    """Where a link of ``page`` points inside the site: ``(target page, fragment)``.

    Args:
        page: the linking page, relative to the site root (``chapters/02_forward.html``).
        url: the ``href``/``src`` value.

    Returns:
        ``None`` for a link that leaves the site or does not navigate (``https:``,
        ``mailto:``, ...); otherwise the target's path relative to the site root (``""`` is
        the root folder) and the fragment (``""`` for none). A target outside the root is
        returned as it is (``..`` or starting with ``../``) so that the caller reports it.

    Raises:
        ValueError: for an absolute path (``/chapters/x.html``), which breaks as soon as the
            site is served from a sub-folder or opened from disk.
    """
    if url.lower().startswith(EXTERNAL_PREFIXES + NON_NAVIGATING):
        return None
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return None
    if parts.path.startswith("/"):
        raise ValueError(f"absolute link {url!r}: the site must use relative links only")
    fragment = unquote(parts.fragment)
    if not parts.path:
        return page, fragment
    target = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(parts.path)))
    return ("" if target == "." else target), fragment


def check_links(root: Path, page: str, parsed: ParsedPage,
                ids_of: Callable[[str], set[str]]) -> tuple[int, list[str]]:
    """Check every internal link of ``page``; return (number checked, failures).

    ``ids_of(target)`` returns the set of ids of a target page (cached by the caller).
    """
    failures, seen = [], set()
    for tag, attr, url in parsed.links:
        try:
            resolved = resolve_link(page, url)
        except ValueError as exc:
            failures.append(str(exc))
            continue
        if resolved is None or resolved in seen:
            continue
        seen.add(resolved)
        target, fragment = resolved
        if target.startswith("../") or target == "..":
            failures.append(f"<{tag} {attr}={url!r}> leaves the site")
            continue
        path = root / target
        if path.is_dir():                    # a folder link is served as its index.html
            path, target = path / "index.html", posixpath.join(target, "index.html").lstrip("/")
        if not path.is_file():
            failures.append(f"<{tag} {attr}={url!r}>: {target} does not exist")
        elif fragment and target.endswith(".html") and fragment not in ids_of(target):
            failures.append(f"<{tag} {attr}={url!r}>: {target} has no id {fragment!r}")
    return len(seen), failures


def external_resources(parsed: ParsedPage) -> list[str]:
    """Failures for scripts, stylesheets, icons and images fetched from outside the site."""
    return [f"<{tag}> loads {url} from outside the site"
            for tag, url in parsed.resources if url.lower().startswith(EXTERNAL_PREFIXES)]


@dataclass
class PageReport:
    """What was checked on one page, and what failed."""

    page: str
    equations: str = "-"
    images: str = "-"
    links: int = 0
    widgets: str = "-"
    plumbing: str = "-"
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def format_summary(reports: list[PageReport]) -> str:
    """The summary table: one row per page, the failures counted in the last column.
    ``plumbing`` counts the visible code lines with a test marker, an assert and a glue call."""
    header = ("page", "equations", "images", "links", "widgets", "plumbing", "errors", "seconds")
    rows = [header] + [(r.page, r.equations, r.images, str(r.links), r.widgets, r.plumbing,
                        str(len(r.errors)), f"{r.seconds:.1f}") for r in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- the browser ------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` on a free port of 127.0.0.1 in a daemon thread; return (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _widget_failures(result: dict, parsed: ParsedPage) -> list[str]:
    failures = [f"widget error text on the page: {t!r}" for t in WIDGET_ERROR_TEXT
                if t in result["text"]]
    if result["views"] and parsed.widget_states:
        if not result["rendered"]:
            failures.append("the page stores widget state but no widget was rendered")
    elif result["fallback"] < result["views"]:
        failures.append(f"{result['views'] - result['fallback']} widget output(s) without a "
                        f"loaded, captioned figure of their default view after them")
    return failures


def _content_failures(result: dict, parsed: ParsedPage, report: PageReport) -> list[str]:
    """The failures of one page's :data:`site_page.CONTENT_SCRIPT` result; fills ``report``'s
    columns."""
    report.equations = f"{result['typeset']}/{result['math']}"
    report.images = f"{result['images'] - len(result['broken'])}/{result['images']}"
    report.widgets = (f"{result['views']} ({'rendered' if parsed.widget_states else 'static'})"
                      if result["views"] else "-")
    plumbing = site_page.plumbing_lines(result["codeInputs"])
    report.plumbing = "/".join(str(len(lines)) for lines in plumbing.values())
    errors = []
    if result["typeset"] < result["math"]:
        errors.append(f"{result['math'] - result['typeset']} equation(s) not typeset")
    if result["texErrors"]:
        errors.append(f"{result['texErrors']} TeX error(s) (mjx-merror)")
    errors.extend(f"raw TeX delimiter {d!r} left in the text" for d in result["raw"])
    errors.extend(f"raw TeX command left in the text: {c!r}"
                  for c in site_page.raw_tex_commands(result["pageText"]))
    escapes = site_page.math_escapes(result["mathTexts"])
    if escapes:
        errors.append(f"literal backslash in typeset math, in {', '.join(map(repr, escapes))} "
                      f"(inside \\text{{}} write _ , or \\_ outside it)")
    tables = site_page.markdown_table_rows([result["pageText"]] + result["outputs"])
    if tables:
        errors.append(f"{tables} Markdown table(s) left unrendered (as text or in an output)")
    for kind, lines in plumbing.items():
        if lines:
            errors.append(f"{len(lines)} visible code line(s) with {kind} (move it into a "
                          f"remove-input or remove-cell cell): {lines[0]!r}")
    errors.extend(f"image did not load: {src}" for src in result["broken"])
    errors.extend(_widget_failures(result, parsed))
    return errors


def check_page_in_browser(context, base_url: str, page_path: str, parsed: ParsedPage,
                          screenshots: Path, report: PageReport,
                          wait_ms: int = site_page.WAIT_MS) -> None:
    """Open one page, run the in-page checks at each width of :data:`site_page.VIEWPORTS`,
    save a full-page screenshot at each (``screenshots/<width>/``); record into ``report``.
    Every wait is bounded (``wait_ms``), and its message names the page."""
    name = page_path.replace("/", "__")[:-len(".html")] + ".png"
    page = context.new_page()
    errors = report.errors
    page.on("console", lambda m: m.type == "error" and errors.append(f"console error: {m.text}"))
    page.on("pageerror", lambda e: errors.append(f"uncaught exception: {e}"))
    page.on("requestfailed", lambda r: errors.append(
        f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and errors.append(
        f"HTTP {r.status} for {r.url}"))
    page.set_default_timeout(wait_ms)
    try:
        page.goto(base_url + page_path, wait_until="load", timeout=60_000)
        if parsed.redirect:
            target, _ = resolve_link(page_path, parsed.redirect)
            page.wait_for_url(base_url + target, wait_until="load", timeout=60_000)
            report.widgets = f"redirect to {target}"
            return
        if not parsed.icon:
            errors.append("the page declares no icon (<link rel=\"icon\">): set html_favicon")
        result = page.evaluate(site_page.CONTENT_SCRIPT, wait_ms)
        if "error" in result:
            errors.append(f"{page_path}: {result['error']}")
            return
        errors.extend(_content_failures(result, parsed, report))
        for width in site_page.VIEWPORTS:
            page.set_viewport_size({"width": width, "height": 900})
            layout = page.evaluate(site_page.LAYOUT_SCRIPT)
            errors.extend(site_page.layout_failures(layout, width))
            if width == site_page.DENSITY_VIEWPORT:
                errors.extend(site_page.density_failures(layout["images"]))
            shot = screenshots / str(width) / name
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True, timeout=60_000)
    except Exception as exc:  # a timeout or a crash of the page is a failure of that page
        errors.append(f"{page_path}: {type(exc).__name__}: {exc}")
    finally:
        page.close()


def _block_outside(base_url: str, report_for: Callable):
    def handler(route):
        url = route.request.url
        if url.startswith(base_url):
            route.continue_()
        else:
            report_for(route.request).append(f"blocked request to outside the site: {url}")
            route.abort("blockedbyclient")
    return handler


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium executable: ``explicit``, ``$BNBOOK_CHROMIUM``, or ``chromium`` on PATH."""
    for candidate in (explicit, os.environ.get("BNBOOK_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise FileNotFoundError("Chromium not found: install Debian's package (apt-get install "
                            "chromium; .ci/run does this) or set BNBOOK_CHROMIUM")


def run(site: Path, out: Path, chromium: str | None = None,
        wait_ms: int = site_page.WAIT_MS) -> tuple[list[PageReport], float]:
    """Check every page of ``site``; screenshots under ``out/screenshots/<width>/``. A page
    gets ``wait_ms`` for its math and images. Returns the reports and the wall time in s."""
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    site = Path(site)
    pages = site_pages(site)
    reports = {p: PageReport(p) for p in pages}
    parsed = {p: parse_page((site / p).read_text(encoding="utf-8")) for p in pages}
    ids = functools.lru_cache(maxsize=None)(
        lambda target: parsed[target].ids if target in parsed
        else parse_page((site / target).read_text(encoding="utf-8")).ids)
    for p in pages:
        reports[p].links, failures = check_links(site, p, parsed[p], ids)
        reports[p].errors.extend(failures + external_resources(parsed[p]))
    root_page = "index.html" if "index.html" in reports else (pages[0] if pages else None)
    if root_page:
        reports[root_page].errors.extend(site_page.favicon_failures(site))
    server, base_url = serve(site)
    current = {"page": pages[0] if pages else ""}
    try:
        with tempfile.TemporaryDirectory(prefix="bnbook-chromium-") as profile, \
                sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=find_chromium(chromium), headless=True,
                args=list(CHROMIUM_FLAGS), viewport={"width": 1280, "height": 900})
            context.route("**/*", _block_outside(base_url, lambda r: reports[current["page"]].errors))
            for p in pages:
                current["page"] = p
                page_start = time.perf_counter()
                check_page_in_browser(context, base_url, p, parsed[p], Path(out) / "screenshots",
                                      reports[p], wait_ms)
                reports[p].seconds = time.perf_counter() - page_start
            context.close()
    finally:
        server.shutdown()
        server.server_close()
    return list(reports.values()), time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnbook.site.check",
                                     description="Test the built website in headless Chromium.")
    parser.add_argument("--site", type=Path, default=Path("_build/html"))
    parser.add_argument("--out", type=Path, default=Path("_build/site-test"))
    parser.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"error: no site at {args.site}: run `make book` first", file=sys.stderr)
        return 2
    try:
        reports, seconds = run(args.site, args.out, args.chromium)
    except (FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(reports))
    failed = [r for r in reports if r.errors]
    print(f"\n{len(reports)} pages checked in {seconds:.0f} s; screenshots in "
          f"{args.out / 'screenshots'}")
    if failed:
        print(f"\nFAILED: {sum(len(r.errors) for r in failed)} problem(s) on {len(failed)} page(s):")
        for r in failed:
            for error in r.errors:
                print(f"  {r.page}: {error}")
        return 1
    print("all pages passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
