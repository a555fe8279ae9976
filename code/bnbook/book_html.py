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

Enabled in ``_config.yml`` (``sphinx.extra_extensions``).
"""

from __future__ import annotations

from myst_nb.core.render import WIDGET_STATE_MIMETYPE

__all__ = ["WIDGET_STATE_TYPE", "is_thebe_script", "is_widget_state_script", "setup"]

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


def setup(app):
    app.connect("html-page-context", _drop_thebe_scripts)
    # After myst-nb adds a page's scripts (its handler runs at the default priority, 500).
    app.connect("html-page-context", _drop_widget_state, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
