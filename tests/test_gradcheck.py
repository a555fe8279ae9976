"""Tests of bnbook.gradcheck: finite differences against known closed forms, rel_error's
definition and edge cases, and compare's report."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbook.gradcheck import THRESHOLDS, compare, numerical_gradient, rel_error


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**32 - 1))
def test_gradient_of_sin_times_dy_is_cos_times_dy(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, size=shape)
    dy = rng.normal(size=shape)
    num = numerical_gradient(np.sin, x, dy)
    assert rel_error(num, np.cos(x) * dy) < THRESHOLDS["float64_finite_difference"]


def test_default_dy_differentiates_the_sum():
    x = np.linspace(-2.0, 3.0, 7)
    num = numerical_gradient(np.exp, x)
    assert rel_error(num, np.exp(x)) < 1e-8


def test_gradient_of_a_linear_map_is_the_transpose():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 6))
    x = rng.normal(size=6)
    dy = rng.normal(size=4)
    num = numerical_gradient(lambda v: a @ v, x, dy)
    assert rel_error(num, a.T @ dy) < 1e-9


def test_differences_are_centred():
    # For x^2 a centred difference is exact, (x+h)^2 - (x-h)^2 = 4xh, while a one-sided
    # difference is off by h. With h = 1e-3 the two are told apart by six orders of magnitude.
    x = np.array([0.5, -1.25, 3.0])
    num = numerical_gradient(np.square, x, h=1e-3)
    assert np.abs(num - 2 * x).max() < 1e-9


def test_step_is_the_one_actually_taken():
    # At x = 1e4, x + 1e-6 is rounded to a multiple of ulp(1e4) ~ 1.8e-12, so the step taken
    # differs from 2h by ~1e-6 relative. For f(x) = x the sums are exact, and dividing by the
    # step actually taken gives exactly 1, where dividing by 2h would not.
    x = np.array([1e4, -3e4, 7e3])
    naive = ((x + 1e-6) - (x - 1e-6)) / 2e-6
    assert np.abs(naive - 1.0).max() > 1e-8  # the test below can tell the two apart
    for value in x:  # one entry at a time, so that L = sum(f(x)) is itself exact
        num = numerical_gradient(lambda v: v.copy(), np.array([value]), h=1e-6)
        assert num[0] == 1.0


def test_x_is_restored_bit_for_bit_even_if_f_fails():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4)) * 1e3
    before = x.copy()
    numerical_gradient(np.tanh, x)
    np.testing.assert_array_equal(x, before)

    calls = []

    def fails_on_second_call(v):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return v

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(fails_on_second_call, x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    "x,kwargs,pattern",
    [
        (np.ones(3, dtype=np.float32), {}, "float64"),
        ([1.0, 2.0], {}, "float64 NumPy array"),
        (np.ones((3, 2))[:, 0], {}, "C-contiguous"),
        (np.ones(3), {"dy": np.ones(2)}, r"dy must have the shape of f\(x\), \(3,\)"),
        (np.ones(3), {"h": 0.0}, "positive finite"),
        (np.ones(3), {"h": float("nan")}, "positive finite"),
    ],
)
def test_numerical_gradient_rejects_bad_input(x, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        numerical_gradient(np.sin, x, **kwargs)


# --- rel_error -------------------------------------------------------------------------------

def test_rel_error_definition_on_hand_computed_values():
    assert rel_error([1.0, 2.0], [1.0, 2.5]) == pytest.approx(0.5 / 2.5)
    assert rel_error([3.0, -4.0], [3.0, -4.0]) == 0.0
    assert rel_error([1.0, -2.0], [0.0, 0.0]) == 1.0  # anything against zero
    assert rel_error([1.0, -2.0], [-1.0, 2.0]) == 2.0  # opposite sign
    assert rel_error([2.0], [4.0]) == 0.5
    # norm-wise: a tiny entry's own relative error (100%) does not dominate
    assert rel_error([1e-12, 1.0], [2e-12, 1.0]) == pytest.approx(1e-12)


def test_rel_error_edge_cases():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.zeros((0, 2)), np.zeros((0, 2))) == 0.0
    assert rel_error(5e-324, 5e-324) == 0.0  # subnormals: no division by zero
    # Differences below the smallest normal float64 (the "tiny" floor) count as nothing.
    assert rel_error(5e-324, 0.0) < 1e-15
    assert rel_error(1e-300, 0.0) == 1.0
    for bad in (np.nan, np.inf, -np.inf):
        err = rel_error([1.0, bad], [1.0, 1.0])
        assert np.isnan(err) and not err < 1.0  # a NaN/inf can never pass a threshold
        assert np.isnan(rel_error([1.0, 1.0], [1.0, bad]))
    with pytest.raises(ValueError, match=r"one shape.*\(2,\) and \(3,\)"):
        rel_error(np.ones(2), np.ones(3))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(-30, 30))
def test_rel_error_is_symmetric_and_scale_invariant(seed, k):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, 5))
    assert rel_error(a, b) == rel_error(b, a)
    assert rel_error(a * 2.0**k, b * 2.0**k) == rel_error(a, b)  # exact for powers of 2
    assert 0.0 <= rel_error(a, b) <= 2.0


def test_rel_error_compares_in_float64():
    a32 = np.float32(1.0) + np.float32(2.0**-23)  # one float32 ulp above 1
    assert rel_error(np.array([a32]), np.array([1.0])) == pytest.approx(2.0**-23 / (1 + 2.0**-23))


def test_thresholds_separate_right_from_wrong_gradients():
    """Each threshold passes a correct gradient and fails one with a missing term."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4))
    w = rng.normal(size=(4,))
    f = lambda x_: np.tanh(x_ @ w)                               # noqa: E731
    dy = rng.normal(size=6)
    exact = (dy * (1 - np.tanh(x @ w) ** 2))[:, None] * w[None, :]
    wrong = dy[:, None] * w[None, :]                              # forgot tanh's derivative
    numeric = numerical_gradient(f, x, dy)
    assert (THRESHOLDS["float64_analytic"] < THRESHOLDS["float64_finite_difference"]
            < THRESHOLDS["float32"])
    assert rel_error(exact, numeric) < THRESHOLDS["float64_finite_difference"]
    assert rel_error(wrong, numeric) > THRESHOLDS["float32"]
    exact32 = exact.astype(np.float32)
    assert rel_error(exact32, exact) < THRESHOLDS["float32"]
    assert rel_error(exact32, exact) > THRESHOLDS["float64_analytic"]


# --- compare ---------------------------------------------------------------------------------

def test_compare_prints_exact_allclose_and_error(capsys):
    err = compare("dx", np.array([1.0, 2.0]), np.array([1.0, 2.0]), threshold=1e-10)
    out = capsys.readouterr().out
    assert err == 0.0
    assert out.startswith("dx") and "exact: True" in out and "allclose: True" in out
    assert "rel_error: 0.00e+00" in out and "(threshold 1e-10)" in out

    err = compare("dgamma", np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9]))
    out = capsys.readouterr().out
    assert err == pytest.approx(1e-9 / (2 + 1e-9))
    assert "exact: False" in out and "allclose: True" in out and "threshold" not in out


def test_compare_fails_above_the_threshold(capsys):
    with pytest.raises(AssertionError, match=r"dbeta: relative error 1\.000e-03 is not below"):
        compare("dbeta", np.array([1.0, 0.999]), np.array([1.0, 1.0]), threshold=1e-4)
    assert "allclose: False" in capsys.readouterr().out
