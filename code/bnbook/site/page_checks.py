"""What a page shows a reader, checked in the browser by :mod:`bnbook.site.check`.

Two scripts run in each page: :data:`CONTENT_SCRIPT` once (MathJax, images, widgets, and the
texts the plain checks below read), and :data:`LAYOUT_SCRIPT` at each viewport width of
:data:`VIEWPORTS` (what sticks out of the page or of its box). The browser only measures and
collects; the verdicts are plain Python on what it returns (tested in
``tests/site/test_page_checks.py``):

* :func:`plumbing_lines` - test machinery in a visible code input (an nbval marker, an
  ``assert``, a glue call); an input folded away (``hide-input``, a solution's fold) or
  removed (``remove-input``, ``remove-cell``) is not visible;
* :func:`markdown_table_rows` - a Markdown table's delimiter row in a cell's output (a table
  printed as text instead of rendered);
* :func:`math_escapes` - a literal backslash in typeset text (``\\text{running\\_mean}``:
  MathJax leaves ``\\_`` inside ``\\text`` as it is, and the reader sees the backslash);
* :func:`layout_failures` - an equation wider than the text column or than a box that clips
  it, with no scrollbar to reach the rest, and a page that scrolls sideways;
* :func:`density_failures` - an image with fewer than twice as many pixels as it is shown
  wide (soft on a HiDPI screen);
* :func:`favicon_failures` - no ``favicon.ico`` at the site's root, or a page that declares no
  icon.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["VIEWPORTS", "DENSITY_VIEWPORT", "WAIT_MS", "CONTENT_SCRIPT", "LAYOUT_SCRIPT",
           "PLUMBING", "plumbing_lines", "markdown_table_rows", "raw_tex_commands", "math_escapes",
           "layout_failures", "density_failures", "favicon_failures"]

#: The widths every page is checked at: a laptop and a phone (CSS pixels).
VIEWPORTS = (1280, 390)
#: Where images are measured against their pixels (the widest, where they are shown largest).
DENSITY_VIEWPORT = 1280
#: How long the page may take to typeset its math or load an image, in milliseconds.
WAIT_MS = 30_000
#: An image must have at least this many pixels per CSS pixel it is shown at.
MIN_DENSITY = 2.0

#: Test machinery that a visible code input must not show: (kind, pattern of a line).
PLUMBING = (
    ("a test marker", re.compile(r"NBVAL_[A-Z_]+")),
    ("an assert", re.compile(r"(?:^|[;:])\s*assert\b")),
    ("a glue call", re.compile(r"(?<!def )\bglue(?:_\w+)?\s*\(")),
)
_DELIMITER_ROW = re.compile(r"^\s*\|(\s*:?[-\u2013\u2014]+:?\s*\|)+\s*$")
# A backslash MathJax did not interpret: before a letter or one of TeX's escaped characters.
_TEX_COMMAND = re.compile(r"\\(?:[A-Za-z]{2,})\b")
_MATH_ESCAPE = re.compile(r"\\[A-Za-z_{}$%&#]")


def plumbing_lines(code_inputs: list[str]) -> dict[str, list[str]]:
    """The lines of visible code inputs that show test machinery, by kind (see
    :data:`PLUMBING`): ``{"a test marker": [...], "an assert": [...], "a glue call": [...]}``."""
    found: dict[str, list[str]] = {kind: [] for kind, _ in PLUMBING}
    for text in code_inputs:
        for line in text.splitlines():
            for kind, pattern in PLUMBING:
                if pattern.search(line):
                    found[kind].append(line.strip())
    return found


def markdown_table_rows(texts: list[str]) -> int:
    """How many Markdown table delimiter rows (``| :--- | ---: |``) the texts hold."""
    return sum(bool(_DELIMITER_ROW.match(line)) for t in texts for line in t.splitlines())


def raw_tex_commands(text: str) -> list[str]:
    """TeX commands (``\\mathrm``, ``\\hat``) left in a page's text outside code and math:
    TeX written where no math is typeset (a link text, a caption's plain text)."""
    return sorted(set(_TEX_COMMAND.findall(text)))


def math_escapes(typeset_texts: list[str]) -> list[str]:
    """The distinct typeset texts (MathJax ``mtext`` contents) that show a literal backslash
    escape, in page order."""
    return list(dict.fromkeys(t for t in typeset_texts if _MATH_ESCAPE.search(t)))


def layout_failures(result: dict, width: int) -> list[str]:
    """Failures from :data:`LAYOUT_SCRIPT`'s ``result`` at viewport ``width``: equations cut
    off (wider than a clipping box or the text column, and not inside a box that scrolls) and
    a page wider than the viewport (naming what sticks out)."""
    failures = []
    for eq in result["equations"]:
        where = f"{eq['what']} in {eq['where']}" if eq["where"] else eq["what"]
        if eq["verdict"] == "clipped":
            failures.append(f"at {width} px: {where} is {eq['width']} px wide and cut off by "
                            f"a {eq['box']} px box with no scrollbar")
        else:
            failures.append(f"at {width} px: {where} is {eq['width']} px wide, wider than the "
                            f"{eq['box']} px text column, with no scrollbar")
    if result["pageWidth"] > result["viewWidth"] + 1:
        culprits = "; ".join(f"{c['what']} {c['text']!r} reaches {c['right']} px"
                             for c in result["sticking"]) or "nothing found"
        failures.append(f"at {width} px: the page scrolls sideways ({result['pageWidth']} px "
                        f"wide): {culprits}")
    return failures


def density_failures(images: list[dict], minimum: float = MIN_DENSITY) -> list[str]:
    """Images with fewer than ``minimum`` pixels per CSS pixel shown, or shown distorted
    (their shape more than 2% off the PNG's). ``natural``/``shown`` widths and
    heights come from :data:`LAYOUT_SCRIPT`; vector images are not listed there."""
    failures = []
    for i in images:
        if not (i["shown"] > 0 and i["shownHeight"] > 0 and i["naturalHeight"] > 0):
            continue
        if i["natural"] < minimum * i["shown"] - 1:
            failures.append(f"image {i['src']} has {i['natural']} px for {i['shown']} CSS px "
                            f"shown: {i['natural'] / i['shown']:.2f}x, below {minimum:g}x "
                            f"(soft on HiDPI screens)")
        shape = (i["shown"] / i["shownHeight"]) / (i["natural"] / i["naturalHeight"])
        if abs(shape - 1) > 0.02:
            failures.append(f"image {i['src']} is shown {i['shown']}x{i['shownHeight']} px, "
                            f"distorted from its {i['natural']}x{i['naturalHeight']} px "
                            f"(a width and a height fixed where the column shrinks one)")
    return failures


def favicon_failures(root: Path) -> list[str]:
    """Whether the site serves ``/favicon.ico`` (browsers ask for it when a page declares no
    icon, and many ask anyway): a non-empty ICO or PNG file at the root."""
    path = Path(root) / "favicon.ico"
    if not path.is_file():
        return ["no favicon.ico at the site's root: /favicon.ico is a 404"]
    head = path.read_bytes()[:8]
    if not (head.startswith(b"\x00\x00\x01\x00") or head.startswith(b"\x89PNG")):
        return ["favicon.ico at the site's root is neither an ICO nor a PNG image"]
    return []


# Runs once the page has loaded, with the wait in ms: every wait is bounded, so a page whose
# MathJax never finishes fails with a message instead of hanging the test.
CONTENT_SCRIPT = r"""async (waitMs) => {
  const within = (promise, what) => Promise.race([promise.then(() => null),
      new Promise(r => setTimeout(() => r(`${what} did not finish within ${waitMs / 1000} s`),
                                  waitMs))]);
  const math = Array.from(document.querySelectorAll('.math'));
  if (math.length && !(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    return {error: 'the page has math but MathJax did not start'};
  }
  if (math.length) {
    const late = await within(MathJax.startup.promise, 'MathJax (MathJax.startup.promise)');
    if (late) { return {error: late}; }
  }
  const typeset = math.filter(e => e.querySelector('mjx-container')).length;
  const texErrors = document.querySelectorAll('mjx-merror').length;
  const mathTexts = [];
  if (math.length && MathJax.startup.document && MathJax.startup.toMML) {
    for (const item of MathJax.startup.document.math) {
      for (const m of MathJax.startup.toMML(item.root).matchAll(/<mtext[^>]*>([^<]*)<\/mtext>/g)) {
        if (m[1].includes('\\')) { mathTexts.push(m[1]); }
      }
    }
  }
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, textarea, mjx-container, .math')
      .forEach(e => e.remove());
  body.querySelectorAll('br').forEach(e => e.replaceWith('\n'));   // a detached clone's
  const text = body.innerText || body.textContent;              // text keeps no <br>
  const raw = ['\\(', '\\[', '$$'].filter(d => text.includes(d));
  // Folded away: a closed <details> (hide-input) or a toggled admonition (a solution's
  // fold, sphinx-togglebutton: visibility hidden).
  const shown = e => e.checkVisibility({visibilityProperty: true}) &&
                     !e.closest('details:not([open])');
  const codeInputs = Array.from(document.querySelectorAll('.cell_input'))
      .filter(shown).map(e => e.textContent);
  const outputs = Array.from(document.querySelectorAll('.cell_output')).map(e => e.textContent);
  const images = Array.from(document.images);
  images.forEach(i => { i.loading = 'eager'; });
  await within(Promise.all(images.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); }))), 'the images');
  const broken = images.filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const views = Array.from(document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-view+json"]'));
  const fallback = views.filter(v => {
    let el = v.closest('.cell') || v.parentElement;
    for (let hops = 0; el && hops < 3; hops++) {
      el = el.nextElementSibling;
      const fig = el && (el.matches('figure') ? el : el.querySelector('figure'));
      if (fig) {
        const img = fig.querySelector('img');
        return !!(img && img.naturalWidth > 0 && fig.querySelector('figcaption'));
      }
    }
    return false;
  }).length;
  const rendered = document.querySelectorAll('.jupyter-widgets, .widget-box, .lm-Widget').length;
  return {math: math.length, typeset, texErrors, mathTexts, raw, pageText: text, codeInputs,
          outputs, images: images.length, broken, views: views.length, fallback, rendered,
          text: document.body.innerText};
}"""

# Runs at each viewport width, after the content script: what is wider than its box.
LAYOUT_SCRIPT = r"""() => {
  const column = ['article.bd-article', 'article', 'main'].map(q => document.querySelector(q))
      .find(e => e) || document.body;
  const cs = getComputedStyle(column), cr = column.getBoundingClientRect();
  const left = cr.left + parseFloat(cs.paddingLeft), right = cr.right - parseFloat(cs.paddingRight);
  const px = v => Math.round(v);
  const scrolls = o => o === 'auto' || o === 'scroll';
  const equations = [];
  for (const c of document.querySelectorAll('mjx-container')) {
    const m = c.querySelector('mjx-math');
    let r = m && m.getBoundingClientRect();
    if (!r || !r.width || !column.contains(c)) { continue; }
    const width = r.width;
    let verdict = null, box = 0;
    for (let a = c; a && a !== column; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.position === 'fixed') { verdict = 'fixed'; break; }
      const ar = a.getBoundingClientRect();
      if (scrolls(s.overflowX)) { r = ar; continue; }
      if (s.overflowX !== 'visible' && (r.left < ar.left - 1 || r.right > ar.right + 1)) {
        verdict = 'clipped'; box = ar.width; break;
      }
    }
    if (!verdict && (r.left < left - 1 || r.right > right + 1)) {
      verdict = 'overflows'; box = right - left;
    }
    if (verdict === 'clipped' || verdict === 'overflows') {
      const eqno = c.closest('.math') && c.closest('.math').querySelector('.eqno');
      const section = c.closest('section[id]');
      equations.push({verdict, width: px(width), box: px(box),
          what: (c.getAttribute('display') === 'true' ? 'display equation' : 'inline math') +
                (eqno ? ' ' + eqno.textContent.trim() : ''),
          where: section ? '#' + section.id : ''});
    }
  }
  const de = document.documentElement, view = de.clientWidth;
  const sticking = [];
  if (de.scrollWidth > view + 1) {
    const contained = e => {
      for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
        const s = getComputedStyle(a);
        if (s.position === 'fixed' || s.overflowX !== 'visible') { return true; }
      }
      return false;
    };
    for (const e of document.body.querySelectorAll('*')) {
      if (e.closest('mjx-container, svg') !== e && e.closest('mjx-container, svg')) { continue; }
      const r = e.getBoundingClientRect(), p = e.parentElement.getBoundingClientRect();
      if (r.width && r.right > view + 1 && p.right <= view + 1 && !contained(e) &&
          getComputedStyle(e).position !== 'fixed' && e.checkVisibility({visibilityProperty: true})) {
        sticking.push({what: e.tagName.toLowerCase() + (e.className && e.className.baseVal === undefined
                         ? '.' + e.className.trim().split(/\s+/)[0] : ''),
                       text: (e.textContent || '').trim().slice(0, 60), right: px(r.right)});
        if (sticking.length >= 3) { break; }
      }
    }
  }
  const images = Array.from(document.images)
      .filter(i => column.contains(i) && i.naturalWidth > 0 && i.clientWidth > 0 &&
                   !/\.svg(\?|#|$)|^data:image\/svg/i.test(i.getAttribute('src') || ''))
      .map(i => ({src: i.getAttribute('src'), natural: i.naturalWidth, shown: i.clientWidth,
                  naturalHeight: i.naturalHeight, shownHeight: i.clientHeight}));
  return {equations, pageWidth: de.scrollWidth, viewWidth: view, sticking, images};
}"""
