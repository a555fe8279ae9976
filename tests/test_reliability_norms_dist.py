"""Reliability of ``bnbook.numpy_norms.BatchNorm`` inputs and of
``bnbook.distributed.run_in_processes``: byte order, dtypes alike in both modes, non-finite
batches refused before they reach the running statistics; start failures, the failing rank,
timeouts and silent exits reported as they are."""

import multiprocessing
import os
import time

import numpy as np
import pytest
import torch.distributed as dist

from bnbook.distributed import run_in_processes
from bnbook.numpy_norms import BatchNorm

# ------------------------------------------------------------------ numpy BatchNorm inputs


@pytest.mark.parametrize("training", [True, False])
def test_big_endian_input_is_accepted_as_the_same_numbers(training):
    x = np.random.default_rng(0).normal(size=(6, 3, 2, 2))
    native, swapped = BatchNorm(3).train(training), BatchNorm(3).train(training)
    y = native(x)
    y_be = swapped(x.astype(">f8"))
    np.testing.assert_array_equal(y_be, y)
    np.testing.assert_array_equal(swapped.running_mean, native.running_mean)
    y32 = BatchNorm(3).train(training)(x.astype(">f4"))
    assert y32.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.int64, np.complex128])
def test_eval_and_training_accept_the_same_dtypes(dtype):
    if np.dtype(dtype) == np.dtype(np.float64):
        pytest.skip("longdouble is float64 on this platform")
    x = np.ones((4, 3)).astype(dtype)
    errors = []
    for training in (True, False):
        with pytest.raises(ValueError, match="float32 or float64") as err:
            BatchNorm(3).train(training)(x)
        errors.append(str(err.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_training_batch_is_refused_before_the_running_statistics(bad):
    bn = BatchNorm(3)
    bn(np.random.default_rng(1).normal(size=(8, 3)))
    mean, var, count = bn.running_mean.copy(), bn.running_var.copy(), bn.num_batches_tracked
    x = np.random.default_rng(2).normal(size=(8, 3))
    x[5, 1] = bad
    with pytest.raises(ValueError, match="non-finite"):
        bn(x)
    np.testing.assert_array_equal(bn.running_mean, mean)
    np.testing.assert_array_equal(bn.running_var, var)
    assert bn.num_batches_tracked == count and np.isfinite(bn.running_var).all()


# ------------------------------------------------------------------ run_in_processes


def test_an_unpicklable_function_is_reported_not_hidden():
    with pytest.raises(RuntimeError, match="could not start the processes.*pickl"):
        run_in_processes(lambda rank, world_size: rank, world_size=2, timeout_s=30)
    assert multiprocessing.active_children() == []


def _rank1_fails_late(rank, world_size):
    """Rank 0 waits in a collective; rank 1 leaves the group, so rank 0 gets a connection
    error, and only then reports its own exception: the consequence arrives first."""
    import torch

    if rank == 0:
        dist.all_reduce(torch.zeros(1))
        return rank
    try:
        raise KeyError("rank 1 is the cause")
    finally:
        dist.destroy_process_group()
        time.sleep(1.0)


def test_the_failing_rank_is_reported_not_the_peer_it_disconnected():
    with pytest.raises(RuntimeError) as err:
        run_in_processes(_rank1_fails_late, world_size=2, timeout_s=30)
    message = str(err.value)
    assert message.startswith("rank 1 failed:"), message
    assert "rank 1 is the cause" in message.split("rank 0 failed")[0]
    assert multiprocessing.active_children() == []


def _sleeps(rank, world_size):
    time.sleep(60)


def test_hung_ranks_are_killed_and_named_within_the_timeout():
    start = time.monotonic()
    with pytest.raises(RuntimeError,
                       match=r"2 process\(es\) \(rank\(s\) \[0, 1\]\) did not finish within 2"):
        run_in_processes(_sleeps, world_size=2, timeout_s=2)
    assert time.monotonic() - start < 2 + 3.0
    assert multiprocessing.active_children() == []


def _exits_quietly(rank, world_size, code):
    os._exit(code)


@pytest.mark.parametrize("code", [0, 3])
def test_an_early_exit_is_reported_with_its_exit_code(code):
    start = time.monotonic()
    with pytest.raises(RuntimeError,
                       match=f"rank 0 failed:\nexited with code {code} without a result"):
        run_in_processes(_exits_quietly, world_size=1, args=(code,), timeout_s=30)
    assert time.monotonic() - start < 15
    assert multiprocessing.active_children() == []
