"""Tests of bnbook.diagnostics: batch statistics noise against its closed forms, the variance
shift, recalibration, freezing, and the batch norm health check (one planted fault per check)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from bnbook.data.subsets import brightness_shift
from bnbook.diagnostics import (batch_statistics_spread, batchnorm_input_shift,
                                check_batchnorm_health, freeze_batchnorm, recalibrate_batchnorm)
from bnbook.training import train_classifier

from practice_helpers import small_mlp, synthetic_subset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return synthetic_subset()


# ----------------------------------------------------------------------------- statistics noise

def test_batch_statistics_spread_matches_closed_forms():
    g = torch.Generator().manual_seed(0)
    # Skewed, non-zero-mean features with different scales: exponential * scale + shift.
    feats = -torch.log(torch.rand(5000, 6, generator=g)) * torch.tensor([1, 2, 3, 5, 7, 11.0]) + 4
    rows = batch_statistics_spread(feats, [2, 8, 64], n_batches=6000, seed=1)
    for r in rows:
        m = r["m"]
        assert r["mean_std_closed"] == pytest.approx(m ** -0.5)
        assert r["var_mean_closed"] == pytest.approx((m - 1) / m)
        # Monte Carlo error of a std estimated from 6000 draws is about 1 %, of a mean smaller.
        assert r["mean_std"] == pytest.approx(r["mean_std_closed"], rel=0.04)
        assert r["var_mean"] == pytest.approx(r["var_mean_closed"], rel=0.04)
        assert r["var_std"] == pytest.approx(r["var_std_closed"], rel=0.08)
    # For exponential data mu4 = 9 sigma^4, so at m = 64 the closed form is near sqrt(8/64).
    assert rows[2]["var_std_closed"] == pytest.approx(np.sqrt(8 / 64), rel=0.1)


def test_batch_statistics_spread_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        batch_statistics_spread(torch.randn(10, 3), [1, 4])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        batch_statistics_spread(torch.randn(10), [4])
    with pytest.raises(ValueError, match="constant"):
        batch_statistics_spread(torch.ones(10, 3), [4])


# ----------------------------------------------------------------------------- shift, recalibration

def one_bn_model(mean, var, eps=1e-5):
    bn = nn.BatchNorm1d(len(mean), eps=eps)
    bn.running_mean.copy_(torch.tensor(mean))
    bn.running_var.copy_(torch.tensor(var))
    bn.num_batches_tracked.fill_(10)
    return nn.Sequential(nn.Identity(), bn).eval()


def test_batchnorm_input_shift_against_direct_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 3, generator=g, dtype=torch.float64).float() * torch.tensor([2., 3, 4]) \
        + torch.tensor([1., -2, 5])
    model = one_bn_model([0.0, -2.0, 5.0], [1.0, 9.0, 64.0])
    (row,) = batchnorm_input_shift(model, x, batch_size=700)
    ratio = x.double().var(0) / torch.tensor([1.0, 9.0, 64.0], dtype=torch.float64)
    shift = (x.double().mean(0) - torch.tensor([0.0, -2.0, 5.0], dtype=torch.float64)).abs() \
        / (torch.tensor([1.0, 9.0, 64.0], dtype=torch.float64) + 1e-5).sqrt()
    assert row["layer"] == "1"
    assert row["var_ratio_median"] == pytest.approx(float(ratio.median()), rel=1e-6)
    assert row["mean_shift_median"] == pytest.approx(float(shift.median()), rel=1e-5)
    assert row["var_ratio_q10"] < row["var_ratio_median"] < row["var_ratio_q90"]
    with pytest.raises(ValueError, match="no batch norm"):
        batchnorm_input_shift(nn.Linear(3, 3), x)


def test_recalibrate_batchnorm_averages_batch_statistics_with_dropout_off():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g) * 3 + 2
    model = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(5, momentum=0.1)).train()
    recalibrate_batchnorm(model, x, batch_size=100)
    bn = model[1]
    batches = x.reshape(4, 100, 5)
    assert torch.allclose(bn.running_mean, batches.mean(1).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, batches.var(1, unbiased=True).mean(0), atol=1e-4)
    assert bn.momentum == 0.1 and model.training and model[0].training and bn.training
    assert int(bn.num_batches_tracked) == 4
    with pytest.raises(ValueError, match="at least 2"):
        recalibrate_batchnorm(model, x[:1])


def test_recalibrate_batchnorm_replaces_trained_statistics_with_those_of_new_data(data):
    """A trained MLP recalibrated on shifted images: every BN layer's running statistics must
    change, and become the average of the batch statistics its input has on those images."""
    model = small_mlp(data, seed=0)
    train_classifier(model, data.x_train, data.y_train, epochs=1, batch_size=50, seed=0)
    bns = [model[2], model[5]]
    before = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    x_new = brightness_shift(data.x_train[:400], 0.4)
    seen = {i: [] for i in range(len(bns))}
    hooks = [bn.register_forward_pre_hook(lambda m, inp, i=i: seen[i].append(inp[0].detach()))
             for i, bn in enumerate(bns)]
    try:
        recalibrate_batchnorm(model, x_new, batch_size=100)
    finally:
        for h in hooks:
            h.remove()
    for i, bn in enumerate(bns):
        old_mean, old_var = before[i]
        assert (bn.running_mean - old_mean).abs().max() > 0.1, f"BN {i}: running_mean unchanged"
        assert (bn.running_var / old_var - 1).abs().max() > 0.1, f"BN {i}: running_var unchanged"
        batches = torch.stack(seen[i])  # (4, 100, 32): the inputs the layer saw while recalibrating
        assert batches.shape[0] == 4
        assert torch.allclose(bn.running_mean, batches.mean(1).mean(0), atol=1e-4)
        assert torch.allclose(bn.running_var, batches.var(1, unbiased=True).mean(0), rtol=1e-4,
                              atol=1e-5)
    assert not model.training  # modes restored (train_classifier left it in eval mode)


def test_freeze_batchnorm_keeps_statistics_and_affine_during_training(data):
    model = small_mlp(data, seed=0)
    train_classifier(model, data.x_train, data.y_train, epochs=1, batch_size=50, seed=0)
    bn = model[2]
    saved = {k: v.clone() for k, v in bn.state_dict().items()}
    w1 = model[1].weight.detach().clone()
    freeze_batchnorm(model)
    assert not bn.training and not bn.weight.requires_grad and not bn.bias.requires_grad
    train_classifier(model, data.x_train, data.y_train, epochs=1, batch_size=50, seed=1,
                       freeze_bn_stats=True)
    assert all(torch.equal(saved[k], v) for k, v in bn.state_dict().items())
    assert not torch.equal(w1, model[1].weight)
    # Without freeze_bn_stats, model.train() inside the loop un-freezes the statistics.
    train_classifier(model, data.x_train, data.y_train, epochs=1, batch_size=50, seed=2)
    assert not torch.equal(saved["running_mean"], bn.running_mean)


# ----------------------------------------------------------------------------- health check

@pytest.fixture(scope="module")
def trained(data):
    model = small_mlp(data, seed=0)
    train_classifier(model, data.x_train, data.y_train, epochs=2, batch_size=50, seed=0)
    return model


def test_healthy_model_passes(trained, data):
    report = check_batchnorm_health(trained, data.x_train)
    assert report.ok and report.issues == [] and report.n_batchnorm == 2
    assert "no problems" in str(report)


def faulty(trained, fault):
    model = copy.deepcopy(trained)
    bn = model[2]
    if fault == "nan":
        bn.running_var[3] = float("nan")
    elif fault == "affine":
        with torch.no_grad():
            bn.weight[0] = float("inf")
    elif fault == "dead":
        bn.running_var[:4] = 0.0
    elif fault == "train":
        model.train()
    elif fault == "fresh":
        bn.reset_running_stats()
    elif fault == "momentum":
        bn.momentum = 0.99
    elif fault == "untracked":
        model[2] = nn.BatchNorm1d(32, track_running_stats=False)
    elif fault == "bias":
        model[1].bias = nn.Parameter(torch.zeros(32))
    elif fault == "output":
        model.append(nn.BatchNorm1d(10))
        recalibrate_batchnorm(model, torch.rand(100, 28, 28))
    elif fault == "half":
        model = model.half()
    elif fault == "parallel":
        model = nn.DataParallel(model)
    return model


@pytest.mark.parametrize("fault, check, severity", [
    ("nan", "nonfinite-running-stats", "error"),
    ("affine", "nonfinite-affine", "error"),
    ("dead", "degenerate-variance", "warning"),
    ("train", "train-mode", "error"),
    ("fresh", "stats-never-updated", "error"),
    ("momentum", "momentum-convention", "warning"),
    ("untracked", "no-running-stats", "warning"),
    ("bias", "bias-before-bn", "info"),
    ("output", "bn-on-output", "warning"),
    ("half", "half-precision-eps", "warning"),
    ("parallel", "per-replica-stats", "info"),
])
def test_health_check_finds_each_fault(trained, fault, check, severity):
    report = check_batchnorm_health(faulty(trained, fault))
    found = [i for i in report.issues if i.check == check]
    assert found and found[0].severity == severity, str(report)
    assert report.ok == (severity == "info")
    assert check in str(report)
    # The healthy original is untouched by building the faulty copy.
    assert check_batchnorm_health(trained).ok


def test_health_check_train_mode_is_fine_when_training_is_expected(trained):
    report = check_batchnorm_health(faulty(trained, "train"), expect_eval=False)
    assert report.ok and "train-mode" not in report.checks


def test_health_check_with_data(trained, data):
    shifted = brightness_shift(data.x_train, 0.5)
    report = check_batchnorm_health(trained, shifted)
    assert "stats-mismatch" in report.checks and not report.ok
    bad = data.x_train.clone()
    bad[0, 0, 0] = float("nan")
    assert "nonfinite-input" in check_batchnorm_health(trained, bad).checks
    # Modes are restored after the data pass.
    trained.train()
    check_batchnorm_health(trained, data.x_train, expect_eval=False)
    assert trained.training
    trained.eval()


def test_health_check_rejects_bad_input(trained):
    with pytest.raises(ValueError, match="nn.Module"):
        check_batchnorm_health("model")
    with pytest.raises(ValueError, match="ratio_bounds"):
        check_batchnorm_health(trained, ratio_bounds=(2.0, 3.0))
    with pytest.raises(ValueError, match="x must be"):
        check_batchnorm_health(trained, torch.zeros(5))
