"""The verification harness: devices, dtypes, tolerances, and the sweep against PyTorch."""

import math

import numpy as np
import pytest
import torch

from bnbook.verify import (QUANTITIES, BiasedRunningVar, Case, KerasMomentum,
                           available_devices, compare_case, error_table,
                           format_error_table, growth_factor, quantity_dtype, random_cases,
                           scaled_error, supported_dtypes, sweep, tolerance, unit_roundoff)


def test_available_devices_lists_cpu_first_and_every_accelerator_present():
    devices = available_devices()
    assert devices[0] == "cpu"
    assert ("cuda" in devices) == torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    assert ("mps" in devices) == bool(mps is not None and mps.is_available())


def test_cpu_runs_batch_norm_in_float64_and_float32():
    dtypes = supported_dtypes("cpu")
    assert torch.float64 in dtypes and torch.float32 in dtypes
    assert all(dt.is_floating_point for dt in dtypes)


def test_unit_roundoff_is_two_to_minus_the_significand_bits():
    assert unit_roundoff(torch.float64) == 2.0 ** -53
    assert unit_roundoff(torch.float32) == 2.0 ** -24
    assert unit_roundoff(torch.float16) == 2.0 ** -11
    assert unit_roundoff(torch.bfloat16) == 2.0 ** -8
    assert unit_roundoff(np.float32) == 2.0 ** -24
    # 1 + u rounds to 1 (ties to even); 1 + 2u is the next number.
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        u = unit_roundoff(dt)
        one = torch.ones((), dtype=dt)
        assert one + u == one and one + 2 * u != one


def test_tolerance_grows_with_m_and_shrinks_with_precision():
    ms = [2, 16, 256, 4096]
    for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        tols = [tolerance(dt, m) for m in ms]
        assert tols == sorted(tols)
    for m in ms:
        assert (tolerance(torch.float64, m) < tolerance(torch.float32, m)
                < tolerance(torch.float16, m) < tolerance(torch.bfloat16, m))
    assert growth_factor(4096) == 64.0 and growth_factor(4096) > math.log2(4096)


@pytest.mark.parametrize("m", [8, 64, 512, 2048])
def test_tolerance_catches_the_unbiased_variance_mistake(m):
    """Normalising with var * m / (m - 1) instead of var must fail float64 and float32 checks."""
    rng = np.random.default_rng(m)
    x = 3.0 + 2.0 * rng.standard_normal(m)
    mu, var = x.mean(), x.var()
    y_right = (x - mu) / np.sqrt(var + 1e-5)
    y_wrong = (x - mu) / np.sqrt(var * m / (m - 1) + 1e-5)
    err = scaled_error(y_wrong, y_right, np.abs(y_right).max())
    assert err > tolerance(torch.float32, m) > tolerance(torch.float64, m)


@pytest.mark.parametrize("bad", [
    lambda: unit_roundoff(torch.int32), lambda: unit_roundoff(np.int64),
    lambda: growth_factor(0), lambda: random_cases(0), lambda: quantity_dtype("z", torch.float32),
    lambda: scaled_error(np.ones(3), np.ones(2), 1.0),
    lambda: compare_case(Case((4, 2), 0.0, 1.0, 1.0, 0), steps=0),
    lambda: sweep(random_cases(1), threads=0, progress=False),
])
def test_bad_arguments_raise_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_random_cases_are_reproducible_and_varied():
    a, b = random_cases(30, seed=5), random_cases(30, seed=5)
    assert a == b and a != random_cases(30, seed=6)
    assert {len(c.shape) for c in a} == {2, 3, 4}
    assert all(2 <= c.m <= 2048 for c in a)
    scales = [c.scale for c in a]
    assert max(scales) / min(scales) > 100


def test_float64_cpu_agrees_with_numpy_far_below_float32_tolerance():
    for case in random_cases(6, seed=1):
        record = compare_case(case, "cpu", torch.float64)
        for q in QUANTITIES:
            assert record[q] < record[f"tol_{q}"]
            assert record[q] < 1e-12


@pytest.mark.parametrize("wrong, quantity", [(KerasMomentum, "running_mean"),
                                              (BiasedRunningVar, "running_var")])
def test_the_harness_detects_a_convention_mistake(wrong, quantity):
    case = Case((16, 3, 4, 4), shift=5.0, scale=2.0, gamma_scale=3.0, seed=0)
    for dtype in (torch.float64, torch.float32):
        good = compare_case(case, "cpu", dtype)
        assert good[quantity] < good[f"tol_{quantity}"]
    for dtype in (torch.float64, torch.float32):
        bad = compare_case(case, "cpu", dtype, reference_cls=wrong)
        assert bad[quantity] > 10 * bad[f"tol_{quantity}"]
        # The training-mode output and gradients do not depend on the running statistics.
        assert bad["y"] < bad["tol_y"] and bad["dx"] < bad["tol_dx"]


def test_sweep_passes_on_every_device_and_dtype():
    cases = random_cases(4, seed=11)
    threads = torch.get_num_threads()
    records = sweep(cases, progress=False, threads=1)
    assert torch.get_num_threads() == threads  # restored
    rows = error_table(records)
    devices = {r["device"] for r in rows}
    assert devices == set(available_devices())
    assert {r["dtype"] for r in rows if r["device"] == "cpu"} >= {"float64", "float32"}
    for row in rows:
        assert row["cases"] == 4
        assert row["worst_ratio"] < 1.0, format_error_table([row])
    text = format_error_table(rows)
    assert text.count("\n") == len(rows) + 1 and "worst err/tol" in text
    md = format_error_table(rows, markdown=True)
    assert md.count("\n") == len(rows) + 1 and md.startswith("| device")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_float32_parameters(dtype):
    if dtype not in supported_dtypes("cpu"):
        pytest.skip(f"batch norm in {dtype} does not run on this CPU build")
    assert quantity_dtype("y", dtype) == dtype
    assert quantity_dtype("dgamma", dtype) == torch.float32
    record = compare_case(Case((8, 2, 3, 3), 1.0, 1.0, 2.0, 3), "cpu", dtype)
    for q in QUANTITIES:
        assert record[q] < record[f"tol_{q}"]
    # Half precision is visibly worse than float32 in the output, as its u says.
    assert record["y"] > tolerance(torch.float32, 72)
