"""Tests of bnbook.checks: every wrong implementation in the catalogue (tests/wrong_impls.py) is
caught by the first message, which says what is wrong, and named at a hint level; no message
of any level holds the solution or points at the library; wrappers of the library or of
PyTorch are refused; correct implementations, the chapters' solutions among them, pass with
one line; a stub gets the "not written yet" message.

The reference itself is tested against PyTorch in tests/test_checks_reference.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import wrong_impls as w
from bnbook.checks import (CheckFailed, NotWrittenYet, Refused, check_batch_norm_backward,
                           check_batch_norm_forward, check_batch_norm_inference_forward,
                           check_group_norm_forward, check_layer_norm_forward,
                           check_running_stats, hint)
from bnbook.numpy_norms import BatchNorm, batch_norm_backward, batch_norm_forward


def bn_forward(fn):
    return lambda **kw: check_batch_norm_forward(fn, **kw)


def bn_backward(fn):
    return lambda **kw: check_batch_norm_backward(w.bn_forward_for_staged, fn, **kw)


def running(cls):
    return lambda **kw: check_running_stats(cls, **kw)


def layer_norm(fn):
    return lambda **kw: check_layer_norm_forward(fn, **kw)


def group_norm(fn):
    return lambda **kw: check_group_norm_forward(fn, **kw)


# (wrong implementation, how it is checked, the first message's start, a phrase the hints hold)
CATALOGUE = [
    (w.bn_unbiased, bn_forward, "y is wrong", "the unbiased one (divided by m - 1)"),
    (w.bn_eps_outside, bn_forward, "y is wrong", "eps is added outside the square root"),
    (w.bn_no_beta, bn_forward, "y is wrong", "beta is not added"),
    (w.bn_no_gamma, bn_forward, "y is wrong", "gamma is not applied"),
    (w.bn_axis0_only, bn_forward, "y is wrong", "over axis 0 only"),
    (w.bn_per_sample, bn_forward, "y is wrong", "which is layer norm"),
    (w.bn_hardcoded_eps, bn_forward, "y is wrong", "the eps argument is ignored"),
    (w.bn_float32, bn_forward, "y has dtype float32", "astype(np.float32)"),
    (w.bn_returns_y_only, bn_forward, "`bn_returns_y_only` should return (y, cache)",
     None),
    (w.bn_in_place, bn_forward, "`bn_in_place` changed its input x in place", "in-place"),
    (w.bn_m_equals_n, bn_forward, "y is wrong", "m = N"),
    (w.bn_std_for_var, bn_forward, "y is wrong", "standard deviation is used where the variance"),
    (w.bn_float32_inside, bn_forward, "y is wrong", "runs in float32"),
    (w.bwd_missing_mu_term, bn_backward, "dx is wrong", "dx misses the term through the mean"),
    (w.bwd_missing_var_term, bn_backward, "dx is wrong",
     "dx misses the term through the variance"),
    (w.bwd_staged_missing_var_path, bn_backward, "dx is wrong", "the path through var is missing"),
    (w.bwd_staged_missing_mean_path, bn_backward, "dx is wrong", "the path from x through mu"),
    (w.bwd_staged_var_factor, bn_backward, "dx is wrong",
     "the path through var carries 2 times the right gradient"),
    (w.bwd_staged_m_equals_n, bn_backward, "dx is wrong", "m = N"),
    (w.bwd_closed_form_m_equals_n, bn_backward, "dx is wrong", "m = N"),
    (w.bwd_treats_stats_as_constants, bn_backward, "dx is wrong", "treated as constants"),
    (w.bwd_wrong_sign, bn_backward, "dx is wrong", "dx has the wrong sign"),
    (w.bwd_dbeta_mean, bn_backward, "dbeta is wrong", "dbeta is a mean over the batch"),
    (w.bwd_dgamma_mean, bn_backward, "dgamma is wrong", "dgamma is a mean over the batch"),
    (w.bwd_dgamma_keepdims, bn_backward, "dgamma has shape (1, 4)", "keepdims=True"),
    (w.bwd_no_gamma_in_dx, bn_backward, "dx is wrong", "dx is not multiplied by gamma"),
    (w.bwd_sums_over_axis0, bn_backward, "dgamma has shape (3, 3, 3)", "the wrong axes"),
    (w.bwd_returns_torch, bn_backward, "dx is a torch.Tensor", ".detach().numpy()"),
    (w.KerasMomentum, running, "running_mean is wrong after forward #1",
     "Keras's momentum convention"),
    (w.BiasedRunningVar, running, "running_var is wrong after forward #1",
     "running_var averages the biased batch variance"),
    (w.RunningVarStd, running, "running_var is wrong after forward #1",
     "the batch's standard deviation"),
    (w.RunningCountN, running, "running_var is wrong after forward #1 (train mode, x of shape "
     "(4, 3, 4, 4))", "m = N in the unbiased factor"),
    (w.UpdatesInEval, running, "running_mean and running_var changed during forward #4, an "
     "eval-mode forward", "updated in eval mode"),
    (w.UpdatesInEvalFirst, running, "running_mean and running_var changed during forward #4",
     "updated in eval mode, before y is computed"),
    (w.EvalUsesBatchStats, running, "y is wrong after forward #4 (eval mode",
     "eval mode normalises with the batch statistics"),
    (w.IgnoresMode, running, "running_mean and running_var changed during forward #4",
     "eval() has no effect"),
    (w.StuckInEval, running, "y is wrong after forward #5",
     "train() does not switch back"),
    (w.NeverUpdates, running, "running_mean is wrong after forward #1", "never updated"),
    (w.RunningVarStartsAtZero, running, "a new layer has running_mean", None),
    (w.ln_batch_stats, layer_norm, "y is wrong", "over the batch (axis 0), which is batch norm"),
    (w.ln_last_axis, layer_norm, "y is wrong", "over the last axis only"),
    (w.ln_unbiased, layer_norm, "y is wrong", "unbiased"),
    (w.ln_no_sqrt, layer_norm, "y is wrong", "the square root is missing"),
    (w.gn_interleaved, group_norm, "y is wrong", "groups are interleaved"),
    (w.gn_group_size, group_norm, "y is wrong", "num_groups is used as the group size"),
    (w.gn_eps_outside, group_norm, "y is wrong", "eps is added outside the square root"),
    (w.gn_no_beta, group_norm, "y is wrong", "beta is not added"),
    (w.gn_instance_norm, group_norm, "y is wrong", "instance norm"),
]
IDS = [entry[0].__name__ for entry in CATALOGUE]


def failure(check, **kw) -> CheckFailed:
    with pytest.raises(CheckFailed) as info:
        check(**kw)
    return info.value


@pytest.mark.parametrize("wrong, check, first, phrase", CATALOGUE, ids=IDS)
def test_each_mistake_is_caught_first_and_named_at_a_hint_level(wrong, check, first, phrase,
                                                                capsys):
    caught = failure(check(wrong))
    assert isinstance(caught, AssertionError) and not isinstance(caught, Refused)
    assert str(caught).startswith(f"{caught.what.split(':')[0]}: {first}"), str(caught)
    assert "Hint 1" not in str(caught)
    if phrase is not None:
        assert any(phrase in h for h in caught.hints), caught.hints
        assert phrase not in caught.what, "the first message says what, the hints say why"
        with_hints = failure(check(wrong), hint=2)
        for level, text in enumerate(caught.hints[:2], start=1):
            assert f"Hint {level}: {text}" in str(with_hints)
    assert "passed" not in capsys.readouterr().out


def test_catalogue_spans_the_five_checkers_with_distinct_mistakes():
    assert len({entry[0] for entry in CATALOGUE}) == len(CATALOGUE) >= 40
    assert {entry[1] for entry in CATALOGUE} == {bn_forward, bn_backward, running, layer_norm,
                                                 group_norm}


# --- no message gives the answer ---------------------------------------------------------------

SOLUTION_PIECES = [  # compared with spaces removed
    "dx=gamma*inv_std/m*(m*dy-sum(dy)-x_hat*sum(dy*x_hat))", "m*dy-sum(dy)", "(m*dy",
    "x_hat*sum(dy*x_hat)", "sum(dy*x_hat))", "gamma*inv_std/m", "gamma/std", "inv_std*(dy",
    "dy-mean(dy)", "mdy-",
]
LIBRARY_NAMES = ["bnbook.numpy_norms", "numpy_norms", "numpy_fast", "torch_bn", "F.batch_norm",
                 "F.layer_norm", "F.group_norm", "torch.nn", "batch_norm_forward(",
                 "batch_norm_backward", "BatchNorm.", "gradcheck", "_reference", "compare yours"]


def all_texts(caught: CheckFailed):
    return [str(caught), caught.what, *caught.hints, caught.text(len(caught.hints))]


@pytest.mark.parametrize("wrong, check", [(e[0], e[1]) for e in CATALOGUE], ids=IDS)
def test_no_message_holds_the_solution_or_names_the_library(wrong, check):
    for text in all_texts(failure(check(wrong), hint=2)):
        text = re.sub(r"check_\w+", "check", text)  # the checkers' own names may appear
        squeezed = re.sub(r"\s+", "", text)
        for piece in SOLUTION_PIECES:
            assert piece not in squeezed, (piece, text)
        for name in LIBRARY_NAMES:
            assert name not in text, (name, text)


def test_the_unexplained_mistakes_get_generic_hints_without_the_solution():
    def two_mistakes(x, gamma, beta, eps=1e-5):  # unbiased *and* no beta
        return w.bn_unbiased(x, gamma, np.zeros_like(beta), eps)

    def dx_halved(dy, cache):
        dx, dgamma, dbeta = w.bn_backward_staged(dy, cache)
        return dx + 1e-3 * dy ** 2, dgamma, dbeta

    for caught in (failure(bn_forward(two_mistakes), hint=2),
                   failure(bn_backward(dx_halved), hint=2)):
        assert "no single common mistake" in caught.hints[0]
        assert "Chapter" in caught.hints[1]
        squeezed = re.sub(r"\s+", "", str(caught))
        assert not any(piece in squeezed for piece in SOLUTION_PIECES), str(caught)


# --- the first message: output, input, error size, place ---------------------------------------

@pytest.mark.parametrize("wrong, phrase", [
    (w.bn_unbiased, "x of shape (16, 5), float64 (input 1 of 6)"),
    (w.bn_axis0_only, "x of shape (4, 3, 5, 5), float64 (input 3 of 6)"),
    (w.bn_hardcoded_eps, "eps=0.001"),
])
def test_first_message_names_the_output_the_input_and_the_error(wrong, phrase):
    caught = failure(bn_forward(wrong))
    assert caught.what.startswith("check_batch_norm_forward: y is wrong for ")
    assert phrase in caught.what
    assert re.search(r"relative error \d\.\de[-+]\d\d, threshold 1e-10", caught.what)
    assert re.search(r"The largest difference is at y\[\d+, \d+", caught.what)
    assert "Wrong in every channel" in caught.what


def test_first_message_says_which_inputs_pass():
    what = failure(bn_forward(w.bn_axis0_only)).what
    assert "It is right on (16, 5), (7, 3) and wrong on (4, 3, 5, 5)" in what
    assert "the mean is right" in what


def test_first_message_says_which_channels_are_wrong():
    def gamma_flipped_in_channel_0(x, gamma, beta, eps=1e-5):
        flipped = gamma.copy()
        flipped[0] = -flipped[0]
        return w.bn_forward_one_pass(x, flipped, beta, eps)
    what = failure(bn_forward(gamma_flipped_in_channel_0)).what
    assert "Wrong in 1 of 5 channels (channel 0); the others are right" in what


def test_group_norm_names_the_group_and_its_channels():
    def group_1_shifted(x, gamma, beta, num_groups, eps=1e-5):
        y, cache = w.group_norm_numpy(x, gamma, beta, num_groups, eps)
        size = x.shape[1] // num_groups
        y[:, size:2 * size] += 1.0
        return y, cache
    what = failure(group_norm(group_1_shifted)).what
    assert "x of shape (4, 6, 5, 5), float64, num_groups=3 (input 1 of 5)" in what
    assert ("Wrong in 4 of 12 groups (sample 0, group 1 (channels 2 to 3); sample 1, group 1 "
            "(channels 2 to 3); ") in what
    assert "per group, the spread is right and the mean is off" in what
    for caught in (failure(group_norm(w.gn_interleaved), hint=2),
                   failure(group_norm(w.gn_group_size), hint=2)):
        assert "0..2-1" not in str(caught) and "{" not in str(caught)


def test_backward_first_message_states_the_two_facts():
    mean = failure(bn_backward(w.bwd_missing_mu_term)).what
    assert "does not sum to zero over a channel" in mean
    assert "dgamma and dbeta are right" in mean
    variance = failure(bn_backward(w.bwd_staged_missing_var_path)).what
    assert "sum(dx * x_hat) over channel" in variance
    assert "does not sum to zero" not in variance
    scale_only = failure(bn_backward(w.bwd_no_gamma_in_dx)).what
    assert "Your dx does sum to zero per channel and has the right sum(dx * x_hat)" in scale_only
    assert "Yours is 0.1667 times the right one" in failure(bn_backward(w.bwd_dbeta_mean)).what


def test_backward_on_a_wrong_forward_points_to_the_forward_checker():
    caught = failure(lambda: check_batch_norm_backward(w.bn_unbiased, batch_norm_backward))
    assert "run check_batch_norm_forward(bn_unbiased) first" in str(caught)


def test_running_stats_message_names_the_step_and_the_quantities():
    what = failure(running(w.KerasMomentum)).what
    assert what.startswith("check_running_stats: running_mean is wrong after forward #1 (train "
                           "mode, x of shape (8, 4))")
    assert "After #1: y right, running_mean wrong, running_var wrong." in what
    what = failure(running(w.StuckInEval)).what
    assert "forwards #1 to #4 were right" in what


def test_the_first_message_says_how_to_ask_for_a_hint():
    caught = failure(bn_forward(w.bn_unbiased))
    assert str(caught).endswith("For hint 1, run check_batch_norm_forward(bn_unbiased, hint=1), "
                                "or hint().")
    caught = failure(bn_backward(w.bwd_dbeta_mean), hint=1)
    assert str(caught).endswith("For hint 2, run check_batch_norm_backward(bn_forward_for_staged, "
                                "bwd_dbeta_mean, hint=2), or hint().")
    assert "For hint" not in str(failure(bn_forward(w.bn_unbiased), hint=2))


def test_hint_function_walks_the_levels_of_the_last_failure(capsys):
    caught = failure(bn_forward(w.bn_eps_outside))
    hint()
    hint()
    hint()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Hint 1: {caught.hints[0]}"
    assert lines[1] == f"Hint 2: {caught.hints[1]}"
    assert lines[2].startswith("That was the last hint")
    hint(1)
    assert capsys.readouterr().out == f"Hint 1: {caught.hints[0]}\n"
    check_batch_norm_forward(w.bn_forward_one_pass)
    capsys.readouterr()
    hint()
    assert capsys.readouterr().out.startswith("No failed check")


def test_every_section_a_hint_names_is_a_heading_of_its_chapter():
    import json
    from pathlib import Path

    from bnbook.checks._harness import SECTIONS
    chapters = Path(__file__).resolve().parents[1] / "chapters"
    for key, (_, stem, heading) in SECTIONS.items():
        cells = json.loads((chapters / f"{stem}.ipynb").read_text())["cells"]
        headings = {line.lstrip("#").strip() for c in cells if c["cell_type"] == "markdown"
                    for line in "".join(c["source"]).splitlines() if line.startswith("#")}
        assert heading in headings, (key, stem, heading)


# --- refusals ----------------------------------------------------------------------------------

REFUSED = [
    (lambda: check_batch_norm_forward(w.bn_forward_torch), "torch.nn.functional.batch_norm"),
    (lambda: check_batch_norm_forward(w.bn_forward_torch_builtin), "torch.batch_norm"),
    (lambda: check_batch_norm_forward(w.bn_forward_library),
     "bnbook.numpy_norms.batch_norm_forward"),
    (lambda: check_batch_norm_forward(batch_norm_forward), "bnbook.numpy_norms.batch_norm_forward"),
    (lambda: check_batch_norm_forward(w.bn_forward_numpy_fast),
     "bnbook.numpy_fast.batch_norm_forward"),
    (lambda: check_batch_norm_forward(w.bn_forward_via_helper),
     "bnbook.numpy_norms.batch_norm_forward"),
    (lambda: check_batch_norm_backward(batch_norm_forward, w.bwd_library),
     "bnbook.numpy_norms.batch_norm_backward"),
    (lambda: check_batch_norm_backward(batch_norm_forward, w.bwd_library_staged),
     "bnbook.numpy_norms.batch_norm_backward_staged"),
    (lambda: check_batch_norm_backward(batch_norm_forward, batch_norm_backward),
     "bnbook.numpy_norms.batch_norm_backward"),
    (lambda: check_batch_norm_inference_forward(w.inference_library),
     "bnbook.numpy_norms.batch_norm_inference_forward"),
    (lambda: check_running_stats(BatchNorm), "bnbook.numpy_norms.BatchNorm.__init__"),
    (lambda: check_running_stats(w.LibraryBatchNormInside), "bnbook.numpy_norms.BatchNorm"),
    (lambda: check_running_stats(w.TorchBatchNorm), "torch.nn.modules.batchnorm"),
    (lambda: check_layer_norm_forward(w.layer_norm_torch), "torch.nn.functional.layer_norm"),
    (lambda: check_layer_norm_forward(w.layer_norm_library),
     "bnbook.numpy_norms.layer_norm_forward"),
    (lambda: check_group_norm_forward(w.group_norm_torch), "torch.nn.functional.group_norm"),
    (lambda: check_group_norm_forward(w.group_norm_library),
     "bnbook.numpy_norms.group_norm_forward"),
]


@pytest.mark.parametrize("check, called", REFUSED, ids=[c for _, c in REFUSED])
def test_a_wrapper_of_the_implementation_is_refused(check, called, capsys):
    with pytest.raises(Refused) as info:
        check()
    assert isinstance(info.value, AssertionError)
    assert called in str(info.value)
    assert "the implementation this exercise asks you to write" in str(info.value)
    assert "passed" not in capsys.readouterr().out


def test_the_guard_leaves_the_profile_function_as_it_was():
    import sys
    sys.setprofile(None)
    with pytest.raises(Refused):
        check_batch_norm_forward(w.bn_forward_library)
    check_batch_norm_forward(w.bn_forward_one_pass)
    assert sys.getprofile() is None


# --- correct implementations pass --------------------------------------------------------------

SUCCESS = re.compile(r"^(check_\w+): passed \(max rel\. error (\d\.\de[-+]\d\d) < (1e-\d\d) on "
                     r"(\d+) (cases|forward passes)\)\n$")

CORRECT = [
    ("one-pass forward", lambda: check_batch_norm_forward(w.bn_forward_one_pass)),
    ("own forward, staged backward",
     lambda: check_batch_norm_backward(w.bn_forward_for_staged, w.bn_backward_staged)),
    ("book forward, own staged backward",
     lambda: check_batch_norm_backward(batch_norm_forward, _own_staged)),
    ("renamed BatchNorm", lambda: check_running_stats(w.RenamedBatchNorm)),
    ("numpy layer norm", lambda: check_layer_norm_forward(w.layer_norm_numpy)),
    ("numpy group norm", lambda: check_group_norm_forward(w.group_norm_numpy)),
]


def _own_staged(dy, cache):
    """The staged backward on the book's cache, written out."""
    axes = cache.axes
    m = dy.size // dy.shape[1]
    gamma = cache.gamma.reshape((1, -1) + (1,) * (dy.ndim - 2))
    dx_hat = dy * gamma
    x_mu = cache.x - cache.mu
    dvar = -0.5 * cache.inv_std ** 3 * (dx_hat * x_mu).sum(axis=axes, keepdims=True)
    dx_mu = dx_hat * cache.inv_std + dvar * 2.0 * x_mu / m
    dx = dx_mu - dx_mu.sum(axis=axes, keepdims=True) / m
    return dx, (dy * cache.x_hat).sum(axis=axes), dy.sum(axis=axes)


@pytest.mark.parametrize("check", [c for _, c in CORRECT], ids=[n for n, _ in CORRECT])
def test_correct_implementation_passes_with_one_line(check, capsys):
    assert check() is None
    match = SUCCESS.match(capsys.readouterr().out)
    assert match
    assert float(match.group(2)) < float(match.group(3))


def test_success_line_format(capsys):
    check_batch_norm_forward(w.bn_forward_one_pass)
    check_batch_norm_backward(batch_norm_forward, _own_staged)
    check_running_stats(w.RenamedBatchNorm)
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"check_batch_norm_forward: passed \(max rel\. error \d\.\de-\d\d < "
                        r"1e-10 on 6 cases\)", lines[0])
    assert re.fullmatch(r"check_batch_norm_backward: passed \(max rel\. error \d\.\de-\d\d < "
                        r"1e-10 on 5 cases\)", lines[1])
    assert re.fullmatch(r"check_running_stats: passed \(max rel\. error \d\.\de[-+]\d\d < 1e-10 "
                        r"on 10 forward passes\)", lines[2])


def test_checkers_are_deterministic(capsys):
    for _ in range(2):
        check_batch_norm_forward(w.bn_forward_one_pass)
        check_batch_norm_backward(w.bn_forward_for_staged, w.bn_backward_staged)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[:2] == lines[2:]
    assert str(failure(bn_forward(w.bn_unbiased))) == str(failure(bn_forward(w.bn_unbiased)))


# --- stubs and other exceptions ----------------------------------------------------------------

def stub_forward(x, gamma, beta, eps=1e-5):
    raise NotImplementedError


def stub_group_norm(x, gamma, beta, num_groups, eps=1e-5):
    raise NotImplementedError


def stub_backward(dy, cache):
    raise NotImplementedError


class StubLayer(w.RenamedBatchNorm):
    def forward(self, x):
        raise NotImplementedError


class StubInit:
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        raise NotImplementedError


def group_norm_on_a_stub(x, gamma, beta, num_groups, eps=1e-5):
    return stub_forward(x.reshape(x.shape[0] * num_groups, -1), gamma, beta, eps)


def stub_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    raise NotImplementedError


@pytest.mark.parametrize("check, name, place", [
    (lambda: check_batch_norm_forward(stub_forward), "stub_forward", "in the cell above"),
    (lambda: check_layer_norm_forward(stub_forward), "stub_forward", "in the cell above"),
    (lambda: check_group_norm_forward(stub_group_norm), "stub_group_norm", "in the cell above"),
    (lambda: check_group_norm_forward(group_norm_on_a_stub), "stub_forward", "in its cell"),
    (lambda: check_batch_norm_backward(batch_norm_forward, stub_backward), "stub_backward",
     "in the cell above"),
    (lambda: check_batch_norm_backward(stub_forward, stub_backward), "stub_forward",
     "in the cell above"),
    (lambda: check_batch_norm_inference_forward(stub_eval), "stub_eval", "in the cell above"),
    (lambda: check_running_stats(StubLayer), "StubLayer.forward", "in the cell above"),
    (lambda: check_running_stats(StubInit), "StubInit.__init__", "in its cell"),
])
def test_a_stub_gets_the_not_written_yet_message(check, name, place):
    with pytest.raises(NotWrittenYet) as info:
        check()
    assert isinstance(info.value, AssertionError) and isinstance(info.value, NotImplementedError)
    assert str(info.value) == (f"`{name}` is not written yet: replace `raise "
                               f"NotImplementedError` {place} with your code, then run this "
                               f"cell again.")
    assert info.value.__suppress_context__
    assert info.value._render_traceback_() == [str(info.value)]


def test_another_exception_passes_through_with_the_input_it_failed_on():
    def broken(x, gamma, beta, eps=1e-5):
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom") as info:
        check_batch_norm_forward(broken)
    assert any("x of shape (16, 5)" in note for note in info.value.__notes__)


# --- the eval-mode forward (chapter 4's exercise) ----------------------------------------------

def _eval_bn(x_hat_of, shift=True):
    def fn(x, gamma, beta, running_mean, running_var, eps=1e-5):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x_hat = x_hat_of(x, running_mean.reshape(shape), running_var.reshape(shape), eps)
        return gamma.reshape(shape) * x_hat + (beta.reshape(shape) if shift else 0)
    return fn


def _axes(x):
    return tuple(i for i in range(x.ndim) if i != 1)


def test_inference_forward_passes_a_written_out_function_with_one_line(capsys):
    right = _eval_bn(lambda x, rm, rv, eps: (x - rm) / np.sqrt(rv + eps))
    check_batch_norm_inference_forward(right)
    assert SUCCESS.match(capsys.readouterr().out)


@pytest.mark.parametrize("fn, phrase", [
    (_eval_bn(lambda x, rm, rv, eps: (x - rm) / (np.sqrt(rv) + eps)), "eps is added outside"),
    (_eval_bn(lambda x, rm, rv, eps: (x - rm) / (rv + eps)), "not by its square root"),
    (_eval_bn(lambda x, rm, rv, eps: x / np.sqrt(rv + eps)), "running mean is not subtracted"),
    (_eval_bn(lambda x, rm, rv, eps: (x - x.mean(_axes(x), keepdims=True))
              / np.sqrt(x.var(_axes(x), keepdims=True) + eps)), "training mode"),
    (_eval_bn(lambda x, rm, rv, eps: (x - rm) / np.sqrt(rv + eps), shift=False),
     "beta is not added"),
])
def test_inference_forward_mistakes_are_named(fn, phrase):
    caught = failure(lambda **kw: check_batch_norm_inference_forward(fn, **kw))
    assert caught.what.startswith("check_batch_norm_inference_forward: y is wrong for ")
    assert phrase in caught.hints[0]
