"""Noisy batch norm and the movement of distributions (bnbook.experiments.why.noise): the injected noise
against its closed form, the measurement of movement against a brute-force loop."""

import numpy as np
import pytest
import torch
from torch import nn

from bnbook.experiments.motivation.covariate_shift import SigmoidMLP
from bnbook.models.small_cnn import small_cifar_cnn
from bnbook.experiments.why.noise import (BatchNormNoise, NoisyBatchNorm, buffers_restored, channel_moments,
                                          distribution_movement, percentile_location_spread)

torch.set_num_threads(1)


def test_noisy_bn_is_scale_times_bn_plus_shift_in_training_and_bn_in_eval():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    noisy = NoisyBatchNorm(bn)
    noisy.scale.copy_(torch.tensor([2.0, 0.5, 1.0]))
    noisy.shift.copy_(torch.tensor([-1.0, 0.0, 3.0]))
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    ref = nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, training=True)
    want = ref * noisy.scale.view(1, 3, 1, 1) + noisy.shift.view(1, 3, 1, 1)
    assert torch.allclose(noisy(x), want, atol=1e-5)
    noisy.eval()
    assert torch.allclose(noisy(x), bn(x))
    with pytest.raises(ValueError, match="batch norm"):
        NoisyBatchNorm(nn.Linear(3, 3))


@pytest.mark.parametrize("make, n_bn", [(lambda: SigmoidMLP(10, 6, 3, 4, True, 0.1, 0), 3),
                                        (lambda: small_cifar_cnn(4, "batch", seed=0), 4)])
def test_every_bn_layer_is_wrapped_and_noise_is_redrawn_within_its_bounds(make, n_bn):
    model = make()
    noise = BatchNormNoise(model, shift_max=0.7, scale_max=3.0, seed=1)
    assert len(noise.layers) == n_bn
    assert sum(isinstance(m, NoisyBatchNorm) for m in model.modules()) == n_bn
    draws = []
    for _ in range(200):
        noise.resample()
        draws.append(torch.cat([torch.stack([l.shift, l.scale]) for l in noise.layers], 1))
    d = torch.stack(draws)                                   # (200, 2, channels)
    shift, log_scale = d[:, 0], d[:, 1].log()
    assert shift.abs().max() <= 0.7 and log_scale.abs().max() <= np.log(3.0) + 1e-6
    # uniform on [-0.7, 0.7] and on [-log 3, log 3]: standard deviation max / sqrt(3)
    assert shift.std().item() == pytest.approx(0.7 / 3 ** 0.5, rel=0.05)
    assert log_scale.std().item() == pytest.approx(np.log(3.0) / 3 ** 0.5, rel=0.05)
    assert (d[1:] != d[:-1]).all()                          # a fresh draw every time
    first = [BatchNormNoise(make(), 0.7, 3.0, seed=1).layers[0].shift for _ in range(2)]
    assert torch.equal(first[0], first[1])                  # seeded
    with pytest.raises(ValueError, match="already noisy"):
        BatchNormNoise(model, 0.1, 1.1)
    with pytest.raises(ValueError, match="scale_max"):
        BatchNormNoise(make(), 0.1, 0.5)


def test_zero_noise_leaves_the_network_unchanged_and_seeds_repeat():
    x = torch.randn(16, 10)
    plain = SigmoidMLP(10, 6, 3, 4, True, 0.1, 0)
    quiet = SigmoidMLP(10, 6, 3, 4, True, 0.1, 0)
    BatchNormNoise(quiet, 0.0, 1.0, seed=5)
    assert torch.allclose(plain(x), quiet(x))
    a, b = (SigmoidMLP(10, 6, 3, 4, True, 0.1, 0) for _ in range(2))
    na, nb = BatchNormNoise(a, 1.0, 2.0, seed=5), BatchNormNoise(b, 1.0, 2.0, seed=5)
    na.resample(), nb.resample()
    assert torch.equal(a(x), b(x))
    with pytest.raises(ValueError, match="no batch norm"):
        BatchNormNoise(SigmoidMLP(10, 6, 3, 4, False, 0.1, 0), 1.0, 2.0)


def test_channel_moments_measure_the_injected_noise():
    # After BN (gamma, beta) and noise (scale, shift), a channel of the ReLU's input has mean
    # shift + scale * beta and standard deviation |scale * gamma| sqrt(var / (var + eps)).
    torch.manual_seed(0)
    model = small_cifar_cnn(4, "batch", seed=0)
    noise = BatchNormNoise(model, 1.0, 2.0, seed=3)
    with torch.no_grad():
        for layer in noise.layers:
            layer.bn.weight.uniform_(0.5, 2.0)
            layer.bn.bias.uniform_(-1.0, 1.0)
    x = torch.randn(32, 3, 32, 32)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)][:4]
    seen = []
    hooks = [l.bn.register_forward_pre_hook(lambda m, i: seen.append(i[0].detach()))
             for l in noise.layers]
    means, stds = channel_moments(model, x, relus)
    for h in hooks:
        h.remove()
    for k, layer in enumerate(noise.layers):
        var = seen[k].double().var(dim=(0, 2, 3), unbiased=False)
        g, b = layer.bn.weight.detach().double(), layer.bn.bias.detach().double()
        s, t = layer.scale.double(), layer.shift.double()
        assert np.allclose(means[k], (t + s * b).numpy(), atol=1e-5)
        want = (s * g).abs() * torch.sqrt(var / (var + layer.bn.eps))
        assert np.allclose(stds[k], want.numpy(), rtol=1e-4)


def test_buffers_restored_keeps_running_statistics():
    model = small_cifar_cnn(4, "batch", seed=0)
    before = [b.clone() for b in model.buffers()]
    with buffers_restored(model):
        model(torch.randn(8, 3, 32, 32))
        assert any(not torch.equal(a, b) for a, b in zip(before, model.buffers()))
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))


def test_distribution_movement_against_a_loop():
    rng = np.random.default_rng(0)
    loc = rng.standard_normal((7, 5))
    spr = rng.uniform(0.5, 2.0, (7, 5))
    got = distribution_movement(loc, spr)
    per_unit = {k: [] for k in got}
    for j in range(5):
        per_unit["location_shift"].append(np.mean([abs(loc[k, j] - loc[k - 1, j])
                                                   for k in range(1, 7)]))
        per_unit["location_shift_rel"].append(np.mean([abs(loc[k, j] - loc[k - 1, j]) /
                                                       spr[k - 1, j] for k in range(1, 7)]))
        per_unit["spread_change"].append(np.mean([abs(np.log(spr[k, j] / spr[k - 1, j]))
                                                  for k in range(1, 7)]))
        per_unit["location_range"].append(max(loc[:, j]) - min(loc[:, j]))
    for k, values in per_unit.items():
        assert got[k] == pytest.approx(float(np.median(values)), rel=1e-12)
    # a pure shift by 2 of a distribution of spread 0.5 moves it by 4 spreads
    two = distribution_movement(np.array([[0.0], [2.0]]), np.array([[0.5], [0.5]]))
    assert two == {"location_shift": 2.0, "location_shift_rel": 4.0, "spread_change": 0.0,
                   "location_range": 2.0}
    with pytest.raises(ValueError, match="positive"):
        distribution_movement(loc, np.zeros_like(spr))
    with pytest.raises(ValueError, match="T >= 2"):
        distribution_movement(loc[:1], spr[:1])


def test_percentile_location_spread():
    p = np.array([[[-1.0, 0.0], [0.5, 1.0], [3.0, 4.0]]])          # (1, 3, 2)
    loc, spread = percentile_location_spread(p)
    assert loc.tolist() == [[0.5, 1.0]] and spread.tolist() == [[2.0, 2.0]]
    with pytest.raises(ValueError, match="units"):
        percentile_location_spread(np.zeros((2, 4, 3)))
