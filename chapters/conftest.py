"""How the chapters are tested, and why the book does not execute them a second time.

``make test`` runs every notebook under nbval (``pytest --nbval-lax chapters``): each code
cell must run without error, and cells marked ``# NBVAL_CHECK_OUTPUT`` must print what the
notebook stores. This plugin then hands each notebook that passed, with the outputs nbval
recorded, to the execution cache that ``jupyter-book build`` reads (``execute.cache`` in
``_config.yml``; the cache is keyed on the code cells' source and the kernel). ``make book``
finds them there and renders those outputs instead of running the notebooks again. A
notebook that failed, or whose code changed since, is executed by the build as usual.

Exercise stubs, the cells a student fills in (tagged ``skip-execution`` for the build and
``nbval-skip``), are not collected at all: they are deselected, not skipped, so a run of
``make test`` reports 0 skipped, and the notebook is cached with those cells left empty.

nbval runs each cell with ``store_history=False``, so IPython cannot see that the cell ends
with ``;`` and shows its value anyway; :func:`hides_its_value` applies IPython's rule when the
outputs are cached, so the book shows what JupyterLab shows.

It also prints, per notebook, the wall time of its cells: each chapter's live work should
stay within about a minute at two threads.
"""

from __future__ import annotations

import copy
import tokenize
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# The tags of a cell that neither nbval nor the book executes (see the module docstring).
DELIBERATE_SKIP_TAGS = {"skip-execution", "nbval-skip"}

# notebook path -> {"file": nbval's IPyNbFile, "items": [cells run], "failed": bool, "seconds": float}
_RUNS: dict[str, dict] = {}


def _execution_cache() -> Path:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return ROOT / config["execute"]["cache"]


def _is_nbval_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item.parent, "nb")


def _skipped_on_purpose(cell) -> bool:
    return DELIBERATE_SKIP_TAGS <= set(cell.get("metadata", {}).get("tags", []))


def pytest_collection_modifyitems(config, items):
    """Deselect the exercise stubs: nbval must not run them, and they are not skipped tests."""
    stubs = [i for i in items if _is_nbval_cell(i) and _skipped_on_purpose(i.cell)]
    if stubs:
        items[:] = [i for i in items if i not in stubs]
        config.hook.pytest_deselected(items=stubs)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _is_nbval_cell(item):
        return
    report = outcome.get_result()
    run = _RUNS.setdefault(str(item.parent.fspath),
                           {"file": item.parent, "items": [], "failed": False, "seconds": 0.0})
    if report.when == "call":
        run["items"].append(item)
        run["seconds"] += call.stop - call.start
    if report.failed or report.skipped:
        run["failed"] = True


def hides_its_value(source: str) -> bool:
    """Whether IPython hides a cell's value: its last statement ends with ``;`` (comments
    after it allowed). The same test IPython's display hook applies, on the cell as IPython
    transforms it (magics and all)."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return bool(DisplayHook.semicolon_at_end_of_expression(
            TransformerManager().transform_cell(source)))
    except (SyntaxError, ValueError, tokenize.TokenError):
        return False


def _executed_notebook(run: dict) -> nbformat.NotebookNode | None:
    """The notebook with the outputs nbval recorded, or None if any code cell did not run."""
    nb = copy.deepcopy(run["file"].nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    ran = {item.cell_num: item for item in run["items"]}
    count = 0
    for number, cell in enumerate(code_cells):
        if _skipped_on_purpose(cell):
            cell.outputs, cell.execution_count = [], None
            continue
        item = ran.get(number)
        if item is None or item.test_outputs is None:
            return None
        count += 1
        outputs = []
        quiet = hides_its_value(cell.source)
        for out in item.test_outputs:
            out = nbformat.from_dict(dict(out))
            if out.output_type == "execute_result":
                if quiet:
                    continue
                out.execution_count = count
            outputs.append(out)
        cell.outputs = outputs
        cell.execution_count = count
    return nb


def pytest_sessionfinish(session, exitstatus):
    if not _RUNS:
        return
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = None
    lines = []
    for path, run in sorted(_RUNS.items()):
        name = Path(path).name
        nb = None if run["failed"] else _executed_notebook(run)
        if nb is not None:
            cache = cache or get_cache(str(_execution_cache()))
            cache.cache_notebook_bundle(
                CacheBundleIn(nb, str(Path(path).resolve()),
                              data={"execution_seconds": run["seconds"]}),
                check_validity=False, overwrite=True)
        state = "cached for the book" if nb is not None else "not cached (failed or incomplete)"
        lines.append(f"{name:<28} {run['seconds']:7.1f} s   {state}")
    total = sum(r["seconds"] for r in _RUNS.values())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("-", f"notebooks: {total:.1f} s of cell time")
        for line in lines:
            reporter.write_line(line)
    _RUNS.clear()
