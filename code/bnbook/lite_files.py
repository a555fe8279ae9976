"""The files :mod:`bnbook.lite` writes: the bnbook wheel, the Lite copies of the notebooks and
the landing page.

A Lite copy differs from its input notebook in what the browser needs and nothing else:

- its kernelspec is the Pyodide kernel's (``python``), so no "Select kernel" dialog appears;
- a first cell installs ipywidgets and bnbook into the kernel, guarded by
  ``sys.platform == "emscripten"`` so that it does nothing under CPython;
- a cell that needs PyTorch (it names ``torch``, a torch module's alias or a name only such a
  cell defines) becomes a Markdown note saying so, with its code shown, and is not run;
  import lines of torch are taken out of the import cell;
- cells hidden from the website's readers (tag ``remove-cell``: glue and asserts) are left
  out, and ``glue`` becomes a no-op in the browser (myst-nb is not there);
- outputs and stored widget state are cleared: the reader runs the cells.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import zipfile
from pathlib import Path

import nbformat

__all__ = ["SETUP_CELL", "TORCH_NOTE", "lite_notebook", "build_bnbook_wheel",
           "write_landing_page"]

#: The kernelspec of the Lite copies: the Pyodide kernel's name.
KERNELSPEC = {"name": "python", "display_name": "Python (Pyodide)", "language": "python"}

SETUP_CELL = '''\
# In the browser (JupyterLite) only: install the widgets and the book's package into the kernel.
import sys
if sys.platform == "emscripten":
    import piplite
    await piplite.install(["ipywidgets", "comm", "jupyterlab_widgets"])
    await piplite.install("bnbook", deps=False)
'''

GLUE_LINE = '''\
    import types
    sys.modules.setdefault("myst_nb", types.SimpleNamespace(glue=lambda *args, **kwargs: None))
'''

TORCH_NOTE = ("*This cell needs PyTorch, which does not run in the browser, so it is not run "
              "in this copy; the chapter on the website shows its output.*")

_TORCH_IMPORT = re.compile(r"^\s*(import torch\b.*|from torch\b.*|from bnbook\.(torch_\w+|"
                           r"small_cnn|models|train\w*|cifar\w*|folding)\b.*)$")
_ASSIGNED = re.compile(r"^([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*=(?!=)", re.M)
_DEFINED = re.compile(r"^(?:def|class)\s+([A-Za-z_]\w*)", re.M)


def _names_imported(line: str) -> set[str]:
    """The names an import line binds (``import torch.nn.functional as F`` -> ``{"F"}``)."""
    body = re.sub(r"^\s*from\s+\S+\s+import\s+|^\s*import\s+", "", line).strip("() ")
    names = set()
    for part in body.split(","):
        words = part.split()
        if words:
            names.add(words[-1] if "as" in words else words[0].split(".")[0])
    return names


def _split_torch(cells) -> tuple[list, set[str]]:
    """Take torch import lines out of the code cells; return the cells and the names bound."""
    tainted = {"torch"}
    for cell in cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for line in cell.source.splitlines():
            if _TORCH_IMPORT.match(line):
                tainted |= _names_imported(line)
            else:
                kept.append(line)
        cell.source = "\n".join(kept)
    return cells, tainted


def _needs_torch(source: str, tainted: set[str]) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(name)}\b", source) for name in tainted)


def _torch_note(cell) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(f"{TORCH_NOTE}\n\n```python\n{cell.source}\n```",
                                         metadata={"tags": ["lite-needs-torch"]})


def lite_notebook(text: str) -> str:
    """The Lite copy (JSON text) of the notebook ``text``."""
    nb = nbformat.reads(text, as_version=4)
    cells = [c for c in nb.cells if "remove-cell" not in c.get("metadata", {}).get("tags", [])]
    cells, tainted = _split_torch(cells)
    out = []
    for cell in cells:
        if cell.cell_type == "code":
            if _needs_torch(cell.source, tainted):
                for group in _ASSIGNED.findall(cell.source) + _DEFINED.findall(cell.source):
                    tainted |= {n.strip() for n in group.split(",")}
                cell = _torch_note(cell)
            else:
                cell.outputs, cell.execution_count = [], None
                cell.metadata.pop("execution", None)
        out.append(cell)
    setup = SETUP_CELL + (GLUE_LINE if "myst_nb" in text else "")
    nb.cells = [nbformat.v4.new_code_cell(setup, metadata={"tags": ["lite-setup"]})] + out
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
            f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: bnbook.lite\nRoot-Is-Purelib: true\n"
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


def write_landing_page(site: Path, names, build_id: str) -> None:
    """``site/start.html``: what the edition is, how long a first start takes, that nothing
    leaves the browser, and a link per notebook (lab and single-notebook views)."""
    rows = "\n".join(
        f'<li><a href="notebooks/index.html?path={html.escape(n)}">{html.escape(n)}</a> '
        f'(<a href="lab/index.html?path={html.escape(n)}">in JupyterLab</a>)</li>'
        for n in names)
    page = (Path(__file__).with_name("lite_start.html").read_text(encoding="utf-8")
            .replace("{{notebooks}}", rows).replace("{{build}}", build_id))
    (Path(site) / "start.html").write_text(page, encoding="utf-8")
