"""Tests of chapters/conftest.py, the plugin that caches nbval's outputs for the book: a cell
whose last statement ends with ``;`` keeps its printed output but not its value, as in
IPython (nbval runs cells without history, so IPython itself cannot tell)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "chapters" / "conftest.py"


@pytest.fixture(scope="module")
def conftest():
    spec = importlib.util.spec_from_file_location("chapters_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("source, hidden", [
    ('compare("var", var, ref, threshold);', True),
    ("x = 1\nnp.abs(x).max();  # the value is not the point", True),
    ("x = 1\nnp.abs(x).max()", False),
    ("for i in range(3):\n    f(i);\nf(4)", False),
    ('s = "a;"\ns', False),
    ("%matplotlib inline\nf();", True),
    ("", False),
    ("def broken(:\n", False),
])
def test_hides_its_value_follows_ipython(conftest, source, hidden):
    assert conftest.hides_its_value(source) is hidden


def _run_of(sources: list[str], outputs: list[list[dict]]):
    """What the plugin records for a notebook: nbval's file and its items, with the outputs
    the kernel sent (an execute_result even after a trailing ';')."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    items = [SimpleNamespace(cell_num=i, test_outputs=outs) for i, outs in enumerate(outputs)]
    return {"file": SimpleNamespace(nb=nb), "items": items}


def test_cached_outputs_drop_the_value_a_semicolon_hides(conftest):
    printed = {"output_type": "stream", "name": "stdout", "text": "rel_error: 5.60e-16\n"}
    value = {"output_type": "execute_result", "data": {"text/plain": "5.604227509413148e-16"},
             "metadata": {}, "execution_count": 7}
    run = _run_of(['print("rel_error: 5.60e-16")\ncompare(a, b);', "compare(a, b)"],
                  [[printed, value], [value]])
    nb = conftest._executed_notebook(run)
    quiet, loud = nb.cells
    assert [o.output_type for o in quiet.outputs] == ["stream"]
    assert quiet.outputs[0].text == printed["text"]
    assert [o.output_type for o in loud.outputs] == ["execute_result"]
    assert loud.outputs[0].data["text/plain"] == "5.604227509413148e-16"
    assert loud.outputs[0].execution_count == loud.execution_count == 2
    nbformat.validate(nb)
