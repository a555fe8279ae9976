"""Tests of bnbook.checks: every wrong implementation in the catalogue (tests/wrong_impls.py) is
rejected with a hint that names its mistake; correct implementations, the book's and others
written differently, pass with one line; a stub gets the "not implemented yet" message."""

from __future__ import annotations

import re

import numpy as np
import pytest

import wrong_impls as w
from bnbook.checks import running_stats
from bnbook.gradcheck import rel_error
from bnbook.checks import (check_batch_norm_backward, check_batch_norm_forward,
                           check_group_norm_forward, check_layer_norm_forward,
                           check_running_stats)
from bnbook.numpy_norms import (BatchNorm, batch_norm_backward, batch_norm_backward_staged,
                                batch_norm_forward)


def bn_forward(fn):
    return lambda: check_batch_norm_forward(fn)


def bn_backward(fn):
    return lambda: check_batch_norm_backward(w.bn_forward_for_staged, fn)


def running(cls):
    return lambda: check_running_stats(cls)


def layer_norm(fn):
    return lambda: check_layer_norm_forward(fn)


def group_norm(fn):
    return lambda: check_group_norm_forward(fn)


# (wrong implementation, how it is checked, a phrase its hint must contain)
CATALOGUE = [
    (w.bn_unbiased, bn_forward, "unbiased (divided by m - 1)"),
    (w.bn_eps_outside, bn_forward, "eps is added outside the square root"),
    (w.bn_no_beta, bn_forward, "beta is not added"),
    (w.bn_no_gamma, bn_forward, "gamma is not applied"),
    (w.bn_axis0_only, bn_forward, "averaged over axis 0 only"),
    (w.bn_per_sample, bn_forward, "per sample (over axes (1,)), which is layer norm"),
    (w.bn_hardcoded_eps, bn_forward, "the eps argument is ignored"),
    (w.bn_float32, bn_forward, "has dtype float32"),
    (w.bn_returns_y_only, bn_forward, "should return (y, cache)"),
    (w.bn_in_place, bn_forward, "changed its input x in place"),
    (w.bwd_missing_mu_term, bn_backward, "dx misses the term through the mean"),
    (w.bwd_missing_var_term, bn_backward, "dx misses the term through the variance"),
    (w.bwd_dbeta_mean, bn_backward, "dbeta is a mean over the batch"),
    (w.bwd_dgamma_keepdims, bn_backward, "keepdims=True"),
    (w.bwd_no_gamma_in_dx, bn_backward, "dx is not multiplied by gamma"),
    (w.bwd_sums_over_axis0, bn_backward, "summed over the wrong axes"),
    (w.bwd_returns_torch, bn_backward, "dx is a torch.Tensor"),
    (w.KerasMomentum, running, "Keras's momentum convention"),
    (w.BiasedRunningVar, running, "running_var averages the biased batch variance"),
    (w.UpdatesInEval, running, "updated in eval mode"),
    (w.EvalUsesBatchStats, running, "eval mode normalises with the batch statistics"),
    (w.IgnoresMode, running, "eval() has no effect"),
    (w.StuckInEval, running, "train() does not switch back"),
    (w.RunningVarStartsAtZero, running, "running_var = ones(C)"),
    (w.ln_batch_stats, layer_norm, "averaged over the batch (axis 0), which is batch norm"),
    (w.ln_last_axis, layer_norm, "averaged over the last axis only"),
    (w.ln_unbiased, layer_norm, "unbiased"),
    (w.ln_no_sqrt, layer_norm, "the square root is missing"),
    (w.gn_interleaved, group_norm, "groups are interleaved"),
    (w.gn_group_size, group_norm, "num_groups is used as the group size"),
    (w.gn_eps_outside, group_norm, "eps is added outside the square root"),
    (w.gn_no_beta, group_norm, "beta is not added"),
    (w.gn_instance_norm, group_norm, "instance norm"),
]


@pytest.mark.parametrize("wrong, check, phrase", CATALOGUE,
                         ids=[wrong.__name__ for wrong, _, _ in CATALOGUE])
def test_wrong_implementation_is_rejected_with_its_hint(wrong, check, phrase, capsys):
    with pytest.raises(AssertionError) as info:
        check(wrong)()
    message = str(info.value)
    assert phrase in message, message
    assert "passed" not in capsys.readouterr().out


def test_catalogue_spans_the_five_checkers_with_distinct_mistakes():
    assert len({wrong for wrong, _, _ in CATALOGUE}) == len(CATALOGUE) >= 15
    assert {check for _, check, _ in CATALOGUE} == {bn_forward, bn_backward, running,
                                                    layer_norm, group_norm}


@pytest.mark.parametrize("wrong, phrase", [
    (w.bn_unbiased, "x of shape (16, 5)"),        # fails on the first case
    (w.bn_axis0_only, "x of shape (4, 3, 5, 5)"),  # right for 2-D inputs, wrong for 4-D
    (w.bn_hardcoded_eps, "eps=0.001"),             # only the case with another eps shows it
])
def test_hint_names_the_output_and_the_input_shape(wrong, phrase):
    with pytest.raises(AssertionError, match=r"^check_batch_norm_forward: y is wrong for ") as info:
        check_batch_norm_forward(wrong)
    assert phrase in str(info.value)
    assert "threshold 1e-10" in str(info.value)


def test_backward_hint_names_the_gradient():
    with pytest.raises(AssertionError, match=r"^check_batch_norm_backward: dbeta is wrong for "
                                             r"x of shape \(6, 4\) .* against finite differences"):
        check_batch_norm_backward(w.bn_forward_for_staged, w.bwd_dbeta_mean)


def test_backward_with_a_wrong_forward_points_to_the_forward_checker():
    with pytest.raises(AssertionError, match="run check_batch_norm_forward on it first"):
        check_batch_norm_backward(w.bn_unbiased, batch_norm_backward)


def test_running_stats_hint_names_the_step_and_the_quantity():
    with pytest.raises(AssertionError, match=r"running_mean is wrong after forward #1 \(train "
                                             r"mode, x of shape \(8, 4\)\)"):
        check_running_stats(w.KerasMomentum)
    with pytest.raises(AssertionError, match=r"y is wrong after forward #4 \(eval mode"):
        check_running_stats(w.EvalUsesBatchStats)


def test_an_unexplained_mistake_gets_a_generic_hint():
    def two_mistakes(x, gamma, beta, eps=1e-5):  # unbiased *and* no beta
        return w.bn_unbiased(x, gamma, np.zeros_like(beta), eps)
    with pytest.raises(AssertionError, match="no common mistake matches exactly"):
        check_batch_norm_forward(two_mistakes)


# --- correct implementations pass --------------------------------------------------------------

SUCCESS = re.compile(r"^(check_\w+): passed \(max rel\. error (\d\.\de[-+]\d\d) < (1e-\d\d) on "
                     r"(\d+) (cases|forward passes)\)\n$")

CORRECT = [
    ("book forward", lambda: check_batch_norm_forward(batch_norm_forward)),
    ("one-pass forward", lambda: check_batch_norm_forward(w.bn_forward_one_pass)),
    ("torch forward", lambda: check_batch_norm_forward(w.bn_forward_torch)),
    ("book backward", lambda: check_batch_norm_backward(batch_norm_forward, batch_norm_backward)),
    ("book staged backward",
     lambda: check_batch_norm_backward(batch_norm_forward, batch_norm_backward_staged)),
    ("own staged backward",
     lambda: check_batch_norm_backward(w.bn_forward_for_staged, w.bn_backward_staged)),
    ("book BatchNorm", lambda: check_running_stats(BatchNorm)),
    ("renamed BatchNorm", lambda: check_running_stats(w.RenamedBatchNorm)),
    ("torch BatchNorm", lambda: check_running_stats(w.TorchBatchNorm)),
    ("numpy layer norm", lambda: check_layer_norm_forward(w.layer_norm_numpy)),
    ("torch layer norm", lambda: check_layer_norm_forward(w.layer_norm_torch)),
    ("numpy group norm", lambda: check_group_norm_forward(w.group_norm_numpy)),
    ("torch group norm", lambda: check_group_norm_forward(w.group_norm_torch)),
]


@pytest.mark.parametrize("check", [c for _, c in CORRECT], ids=[n for n, _ in CORRECT])
def test_correct_implementation_passes_with_one_line(check, capsys):
    assert check() is None
    out = capsys.readouterr().out
    match = SUCCESS.match(out)
    assert match, out
    assert float(match.group(2)) < float(match.group(3))


def test_success_line_format(capsys):
    check_batch_norm_forward(batch_norm_forward)
    check_batch_norm_backward(batch_norm_forward, batch_norm_backward)
    check_running_stats(BatchNorm)
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"check_batch_norm_forward: passed \(max rel\. error \d\.\de-\d\d < "
                        r"1e-10 on 6 cases\)", lines[0])
    assert re.fullmatch(r"check_batch_norm_backward: passed \(max rel\. error \d\.\de-\d\d < "
                        r"1e-06 on 5 cases\)", lines[1])
    assert lines[2] == ("check_running_stats: passed (max rel. error 0.0e+00 < 1e-10 on 10 "
                        "forward passes)")


def test_checkers_are_deterministic(capsys):
    for _ in range(2):
        check_batch_norm_forward(w.bn_forward_one_pass)
        check_batch_norm_backward(w.bn_forward_for_staged, w.bn_backward_staged)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[:2] == lines[2:]


def test_running_simulation_without_mistakes_is_the_book_layer():
    for plan in running_stats._running_plans():
        reference = running_stats._student_trace("test", BatchNorm, plan)
        simulated = running_stats._simulate_running(plan)
        for ours, theirs in zip(simulated, reference):
            for a, b in zip(ours, theirs):
                assert rel_error(a, b) < 1e-14


def test_every_running_variant_differs_from_the_book_layer():
    for plan in running_stats._running_plans():
        reference = running_stats._simulate_running(plan)
        for hint, flags in running_stats._RUNNING_VARIANTS:
            trace = running_stats._simulate_running(plan, **flags)
            assert any(rel_error(a, b) > 1e-6 for s, r in zip(trace, reference)
                       for a, b in zip(s, r)), hint


# --- stubs and other exceptions ----------------------------------------------------------------

STUB_MESSAGE = ("not implemented yet: replace the `raise NotImplementedError` line in the "
                "exercise cell with your code")


def stub_forward(x, gamma, beta, eps=1e-5):
    raise NotImplementedError


def stub_group_norm(x, gamma, beta, num_groups, eps=1e-5):
    raise NotImplementedError


def stub_backward(dy, cache):
    raise NotImplementedError


class StubLayer(BatchNorm):
    def forward(self, x):
        raise NotImplementedError


@pytest.mark.parametrize("check, name", [
    (lambda: check_batch_norm_forward(stub_forward), "stub_forward"),
    (lambda: check_layer_norm_forward(stub_forward), "stub_forward"),
    (lambda: check_group_norm_forward(stub_group_norm), "stub_group_norm"),
    (lambda: check_batch_norm_backward(batch_norm_forward, stub_backward), "stub_backward"),
    (lambda: check_batch_norm_backward(stub_forward, stub_backward), "stub_forward"),
    (lambda: check_running_stats(StubLayer), "StubLayer.forward"),
])
def test_a_stub_gets_the_not_implemented_message(check, name):
    with pytest.raises(NotImplementedError) as info:
        check()
    assert str(info.value) == f"`{name}` is {STUB_MESSAGE}"
    assert info.value.__suppress_context__  # no second traceback from the stub


def test_another_exception_passes_through_with_the_input_it_failed_on():
    def broken(x, gamma, beta, eps=1e-5):
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom") as info:
        check_batch_norm_forward(broken)
    assert any("x of shape (16, 5)" in note for note in info.value.__notes__)


# --- the eval-mode forward (chapter 4's exercise) ----------------------------------------------

def _eval_bn(x_hat_of):
    def fn(x, gamma, beta, running_mean, running_var, eps=1e-5):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x_hat = x_hat_of(x, running_mean.reshape(shape), running_var.reshape(shape), eps)
        return gamma.reshape(shape) * x_hat + beta.reshape(shape)
    return fn


def test_inference_forward_passes_the_book_function_with_one_line(capsys):
    from bnbook.checks import check_batch_norm_inference_forward
    from bnbook.numpy_norms import batch_norm_inference_forward
    check_batch_norm_inference_forward(batch_norm_inference_forward)
    check_batch_norm_inference_forward(_eval_bn(lambda x, rm, rv, eps: (x - rm) / np.sqrt(rv + eps)))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("passed" in line for line in lines)


@pytest.mark.parametrize("x_hat_of, phrase", [
    (lambda x, rm, rv, eps: (x - rm) / (np.sqrt(rv) + eps), "eps is added outside"),
    (lambda x, rm, rv, eps: (x - rm) / (rv + eps), "not by its square root"),
    (lambda x, rm, rv, eps: x / np.sqrt(rv + eps), "running mean is not subtracted"),
    (lambda x, rm, rv, eps: (x - x.mean(tuple(i for i in range(x.ndim) if i != 1), keepdims=True))
     / np.sqrt(x.var(tuple(i for i in range(x.ndim) if i != 1), keepdims=True) + eps),
     "training mode"),
])
def test_inference_forward_mistakes_are_named(x_hat_of, phrase):
    from bnbook.checks import check_batch_norm_inference_forward
    with pytest.raises(AssertionError, match=phrase):
        check_batch_norm_inference_forward(_eval_bn(x_hat_of))


def test_inference_forward_stub_says_not_implemented():
    from bnbook.checks import check_batch_norm_inference_forward

    def stub(x, gamma, beta, running_mean, running_var, eps=1e-5):
        raise NotImplementedError
    with pytest.raises(NotImplementedError, match="not implemented yet"):
        check_batch_norm_inference_forward(stub)
