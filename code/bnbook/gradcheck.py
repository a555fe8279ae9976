"""Finite-difference gradients and the one relative error used throughout the book.

The relative error between two arrays ``a`` and ``b`` is norm-wise::

    rel_error(a, b) = max|a - b| / max(max|a|, max|b|, tiny)

Norm-wise (rather than element-wise, as in CS231n) because batch-norm gradients sum to
zero over the batch: many entries are close to zero and an element-wise ratio there
measures rounding noise, not correctness.

What counts as right (see :data:`THRESHOLDS`):

* analytic vs analytic in float64 (e.g. our backward vs PyTorch autograd): ``< 1e-10``;
* analytic vs centred finite differences in float64 with ``h = 1e-6``: ``< 1e-6`` (the
  truncation error is ``O(h^2)`` and the rounding error ``O(u / h)``, ``u ~ 1.1e-16``);
* float32 computations compared with a float64 reference: ``< 1e-4``
  (``u ~ 6e-8`` times the growth of a reduction over a few thousand terms).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["THRESHOLDS", "rel_error", "numerical_gradient", "compare"]

THRESHOLDS = {
    "float64_analytic": 1e-10,
    "float64_finite_difference": 1e-6,
    "float32": 1e-4,
}


def rel_error(a, b) -> float:
    """Norm-wise relative error ``max|a-b| / max(max|a|, max|b|, tiny)`` of two arrays.

    Both arrays are compared in float64 and must have one shape. It is symmetric, invariant
    under a common rescaling of ``a`` and ``b``, ``0`` for equal arrays (including two
    zero arrays and two empty arrays), ``1`` against a zero array, and NaN when either input
    holds a NaN or an infinity, so that ``rel_error(...) < threshold`` fails.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error needs arrays of one shape; got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    scale = max(np.abs(a).max(), np.abs(b).max(), np.finfo(np.float64).tiny)
    return float(np.abs(a - b).max() / scale)


def numerical_gradient(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dy=None,
                       h: float = 1e-6) -> np.ndarray:
    """Centred finite-difference gradient of ``sum(f(x) * dy)`` with respect to ``x``.

    Args:
        f: function of one array; it may return an array of any shape.
        x: float64 array at which to differentiate; it is perturbed in place and restored.
        dy: upstream gradient with the shape of ``f(x)`` (defaults to ones, i.e. ``sum(f(x))``).
        h: step; ``1e-6`` balances truncation (``h^2``) against rounding (``u/h``) in float64.

    Returns:
        Array of the shape of ``x``: ``(L(x + h e_i) - L(x - h e_i)) / (2h)`` for each entry,
        where ``L = sum(f(x) * dy)`` and ``2h`` is the step actually taken after rounding
        ``x_i + h`` and ``x_i - h`` to float64.

    Raises:
        ValueError: if ``x`` is not a C-contiguous float64 array, ``dy`` has the wrong shape,
            or ``h`` is not a positive finite number.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise ValueError("numerical_gradient needs a float64 NumPy array; finite differences "
                         "in lower precision measure rounding, not the derivative")
    out = np.asarray(f(x))
    dy = np.ones_like(out) if dy is None else np.asarray(dy, dtype=np.float64)
    if dy.shape != out.shape:
        raise ValueError(f"dy must have the shape of f(x), {out.shape}; got {dy.shape}")
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"the step h must be a positive finite number; got {h!r}")
    grad = np.zeros_like(x)
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient perturbs x in place through a flat view and "
                         "needs a C-contiguous array; pass np.ascontiguousarray(x)")
    flat_x = x.reshape(-1)
    flat_g = grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        try:
            flat_x[i] = old + h
            x_plus = flat_x[i]
            plus = np.sum(np.asarray(f(x)) * dy)
            flat_x[i] = old - h
            x_minus = flat_x[i]
            minus = np.sum(np.asarray(f(x)) * dy)
        finally:
            flat_x[i] = old  # x is restored even if f raises
        # Divide by the step actually taken: old + h is rounded, so it is not h exactly.
        flat_g[i] = (plus - minus) / (x_plus - x_minus)
    return grad


def compare(name: str, ours, reference, threshold: float | None = None) -> float:
    """Print exact / allclose / relative error of ``ours`` against ``reference``; return the error.

    In the spirit of Karpathy's ``cmp``: the reader sees the agreement, not only a pass.
    ``threshold`` (if given) is printed next to the error and checked with ``assert``.
    """
    ours = np.asarray(ours)
    reference = np.asarray(reference)
    exact = bool(np.array_equal(ours, reference))
    close = bool(np.allclose(ours, reference))
    err = rel_error(ours, reference)
    line = f"{name:<14} exact: {str(exact):<5} allclose: {str(close):<5} rel_error: {err:.2e}"
    if threshold is not None:
        line += f"  (threshold {threshold:.0e})"
    print(line)
    if threshold is not None:
        assert err < threshold, f"{name}: relative error {err:.3e} is not below {threshold:.0e}"
    return err
