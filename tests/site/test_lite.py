"""The browser edition's pure parts (bnbook.site.lite, bnbook.site.lite_files, bnbook.site.lite_check): files
checked against the lock, the Lite copies, the configuration, the wheel; the browser itself is
tested by ``make lite-test``."""

import ast
import asyncio
import builtins
import inspect
import hashlib
import json
import zipfile
from pathlib import Path

import nbformat
import pytest

from bnbook.site import lite, lite_files
from bnbook.site import lite_check as lite_test
from bnbook.site.lite_files import SETUP_CELL, TORCH_NOTE, lite_notebook

ROOT = Path(__file__).resolve().parents[2]


# --- package files against the lock -------------------------------------------------------------

def _lock(packages):
    return {"info": {"version": "0.0.1"},
            "packages": {name: {"file_name": f"{name}-1.0-py3-none-any.whl", "sha256": sha,
                                "depends": depends} for name, (sha, depends) in packages.items()}}


def test_pyodide_files_follow_the_dependencies_in_the_lock():
    lock = _lock({"numpy": ("a" * 64, []), "matplotlib": ("b" * 64, ["numpy", "Pillow"]),
                  "pillow": ("c" * 64, []), "unused": ("d" * 64, [])})
    files = lite.pyodide_files(lock, wanted=("matplotlib",))
    assert files == {"matplotlib-1.0-py3-none-any.whl": "b" * 64,
                     "numpy-1.0-py3-none-any.whl": "a" * 64,
                     "pillow-1.0-py3-none-any.whl": "c" * 64}
    with pytest.raises(ValueError, match="no package 'scipy'"):
        lite.pyodide_files(lock, wanted=("scipy",))


def _mirror_with(tmp_path, monkeypatch, data: bytes, sha: str):
    mirror = tmp_path / "mirror" / "pyodide-0.0.1"
    mirror.mkdir(parents=True)
    (mirror / "numpy-1.0-py3-none-any.whl").write_bytes(data)
    lock_path = tmp_path / "pyodide-lock.json"
    lock_path.write_text(json.dumps(_lock({"numpy": (sha, [])})))
    monkeypatch.setenv("BNBOOK_MIRROR", str(tmp_path / "mirror"))
    return lock_path


def test_a_mirror_file_with_the_locks_sha256_is_taken(tmp_path, monkeypatch):
    data = b"the numpy wheel"
    lock_path = _mirror_with(tmp_path, monkeypatch, data, hashlib.sha256(data).hexdigest())
    (path,) = lite.fetch_pyodide_files(lock_path, tmp_path / "cache", "http://unused/", ("numpy",))
    assert path.read_bytes() == data and path.parent == tmp_path / "cache" / "pyodide-0.0.1"


def test_a_mirror_file_with_another_sha256_is_refused(tmp_path, monkeypatch):
    lock_path = _mirror_with(tmp_path, monkeypatch, b"another file",
                             hashlib.sha256(b"the numpy wheel").hexdigest())
    with pytest.raises(ValueError, match="SHA256"):
        lite.fetch_pyodide_files(lock_path, tmp_path / "cache", "http://unused/", ("numpy",))
    assert not (tmp_path / "cache" / "pyodide-0.0.1" / "numpy-1.0-py3-none-any.whl").exists()


# --- the configuration --------------------------------------------------------------------------

def test_storage_is_named_after_what_the_build_serves(tmp_path):
    wheel = tmp_path / "bnbook-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel 1")
    first = lite.content_id({"a.ipynb": "{}"}, [wheel])
    assert first == lite.content_id({"a.ipynb": "{}"}, [wheel])
    assert first != lite.content_id({"a.ipynb": "{ }"}, [wheel])
    wheel.write_bytes(b"wheel 2")
    assert first != lite.content_id({"a.ipynb": "{}"}, [wheel])
    data = lite.lite_config(first)["jupyter-config-data"]
    assert data["contentsStorageName"] == f"bnbook-{first}"
    assert data["settingsStorageName"] == f"bnbook-settings-{first}"


def _site(tmp_path, config):
    (tmp_path / "static" / "pyodide").mkdir(parents=True)
    (tmp_path / "static" / "pyodide" / "pyodide.js").write_text("// runtime")
    (tmp_path / "jupyter-lite.json").write_text(json.dumps(config))
    return tmp_path


def test_the_config_loads_the_sites_own_pyodide_js_and_names_no_other_host(tmp_path):
    config = lite.lite_config("0123456789ab")
    kernel = config["jupyter-config-data"]["litePluginSettings"][
        "@jupyterlite/pyodide-kernel-extension:kernel"]
    assert kernel["pyodideUrl"] == "./static/pyodide/pyodide.js" and kernel["disablePyPIFallback"]
    assert lite.check_config(_site(tmp_path, config)) == config


@pytest.mark.parametrize("change, message", [
    (lambda k: k.update(pyodideUrl="./static/pyodide/pyodide.mjs"), "classic worker"),
    (lambda k: k.update(pyodideUrl="https://cdn.jsdelivr.net/pyodide/v0.27.7/full/pyodide.js"),
     "pyodideUrl"),
    (lambda k: k.update(pipliteUrls=["https://pypi.org/simple/"]), "other hosts"),
])
def test_check_config_refuses_what_would_hang_or_leave_the_site(tmp_path, change, message):
    config = lite.lite_config("0123456789ab")
    change(config["jupyter-config-data"]["litePluginSettings"][
        "@jupyterlite/pyodide-kernel-extension:kernel"])
    with pytest.raises(ValueError, match=message):
        lite.check_config(_site(tmp_path, config))


# --- the Lite copies ----------------------------------------------------------------------------

def _notebook(*cells, kernel="python3"):
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb)


def _copy(*cells):
    return nbformat.reads(lite_notebook(_notebook(*cells)), as_version=4)


def test_a_copy_declares_the_pyodide_kernel_and_starts_with_the_guarded_set_up_cell():
    copy = _copy(nbformat.v4.new_code_cell("print(1)"))
    assert copy.metadata.kernelspec["name"] == "python"
    assert copy.cells[0].source == SETUP_CELL and copy.cells[1].source == "print(1)"
    assert 'if sys.platform == "emscripten":' in SETUP_CELL     # does nothing under CPython
    namespace = {}
    run = eval(compile(SETUP_CELL, "<setup>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT),
               namespace)
    if inspect.iscoroutine(run):
        asyncio.run(run)
    assert "piplite" not in namespace and "sys" in namespace


def test_torch_statements_are_commented_out_and_torch_only_cells_become_notes():
    copy = _copy(
        nbformat.v4.new_code_cell("import numpy as np\nimport torch\n"
                                  "import torch.nn.functional as F"),
        nbformat.v4.new_code_cell("torch.manual_seed(0)\nx = np.ones(3)\n"
                                  "y = F.relu(torch.ones(3))"),
        nbformat.v4.new_code_cell("print(x)"),
        nbformat.v4.new_code_cell("z = y * 2\nprint(z)"),
        nbformat.v4.new_code_cell("y = np.zeros(2)  # the name rebound without torch\nprint(y)"),
        nbformat.v4.new_code_cell("def f(F):\n    return F + 1  # a parameter, not torch's F\n"
                                  "f(1)"))
    sources = [c.source for c in copy.cells[1:]]
    assert sources[0].splitlines() == ["import numpy as np",
                                       "# (needs PyTorch, not run in the browser) import torch",
                                       "# (needs PyTorch, not run in the browser) import "
                                       "torch.nn.functional as F"]
    assert sources[1].splitlines()[1] == "x = np.ones(3)" and sources[1].count("needs PyTorch") == 2
    assert sources[2] == "print(x)"
    assert copy.cells[4].cell_type == "markdown" and TORCH_NOTE in sources[3]
    assert "z = y * 2" in sources[3] and "lite-needs-torch" in copy.cells[4].metadata.tags
    assert sources[4].startswith("y = np.zeros(2)") and "PyTorch" not in sources[5]


def test_hidden_cells_are_left_out_and_what_they_bind_is_not_run():
    copy = _copy(nbformat.v4.new_code_cell("result = load()", metadata={"tags": ["remove-cell"]}),
                 nbformat.v4.new_code_cell("print(result)"),
                 nbformat.v4.new_code_cell("print(2)"))
    assert [c.cell_type for c in copy.cells[1:]] == ["markdown", "code"]
    assert "print(result)" in copy.cells[1].source and TORCH_NOTE in copy.cells[1].source
    assert not any("load()" in c.source for c in copy.cells)


def test_outputs_are_cleared_and_markdown_figures_inlined():
    code = nbformat.v4.new_code_cell("print(1)", execution_count=3,
                                     outputs=[nbformat.v4.new_output("stream", text="1\n")])
    md = nbformat.v4.new_markdown_cell("![Fig. 1](attachment:fig.png)")
    md.attachments = {"fig.png": {"image/png": "iVBORw0KGgo="}}
    copy = _copy(code, md)
    assert copy.cells[1].outputs == [] and copy.cells[1].execution_count is None
    assert copy.cells[2].source == "![Fig. 1](data:image/png;base64,iVBORw0KGgo=)"
    assert "attachments" not in copy.cells[2]


@pytest.mark.parametrize("chapter", lite.CHAPTERS)
def test_no_cell_of_a_chapters_copy_reads_a_name_that_no_earlier_cell_binds(chapter):
    copy = json.loads(lite_notebook((ROOT / "chapters" / f"{chapter}.ipynb").read_text()))
    known = set(dir(builtins)) | {"display"}
    for cell in copy["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            read, bound = lite_files._cell_names(source)
            assert not read - known, f"{chapter}: {sorted(read - known)} unbound in {source[:80]!r}"
            known |= bound


def test_chapter_2s_first_exercise_stays_code_in_its_copy():
    copy = json.loads(lite_notebook((ROOT / "chapters" / "02_forward.ipynb").read_text()))
    code = ["".join(c["source"]) for c in copy["cells"] if c["cell_type"] == "code"]
    assert any("check_batch_norm_forward(my_batch_norm_forward)" in s for s in code)
    assert any("def my_batch_norm_forward" in s and "PyTorch" not in s for s in code)


# --- the wheel ----------------------------------------------------------------------------------

def test_the_bnbook_wheel_is_pure_python_from_the_tree_with_no_dependencies(tmp_path):
    wheel = lite_files.build_bnbook_wheel(ROOT, tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{dist}/METADATA").decode()
        record = archive.read(f"{dist}/RECORD").decode()
        source = (ROOT / "code" / "bnbook" / "site" / "lite_files.py").read_bytes()
        assert archive.read("bnbook/site/lite_files.py") == source
    assert wheel.name.endswith("-py3-none-any.whl") and "bnbook/numpy_norms/__init__.py" in names
    assert "Requires-Dist" not in metadata and not any("__pycache__" in n for n in names)
    assert {line.split(",")[0] for line in record.splitlines()} == names


# --- the browser test's own expectations --------------------------------------------------------

def test_the_browser_tests_answers_fail_and_pass_chapter_2s_checker():
    from bnbook.checks import CheckFailed, check_batch_norm_forward
    import numpy as np

    namespace = {"np": np}
    exec(lite_test.WRONG_ANSWER, namespace)
    with pytest.raises(CheckFailed, match=lite_test._CHECK_FAILED):
        check_batch_norm_forward(namespace["my_batch_norm_forward"])
    exec(lite_test.RIGHT_ANSWER, namespace)
    check_batch_norm_forward(namespace["my_batch_norm_forward"])


@pytest.mark.parametrize("url, content_type, wrong", [
    ("http://h/lite/static/pyodide/pyodide.asm.wasm", "application/wasm", False),
    ("http://h/lite/static/pyodide/pyodide.asm.wasm", "application/octet-stream", True),
    ("http://h/lite/static/pyodide/pyodide.mjs", "text/javascript; charset=utf-8", False),
    ("http://h/lite/build/a.js?v=1", None, True),
    ("http://h/lite/build/a.js?v=1", "text/plain", True),
    ("http://h/lite/api/contents/all.json", "application/json", False),
])
def test_wrong_mime_names_what_the_browser_would_refuse(url, content_type, wrong):
    assert (lite_test.wrong_mime(url, content_type) is not None) == wrong


def test_a_missing_chromium_is_named_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "lite" / "repl").mkdir(parents=True)
    (tmp_path / "lite" / "repl" / "index.html").write_text("<html></html>")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("BNBOOK_CHROMIUM", raising=False)
    with pytest.raises(FileNotFoundError, match="Chromium not found"):
        lite_test.run(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


RUN_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None                 # any import of torch (or pooch) now fails
sys.modules["pooch"] = None
import matplotlib
matplotlib.use("agg")
from IPython.core.interactiveshell import InteractiveShell
from bnbook.site.lite_files import lite_notebook

shell = InteractiveShell()
copy = json.loads(lite_notebook(open(sys.argv[1], encoding="utf-8").read()))
for index, cell in enumerate(copy["cells"]):
    if cell["cell_type"] == "code":
        result = shell.run_cell("".join(cell["source"]), silent=True)
        error = result.error_before_exec or result.error_in_exec
        if error is not None and type(error).__name__ != "NotWrittenYet":
            print(f"cell {index}: {type(error).__name__}: {error}")
            sys.exit(1)
print("ran to the end")
"""


@pytest.mark.parametrize("chapter", lite.CHAPTERS)
def test_a_chapters_copy_runs_to_its_end_without_torch_and_pooch(chapter, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT / "code"), "MPLBACKEND": "agg"}
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH,
                             str(ROOT / "chapters" / f"{chapter}.ipynb")],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0 and "ran to the end" in result.stdout, (
        result.stdout[-2000:] + result.stderr[-2000:])


def test_modules_that_import_torch_are_found_from_the_source():
    found = lite_files.torch_modules()
    assert {"bnbook.experiments.norms.sequence_norms", "bnbook.data.subsets", "bnbook.torch_norms"} <= found
    assert not found & {"bnbook.numpy_norms", "bnbook.checks", "bnbook.widgets",
                        "bnbook.gradcheck", "bnbook.notebook", "bnbook.site.lite_files"}


def test_an_object_a_torch_statement_changes_is_torch_s_afterwards():
    copy = _copy(nbformat.v4.new_code_cell(
        "import numpy as np\nimport torch\nnodes, curve = {}, []\n"
        "nodes['mu'] = torch.zeros(2)\nfor step in range(3):\n    curve.append(torch.ones(1))\n"
        "np.save('unused', torch.ones(1)) if False else None\nprint(nodes['mu'], curve[0])\n"
        "print(np.ones(2))"))
    lines = copy.cells[1].source.splitlines()
    assert lines[2] == "nodes, curve = {}, []" and lines[-1] == "print(np.ones(2))"
    assert all(line.startswith("# (needs PyTorch") for line in lines[3:-1])
