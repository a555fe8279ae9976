"""Synchronised batch norm over two gloo processes on the CPU equals whole-batch batch norm.

One experiment spawns two processes (a few seconds, most of it importing torch); the rest of
the file runs in this process.
"""

import multiprocessing

import pytest
import torch
import torch.nn.functional as F

from bnbook.distributed import (SyncBatchNorm, SyncBatchNormFunction, free_port,
                                per_shard_batch_norm, rendezvous_file, run_in_processes,
                                sync_batch_norm_experiment, sync_batch_norm_statistics)
from bnbook.gradcheck import rel_error
from bnbook.torch_bn import BatchNorm

# The experiment and the failure tests start processes: a hung one fails instead of hanging CI.
pytestmark = pytest.mark.timeout(120)

QUANTITIES = ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var")


@pytest.fixture(scope="module")
def experiment():
    # 7 samples: the shards have 4 and 3, so the global count is not twice a local one.
    result = sync_batch_norm_experiment(seed=3, shape=(7, 3, 3, 2), world_size=2, steps=2)
    assert multiprocessing.active_children() == []  # the processes were reaped
    return result


def test_synchronised_statistics_reproduce_whole_batch_batch_norm(experiment):
    errors = experiment["errors"]["sync"]
    assert set(errors) == set(QUANTITIES)
    for q in QUANTITIES:
        assert errors[q] < 1e-13, (q, errors[q])


def test_unsynchronised_batch_norm_does_not(experiment):
    errors = experiment["errors"]["local"]
    for q in ("y", "dx", "dgamma", "running_mean", "running_var"):
        assert errors[q] > 1e-2, (q, errors[q])
    # dbeta = sum(dy) never sees the statistics, so summing it over processes is exact.
    assert errors["dbeta"] < 1e-13


def test_torch_sync_batch_norm_runs_where_torch_allows_and_agrees(experiment):
    """On CUDA with a GPU per process nn.SyncBatchNorm must run; where it runs, it must agree."""
    has_torch_sync = "torch_sync" in experiment["errors"]
    if experiment["backend"] == "nccl":
        assert has_torch_sync
    assert has_torch_sync == (experiment["torch_sync_error"] is None)
    if has_torch_sync:
        for q in QUANTITIES:
            assert experiment["errors"]["torch_sync"][q] < 1e-12
    else:
        assert "GPU" in experiment["torch_sync_error"]


def _fails(rank, world_size):
    if rank == 0:
        raise ArithmeticError("rank 0 gives up")
    return rank


def test_a_failing_process_is_reported_and_reaped():
    with pytest.raises(RuntimeError, match="rank 0 gives up"):
        run_in_processes(_fails, world_size=1, timeout_s=30)
    assert multiprocessing.active_children() == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="world_size"):
        run_in_processes(_fails, world_size=0)
    with pytest.raises(ValueError, match="sample per process"):
        sync_batch_norm_experiment(shape=(1, 3, 2, 2), world_size=2)
    with pytest.raises(ValueError, match="shape"):
        sync_batch_norm_experiment(shape=(8,), world_size=2)


def test_free_port_can_be_bound_and_is_not_taken():
    import socket

    port = free_port()
    assert port != 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))      # EADDRINUSE if the helper returned a busy port
        s.listen()
        # while that socket holds it, the helper must not hand the same port out again
        assert all(free_port() != port for _ in range(20))


def test_rendezvous_file_is_a_fresh_file_uri(tmp_path):
    uri = rendezvous_file(tmp_path)
    assert uri == (tmp_path / "rendezvous").resolve().as_uri() and uri.startswith("file://")
    (tmp_path / "rendezvous").write_text("")
    with pytest.raises(FileExistsError):
        rendezvous_file(tmp_path)


def test_without_a_process_group_it_is_ordinary_batch_norm():
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    mu, var, count = sync_batch_norm_statistics(x)
    assert count == 24
    assert rel_error(mu, x.mean(dim=(0, 2))) < 1e-15
    assert rel_error(var, x.var(dim=(0, 2), unbiased=False)) < 1e-14
    gamma = torch.tensor([2.0, -0.5, 1.5], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    xr = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, g, b: SyncBatchNormFunction.apply(x, g, b, 1e-5, None)[0], (xr, gamma, beta))
    ours, ref = SyncBatchNorm(3, dtype=torch.float64), BatchNorm(3, dtype=torch.float64)
    dy = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    for layer in (ours, ref):
        xi = x.clone().requires_grad_(True)
        layer(xi).backward(dy)
        layer.dx = xi.grad
    assert rel_error(ours.dx, ref.dx) < 1e-14
    assert rel_error(ours.running_var, ref.running_var) < 1e-15
    y_ref = F.batch_norm(x, None, None, training=True)
    assert rel_error(SyncBatchNorm(3, dtype=torch.float64)(x).detach(), y_ref) < 1e-14


def test_per_shard_batch_norm():
    g = torch.Generator().manual_seed(1)
    x = 2.0 + 3.0 * torch.randn(8, 2, 3, generator=g, dtype=torch.float64)
    whole = F.batch_norm(x, None, None, training=True)
    assert rel_error(per_shard_batch_norm(x, 1), whole) < 1e-14
    y = per_shard_batch_norm(x, 2)
    assert rel_error(y[:4], F.batch_norm(x[:4], None, None, training=True)) < 1e-14
    assert rel_error(y, whole) > 1e-2
    with pytest.raises(ValueError, match="world_size"):
        per_shard_batch_norm(x, 9)
