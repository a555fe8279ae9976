"""The book's MyST Markdown as plain Markdown that JupyterLab, Jupyter Notebook and VS Code render.

The chapters are written for the website (Jupyter Book: MyST roles and directives, numbered by
Sphinx). This module turns one Markdown cell into Markdown without any role or directive, with
the numbers the website shows, computed here without Sphinx:

* chapters are numbered by ``_toc.yml`` (numbered parts count on from part to part), the
  appendices take the letter of their title (``bnbook.site.numbering``), any other unnumbered
  page counts its items on one running counter (the preface: Exercise 1, 2, 3);
* per chapter, exercises, captioned figures and labelled equations are numbered in document
  order (``numfig``, ``numfig_secnum_depth: 1``): Exercise 3.5, Fig. 2.1, equation (2.3); the
  chapter's title and its ``##`` sections carry the section numbers (2., 2.1.).

:func:`book_index` reads every page of the table of contents once and records each label's
target; :func:`convert_markdown` converts one cell with it. What each construct becomes:

==========================================  ===================================================
``{doc}``, ``{ref}``, ``{numref}``, ``{eq}``  a link with the page title or the numbered name
``{cite}``, ``{cite:p}``, ``{cite:t}``        author-year text as on the website (the cited
                                              works are listed by :func:`references_markdown`)
``{glue:text}``, ``{glue}``, ``{glue:md}``    the value glued by the executed notebook
``{glue:figure}``                             the glued PNG as a cell attachment, with caption
``{exercise}``                                a heading "Exercise N.M" and the text
``{solution}``, ``{solution-start}``          a heading "Solution to Exercise N.M" (dropped in
                                              the student edition)
admonitions                                   a blockquote with a bold title
``$$ ... $$ (label)``, ``{math}``             ``$$ ... \\tag{N.M} $$``
``{figure}``, ``{image}``, ``{download}``     a Markdown image or link
``(target)=`` and option lines               nothing
==========================================  ===================================================

A construct this module does not know raises :class:`ConversionError` naming the page, so
nothing raw reaches a reader.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

from bnbook.site.numbering import appendix_letter

__all__ = ["ConversionError", "Page", "Target", "BookIndex", "toc_pages", "book_index",
           "DocState", "convert_markdown", "references_markdown", "lab_anchor", "blocks"]

ADMONITIONS = {"note": "Note", "warning": "Warning", "tip": "Tip", "important": "Important",
               "hint": "Hint", "caution": "Caution", "attention": "Attention",
               "danger": "Danger", "error": "Error", "seealso": "See also"}
NUMREF_FORMAT = {"figure": "Fig. %s", "exercise": "Exercise %s", "equation": "(%s)",
                 "section": "Section %s"}

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,}|:{3,})"
                         r"(?:\{(?P<name>[^}\s]+)\})?[ \t]*(?P<arg>.*?)[ \t]*$")
_OPTION = re.compile(r"^[ \t]*:(?P<key>[\w-]+):[ \t]*(?P<value>.*?)[ \t]*$")
_TARGET_LINE = re.compile(r"^\((?P<label>[^)\s]+)\)=[ \t]*$")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})[ \t]+(?P<title>.+?)[ \t]*#*[ \t]*$")
_LABELLED_EQUATION = re.compile(r"\$\$(?P<tex>.+?)\$\$[ \t]*\((?P<label>[^)\s]+)\)", re.S)
_INLINE = re.compile(r"(?P<role>\{(?P<name>[a-z][\w:-]*)\}`(?P<content>[^`]+)`)"
                     r"|(?P<code>(?P<ticks>`+).*?(?P=ticks))", re.S)
_EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)


class ConversionError(ValueError):
    """MyST that this module cannot turn into plain Markdown; the message names the page."""


@dataclass
class Page:
    """One page of the table of contents: ``doc`` is its name (``02_forward``)."""
    doc: str
    path: Path
    number: str | None          # "2" for chapter 2, "A" for Appendix A, None otherwise
    numbered_sections: bool     # True in a numbered chapter (2., 2.1.)
    title: str = ""


@dataclass
class Target:
    """What a label names: its page, kind, number (or None) and the text a reference shows."""
    doc: str
    kind: str                   # section, exercise, figure, equation
    number: str | None
    text: str
    anchor: str


@dataclass
class BookIndex:
    pages: dict[str, Page]
    targets: dict[str, Target]
    items: dict[str, list[Target]] = field(default_factory=dict)   # doc -> numbered items


def lab_anchor(heading_text: str) -> str:
    """The id JupyterLab gives a rendered heading: its text with spaces as hyphens."""
    return heading_text.strip().replace(" ", "-")


def toc_pages(root: Path) -> list[Page]:
    """The pages of ``root/_toc.yml`` in reading order, numbered as the website numbers them."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    default = bool(toc.get("defaults", {}).get("numbered", False))
    pages, chapter = [], 0
    for part in toc.get("parts", []):
        numbered = bool(part.get("numbered", default))
        for entry in part.get("chapters", []):
            doc = entry["file"]
            path = next((root / (doc + ext) for ext in (".ipynb", ".md")
                         if (root / (doc + ext)).exists()), None)
            if path is None:
                raise ConversionError(f"_toc.yml: {doc} is neither {doc}.ipynb nor {doc}.md")
            if numbered:
                chapter += 1
            pages.append(Page(Path(doc).name, path, str(chapter) if numbered else None,
                              numbered))
    return pages


def markdown_cells(path: Path) -> list[str]:
    """The Markdown of a page: each Markdown cell of a notebook, or a ``.md`` file whole."""
    if path.suffix == ".md":
        return [path.read_text()]
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


@dataclass
class DocState:
    """What converting one page needs and counts as it goes (reset for every page).

    ``glue`` maps glue names to their output (``None``: no executed notebook, a value is then
    said to appear when the notebook runs); ``link`` maps a page name to the file a link opens
    (None: the page has no file in this edition); ``download`` maps a ``{download}`` path to a
    link (None: drop the paragraph); ``solutions``: keep solutions (Jupyter edition) or drop
    them (student edition).
    """
    page: Page
    index: BookIndex | None = None
    glue: dict | None = None
    bibliography: object = None
    link: object = None
    download: object = None
    solutions: bool = True
    counters: dict = field(default_factory=dict)
    cited: list = field(default_factory=list)
    attachments: dict = field(default_factory=dict)
    pending_label: str | None = None

    def next_number(self, kind: str) -> str:
        self.counters[kind] = self.counters.get(kind, 0) + 1
        return f"{self.page.number}.{self.counters[kind]}" if self.page.number \
            else str(self.counters[kind])

    def error(self, message: str) -> ConversionError:
        return ConversionError(f"{self.page.doc}: {message}")


def blocks(text: str):
    """Split Markdown into ``("text", str)``, ``("code", raw)`` and directive blocks
    ``("directive", name, argument, options, body)``; a fence closes on the same character
    repeated at least as often (CommonMark), an unclosed fence runs to the end."""
    lines, i, plain = text.split("\n"), 0, []
    while i < len(lines):
        match = _FENCE_OPEN.match(lines[i])
        if not match or (match["fence"][0] == ":" and not match["name"]):
            plain.append(lines[i])
            i += 1
            continue
        fence = match["fence"]
        close = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), len(lines))
        if plain:
            yield ("text", "\n".join(plain))
            plain = []
        if not match["name"]:
            yield ("code", "\n".join(lines[i:end + 1]))
        else:
            options, body = _options(lines[i + 1:end])
            yield ("directive", match["name"], match["arg"], options, "\n".join(body))
        i = end + 1
    if plain:
        yield ("text", "\n".join(plain))


def _options(lines: list[str]) -> tuple[dict, list[str]]:
    options, k = {}, 0
    if lines and lines[0].strip() == "---":
        end = next((j for j in range(1, len(lines)) if lines[j].strip() == "---"), 0)
        import yaml

        options.update(yaml.safe_load("\n".join(lines[1:end])) or {})
        k = end + 1
    while k < len(lines) and (match := _OPTION.match(lines[k])):
        options[match["key"]] = match["value"]
        k += 1
    while k < len(lines) and not lines[k].strip():
        k += 1
    return options, lines[k:]


def book_index(root: Path, pages: list[Page] | None = None) -> BookIndex:
    """Every page's title and every label's target, numbered as on the website."""
    pages = toc_pages(root) if pages is None else pages
    index, running = BookIndex({p.doc: p for p in pages}, {}), {}
    for page in pages:
        cells = markdown_cells(page.path)
        first = next((m["title"] for c in cells for line in c.split("\n")
                      if (m := _HEADING.match(line)) and len(m["hashes"]) == 1), page.doc)
        page.title = first
        letter = None if page.numbered_sections else appendix_letter(first)
        if letter:
            page.number = letter
        state = DocState(page, None)
        if page.number is None:
            state.counters = running        # the preface's plain numbers run on (Sphinx)
        items = []
        for source in cells:
            _walk(source, state, collect=(index, items))
        index.items[page.doc] = items
    return index


def convert_markdown(source: str, state: DocState) -> str:
    """One Markdown cell of ``state.page`` as plain Markdown (attachments go to ``state``)."""
    return re.sub(r"\n{3,}", "\n\n", _walk(source, state, collect=None)).strip("\n")


def _walk(source: str, state: DocState, collect) -> str:
    out = []
    for block in blocks(source):
        if block[0] == "code":
            out.append(block[1])
        elif block[0] == "text":
            out.append(_text(block[1], state, collect))
        else:
            out.append(_directive(*block[1:], state=state, collect=collect))
    return "\n".join(part for part in out if part is not None)


def _register(collect, state, label, kind, number, text, anchor):
    if collect is None:
        return
    index, items = collect
    target = Target(state.page.doc, kind, number, text, anchor)
    if label and label in index.targets:
        raise state.error(f"label {label!r} is defined twice (also in {index.targets[label].doc})")
    if label:
        index.targets[label] = target
    if number is not None:
        items.append(target)


def _text(text: str, state: DocState, collect) -> str:
    def equation(match):
        number = state.next_number("equation")
        _register(collect, state, match["label"], "equation", number, f"({number})",
                  f"equation-{match['label']}")
        return f"$${match['tex'].rstrip()} \\tag{{{number}}}$$"

    text = _LABELLED_EQUATION.sub(equation, text)
    lines = []
    for line in text.split("\n"):
        if (target := _TARGET_LINE.match(line)):
            state.pending_label = target["label"]
            continue
        if (heading := _HEADING.match(line)):
            line = _heading(heading, state, collect)
        elif line.strip():
            state.pending_label = None
        lines.append(line)
    text = "\n".join(lines)
    return text if collect is not None else _INLINE.sub(lambda m: _inline(m, state), text)


def _heading(match, state: DocState, collect) -> str:
    level, title = len(match["hashes"]), match["title"]
    number = None
    if state.page.numbered_sections and level <= 2:
        if level == 1:
            number = f"{state.page.number}."
        else:
            state.counters["section"] = state.counters.get("section", 0) + 1
            number = f"{state.page.number}.{state.counters['section']}."
    shown = f"{number} {title}" if number else title
    _register(collect, state, state.pending_label, "section", None, title, lab_anchor(shown))
    state.pending_label = None
    return f"{match['hashes']} {shown}"


def _directive(name, arg, options, body, *, state: DocState, collect) -> str | None:
    if name == "exercise":
        number = state.next_number("exercise")
        heading = f"Exercise {number}" + (f" ({arg})" if arg else "")
        _register(collect, state, options.get("label"), "exercise", number,
                  f"Exercise {number}", lab_anchor(heading))
        return f"### {heading}\n\n{_walk(body, state, collect)}\n"
    if name in ("solution", "solution-start"):
        if not state.solutions or collect is not None:
            return None
        title = _target_text(state, arg.strip())
        return f"#### Solution to {title}\n\n{_walk(body, state, collect)}\n"
    if name == "solution-end":
        return None
    if name in ("glue:figure", "figure"):
        number = state.next_number("figure") if body.strip() else None
        label = options.get("name")
        _register(collect, state, label, "figure", number, f"Fig. {number}", label or "")
        return None if collect is not None else _figure(name, arg, label, number, body, state)
    if name == "math":
        number = state.next_number("equation") if options.get("label") else None
        _register(collect, state, options.get("label"), "equation", number, f"({number})",
                  f"equation-{options.get('label')}")
        tag = f" \\tag{{{number}}}" if number else ""
        return f"$$\n{body.strip()}{tag}\n$$"
    if name in ADMONITIONS or name == "admonition":
        title = arg if name == "admonition" else ADMONITIONS[name]
        inner = _walk(body, state, collect)
        quoted = "\n".join("> " + line if line.strip() else ">" for line in inner.split("\n"))
        return f"> **{_inline_text(title, state)}**\n>\n{quoted}\n"
    if name == "image":
        return f"![{options.get('alt', '')}]({_asset(arg, state)})"
    if name in ("code-block", "code", "sourcecode"):
        return f"```{arg}\n{body}\n```"
    if collect is not None:
        return None                     # a page no edition converts (the bibliography)
    raise state.error(f"no plain-Markdown form for the directive {{{name}}}")


def _figure(name, arg, label, number, body, state: DocState) -> str:
    caption = _inline_text(body.strip(), state)
    shown = f"**Fig. {number}:** {caption}" if number else caption
    anchor = f'<a id="{label}"></a>\n\n' if label else ""
    if name == "figure":
        return f"{anchor}![Fig. {number}]({_asset(arg, state)})\n\n{shown}\n"
    key = arg.strip()
    if state.glue is None:
        return f"{anchor}*The figure appears when you run the notebook.*\n\n{shown}\n"
    data = state.glue.get(key, {}).get("data", {})
    if "image/png" not in data:
        raise state.error(f"no PNG glued under {key!r} for {{glue:figure}}")
    png = data["image/png"]
    base64.b64decode(png, validate=False)
    state.attachments[f"{key}.png"] = {"image/png": png}
    return f"{anchor}![Fig. {number}](attachment:{key}.png)\n\n{shown}\n"


def _asset(path: str, state: DocState) -> str:
    href = state.download(path.strip()) if state.download else None
    return href or path.strip()


def _inline_text(text: str, state: DocState) -> str:
    return _INLINE.sub(lambda m: _inline(m, state), text)


def _inline(match, state: DocState) -> str:
    if match["code"]:
        return match["code"]
    name, content = match["name"], match["content"].strip()
    explicit = _EXPLICIT.match(content)
    text, key = (explicit["text"], explicit["target"].strip()) if explicit else (None, content)
    if name == "doc":
        doc = Path(key).name.removesuffix(".ipynb").removesuffix(".md")
        page = state.index.pages.get(doc) if state.index else None
        if page is None:
            raise state.error(f"{{doc}} names {key!r}, which is not in _toc.yml")
        href = state.link(doc) if state.link else None
        shown = text or page.title
        return f"[{shown}]({href})" if href else shown
    if name in ("ref", "numref", "eq"):
        return _reference(name, key, text, state)
    if name.startswith("cite"):
        return _citation(name, key, state)
    if name.startswith("glue"):
        return _glued(name, content, state)
    if name == "download":
        href = state.download(key) if state.download else None
        return f"[{text or Path(key).name}]({href})" if href else (text or Path(key).name)
    if name == "math":
        return f"${content}$"
    raise state.error(f"no plain-Markdown form for the role {{{name}}}")


def _target_text(state: DocState, label: str) -> str:
    target = state.index.targets.get(label) if state.index else None
    if target is None:
        raise state.error(f"no label {label!r} in the book")
    return target.text


def _reference(name, label, text, state: DocState) -> str:
    target = state.index.targets.get(label) if state.index else None
    if target is None:
        raise state.error(f"{{{name}}} names {label!r}, which no page labels")
    if name == "numref":
        shown = (text or NUMREF_FORMAT[target.kind]).replace("%s", target.number or "") \
            .replace("{number}", target.number or "")
    elif name == "eq":
        shown = target.text
    else:
        shown = text or target.text
    if target.doc == state.page.doc:
        href = f"#{target.anchor}"
    else:
        page_href = state.link(target.doc) if state.link else None
        href = f"{page_href}#{target.anchor}" if page_href else None
    return f"[{shown}]({href})" if href else shown


def _citation(name, keys, state: DocState) -> str:
    if state.bibliography is None:
        raise state.error("a citation, but no bibliography was given")
    shown = []
    for key in (k.strip() for k in keys.split(",")):
        if key not in state.bibliography.entries:
            raise state.error(f"{{cite}} names {key!r}, which references.bib lacks")
        if key not in state.cited:
            state.cited.append(key)
        authors, year = _author_year(state.bibliography.entries[key])
        shown.append(f"{authors} [{year}]" if name == "cite:t" else f"{authors}, {year}")
    return ", ".join(shown) if name == "cite:t" else "[" + ", ".join(shown) + "]"


def _author_year(entry) -> tuple[str, str]:
    """The website's author-year label (sphinxcontrib-bibtex ``author_year``)."""
    from pybtex.backends.plaintext import Backend
    from pybtex.richtext import Text

    def plain(latex: str) -> str:
        return Text.from_latex(latex).render(Backend())

    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [plain(" ".join(p.prelast_names + p.last_names) or str(p)) for p in people]
    if not names:
        authors = plain(entry.fields.get("organization", entry.key))
    elif len(names) == 1:
        authors = names[0]
    elif len(names) == 2:
        authors = f"{names[0]} and {names[1]}"
    else:
        authors = f"{names[0]} *et al.*"
    return authors, entry.fields.get("year", "n.d.")


def references_markdown(keys: list[str], bibliography) -> str:
    """A "References" section listing the works ``keys`` names, sorted by author and year."""
    from pybtex.backends.markdown import Backend
    from pybtex.style.formatting.unsrt import Style

    style, backend, rows = Style(), Backend(), []
    for key in keys:
        entry = bibliography.entries[key]
        authors, year = _author_year(entry)
        text = style.format_entry(key, entry).text.render(backend)
        rows.append((authors, year, f"- {authors}, {year}. " + " ".join(text.split())))
    return "## References\n\n" + "\n".join(row for *_, row in sorted(rows))


def _glued(name, content, state: DocState) -> str:
    if "::" in content:
        raise state.error(f"glue from another notebook ({content!r}) is not supported")
    key, fmt = content, "s"
    if name in ("glue:text", "glue:md") and ":" in content:
        key, fmt = content.rsplit(":", 1)
    if state.glue is None:
        return "*(computed when the notebook runs)*"
    output = state.glue.get(key)
    if output is None:
        raise state.error(f"no value glued under {key!r}")
    data = output.get("data", {})
    if name == "glue:md":
        return data.get("text/markdown", data.get("text/plain", "")).strip()
    if "text/plain" not in data:
        raise state.error(f"the value glued under {key!r} has no text/plain")
    from myst_nb.core.variables import format_plain_text

    try:
        return format_plain_text(data["text/plain"], fmt if name == "glue:text" else "s")
    except (TypeError, ValueError) as exc:
        raise state.error(f"cannot format {key!r} with {fmt!r}: {exc}") from exc
