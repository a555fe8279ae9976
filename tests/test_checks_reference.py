"""The checkers' reference against PyTorch (float64), the checkers without torch, what a student
sees in IPython, and the chapters' own solution cells passing their checkers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import wrong_impls as w
from bnbook.checks import _reference as ref
from bnbook.checks.backward import _cases as backward_cases
from bnbook.checks.forward import _bn_cases, _inference_cases
from bnbook.checks.running_stats import _running_plans, _simulate_running, _VARIANTS
from bnbook.gradcheck import numerical_gradient, rel_error

ROOT = Path(__file__).resolve().parents[1]
t = torch.from_numpy


def test_batch_norm_reference_is_pytorchs():
    for case in _bn_cases():
        theirs = F.batch_norm(t(case.x), None, None, t(case.gamma), t(case.beta), training=True,
                              eps=case.eps).numpy()
        assert rel_error(ref.batch_norm(case.x, case.gamma, case.beta, case.eps), theirs) < 1e-13


def test_eval_mode_reference_is_pytorchs():
    for case, (rm, rv) in _inference_cases():
        theirs = F.batch_norm(t(case.x), t(rm), t(rv), t(case.gamma), t(case.beta),
                              training=False, eps=case.eps).numpy()
        ours = ref.batch_norm_eval(case.x, case.gamma, case.beta, rm, rv, case.eps)
        assert rel_error(ours, theirs) < 1e-13


@pytest.mark.parametrize("shape, groups", [((6, 8), 2), ((4, 6, 5, 5), 3), ((3, 6, 7), 6),
                                           ((2, 8, 4, 4), 1)])
def test_layer_and_group_norm_references_are_pytorchs(shape, groups):
    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 2.0, shape)
    gamma, beta = rng.normal(1, 1, shape[1:]), rng.normal(0, 1, shape[1:])
    theirs = F.layer_norm(t(x), shape[1:], t(gamma), t(beta), eps=1e-3).numpy()
    assert rel_error(ref.layer_norm(x, gamma, beta, 1e-3), theirs) < 1e-13
    gamma, beta = rng.normal(1, 1, shape[1]), rng.normal(0, 1, shape[1])
    theirs = F.group_norm(t(x), groups, t(gamma), t(beta), eps=1e-3).numpy()
    assert rel_error(ref.group_norm(x, gamma, beta, groups, 1e-3), theirs) < 1e-13


def test_gradient_reference_is_autograds_and_finite_differences():
    for case in backward_cases():
        x, gamma, beta = (t(a.copy()).requires_grad_() for a in (case.x, case.gamma, case.beta))
        y = F.batch_norm(x, None, None, gamma, beta, training=True, eps=case.eps)
        (y * t(case.dy)).sum().backward()
        ours = ref.batch_norm_gradients(case.x, case.gamma, case.eps, case.dy)
        for mine, theirs in zip(ours, (x.grad, gamma.grad, beta.grad)):
            assert rel_error(mine, theirs.numpy()) < 1e-12
        numerical = numerical_gradient(
            lambda a: ref.batch_norm(a, case.gamma, case.beta, case.eps), case.x.copy(), case.dy)
        assert rel_error(ours[0], numerical) < 1e-6


def test_running_reference_is_pytorchs_layer():
    for plan in _running_plans():
        c = plan[0][1].shape[1]
        cls = torch.nn.BatchNorm2d if plan[0][1].ndim == 4 else torch.nn.BatchNorm1d
        layer = cls(c, eps=1e-5, momentum=0.1, dtype=torch.float64)
        for (mode, x), (y, rm, rv) in zip(plan, ref.running_trace(plan, 1e-5, 0.1)):
            layer.train(mode == "train")
            with torch.no_grad():
                theirs = layer(t(x)).numpy()
            assert rel_error(y, theirs) < 1e-13
            assert rel_error(rm, layer.running_mean.numpy()) < 1e-13
            assert rel_error(rv, layer.running_var.numpy()) < 1e-13


def test_every_running_variant_differs_from_the_reference_and_none_is_it():
    for plan in _running_plans():
        reference = ref.running_trace(plan, 1e-5, 0.1)
        for ours, theirs in zip(_simulate_running(plan), reference):
            assert all(rel_error(a, b) < 1e-14 for a, b in zip(ours, theirs))
        for mistake, _, flags in _VARIANTS:
            trace = _simulate_running(plan, **flags)
            if flags == {"count_n": True} and plan[0][1].ndim == 2:
                continue  # m = N is right for (N, D)
            assert any(rel_error(a, b) > 1e-6 for s, r in zip(trace, reference)
                       for a, b in zip(s, r)), mistake


# --- without torch -----------------------------------------------------------------------------

NO_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import numpy as np
import bnbook.checks as checks
from bnbook.checks import check_batch_norm_forward, CheckFailed

def mine(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return gamma.reshape(shape) * (x - mu) / np.sqrt(var + eps) + beta.reshape(shape), None

def wrong(x, gamma, beta, eps=1e-5):
    return mine(x, gamma, beta, eps)[0] * 2, None

check_batch_norm_forward(mine)
try:
    check_batch_norm_forward(wrong, hint=1)
except CheckFailed as failure:
    print("FAILED AS EXPECTED:", str(failure).splitlines()[0])
loaded = sorted(m for m in sys.modules if m.startswith("bnbook"))
print("LOADED", " ".join(loaded))
"""


def test_the_checkers_import_and_run_without_torch():
    result = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "check_batch_norm_forward: passed" in result.stdout
    assert "FAILED AS EXPECTED: check_batch_norm_forward: y is wrong for" in result.stdout
    loaded = result.stdout.split("LOADED ")[1].split()
    assert not [m for m in loaded if m.startswith(("bnbook.numpy_norms", "bnbook.torch"))]


# --- what a student sees in IPython ------------------------------------------------------------

def run_in_ipython(cells):
    """Run ``cells`` in a fresh IPython InteractiveShell (in a subprocess) -> its stdout."""
    script = textwrap.dedent("""
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance(colors="NoColor")
        for cell in {cells!r}:
            print("In:", cell.splitlines()[-1])
            shell.run_cell(cell)
    """).format(cells=cells)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_ipython_shows_the_message_and_not_the_checkers_frames():
    out = run_in_ipython([
        "from bnbook.checks import check_batch_norm_forward, hint\n"
        "from wrong_impls import bn_eps_outside",
        "check_batch_norm_forward(bn_eps_outside)",
        "hint()",
        "check_batch_norm_forward(bn_eps_outside, hint=2)",
    ])
    assert "check_batch_norm_forward: y is wrong for x of shape (16, 5)" in out
    assert "Hint 1: eps is added outside the square root" in out
    assert "Hint 2: x_hat = (x - mu) / sqrt(var + eps)" in out
    for frame_text in ("Traceback", "_harness.py", "forward.py", "File ", "F.batch_norm",
                       "raise ", "CheckFailed"):
        assert frame_text not in out, out


def test_ipython_shows_a_stub_in_one_line():
    out = run_in_ipython([
        "from bnbook.checks import check_batch_norm_forward",
        "def my_batch_norm_forward(x, gamma, beta, eps=1e-5):\n    raise NotImplementedError",
        "check_batch_norm_forward(my_batch_norm_forward)",
    ])
    assert ("`my_batch_norm_forward` is not written yet: replace `raise NotImplementedError` in "
            "the cell above with your code, then run this cell again.") in out
    assert "Traceback" not in out


# --- the chapters' solutions -------------------------------------------------------------------

def solution_cells(stem):
    """The code cells of a chapter that define a ``my_*`` solution and run its checker."""
    cells = json.loads((ROOT / "chapters" / f"{stem}.ipynb").read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"
            and "skip-execution" not in c["metadata"].get("tags", [])
            and ("def my_" in "".join(c["source"]) or "class My" in "".join(c["source"]))
            and "check_" in "".join(c["source"])]


@pytest.mark.parametrize("stem, count", [("02_forward", 2), ("03_backward", 2),
                                         ("04_inference", 2), ("08_other_norms", 2)])
def test_the_chapters_solution_cells_pass_with_one_line_each(stem, count, capsys):
    import bnbook.checks
    from bnbook.numpy_norms import batch_norm_forward
    namespace = {"np": np, "batch_norm_forward": batch_norm_forward,
                 **{name: getattr(bnbook.checks, name) for name in bnbook.checks.__all__}}
    cells = solution_cells(stem)
    assert len(cells) == count
    for cell in cells:
        exec(compile(cell, f"<{stem}>", "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == count and all(": passed (max rel. error " in line for line in lines)


def test_a_chapter_solution_turned_into_a_wrapper_is_refused():
    from bnbook.checks import Refused, check_batch_norm_backward
    from bnbook.numpy_norms import batch_norm_backward, batch_norm_forward

    def my_batch_norm_backward(dy, cache):
        return batch_norm_backward(dy, cache)
    with pytest.raises(Refused, match="bnbook.numpy_norms.batch_norm_backward"):
        check_batch_norm_backward(batch_norm_forward, my_batch_norm_backward)
    assert w.bn_forward_for_staged  # the catalogue module is importable beside the chapters
