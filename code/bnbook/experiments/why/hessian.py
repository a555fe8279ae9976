"""The sharpness of the loss: the Hessian's largest eigenvalue and the curvature along the
gradient, by Hessian-vector products.

The landscape probe (:mod:`bnbook.experiments.why.landscape`) measures how fast the gradient changes
along one mini-batch gradient, on a grid of step sizes. Cohen et al. (2021) measure instead
the *sharpness* ``lambda_max``, the largest eigenvalue of the Hessian ``H`` of the training
loss, and find that full-batch gradient descent with step ``eta`` drives it up to about
``2 / eta`` (the "edge of stability"; under SGD it settles below). Two numbers need no grid:

* ``lambda_max`` from Hessian-vector products: each ``H v`` is the gradient of
  ``g(w)^T v`` (double backward), so ``H`` (``p x p``, ``p`` the number of parameters) is
  never formed. Power iteration (``v <- H v / ||H v||``, ``lambda = v^T H v``) finds the
  eigenvalue of largest *magnitude* and converges slowly when the top eigenvalues are close;
  the Lanczos method uses the same products (the same Krylov space) and converges much
  faster, to the largest *algebraic* eigenvalue, with the smallest as a by-product. The
  runs use Lanczos; both are here and tested against closed forms.
* ``g^T H g / ||g||^2``, the curvature along the gradient ``g``: one step ``w - eta g``
  changes the loss by ``-eta ||g||^2 + eta^2 g^T H g / 2`` to second order, so the step
  stops decreasing the loss at ``eta = 2 ||g||^2 / g^T H g``.

Both are measured on one fixed batch (1,024 training images), in the model's current mode
(training mode: BN normalises with that batch's statistics), leaving parameters and buffers
as they were.

* :class:`HessianOperator` - the loss, the gradient and ``v -> H v`` at the current point;
* :func:`power_iteration` - the largest-magnitude eigenvalue of a symmetric operator;
* :func:`lanczos` - its extreme eigenvalues from the same number of products;
* :func:`sharpness` - both numbers at the current point of a model;
* :func:`run_sharpness` - the narrow CNN trained with SGD, measured every few hundred steps.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["HessianOperator", "power_iteration", "lanczos", "sharpness", "run_sharpness"]


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


class HessianOperator:
    """The Hessian of ``loss_fn(model, batch)`` (a scalar, or a tuple whose first item is)
    with respect to ``params`` (default: every parameter with ``requires_grad``), at the
    model's current point and mode.

    On construction one forward and backward pass (with ``create_graph``) gives ``loss``
    (float) and ``grad`` (list of detached tensors shaped like ``params``); each
    :meth:`matvec` is one more backward pass through that graph. :meth:`close` (or the end
    of a ``with`` block) frees the graph and puts back the buffers the forward pass changed
    (BN running statistics; the graph holds them until then).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, batch,
                 params: Sequence[torch.Tensor] | None = None):
        self.params = list(params) if params is not None else \
            [p for p in model.parameters() if p.requires_grad]
        self._saved = [(b, b.detach().clone()) for b in model.buffers()]
        out = loss_fn(model, batch)
        loss = out[0] if isinstance(out, tuple) else out
        self._grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.loss = float(loss.detach())
        self.grad = [g.detach() for g in self._grads]

    def matvec(self, vector: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``H v`` for ``v`` given as tensors shaped like the parameters."""
        if self._grads is None:
            raise RuntimeError("the operator was closed")
        dot = sum((g * v.to(g.dtype)).sum() for g, v in zip(self._grads, vector))
        hv = torch.autograd.grad(dot, self.params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h.detach()
                for h, p in zip(hv, self.params)]

    def close(self) -> None:
        """Free the graph and put back the buffers the forward pass changed."""
        self._grads = None
        with torch.no_grad():
            for b, value in self._saved:
                if not torch.equal(b, value):
                    b.copy_(value)
        self._saved = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def power_iteration(matvec: Callable, start: Sequence[torch.Tensor], n_iter: int = 20) -> dict:
    """Power iteration on a symmetric linear operator ``matvec`` (tensors -> tensors).

    Starting from ``start`` (normalised here), ``n_iter`` times: ``u = matvec(v)``,
    ``lambda = v^T u`` (the Rayleigh quotient), ``v = u / ||u||``. Returns ``{"eigenvalue":
    the last Rayleigh quotient, "history": all of them, "vector": the last v (unit norm),
    "residual": ||H v - lambda v|| at the last iterate}`` (float64 inner products). The
    eigenvalue is the one of largest magnitude when it is separated from the next; the
    residual says how far from an eigenvector the iteration stopped.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    norm = math.sqrt(_dot(start, start))
    if not norm > 0:
        raise ValueError("the start vector must not be zero")
    v = [s / norm for s in start]
    history: list[float] = []
    residual = math.nan
    for _ in range(n_iter):
        u = matvec(v)
        lam = _dot(v, u)
        history.append(lam)
        residual = math.sqrt(max(0.0, _dot(u, u) - lam * lam))
        u_norm = math.sqrt(_dot(u, u))
        if u_norm == 0:
            break
        v = [x / u_norm for x in u]
    return {"eigenvalue": history[-1], "history": history, "vector": v, "residual": residual}


def lanczos(matvec: Callable, start: Sequence[torch.Tensor], n_iter: int = 20) -> dict:
    """The extreme eigenvalues of a symmetric operator from ``n_iter`` products, by the
    Lanczos method with full reorthogonalisation.

    The products span the same Krylov space as ``n_iter`` steps of power iteration from
    ``start``; the Ritz values (eigenvalues of the operator restricted to that space) converge
    much faster than power iteration's Rayleigh quotient, and the largest is the largest
    *algebraic* eigenvalue's estimate (a lower bound on it). Returns ``{"largest",
    "smallest": the extreme Ritz values, "residual": ||H y - largest y|| for its Ritz vector
    y (unit norm), "history": the largest Ritz value after each product}``.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    norm = math.sqrt(_dot(start, start))
    if not norm > 0:
        raise ValueError("the start vector must not be zero")
    basis = [[s / norm for s in start]]
    alphas: list[float] = []
    betas: list[float] = []
    history: list[float] = []
    for j in range(n_iter):
        w = matvec(basis[j])
        alphas.append(_dot(w, basis[j]))
        for _ in range(2):                                  # full reorthogonalisation, twice
            for q in basis:
                c = _dot(w, q)
                w = [x - c * y for x, y in zip(w, q)]
        beta = math.sqrt(_dot(w, w))
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        for i, b in enumerate(betas):
            T[i, i + 1] = T[i + 1, i] = b
        values, vectors = torch.linalg.eigh(T)
        history.append(float(values[-1]))
        if beta <= 1e-12 * max(1.0, abs(alphas[-1])) or j == n_iter - 1:
            break
        betas.append(beta)
        basis.append([x / beta for x in w])
    return {"largest": float(values[-1]), "smallest": float(values[0]),
            "residual": abs(beta * float(vectors[-1, -1])), "history": history}


def sharpness(model: nn.Module, loss_fn: Callable, batch, *, n_iter: int = 20,
              seed: int = 0, method: str = "lanczos") -> dict:
    """``lambda_max`` from ``n_iter`` Hessian-vector products and ``g^T H g / ||g||^2`` at the
    model's current point (module docstring), from a Gaussian start drawn from a generator
    seeded by ``seed``.

    ``method="lanczos"`` (:func:`lanczos`: the largest Ritz value, also ``lambda_min``, the
    smallest) or ``"power"`` (:func:`power_iteration`: the last Rayleigh quotient, the
    eigenvalue of largest magnitude). Returns ``{"loss", "grad_norm", "lambda_max",
    "lambda_history", "residual", "grad_curvature"}`` (and ``"lambda_min"`` for Lanczos); the
    model is left as it was."""
    if method not in ("lanczos", "power"):
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
    gen = torch.Generator().manual_seed(seed)
    with HessianOperator(model, loss_fn, batch) as op:
        start = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in op.params]
        if method == "power":
            power = power_iteration(op.matvec, start, n_iter)
            eig = {"lambda_max": power["eigenvalue"], "lambda_history": power["history"],
                   "residual": power["residual"]}
        else:
            lz = lanczos(op.matvec, start, n_iter)
            eig = {"lambda_max": lz["largest"], "lambda_min": lz["smallest"],
                   "lambda_history": lz["history"], "residual": lz["residual"]}
        g_sq = _dot(op.grad, op.grad)
        curvature = _dot(op.grad, op.matvec(op.grad)) / g_sq if g_sq > 0 else math.nan
        return {"loss": op.loss, "grad_norm": math.sqrt(g_sq), **eig,
                "grad_curvature": curvature}


def run_sharpness(data, norm: str, *, lr: float, width: int = 16, epochs: int = 12,
                  momentum: float = 0.0, batch_size: int = 128, measure_every: int = 200,
                  n_iter: int = 20, hessian_batch: int = 1024, seed: int = 0,
                  method: str = "lanczos", progress: bool = False) -> dict:
    """Train the narrow CNN (:func:`bnbook.models.small_cnn.small_cifar_cnn`, ``norm`` ``"none"`` or
    ``"batch"``) with SGD and measure :func:`sharpness` on the first ``hessian_batch``
    training images (the same batch for every run) before the first update, every
    ``measure_every`` updates and after the last.

    Returns the history of :func:`bnbook.experiments.why.cnn_runs.train_cnn` and ``measurements``: per
    measured point ``step`` (updates done) and the :func:`sharpness` dict (``method``, its
    start seeded by ``seed`` and the step); ``two_over_lr`` (``2 / lr``, the threshold of
    gradient descent's stability); ``seconds``. Values that overflowed are ``None``.
    """
    from bnbook.models.small_cnn import small_cifar_cnn
    from bnbook.training import cross_entropy_loss
    from bnbook.experiments.why.cnn_runs import train_cnn

    if not 2 <= hessian_batch <= data.x_train.shape[0] or measure_every < 1:
        raise ValueError(f"need 2 <= hessian_batch <= {data.x_train.shape[0]} and "
                         f"measure_every >= 1; got {hessian_batch}, {measure_every}")
    model = small_cifar_cnn(width, norm, seed=seed)
    fixed = (data.x_train[:hessian_batch], data.y_train[:hessian_batch])
    measured: list[dict] = []

    def measure(step):
        m = sharpness(model, cross_entropy_loss, fixed, n_iter=n_iter,
                      seed=seed * 100_003 + step, method=method)
        measured.append(_finite_or_none({"step": step, **m}))

    def before(step):
        if step % measure_every == 0:
            measure(step)

    start = time.perf_counter()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    hist = train_cnn(model, data, opt, epochs=epochs, batch_size=batch_size, seed=seed,
                     before_step=before, progress=progress, desc=f"{norm} lr {lr} seed {seed}")
    if not hist["diverged"] and hist["steps"] % measure_every:
        measure(hist["steps"])
    return {**hist, "measurements": measured, "two_over_lr": 2.0 / lr,
            "seconds": round(time.perf_counter() - start, 2)}


def _finite_or_none(value):
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
