"""Random batch-norm inputs and the gradient comparison shared by the NumPy tests
(test_numpy_norms.py, test_numpy_fast.py).

Inputs have a non-zero mean, a spread far from 1 and ``gamma`` far from 1 (and of both
signs), so that a missing term cannot hide. A test module imports what it needs:
``from bn_cases import make_case, ...``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from bnbook import notebook


@st.composite
def bn_shapes(draw, max_n=6, max_c=5, max_spatial=5):
    """(N, D), (N, C, L) or (N, C, H, W) with at least 2 values per channel."""
    ndim = draw(st.sampled_from([2, 3, 4]))
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(1, max_c))
    spatial = tuple(draw(st.integers(1, max_spatial)) for _ in range(ndim - 2))
    if n * int(np.prod(spatial, dtype=int)) < 2:
        n = 2
    return (n, c) + spatial


def make_case(shape, seed, loc=3.0, scale=2.5, dtype=np.float64):
    """The book's case builder with the tests' spread: each channel its own mean and spread,
    |gamma| in [0.2, 4] (``bnbook.notebook.make_case`` documents the distribution)."""
    return notebook.make_case(shape, seed, loc, scale, channel_spread=True,
                              gamma_range=(0.2, 4.0), dtype=dtype)


def torch_reference(x, gamma, beta, dy, eps=1e-5):
    """y and (dx, dgamma, dbeta) from PyTorch's batch norm and autograd, in float64."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    gt = torch.tensor(gamma, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    y = F.batch_norm(xt, None, None, gt, bt, training=True, eps=eps)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    return y.detach().numpy(), (xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy())


def assert_gradients_close(grads, grads_ref, dy, cache, tol):
    """(dx, dgamma, dbeta) against a reference, relative to the terms that get cancelled.

    dx, dgamma and dbeta are sums of terms that can cancel (with m = 2 values per channel
    x_hat = +-1 whatever x is, and dx is almost zero), and no finite precision is relatively
    accurate about a cancellation: its rounding error is relative to the size of the terms,
    so that is the yardstick, ``max|g - g_ref| < tol * scale``. On well-conditioned inputs
    scale ~ max|g_ref| and this is the book's rel_error.
    """
    axes = cache.axes
    s = np.abs(cache.gamma * cache.inv_std.ravel()).astype(np.float64)
    x_hat = cache.x_hat.astype(np.float64)
    dy = dy.astype(np.float64)
    scales = (
        (s * np.abs(dy).max(axis=axes) * (1 + np.abs(x_hat).max(axis=axes))).max(),  # dx
        np.abs(dy * x_hat).sum(axis=axes).max(),  # dgamma
        np.abs(dy).sum(axis=axes).max(),  # dbeta
    )
    for name, g, g_ref, scale in zip(("dx", "dgamma", "dbeta"), grads, grads_ref, scales):
        err = np.abs(np.asarray(g, np.float64) - np.asarray(g_ref, np.float64)).max()
        assert err < tol * scale, f"{name}: {err:.3e} >= {tol:.0e} * {scale:.3e}"
