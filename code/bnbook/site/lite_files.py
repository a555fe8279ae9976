"""The files :mod:`bnbook.site.lite` writes: the bnbook wheel, the Lite copies of the notebooks and
the landing page.

A Lite copy differs from its input notebook in what the browser needs and nothing else:

- its kernelspec is the Pyodide kernel's (``python``), so no "Select kernel" dialog appears;
- a first cell installs ipywidgets and bnbook into the kernel, guarded by
  ``sys.platform == "emscripten"`` so that it does nothing under CPython;
- PyTorch's part is not run: a top-level statement that imports torch or reads a name only
  PyTorch gives (``torch``, a torch module's alias, or a name that only such a statement
  binds; found with Python's own symbol tables, :func:`_browser_source`) is left in as a
  comment saying so, and a cell with nothing else becomes a Markdown note saying that it
  needs PyTorch, with its code shown;
- cells hidden from the website's readers (tag ``remove-cell``: glue and asserts) are left
  out, and ``glue`` becomes a no-op in the browser (myst-nb is not there);
- outputs and stored widget state are cleared: the reader runs the cells; the figures of
  Markdown cells (attachments) are inlined as ``data:`` URLs.
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import html
import re
import symtable
import zipfile
from pathlib import Path

import nbformat

__all__ = ["SETUP_CELL", "TORCH_NOTE", "lite_notebook", "build_bnbook_wheel",
           "download_megabytes", "write_landing_page"]

#: The kernelspec of the Lite copies: the Pyodide kernel's name.
KERNELSPEC = {"name": "python", "display_name": "Python (Pyodide)", "language": "python"}

SETUP_CELL = '''\
# In the browser (JupyterLite) only: load NumPy and Matplotlib, install the widgets and the
# book's package into the kernel; glue (the website's cross-references) does nothing here.
import sys
if sys.platform == "emscripten":
    import piplite
    import types
    await piplite.install(["numpy", "matplotlib", "ipywidgets", "comm", "jupyterlab_widgets"])
    await piplite.install("bnbook", deps=False)
    sys.modules.setdefault("myst_nb", types.SimpleNamespace(glue=lambda *args, **kwargs: None))
'''

TORCH_NOTE = ("*This cell needs PyTorch (or a result the book computed with it), which the "
              "browser does not have, so it is not run in this copy; the chapter on the website "
              "shows its output.*")

_TORCH_IMPORT = re.compile(r"^\s*(import torch\b.*|from torch\b.*)$")


def _imported_modules(tree, package: str = "") -> set[str]:
    """The modules a module's top-level imports load (``from bnbook import x`` loads
    ``bnbook.x`` when that is a module; a relative import is read from ``package``)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


@functools.lru_cache(maxsize=None)
def torch_modules() -> frozenset[str]:
    """The modules of this package that import PyTorch when imported: a top-level import of
    torch or of such a module, or a parent package that is one (read from the source)."""
    root = Path(__file__).resolve().parents[1]          # the bnbook package
    imports = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        imports[name] = _imported_modules(ast.parse(path.read_text(encoding="utf-8")), package)
    torch = set()
    changed = True
    while changed:
        changed = False
        for name, loads in imports.items():
            parents = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
            if name not in torch and any(m == "torch" or m.startswith("torch.") or m in torch
                                         for m in loads | parents):
                torch.add(name)
                changed = True
    return frozenset(torch)


def _imports_torch(statement: str) -> bool:
    if _TORCH_IMPORT.match(" ".join(statement.split())):
        return True
    node = ast.parse(statement).body[0]
    if not isinstance(node, (ast.Import, ast.ImportFrom)):
        return False
    return bool(_imported_modules(ast.parse(statement)) & torch_modules())


def _cell_names(source: str) -> tuple[set[str], set[str]]:
    """(names the cell reads from the notebook's namespace, names it binds there).

    Read: referenced at the top level and not bound in the cell, or referenced as globals in
    its functions and classes (a parameter or a local of the same name does not count). Names
    in strings and comments are not names."""
    table = symtable.symtable(source, "<cell>", "exec")
    top = table.get_symbols()
    bound = {s.get_name() for s in top if s.is_assigned() or s.is_imported()
             or s.is_namespace()}
    read = {s.get_name() for s in top if s.is_referenced() and s.get_name() not in bound}
    todo = list(table.get_children())
    while todo:
        child = todo.pop()
        todo += child.get_children()
        read |= {s.get_name() for s in child.get_symbols()
                 if s.is_referenced() and s.is_global() and s.get_name() not in bound}
    return read, bound


def _statements(source: str) -> list[tuple[int, int]]:
    """(first, last) line numbers (1-based) of each top-level statement, decorators included."""
    spans = []
    for stmt in ast.parse(source).body:
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        spans.append((first, stmt.end_lineno))
    return spans


def _root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _mutated(statement: str, modules: set[str]) -> set[str]:
    """Names whose object the statement changes without binding them: targets of item and
    attribute assignment (``nodes["mu"] = ...``) and objects whose methods it calls
    (``curve.append(...)``), but not the ``modules`` (names bound by imports: ``np.save``)."""
    names = set()
    for node in ast.walk(ast.parse(statement)):
        if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, ast.Store):
            names.add(_root_name(node))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            names.add(_root_name(node.func))
    return names - modules - {None}


def _browser_source(source: str, tainted: set[str], modules: set[str]) -> str | None:
    """The cell as it runs in the browser, or ``None`` when none of it can (it needs PyTorch).

    Statement by statement: an import of PyTorch, or a top-level statement that reads one of
    ``tainted``, is left in as a comment and the names it binds or changes (:func:`_mutated`)
    join ``tainted``; a statement that runs takes the names it binds out of ``tainted``.
    ``tainted`` and ``modules`` (the names imports bind) are updated."""
    lines, commented = source.splitlines(), 0
    spans = _statements(source)
    for first, last in spans:
        statement = "\n".join(lines[first - 1:last])
        read, bound = _cell_names(statement)
        if isinstance(ast.parse(statement).body[0], (ast.Import, ast.ImportFrom)):
            modules |= bound
        if _imports_torch(statement) or read & tainted:
            tainted |= bound | _mutated(statement, modules)
            lines[first - 1:last] = [f"# (needs PyTorch, not run in the browser) {line}"
                                     for line in lines[first - 1:last]]
            commented += 1
        else:
            tainted -= bound
    return None if spans and commented == len(spans) else "\n".join(lines)


def _browser_cells(cells) -> list:
    """The cells without those hidden from readers (tag ``remove-cell``; the names they bind
    count as PyTorch's: the browser does not have them), each code cell as it runs in the
    browser (:func:`_browser_source`) or as a note saying that it needs PyTorch, with its
    code shown."""
    tainted, modules, out = {"torch"}, set(), []
    for cell in cells:
        if "remove-cell" in cell.metadata.get("tags", []):
            if cell.cell_type == "code":            # hidden: glue, asserts, torch references
                tainted |= _cell_names(cell.source)[1]
            continue
        if cell.cell_type == "code":
            browser = _browser_source(cell.source, tainted, modules)
            if browser is None:
                cell = _torch_note(cell)
            else:
                cell.source, cell.outputs, cell.execution_count = browser, [], None
                cell.metadata.pop("execution", None)
        else:
            _inline_attachments(cell)
        out.append(cell)
    return out


def _inline_attachments(cell) -> None:
    """``attachment:name`` links as ``data:`` URLs (JupyterLab requests the attachment link
    before resolving it, which the browser logs as an error); the attachments dropped."""
    for name, bundle in cell.pop("attachments", {}).items():
        mime, data = next(iter(bundle.items()))
        cell.source = cell.source.replace(f"attachment:{name}", f"data:{mime};base64,{data}")


def _torch_note(cell) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(f"{TORCH_NOTE}\n\n```python\n{cell.source}\n```",
                                         metadata={"tags": ["lite-needs-torch"]})


def lite_notebook(text: str) -> str:
    """The Lite copy (JSON text) of the notebook ``text``."""
    nb = nbformat.reads(text, as_version=4)
    out = _browser_cells(nb.cells)
    nb.cells = [nbformat.v4.new_code_cell(SETUP_CELL, metadata={"tags": ["lite-setup"]})] + out
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata.pop("widgets", None)
    return nbformat.writes(nb)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_bnbook_wheel(root: Path, dest: Path) -> Path:
    """A pure-Python wheel of ``root/code/bnbook`` (the working tree, no build step, nothing
    written into the tree), declaring no dependencies: numpy, matplotlib and ipywidgets come
    from Pyodide and piplite, and torch and pooch are not installed in the browser."""
    version = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(),
                        re.M).group(1)
    dist = f"bnbook-{version}.dist-info"
    files = sorted(p for p in (root / "code" / "bnbook").rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    meta = {f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: bnbook\nVersion: {version}\n",
            f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: bnbook.site.lite\nRoot-Is-Purelib: true\n"
                             "Tag: py3-none-any\n"}
    path = Path(dest) / f"bnbook-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in files:
            name = file.relative_to(root / "code").as_posix()
            data = file.read_bytes()
            wheel.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
            records.append(_record_line(name, data))
        for name, text in meta.items():
            wheel.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), text)
            records.append(_record_line(name, text.encode()))
        records.append(f"{dist}/RECORD,,")
        wheel.writestr(zipfile.ZipInfo(f"{dist}/RECORD", (2020, 1, 1, 0, 0, 0)),
                       "\n".join(records) + "\n")
    return path


def download_megabytes(site: Path) -> float:
    """MB a first start downloads from the Lite build ``site``: the Pyodide runtime and the
    package files beside it (``static/pyodide/``), and the wheels piplite installs
    (``pypi/``)."""
    files = [*(Path(site) / "static" / "pyodide").iterdir(), *(Path(site) / "pypi").glob("*.whl")]
    return sum(p.stat().st_size for p in files if p.is_file()) / 1e6


def write_landing_page(site: Path, names, build_id: str) -> None:
    """``site/start.html``: what the edition is, what a first start downloads, that nothing
    leaves the browser, and a link per notebook (lab and single-notebook views)."""
    rows = "\n".join(
        f'<li><a href="notebooks/index.html?path={html.escape(n)}">{html.escape(n)}</a> '
        f'(<a href="lab/index.html?path={html.escape(n)}">in JupyterLab</a>)</li>'
        for n in names)
    page = (Path(__file__).with_name("lite_start.html").read_text(encoding="utf-8")
            .replace("{{notebooks}}", rows).replace("{{build}}", build_id)
            .replace("{{download_mb}}", f"{download_megabytes(site):.0f}"))
    (Path(site) / "start.html").write_text(page, encoding="utf-8")
