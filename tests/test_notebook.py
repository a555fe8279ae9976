"""bnbook.notebook.make_case: the shared batch-norm case builder of the chapters and the tests."""

from __future__ import annotations

import numpy as np
import pytest

from bnbook.notebook import make_case


def chapter_case(shape, seed, loc=3.0, scale=2.5):
    """The definition chapters 3 and Appendix B carried before they imported make_case: their
    printed numbers depend on these draws, in this order."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * scale + loc
    gamma = rng.uniform(0.5, 3.0, size=c) * rng.choice([-1.0, 1.0], size=c)
    beta = rng.normal(0.0, 2.0, size=c)
    dy = rng.normal(0.5, 1.0, size=shape)
    return x, gamma, beta, dy


@pytest.mark.parametrize("shape, seed, loc, scale", [((8, 4), 0, 3.0, 2.5),
                                                     ((6, 3, 4, 5), 1, -2.0, 0.5),
                                                     ((2, 3), 8, 3.0, 0.01)])
def test_the_default_case_is_the_chapters_case(shape, seed, loc, scale):
    for ours, theirs in zip(make_case(shape, seed, loc, scale),
                            chapter_case(shape, seed, loc, scale)):
        np.testing.assert_array_equal(ours, theirs)


def test_channel_spread_gives_each_channel_its_own_mean_and_spread():
    x, gamma, beta, dy = make_case((4000, 6, 2), seed=3, loc=10.0, scale=1.0,
                                   channel_spread=True, gamma_range=(0.2, 4.0))
    means, spreads = x.mean(axis=(0, 2)), x.std(axis=(0, 2))
    assert np.all((means > 4.9) & (means < 15.1)) and np.ptp(means) > 0.5
    assert np.all((spreads > 0.45) & (spreads < 2.1)) and np.ptp(spreads) > 0.1
    assert np.all((np.abs(gamma) >= 0.2) & (np.abs(gamma) <= 4.0))
    assert gamma.shape == beta.shape == (6,) and dy.shape == x.shape


def test_a_case_has_both_signs_of_gamma_and_the_dtype_asked_for():
    x, gamma, beta, dy = make_case((5, 64), seed=2, dtype=np.float32)
    assert {a.dtype for a in (x, gamma, beta, dy)} == {np.dtype(np.float32)}
    assert (gamma > 0).any() and (gamma < 0).any()
    assert np.all((np.abs(gamma) >= 0.5) & (np.abs(gamma) <= 3.0))
    np.testing.assert_array_equal(make_case((5, 64), seed=2, dtype=np.float32)[3], dy)
