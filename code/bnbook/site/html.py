"""Sphinx extension of the book's build: no thebe scripts and no stored widget state on the
pages.

``make site-test`` opens every page in Chromium and fails on any console error.
**sphinx-thebe**, which Jupyter Book 1 always loads, adds its configuration script once per
reading phase; the pages then declare ``const THEBE_JS_URL`` twice, an uncaught
``SyntaxError``, and the script names thebe's bundle on unpkg.com. Thebe runs code cells on a
remote kernel (a Binder), which this book does not offer (it has no public repository
address, so no launch buttons), so its scripts are dropped from every page.

(The other error a first visit logged, pydata-sphinx-theme's "Got invalid theme mode", is
fixed in ``_config.yml``: ``html_context: default_mode: auto``, the mode it fell back to.)

The website shows each explorer (:mod:`bnbook.widgets`) as the captioned figure of its default
view that follows it in the chapter: without a kernel, stored controls would move and redraw
nothing. Executing a notebook (myst-nb does, through nbclient) may store the widgets' state,
and myst-nb then adds it to the page with the widget manager (``nb_ipywidgets_js``), which
draws those dead controls and, in the pinned html-manager 1.0.14, typesets their labels
through MathJax 2's ``MathJax.Hub.Queue``: an uncaught ``TypeError`` under the site's MathJax
3, and icon fonts looked for next to the page. Both the state and the manager's scripts are
therefore dropped from every page; the widget-view outputs stay inert in the page.

The site's icon (``html_favicon`` in ``_config.yml``: ``code/bnbook/site/static/favicon.ico``, drawn by
:func:`draw_favicon`) is linked from every page by Sphinx; browsers also ask for
``/favicon.ico`` at the root, so the build copies it there too (:func:`_icon_at_root`).

The chapters of the browser edition (:data:`bnbook.site.lite.CHAPTERS`) get a "Run this page in
your browser" link under their title, to their copy and their student edition's in the Lite
build that ``make book`` writes into ``lite/`` (:func:`lite_links`; the words are in
``lite_links.html``). The explorers are live there; on the page they stay the figure of their
default view.

Enabled in ``_config.yml`` (``sphinx.extra_extensions``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from myst_nb.core.render import WIDGET_STATE_MIMETYPE

__all__ = ["WIDGET_STATE_TYPE", "STATIC", "FAVICON", "FAVICON_SIZES", "draw_favicon",
           "write_favicon", "is_thebe_script", "is_widget_state_script", "lite_links", "setup"]

#: The book's stylesheet and icon, served from ``_static/`` (``_config.yml``).
STATIC = Path(__file__).resolve().parent / "static"
FAVICON = STATIC / "favicon.ico"
#: The sizes stored in the icon (a browser tab, a bookmark, a HiDPI tab).
FAVICON_SIZES = (16, 32, 48)
_ICON_BLUE = (23, 109, 232)    # the theme's primary colour (--pst-color-primary)

#: The script type myst-nb gives a notebook's stored widget state (its own constant).
WIDGET_STATE_TYPE = WIDGET_STATE_MIMETYPE


def is_thebe_script(script) -> bool:
    """Whether a page script (Sphinx's ``_JavaScript``: ``filename``, and ``attributes``
    holding an inline script's ``body``; or a plain file name) is one of sphinx-thebe's."""
    name = str(getattr(script, "filename", script) or "")
    body = getattr(script, "attributes", {}).get("body", "") or ""
    return name.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body or "/thebe@" in name


def is_widget_state_script(script) -> bool:
    """Whether a page script holds a notebook's stored widget state."""
    return getattr(script, "attributes", {}).get("type") == WIDGET_STATE_TYPE


def _drop_thebe_scripts(app, pagename, templatename, context, doctree) -> None:
    if "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if not is_thebe_script(s)]


def _drop_widget_state(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files", [])
    if not any(is_widget_state_script(s) for s in scripts):
        return
    paths = getattr(app.config, "nb_ipywidgets_js", None) or ()
    manager = {name for p in paths for name in (p, f"_static/{p}")}   # as Sphinx lists them
    context["script_files"] = [s for s in scripts if not is_widget_state_script(s)
                               and str(getattr(s, "filename", s) or "") not in manager]


def lite_links(pagename: str) -> str | None:
    """The browser edition's links for the page ``pagename`` (``chapters/02_forward``), relative
    to it, or ``None`` for a page the edition does not hold."""
    from bnbook.site.lite import CHAPTERS

    folder, _, name = pagename.rpartition("/")
    if folder != "chapters" or name not in CHAPTERS:
        return None
    lite = "../" * pagename.count("/") + "lite/"
    template = (Path(__file__).resolve().parent / "lite_links.html").read_text(encoding="utf-8")
    return (template.replace("{{notebook}}", f"{lite}notebooks/index.html?path={name}.ipynb")
            .replace("{{student}}", f"{lite}notebooks/index.html?path={name}_student.ipynb")
            .replace("{{start}}", f"{lite}start.html"))


def _add_lite_links(app, pagename, templatename, context, doctree) -> None:
    block = lite_links(pagename)
    if block and "</h1>" in context.get("body", ""):
        context["body"] = context["body"].replace("</h1>", "</h1>\n" + block, 1)


def draw_favicon(size: int = 48):
    """The icon: the standard normal density, white on the theme's blue, as a
    ``size`` x ``size`` RGBA ``PIL.Image`` (drawn at 4x and reduced, so its edges are smooth)."""
    import math

    from PIL import Image, ImageDraw

    big = 4 * size
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, big - 1, big - 1), radius=big // 5, fill=_ICON_BLUE + (255,))
    left, right, base, top = 0.12 * big, 0.88 * big, 0.80 * big, 0.20 * big
    curve = [(left + (right - left) * k / 64,
              base - (base - top) * math.exp(-0.5 * (6 * k / 64 - 3) ** 2)) for k in range(65)]
    draw.polygon(curve + [(right, base), (left, base)], fill=(255, 255, 255, 255))
    return image.resize((size, size), Image.Resampling.LANCZOS)


def write_favicon(path: Path = FAVICON) -> None:
    """Write the icon at :data:`FAVICON_SIZES` into ``path`` (an ``.ico``), atomically.
    ``code/bnbook/site/static/favicon.ico`` is this function's output, checked in."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".favicon-", suffix=".ico")
    os.close(fd)
    try:
        draw_favicon(max(FAVICON_SIZES)).save(tmp, format="ICO",
                                              sizes=[(s, s) for s in FAVICON_SIZES])
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _icon_at_root(app, exception) -> None:
    """Copy the configured ``.ico`` favicon to the site's root as ``favicon.ico``."""
    favicon = getattr(app.config, "html_favicon", None)
    if exception is not None or app.builder.format != "html" or not favicon:
        return
    source = Path(app.confdir) / favicon
    if source.suffix.lower() == ".ico" and source.is_file():
        shutil.copyfile(source, Path(app.outdir) / "favicon.ico")


def setup(app):
    app.connect("html-page-context", _drop_thebe_scripts)
    app.connect("html-page-context", _add_lite_links)
    app.connect("build-finished", _icon_at_root)
    # After myst-nb adds a page's scripts (its handler runs at the default priority, 500).
    app.connect("html-page-context", _drop_widget_state, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
