"""Sphinx extension of the book's build: no thebe scripts on the pages.

``make site-test`` opens every page in Chromium and fails on any console error.
**sphinx-thebe**, which Jupyter Book 1 always loads, adds its configuration script once per
reading phase; the pages then declare ``const THEBE_JS_URL`` twice, an uncaught
``SyntaxError``, and the script names thebe's bundle on unpkg.com. Thebe runs code cells on a
remote kernel (a Binder), which this book does not offer (it has no public repository
address, so no launch buttons), so its scripts are dropped from every page.

(The other error a first visit logged, pydata-sphinx-theme's "Got invalid theme mode", is
fixed in ``_config.yml``: ``html_context: default_mode: auto``, the mode it fell back to.)

Enabled in ``_config.yml`` (``sphinx.extra_extensions``).
"""

from __future__ import annotations

__all__ = ["is_thebe_script", "setup"]


def is_thebe_script(script) -> bool:
    """Whether a page script (Sphinx's ``_JavaScript``: ``filename``, and ``attributes``
    holding an inline script's ``body``; or a plain file name) is one of sphinx-thebe's."""
    name = str(getattr(script, "filename", script) or "")
    body = getattr(script, "attributes", {}).get("body", "") or ""
    return name.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body or "/thebe@" in name


def _drop_thebe_scripts(app, pagename, templatename, context, doctree) -> None:
    if "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if not is_thebe_script(s)]


def setup(app):
    app.connect("html-page-context", _drop_thebe_scripts)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
