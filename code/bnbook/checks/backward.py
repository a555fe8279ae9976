"""The checker for the batch norm backward pass (finite differences of the book's forward)."""

from __future__ import annotations

import numpy as np

from bnbook.checks._harness import (
    ANALYTIC,
    FINITE_DIFFERENCE,
    _as_output,
    _call,
    _copies,
    _failure,
    _label,
    _make_case,
    _normalise,
    _passed,
    _reduced_shape_hint,
    _unpack,
)
from bnbook.gradcheck import numerical_gradient, rel_error
from bnbook.numpy_norms import batch_norm_forward, per_channel, reduction_axes

# --- backward ----------------------------------------------------------------------------------

def _bn_backward_variants(case):
    """Wrong ``(dx, dgamma, dbeta)`` in closed form, by output."""
    axes = reduction_axes(case.x.ndim)
    m = case.x.size // case.x.shape[1]
    x_hat = _normalise(case.x, axes, case.eps)
    inv_std = 1.0 / np.sqrt(case.x.var(axis=axes, keepdims=True) + case.eps)
    gamma = per_channel(case.gamma, case.x.ndim)
    dy = case.dy
    sum_dy = dy.sum(axis=axes, keepdims=True)
    sum_dy_xhat = (dy * x_hat).sum(axis=axes, keepdims=True)
    dx = gamma * inv_std / m * (m * dy - sum_dy - x_hat * sum_dy_xhat)
    dgamma, dbeta = sum_dy_xhat.reshape(-1), sum_dy.reshape(-1)
    return {
        "dx": [
            ("dx misses the term through the mean mu: dx = gamma * inv_std / m * (m * dy - "
             "sum(dy) - x_hat * sum(dy * x_hat))",
             gamma * inv_std / m * (m * dy - x_hat * sum_dy_xhat)),
            ("dx misses the term through the variance var: dx = gamma * inv_std / m * (m * dy - "
             "sum(dy) - x_hat * sum(dy * x_hat))", gamma * inv_std / m * (m * dy - sum_dy)),
            ("dx treats mu and var as constants (only gamma * inv_std * dy): both depend on x, "
             "and their paths add two terms", gamma * inv_std * dy),
            ("dx is not multiplied by gamma: y = gamma * x_hat, so dx_hat = gamma * dy",
             dx / gamma),
            ("dx has the wrong sign", -dx),
            ("dx uses m - 1 where the biased variance needs m (the variance term's 1/m)",
             gamma * inv_std / m * (m * dy - sum_dy - x_hat * sum_dy_xhat * m / (m - 1))),
        ],
        "dgamma": [
            ("dgamma is a mean over the batch; it is a sum, dgamma = sum(dy * x_hat)", dgamma / m),
            ("dgamma uses x instead of x_hat: dgamma = sum(dy * x_hat)",
             (dy * case.x).sum(axis=axes)),
            ("dgamma and dbeta are swapped: dgamma = sum(dy * x_hat), dbeta = sum(dy)", dbeta),
        ],
        "dbeta": [
            ("dbeta is a mean over the batch; it is a sum, dbeta = sum(dy)", dbeta / m),
            ("dgamma and dbeta are swapped: dgamma = sum(dy * x_hat), dbeta = sum(dy)", dgamma),
        ],
    }


def _finite_difference_gradients(case):
    """``(dx, dgamma, dbeta)`` of ``sum(y * dy)`` by centred differences of the book's
    forward (chapter 3's method)."""
    def y_of(x=case.x, gamma=case.gamma, beta=case.beta):
        return batch_norm_forward(x, gamma, beta, case.eps)[0]
    return (numerical_gradient(lambda x: y_of(x=x), case.x.copy(), case.dy),
            numerical_gradient(lambda g: y_of(gamma=g), case.gamma.copy(), case.dy),
            numerical_gradient(lambda b: y_of(beta=b), case.beta.copy(), case.dy))


def check_batch_norm_backward(forward_fn, backward_fn) -> None:
    """Check ``backward_fn(dy, cache) -> (dx, dgamma, dbeta)`` on the cache of ``forward_fn``.

    ``forward_fn`` is checked first against PyTorch (as in :func:`check_batch_norm_forward`);
    the three gradients must match centred finite differences of the book's forward to
    ``1e-6`` (relative error), with shapes ``x.shape``, ``(C,)``, ``(C,)``. Raises
    ``AssertionError`` naming the gradient and the likely mistake.
    """
    name = "check_batch_norm_backward"
    cases = [
        _make_case(30, (6, 4), (4,), with_dy=True),
        _make_case(31, (5, 3), (3,), with_dy=True),
        _make_case(32, (4, 3, 3, 3), (3,), with_dy=True),
        _make_case(33, (2, 2, 3, 4), (2,), with_dy=True),
        _make_case(34, (3, 2, 2, 2), (2,), with_dy=True, eps=1e-3, spread=0.05),
    ]
    errors = []
    for case in cases:
        where = case.describe()
        x, gamma, beta = _copies(case)
        result = _call(forward_fn, where, x, gamma, beta, case.eps)
        y, cache = _unpack(name, forward_fn, result, 2, ("y", "cache"), where)
        y = _as_output(name, "the forward's y", y, case.x.shape, where)
        reference_y = batch_norm_forward(case.x, case.gamma, case.beta, case.eps)[0]
        if not rel_error(y, reference_y) < ANALYTIC:
            raise AssertionError(
                f"{name}: your forward {_label(forward_fn)} is wrong for {where}, and the "
                f"backward is checked on its cache; run check_batch_norm_forward on it first")
        grads = _unpack(name, backward_fn, _call(backward_fn, where, case.dy.copy(), cache), 3,
                        ("dx", "dgamma", "dbeta"), where)
        channels = (case.x.shape[1],)
        shapes = (case.x.shape, channels, channels)
        shape_hints = (None, _reduced_shape_hint(channels), _reduced_shape_hint(channels))
        grads = [_as_output(name, label, g, s, where, h) for label, g, s, h in
                 zip(("dx", "dgamma", "dbeta"), grads, shapes, shape_hints)]
        numerical = _finite_difference_gradients(case)
        variants = _bn_backward_variants(case)
        for label, ours, reference in zip(("dx", "dgamma", "dbeta"), grads, numerical):
            err = rel_error(ours, reference)
            errors.append(err)
            if not err < FINITE_DIFFERENCE:
                wrong = [(hint, lambda c, a=array: a) for hint, array in variants[label]]
                generic = (f"no common mistake matches exactly; compare your {label} with the "
                           f"finite differences of chapter 3 (bnbook.gradcheck."
                           f"numerical_gradient) on this input")
                raise AssertionError(_failure(name, label, [(case, ours, err)], wrong,
                                              FINITE_DIFFERENCE, generic,
                                              "finite differences"))
    _passed(name, max(errors), FINITE_DIFFERENCE, len(cases))
