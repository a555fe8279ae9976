"""The simulated equilibrium angle of a scale-invariant weight (bnbook.why.sphere), against the
closed forms: scale.equilibrium_angle (plain SGD, derived separately) and Wan et al.'s
sqrt(2 eta lambda / (1 + mu)) with momentum."""

import math

import pytest

from bnbook.why.scale import equilibrium_angle
from bnbook.why.sphere import equilibrium_angle_momentum, simulate_sphere_sgd


def test_closed_form_with_and_without_momentum():
    assert equilibrium_angle_momentum(0.5, 0.01, 0.0) == pytest.approx(0.1)
    assert equilibrium_angle_momentum(0.5, 0.01, 0.9) == pytest.approx(math.sqrt(0.01 / 1.9))


def test_plain_sgd_settles_at_the_exact_equilibrium():
    r = simulate_sphere_sgd(0.5, 0.01, 0.0, n_steps=6000, dim=64, last=4000, seed=1)
    assert r["rms_angle"] == pytest.approx(equilibrium_angle(0.5, 0.01), rel=0.02)


def test_momentum_lowers_the_angle_by_sqrt_one_plus_mu():
    r = simulate_sphere_sgd(0.5, 0.01, 0.9, n_steps=6000, dim=64, last=4000, seed=2)
    predicted = equilibrium_angle_momentum(0.5, 0.01, 0.9)
    assert r["rms_angle"] == pytest.approx(predicted, rel=0.03)
    assert r["rms_angle"] < 0.8 * equilibrium_angle(0.5, 0.01)   # not plain SGD's angle


@pytest.mark.parametrize("kwargs", [dict(momentum=1.0), dict(weight_decay=0.0),
                                    dict(n_steps=10, last=20)])
def test_bad_settings_are_refused(kwargs):
    args = dict(lr=0.5, weight_decay=0.01, momentum=0.0, n_steps=100, last=50) | kwargs
    with pytest.raises(ValueError):
        simulate_sphere_sgd(args.pop("lr"), args.pop("weight_decay"), args.pop("momentum"),
                            **args)
