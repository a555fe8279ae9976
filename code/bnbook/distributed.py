"""Batch norm when the batch is split across processes: synchronised statistics with gloo.

With data parallelism each process sees ``1/world_size`` of the batch. Ordinary batch norm
then normalises every shard with its own statistics; *synchronised* batch norm sums the
per-channel count, sum and sum of squared deviations over all processes, so every process
normalises with the statistics of the whole batch, and its backward pass sums the two
per-channel gradient reductions (``sum(dy)``, ``sum(dy * x_hat)``) the same way.

``torch.nn.SyncBatchNorm`` does this, but (torch 2.13) only for CUDA/XPU tensors: on CPU its
forward raises ``ValueError: SyncBatchNorm expected input tensor to be on GPU ...``. This
module implements the same algorithm with ``torch.distributed.all_reduce`` so that it runs
on the CPU with the gloo backend:

* :func:`sync_batch_norm_statistics` - ``(mu, var, count)`` of the global batch;
* :class:`SyncBatchNormFunction` / :class:`SyncBatchNorm` - the autograd node and layer;
* :func:`rendezvous_file` / :func:`free_port` - where processes meet: a ``file://`` init
  method in a temporary folder (nothing to race for), or, for ``env://`` launches that need
  ``MASTER_PORT`` (torchrun, the CIFAR CLI), a TCP port that was free a moment ago;
* :func:`run_in_processes` - run a function in ``world_size`` fresh processes (started by
  ``torch.multiprocessing``) joined in a gloo process group, collect what each returns, and
  report the rank that failed or hung;
* :func:`sync_batch_norm_experiment` - the chapter's experiment: synchronised BN over
  shards equals whole-batch BN, unsynchronised BN does not.

The variance is computed in two passes over the network, as in the single-process layer:
first ``count`` and ``sum`` (hence the global ``mu``), then the sum of squared deviations
from that ``mu``. One pass with ``sum(x**2)`` would save a round trip but loses digits when
``|mu|`` is large compared with the standard deviation (see the chapter's exercises).
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import pickle
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bnbook.torch_bn import BatchNorm, _per_channel, accumulation_dtype, reduction_dims

__all__ = [
    "rendezvous_file",
    "free_port",
    "run_in_processes",
    "sync_batch_norm_statistics",
    "SyncBatchNormFunction",
    "SyncBatchNorm",
    "per_shard_batch_norm",
    "sync_batch_norm_worker",
    "sync_batch_norm_experiment",
]


def rendezvous_file(directory) -> str:
    """A ``file://`` init method for ``torch.distributed.init_process_group``: a file that does
    not exist yet in ``directory`` (a fresh temporary folder, which the caller removes after
    the group is gone). Preferred over a port: a port chosen as free can be taken by another
    process before rank 0 binds it; a file in one's own folder cannot."""
    path = Path(directory) / "rendezvous"
    if path.exists():
        raise FileExistsError(f"{path} exists; a rendezvous needs a fresh file")
    return path.resolve().as_uri()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it), for ``env://``
    launches that need ``MASTER_PORT``; prefer :func:`rendezvous_file` where the caller
    chooses the init method."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _to_numpy(obj):
    """Tensors to NumPy arrays, recursively through dicts, lists and tuples (for pickling)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def _rank_main(rank, fn, world_size, init_method, backend, timeout_s, args, folder):
    """Body of each process (``torch.multiprocessing`` passes the rank first): join the group,
    run ``fn``, leave the group, and save the value as ``folder/rank{rank}.pickle``. An
    exception is left to ``torch.multiprocessing``, which sends its traceback to the parent."""
    torch.set_num_threads(1)  # the ranks share the machine's cores
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        value = _to_numpy(fn(rank, world_size, *args))
    finally:
        if dist.is_initialized():  # fn may have left the group itself
            dist.destroy_process_group()
    with open(Path(folder) / f"rank{rank}.pickle", "wb") as f:
        pickle.dump(value, f)


#: What is known of a process that ended without a value or a traceback.
_NO_RESULT = ("exited with code {code} without a result (os._exit, a signal, a crash, or fn "
              "not importable in a fresh interpreter)")

#: Tracebacks with these fragments are usually a *consequence* of another rank's failure
#: (the peer's socket closed under a collective) rather than a failure of their own.
_CONSEQUENTIAL = ("Connection reset", "Connection closed", "Broken pipe", "ECONNRESET",
                  "connection closed", "EPIPE", "Connection refused", "by peer")


def _failure_message(context, first: int) -> str:
    """The error of a failed run: every rank that left a traceback, and ``first`` (the rank
    ``torch.multiprocessing`` saw fail first) in any case. The rank to blame leads: the first
    whose traceback is not a consequence of another's (:data:`_CONSEQUENTIAL`), else ``first``;
    the others follow as probable consequences."""
    failures = {}
    for rank, (process, error_file) in enumerate(zip(context.processes, context.error_files)):
        if os.path.exists(error_file):
            with open(error_file, "rb") as f:
                failures[rank] = pickle.load(f)
        elif rank == first:
            failures[rank] = _NO_RESULT.format(code=process.exitcode)
    causes = [r for r, tb in failures.items() if not any(s in tb for s in _CONSEQUENTIAL)]
    root = causes[0] if causes else first
    others = [f"rank {r} failed (probably a consequence):\n{tb}"
              for r, tb in failures.items() if r != root]
    return "\n".join([f"rank {root} failed:\n{failures[root]}", *others])


def _start_method() -> str:
    """A fork server (torch imported once, in the server) where the platform has one, else
    spawned interpreters; never forks of this process."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["torch", "bnbook.distributed"])
    return "forkserver"


def _join(context, deadline: float, timeout_s: float) -> None:
    """Wait for every process until ``deadline`` (``time.monotonic()``, ``timeout_s`` after
    the start); afterwards none is left running.

    A failure stops the others (``torch.multiprocessing`` gives them 2 s to report their own
    errors, then terminates them) and is a ``RuntimeError`` naming the rank to blame
    (:func:`_failure_message`); so is the timeout, after the processes are killed."""
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic()),
                               grace_period=2.0):
            if time.monotonic() >= deadline:
                late = [r for r, p in enumerate(context.processes) if p.is_alive()]
                for p in context.processes:
                    p.kill()
                    p.join()
                raise RuntimeError(f"{len(late)} process(es) (rank(s) {late}) did not finish "
                                   f"within {timeout_s} s")
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
        raise RuntimeError(_failure_message(context, err.error_index)) from None
    finally:
        for error_file in context.error_files:
            if os.path.exists(error_file):
                os.remove(error_file)


def run_in_processes(fn: Callable, world_size: int = 2, args: tuple = (),
                     backend: str = "gloo", timeout_s: float = 120.0) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes joined by ``torch.distributed``.

    The processes are started by ``torch.multiprocessing.start_processes``: fresh interpreters,
    never forks of this one (a fork of a process whose torch has started threads can
    deadlock). Where the platform offers it they come from a *fork server*, a helper process
    that imports torch once and stays alive until this process exits, so that later calls start
    in a fraction of a second; otherwise they are spawned. Either way ``fn`` must be importable
    (a module-level function, not one defined in a notebook). The processes rendezvous through
    a file in a temporary folder (:func:`rendezvous_file`) and run with one thread each.
    Tensors in the returned values are converted to NumPy arrays.

    Returns:
        The values returned by ``fn``, indexed by rank.

    Raises:
        ValueError: if ``world_size < 1``.
        RuntimeError: if ``fn`` or ``args`` cannot be pickled (nothing is started), a process
            fails (the message leads with the rank whose exception is not a consequence of
            another's - "Connection reset by peer" and the like - with its traceback, then the
            others), exits without a result (its exit code, 0 included), or does not finish
            within ``timeout_s`` seconds. No process is left running either way.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int; got {world_size!r}")
    try:
        pickle.dumps((fn, args))
    except Exception as err:
        raise RuntimeError(f"could not start the processes: {type(err).__name__}: {err} (fn "
                           f"and args must be picklable: a module-level function, not a "
                           f"lambda or one defined in a notebook)") from err
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="bnbook-ranks-") as folder:
        context = mp.start_processes(
            _rank_main, nprocs=world_size, join=False, daemon=True, start_method=_start_method(),
            args=(fn, world_size, rendezvous_file(folder), backend, timeout_s, args, folder))
        _join(context, deadline, timeout_s)
        values = []
        for rank in range(world_size):
            path = Path(folder) / f"rank{rank}.pickle"
            if not path.exists():  # os._exit(0), or a KeyboardInterrupt in fn
                raise RuntimeError(f"rank {rank} failed:\n{_NO_RESULT.format(code=0)}")
            with open(path, "rb") as f:
                values.append(pickle.load(f))
    return values


def sync_batch_norm_statistics(x: torch.Tensor, group=None):
    """Per-channel mean, biased variance and count of the batch formed by every process's ``x``.

    Two all-reduces (sums): ``[count, sum(x)]`` per channel, then ``sum((x - mu)**2)``.
    Every process must call it with a tensor of the same channel count (batch sizes may
    differ). Outside an initialised process group it reduces over ``x`` alone.

    Args:
        x: ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``.

    Returns:
        ``(mu, var, count)``: ``mu`` and ``var`` of shape ``(C,)`` in the accumulation dtype,
        ``count`` the global number of values per channel (a Python int).
    """
    dims = reduction_dims(x.dim())
    acc = accumulation_dtype(x.dtype)
    # float64 sums make the count exact and keep the gloo reduction independent of acc.
    xa = x.to(acc)
    local_count = x.numel() // x.shape[1]
    count_and_sum = torch.cat([torch.tensor([float(local_count)], dtype=torch.float64,
                                            device=x.device),
                               xa.sum(dim=dims).to(torch.float64)])
    synced = dist.is_available() and dist.is_initialized()
    if synced:
        dist.all_reduce(count_and_sum, op=dist.ReduceOp.SUM, group=group)
    count = int(round(count_and_sum[0].item()))
    if count < 2:
        raise ValueError(f"batch norm needs more than 1 value per channel over all processes; "
                         f"got {count}")
    mu = (count_and_sum[1:] / count).to(acc)
    squares = (xa - _per_channel(mu, x.dim())).square().sum(dim=dims).to(torch.float64)
    if synced:
        dist.all_reduce(squares, op=dist.ReduceOp.SUM, group=group)
    var = (squares / count).to(acc)
    return mu, var, count


class SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm with statistics and gradient reductions summed over a process group.

    ``y, mu, var, count = SyncBatchNormFunction.apply(x, gamma, beta, eps, group)``. The
    backward pass is the single-process closed form with ``dbeta = sum(dy)`` and
    ``dgamma = sum(dy * x_hat)`` taken over the *global* batch (one all-reduce), so that
    ``dx`` is the gradient of the sum of every process's loss. The returned ``dgamma`` and
    ``dbeta`` are this process's *local* contributions, as in ``torch.nn.SyncBatchNorm``:
    summing (or averaging) them over processes is the job of data-parallel training.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5, group=None):
        dims = reduction_dims(x.dim())
        mu, var, count = sync_batch_norm_statistics(x, group)
        acc = mu.dtype
        ndim = x.dim()
        inv_std = torch.rsqrt(var + eps)
        x_hat = (x.to(acc) - _per_channel(mu, ndim)) * _per_channel(inv_std, ndim)
        gamma_a = gamma.to(acc)
        y = x_hat * _per_channel(gamma_a, ndim) + _per_channel(beta.to(acc), ndim)
        ctx.save_for_backward(x_hat, inv_std, gamma_a)
        ctx.meta = (float(eps), dims, count, x.dtype, gamma.dtype, beta.dtype, group)
        ctx.mark_non_differentiable(mu, var)
        return y.to(x.dtype), mu, var, count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, _dmu, _dvar, _dcount):
        x_hat, inv_std, gamma = ctx.saved_tensors
        eps, dims, count, dtype, gamma_dtype, beta_dtype, group = ctx.meta
        dy = dy.to(x_hat.dtype)
        local = torch.stack([dy.sum(dim=dims), (dy * x_hat).sum(dim=dims)])
        total = local.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        ndim = x_hat.dim()
        dbeta, dgamma = total[0], total[1]
        # The single-process formula with m = the global count and the global sums.
        scale = _per_channel(gamma * inv_std, ndim)
        dx = scale / count * (count * dy - _per_channel(dbeta, ndim)
                              - x_hat * _per_channel(dgamma, ndim))
        return (dx.to(dtype), local[1].to(gamma_dtype), local[0].to(beta_dtype), None, None)


class SyncBatchNorm(BatchNorm):
    """:class:`bnbook.torch_bn.BatchNorm` with statistics synchronised over a process group.

    Same parameters, buffers and conventions; in training mode the batch statistics are those
    of the union of every process's batch, and ``running_var`` receives their unbiased
    variance with the global count. In evaluation mode (or outside a process group) nothing is
    communicated and it behaves like :class:`BatchNorm`.

    Args:
        group: the process group to synchronise over (``None``: the default group).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 group=None, device=None, dtype=None):
        super().__init__(num_features, eps=eps, momentum=momentum, device=device, dtype=dtype)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input(x)
        y, mu, var, count = SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps,
                                                        self.group)
        self.update_running_stats(mu, var, count)
        return y


def per_shard_batch_norm(x: torch.Tensor, world_size: int, eps: float = 1e-5) -> torch.Tensor:
    """What unsynchronised batch norm computes when ``x`` is split over ``world_size`` processes.

    ``x`` (``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``) is cut into ``world_size``
    contiguous shards along the batch dimension, as a distributed sampler hands them out;
    each shard is normalised with its own statistics (``gamma = 1``, ``beta = 0``) and the
    results are concatenated. No processes are needed: the arithmetic is what each would do.

    Returns:
        ``x_hat`` of the shape of ``x``.
    """
    dims = reduction_dims(x.dim())
    if not isinstance(world_size, int) or not 1 <= world_size <= x.shape[0]:
        raise ValueError(f"world_size must be an int between 1 and the batch size "
                         f"{x.shape[0]}; got {world_size!r}")
    parts = []
    for shard in torch.tensor_split(x, world_size, dim=0):
        var, mu = torch.var_mean(shard, dim=dims, keepdim=True, correction=0)
        parts.append((shard - mu) * torch.rsqrt(var + eps))
    return torch.cat(parts)


def _shard(t: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of ``t`` along dimension 0 (sizes differ by at most 1)."""
    return torch.tensor_split(t, world_size, dim=0)[rank]


def _experiment_inputs(seed: int, shape: tuple[int, ...]):
    """The whole batch every process rebuilds from the seed: x, dy, gamma, beta (float64).

    The two halves of the batch are drawn with different means and scales, as when each
    device receives data that is not shuffled across devices (or simply a small batch).
    """
    g = torch.Generator().manual_seed(seed)
    n, c = shape[0], shape[1]
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    shift = torch.linspace(-1.0, 2.0, n, dtype=torch.float64)  # the mean drifts along the batch
    x = 1.5 * x + 3.0 + _per_channel(torch.ones(c, dtype=torch.float64), x.dim()) * \
        shift.reshape((n,) + (1,) * (x.dim() - 1))
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    gamma = 0.5 + 2.0 * torch.rand(c, generator=g, dtype=torch.float64)
    beta = torch.randn(c, generator=g, dtype=torch.float64)
    return x, dy, gamma, beta


def _run_layer(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor, steps: int = 1) -> dict:
    """``steps`` training forward/backward passes of ``layer`` on ``x``; outputs of the last."""
    for _ in range(steps):
        layer.zero_grad(set_to_none=True)
        xr = x.clone().requires_grad_(True)
        y = layer(xr)
        y.backward(dy)
    return {"y": y.detach(), "dx": xr.grad.detach(), "dgamma": layer.weight.grad.detach(),
            "dbeta": layer.bias.grad.detach(), "running_mean": layer.running_mean.detach(),
            "running_var": layer.running_var.detach()}


def _layer_with(cls, gamma, beta, momentum, **kwargs):
    layer = cls(gamma.numel(), momentum=momentum, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        layer.weight.copy_(gamma)
        layer.bias.copy_(beta)
    return layer


def sync_batch_norm_worker(rank: int, world_size: int, seed: int, shape: tuple[int, ...],
                           steps: int = 2, momentum: float = 0.1) -> dict:
    """One rank of :func:`sync_batch_norm_experiment` (run it through :func:`run_in_processes`).

    Every rank rebuilds the same whole batch from ``seed``, keeps its shard, and runs
    ``steps`` training passes of (a) :class:`SyncBatchNorm` and (b) plain ``nn.BatchNorm``
    on the shard alone, and tries (c) ``torch.nn.SyncBatchNorm``. All three run on
    ``cuda:rank`` when the group uses NCCL (a GPU per rank), otherwise on the CPU, where
    torch may refuse (c).
    Parameter gradients are summed over ranks with ``all_reduce``, as data-parallel training
    does (up to its division by ``world_size``).

    Returns:
        ``{"variants": {"sync": {...}, "local": {...}[, "torch_sync": {...}]},
        "torch_sync_error": message or None}``; each variant holds this rank's ``y`` and
        ``dx`` (shard-shaped), the summed ``dgamma``/``dbeta`` and the ``running_mean``/
        ``running_var`` (shape ``(C,)``). ``torch_sync_error`` is the error
        ``nn.SyncBatchNorm`` raised, if it did.
    """
    # NCCL reduces GPU tensors only: with it, every variant runs on this rank's GPU.
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    x, dy, gamma, beta = _experiment_inputs(seed, shape)
    x_r = _shard(x, rank, world_size).to(device)
    dy_r = _shard(dy, rank, world_size).to(device)
    local_cls = nn.BatchNorm2d if x.dim() == 4 else nn.BatchNorm1d
    layers = {"sync": _layer_with(SyncBatchNorm, gamma, beta, momentum),
              "local": _layer_with(local_cls, gamma, beta, momentum)}
    out = {name: _run_layer(layer.to(device), x_r, dy_r, steps)
           for name, layer in layers.items()}
    torch_sync_error = None
    try:
        layer = _layer_with(nn.SyncBatchNorm, gamma, beta, momentum).to(device)
        out["torch_sync"] = _run_layer(layer, x_r, dy_r, steps)
    except (ValueError, RuntimeError) as err:  # torch 2.13 on CPU: "expected ... on GPU"
        torch_sync_error = f"{type(err).__name__}: {err}"
    for result in out.values():
        for key in ("dgamma", "dbeta"):
            g = result[key].clone()
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            result[key] = g
        for key in result:
            result[key] = result[key].cpu()
    return {"variants": out, "torch_sync_error": torch_sync_error}


def sync_batch_norm_experiment(seed: int = 0, shape: tuple[int, ...] = (8, 3, 4, 4),
                               world_size: int = 2, steps: int = 2, momentum: float = 0.1,
                               backend: str | None = None, timeout_s: float = 120.0) -> dict:
    """Whole-batch BN in one process versus BN over ``world_size`` shards, synchronised or not.

    The reference is ``nn.BatchNorm2d``/``1d`` (float64) on the whole batch in this process.
    The shards run in ``world_size`` processes (:func:`run_in_processes`; gloo on CPU, NCCL
    when CUDA has a GPU per rank), and their ``y`` and ``dx`` are concatenated in rank order.
    The running statistics are rank 0's (the copy data-parallel training keeps when it
    broadcasts buffers from rank 0).

    Returns:
        ``{"errors": {variant: {quantity: rel_error}}, "shape", "world_size", "steps",
        "backend", "torch_sync_error"}`` where ``variant`` is ``"sync"``
        (:class:`SyncBatchNorm`), ``"local"`` (unsynchronised ``nn.BatchNorm``) and, where
        it runs (CUDA with a GPU per process), ``"torch_sync"`` (``torch.nn.SyncBatchNorm``);
        quantities are ``y``, ``dx``, ``dgamma``, ``dbeta``, ``running_mean``,
        ``running_var``. ``torch_sync_error`` is the message ``nn.SyncBatchNorm`` raised on
        rank 0, or ``None``.
    """
    from bnbook.gradcheck import rel_error

    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"shape must be (N, C), (N, C, L) or (N, C, H, W); got {shape}")
    if shape[0] < world_size:
        raise ValueError(f"the batch ({shape[0]}) must have at least one sample per process "
                         f"({world_size})")
    if backend is None:
        backend = ("nccl" if torch.cuda.is_available() and dist.is_nccl_available()
                   and torch.cuda.device_count() >= world_size else "gloo")
    x, dy, gamma, beta = _experiment_inputs(seed, shape)
    whole_cls = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    whole = {k: v.numpy() for k, v in
             _run_layer(_layer_with(whole_cls, gamma, beta, momentum), x, dy, steps).items()}
    ranks = run_in_processes(sync_batch_norm_worker, world_size,
                             args=(seed, shape, steps, momentum), backend=backend,
                             timeout_s=timeout_s)
    errors = {}
    for variant in ranks[0]["variants"]:
        results = [r["variants"][variant] for r in ranks]
        joined = {k: np.concatenate([r[k] for r in results]) for k in ("y", "dx")}
        joined.update({k: results[0][k] for k in
                       ("dgamma", "dbeta", "running_mean", "running_var")})
        errors[variant] = {k: rel_error(joined[k], whole[k]) for k in whole}
    return {"errors": errors, "shape": list(shape), "world_size": world_size, "steps": steps,
            "backend": backend, "torch_sync_error": ranks[0]["torch_sync_error"]}
