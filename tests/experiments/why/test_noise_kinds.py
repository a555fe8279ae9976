"""The drift and per-activation noise (bnbook.experiments.why.noise_kinds) against hand computations, and
the runners that use them (figure 1 arms, CNN arms) recording the noise-free training loss."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bnbook.experiments.motivation import covariate_shift as cs
from bnbook.experiments.why.cnn_runs import eval_loss_accuracy, run_cnn_noise_arm, train_cnn
from bnbook.experiments.why.figure1 import Figure1Data, make_figure1_network
from bnbook.experiments.why.figure1_arms import clean_loss_accuracy, run_figure1_arm
from bnbook.experiments.why.noise import BatchNormNoise, NoisyBatchNorm
from bnbook.experiments.why.noise_kinds import (ActivationNoise, ActivationNoisyBatchNorm,
                                    DriftingBatchNormNoise, make_noise)

torch.set_num_threads(1)


def bn_net(width=6):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.ReLU(),
                         nn.Linear(width, 2))


def test_drift_is_a_random_walk_whose_spread_grows_as_the_square_root_of_time():
    net = bn_net(width=4000)
    noise = DriftingBatchNormNoise(net, shift_end_std=2.0, log_scale_end_std=0.5,
                                   n_steps=400, seed=0)
    wrapper = noise.layers[0]
    assert isinstance(wrapper, NoisyBatchNorm)
    steps = [wrapper.shift.clone()]
    for _ in range(399):
        noise.resample()
        steps.append(wrapper.shift.clone())
    # after all 400 steps the shift has the standard deviation asked for; after 100, half of it
    assert float(steps[-1].std()) == pytest.approx(2.0, rel=0.05)
    assert float(steps[99].std()) == pytest.approx(1.0, rel=0.05)
    assert float(wrapper.scale.log().std()) == pytest.approx(0.5, rel=0.05)
    # the increments are independent of where the walk is: consecutive ones uncorrelated
    inc = torch.stack(steps).diff(dim=0)
    corr = float(torch.corrcoef(torch.stack([inc[:-1].flatten(), inc[1:].flatten()]))[0, 1])
    assert abs(corr) < 0.01
    # whereas the jitter does not accumulate
    jitter = BatchNormNoise(bn_net(width=4000), 2.0, 1.5, seed=0)
    for _ in range(50):
        jitter.resample()
    assert float(jitter.layers[0].shift.abs().max()) <= 2.0


def test_per_activation_noise_differs_per_sample_and_has_the_stated_distribution():
    net = bn_net(width=3)
    noise = ActivationNoise(net, shift_max=0.5, scale_max=2.0, mean_max=1.0, seed=0)
    wrapper = net[1]
    assert isinstance(wrapper, ActivationNoisyBatchNorm)
    x = torch.randn(20000, 3, generator=torch.Generator().manual_seed(1))
    z = net[0](x)
    y_bn = F.batch_norm(z, None, None, wrapper.bn.weight, wrapper.bn.bias, training=True,
                        eps=wrapper.bn.eps)
    y = wrapper(z)
    # a = exp(U(-log 2, log 2)), b = mean_c + U(-0.5, 0.5), independent of y:
    # E[y] = mean_c (y_bn has mean 0), Var = E[a^2] Var(y_bn) + 0.5^2 / 3
    e_a2 = (4.0 - 0.25) / (4 * math.log(2.0))
    assert torch.allclose(y.mean(0), wrapper.mean, atol=0.05)
    assert torch.allclose(y.var(0), torch.full((3,), e_a2 * 1.0 + 0.25 / 3), rtol=0.05)
    assert float((y - y_bn).detach().std(0).min()) > 0.3                 # each sample its own noise
    old = wrapper.mean.clone()
    noise.resample()
    assert not torch.equal(old, wrapper.mean) and float(wrapper.mean.abs().max()) <= 1.0
    wrapper.eval()
    assert torch.equal(wrapper(z), wrapper.bn(z))                # evaluation mode: no noise


def test_make_noise_checks_its_kind_and_parameters():
    assert make_noise(bn_net(), None, None, 10, 0) is None
    assert isinstance(make_noise(bn_net(), "jitter", {"shift_max": 1, "scale_max": 2}, 10, 0),
                      BatchNormNoise)
    with pytest.raises(ValueError, match="unknown noise"):
        make_noise(bn_net(), "brown", {}, 10, 0)
    with pytest.raises(ValueError, match="takes the parameters"):
        make_noise(bn_net(), "drift", {"shift_max": 1.0}, 10, 0)
    with pytest.raises(ValueError, match="n_steps"):
        DriftingBatchNormNoise(bn_net(), 1.0, 0.1, 0)
    with pytest.raises(ValueError, match="batch norm"):
        ActivationNoise(nn.Linear(2, 2), 0.5, 1.5)


def test_eval_loss_accuracy_is_cross_entropy_in_evaluation_mode(tiny):
    from bnbook.models.small_cnn import small_cifar_cnn

    model = small_cifar_cnn(2, "batch", seed=0)
    model[1].running_mean.fill_(0.3)
    loss, acc = eval_loss_accuracy(model, tiny.x_test, tiny.y_test, batch_size=7)
    model.eval()
    logits = model(tiny.x_test)
    assert loss == pytest.approx(float(F.cross_entropy(logits, tiny.y_test)), rel=1e-5)
    assert acc == pytest.approx(float((logits.argmax(1) == tiny.y_test).float().mean()))


def test_train_cnn_records_clean_metrics_each_epoch_and_follows_a_scheduler(tiny):
    from bnbook.models.small_cnn import small_cifar_cnn

    model = small_cifar_cnn(2, "batch", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 ** t)
    out = train_cnn(model, tiny, opt, epochs=2, batch_size=16, scheduler=sched,
                    clean_train_size=32)
    assert out["steps"] == 8 and len(out["clean_train_loss"]) == 2
    assert out["lr"] == pytest.approx([0.1 * 0.5 ** 4, 0.1 * 0.5 ** 8])
    loss, acc = eval_loss_accuracy(model, tiny.x_train[:32], tiny.y_train[:32])
    assert out["clean_train_loss"][-1] == pytest.approx(loss) and out["clean_train_acc"][-1] == acc


@pytest.mark.parametrize("kind,params", [
    (None, None), ("jitter", {"shift_max": 0.5, "scale_max": 1.5}),
    ("drift", {"shift_end_std": 3.0, "log_scale_end_std": 0.7}),
    ("per-activation", {"shift_max": 0.5, "scale_max": 1.5, "mean_max": 0.5})])
def test_cnn_noise_arm_records_per_epoch_curves_and_movement(tiny, kind, params):
    out = run_cnn_noise_arm(tiny, "batch", kind, params, width=2, epochs=2, batch_size=16,
                            log_every=2, monitor_size=16)
    assert len(out["test_acc"]) == len(out["clean_train_loss"]) == 2
    assert out["log_steps"] == [0, 2, 4, 6, 8] and len(out["movement"]) == 4
    with pytest.raises(ValueError, match="norm"):
        run_cnn_noise_arm(tiny, "none", "jitter", params)


def test_drift_moves_the_cnn_distributions_further_than_jitter(tiny):
    kw = dict(width=2, epochs=3, batch_size=16, log_every=2, monitor_size=32)
    drift = run_cnn_noise_arm(tiny, "batch", "drift", {"shift_end_std": 3.0,
                                                       "log_scale_end_std": 0.0}, **kw)
    jitter = run_cnn_noise_arm(tiny, "batch", "jitter", {"shift_max": 0.5, "scale_max": 1.0},
                               **kw)
    wander = lambda r: np.median([m["location_range"] for m in r["movement"]])
    assert wander(drift) > 2 * wander(jitter)


@pytest.fixture(scope="module")
def proto():
    x, y, xt, yt = cs.make_prototype_data(n_train=600, n_test=200, n_features=30, seed=0)
    return Figure1Data(x, y, xt, yt, "synthetic", {})


def test_figure1_arm_logs_the_clean_training_loss_at_every_logged_step(proto):
    out = run_figure1_arm(proto, True, "per-activation",
                          {"shift_max": 1.0, "scale_max": 2.0, "mean_max": 1.0},
                          n_steps=120, record_every=50, monitor_size=100, clean_train_size=300)
    assert out["steps"] == [0, 50, 100, 120]
    assert len(out["clean_train_loss"]) == len(out["clean_train_acc"]) == 4
    assert out["clean_train_loss"][0] == pytest.approx(math.log(10), abs=0.1)   # untrained
    assert out["clean_train_loss"][-1] < out["clean_train_loss"][0]
    plain = run_figure1_arm(proto, False, n_steps=100, record_every=50, monitor_size=100,
                            clean_train_size=300)
    assert plain["steps"] == [0, 50, 100] and len(plain["clean_train_loss"]) == 3
    with pytest.raises(ValueError, match="batch_norm"):
        run_figure1_arm(proto, False, "jitter", {"shift_max": 1.0, "scale_max": 2.0})


def test_clean_loss_accuracy_sees_no_noise(proto):
    net, _ = make_figure1_network("bn", proto.x_train.shape[1], 0.1, 0)
    x, y = torch.as_tensor(proto.x_train[:100]), torch.as_tensor(proto.y_train[:100])
    before = clean_loss_accuracy(net, x, y)
    make_noise(net, "jitter", {"shift_max": 3.0, "scale_max": 3.0}, 10, 0)
    assert clean_loss_accuracy(net, x, y) == pytest.approx(before)


def test_the_jitter_arm_trains_exactly_as_the_stored_noisy_cnn_run(tiny):
    from bnbook.experiments.why.cnn import run_noisy_cnn

    kw = dict(width=2, epochs=2, batch_size=16, log_every=2, monitor_size=16, seed=3)
    new = run_cnn_noise_arm(tiny, "batch", "jitter", {"shift_max": 0.5, "scale_max": 1.5}, **kw)
    old = run_noisy_cnn(tiny, "noisy-batch", shift_max=0.5, scale_max=1.5, momentum=0.9, **kw)
    assert new["test_acc"] == old["test_acc"]
    assert new["epoch_train_loss"] == pytest.approx(old["epoch_train_loss"], rel=1e-6)


def test_the_jitter_arm_trains_exactly_as_the_stored_figure1_run(proto):
    from bnbook.experiments.why.figure1 import run_figure1

    kw = dict(n_steps=120, record_every=50, monitor_size=100, seed=2)
    new = run_figure1_arm(proto, True, "jitter", {"shift_max": 1.0, "scale_max": 2.0},
                          clean_train_size=300, **kw)
    old = run_figure1(proto, "noisy-bn", shift_max=1.0, scale_max=2.0, **kw)
    assert new["test_acc"] == old["test_acc"] and new["steps"] == old["steps"]
    assert new["movement"] == pytest.approx(old["movement"])
