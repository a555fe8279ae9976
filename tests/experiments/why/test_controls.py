"""The controls added to chapter 9's experiments: weight normalisation (bnbook.experiments.why.weightnorm),
per-filter equilibrium angles (bnbook.experiments.why.filter_angles), the faster learning-rate decay
(bnbook.experiments.why.decay) and the ICS measure over seeds (bnbook.experiments.why.ics_seeds), on random images and
against hand computations."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from bnbook.models.small_cnn import small_cifar_cnn
from bnbook.experiments.why.decay import exponential_lr_factor, run_decay
from bnbook.experiments.why.filter_angles import filter_angles, run_filter_angles
from bnbook.experiments.why.ics_seeds import ics_seed_summary, run_ics
from bnbook.experiments.why.scale import angle_between
from bnbook.experiments.why.weightnorm import (WN_ARMS, MeanOnlyBatchNorm2d, filter_direction_norms,
                                   make_wn_cnn, run_weightnorm)

torch.set_num_threads(1)


@pytest.mark.parametrize("arm", WN_ARMS)
def test_every_arm_starts_as_the_plain_network_does_in_its_conv_weights(arm):
    plain, model = small_cifar_cnn(3, "none", seed=4), make_wn_cnn(arm, 3, seed=4)
    for a, b in zip([m for m in plain if isinstance(m, nn.Conv2d)],
                    [m for m in model if isinstance(m, nn.Conv2d)]):
        assert torch.allclose(a.weight, b.weight, atol=1e-6)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model)
    assert has_bn == (arm in ("batch", "wn-batch"))
    assert any(isinstance(m, MeanOnlyBatchNorm2d) for m in model) == (arm == "wn-mean")


def test_weight_normalised_loss_is_invariant_to_the_scale_of_a_filter_direction():
    model = make_wn_cnn("wn", 3, seed=0)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = model(x)
    conv = model[0]
    with torch.no_grad():
        conv.parametrizations.weight.original1[1].mul_(7.0)     # one filter's direction x 7
    assert torch.allclose(model(x), out, atol=1e-5)
    norms = filter_direction_norms(model)
    w = conv.parametrizations.weight.original1.detach().double()
    assert norms[0][1] == pytest.approx(float(w[1].norm()))
    assert len(norms) == 4


def test_mean_only_bn_subtracts_the_batch_mean_and_uses_its_running_mean_in_evaluation():
    layer = MeanOnlyBatchNorm2d(2, momentum=0.5)
    x = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(0)) + 3.0
    y = layer(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(y.std(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)))
    assert torch.allclose(layer.running_mean, 0.5 * x.mean(dim=(0, 2, 3)))
    layer.eval()
    assert torch.allclose(layer(x), x - layer.running_mean.view(1, -1, 1, 1))


def test_run_weightnorm_records_per_epoch_accuracy_loss_and_direction_norms(tiny):
    out = run_weightnorm(tiny, "wn", lr=0.05, width=2, epochs=2, batch_size=16)
    assert len(out["test_acc"]) == len(out["clean_train_loss"]) == 2
    assert len(out["direction_norm"]) == 3 and len(out["direction_norm"][0]) == 4
    # gradient steps orthogonal to v only grow ||v||
    assert all(b >= a - 1e-6 for a, b in zip(out["direction_norm"][0], out["direction_norm"][-1]))


def test_filter_angles_match_angle_between_filter_by_filter():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, 3, 3, generator=g)
    b = a + 1e-3 * torch.randn(5, 3, 3, 3, generator=g)
    angle, rel = filter_angles(a, b)
    for c in range(5):
        assert angle[c] == pytest.approx(angle_between(a[c], b[c]), rel=1e-9)
        assert rel[c] == pytest.approx(float((b[c] - a[c]).norm() / a[c].norm()), rel=1e-6)
    with pytest.raises(ValueError, match="zero"):
        filter_angles(torch.zeros(2, 3), torch.ones(2, 3))


def test_run_filter_angles_reports_window_angles_and_both_predictions(tiny):
    out = run_filter_angles(tiny, lr=0.05, momentum=0.9, weight_decay=1e-2, width=2, epochs=2,
                            batch_size=16, window_steps=4)
    assert out["predicted_momentum"] == pytest.approx(math.sqrt(2 * 0.05 * 1e-2 / 1.9))
    assert out["predicted_plain"] == pytest.approx(math.sqrt(2 * 0.05 * 1e-2))
    assert len(out["epoch_rms_angle"]) == 2 and len(out["window_rms_angle"]) == 4
    assert [len(r) for r in out["window_rms_angle"]] == [2, 2, 4, 4]
    assert all(v > 0 for v in out["window_median"])
    with pytest.raises(ValueError, match="window_steps"):
        run_filter_angles(tiny, lr=0.05, momentum=0.9, weight_decay=1e-2, width=2, epochs=1,
                          batch_size=16, window_steps=5)


def test_exponential_schedule_ends_at_the_final_factor_and_a_faster_one_sooner():
    assert exponential_lr_factor(0, 100, 1, 0.1) == 1.0
    assert exponential_lr_factor(100, 100, 1, 0.1) == pytest.approx(0.1)
    assert exponential_lr_factor(20, 100, 5, 0.1) == pytest.approx(0.1)
    assert exponential_lr_factor(100, 100, 5, 0.1) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="final_factor"):
        exponential_lr_factor(0, 100, 1, 0.0)


def test_run_decay_follows_its_schedule(tiny):
    fast = run_decay(tiny, speed=5, lr=0.05, width=2, epochs=2, batch_size=16)
    slow = run_decay(tiny, speed=1, lr=0.05, width=2, epochs=2, batch_size=16)
    assert fast["lr"][-1] == pytest.approx(0.05 * 1e-5) and slow["lr"][-1] == pytest.approx(0.005)
    assert fast["lr"][0] == pytest.approx(0.05 * 0.1 ** 2.5)
    assert len(fast["test_acc"]) == 2


def test_ics_runs_and_their_summary_over_seeds(tiny):
    runs = {f"{norm}/lr0.1/seed{s}": run_ics(tiny, norm, lr=0.1, width=2, epochs=1,
                                               batch_size=16, measure_every=2, seed=s)
            for s in (0, 1) for norm in ("none", "batch")}
    run = runs["batch/lr0.1/seed0"]
    assert [m["step"] for m in run["measurements"]] == [0, 2]
    assert len(run["layers"]) == 6 and run["measurements"][0]["ics"][0]["l2"] == 0.0
    summary = ics_seed_summary({"runs": runs})
    entry = summary["arms"]["batch/lr0.1"]
    assert entry["seeds"] == [0, 1] and len(entry["rel"]) == 5 == summary["n_layers"]
    layer2 = [np.median([m["ics"][1]["rel"] for m in runs[f"batch/lr0.1/seed{s}"]
                         ["measurements"]]) for s in (0, 1)]
    assert entry["rel"][0]["per_seed"] == pytest.approx(layer2)
    assert entry["rel"][0]["median"] == pytest.approx(float(np.median(layer2)))
    assert entry["rel"][0]["min"] == pytest.approx(min(layer2))
    lower = summary["bn_lower"]["lr0.1"]
    for s in (0, 1):
        expected = sum(a["per_seed"][s] < b["per_seed"][s] for a, b in
                       zip(entry["rel"], summary["arms"]["none/lr0.1"]["rel"]))
        assert lower[s] == expected


def test_ics_runs_repeat_the_ics_of_the_stored_landscape_run(tiny):
    from bnbook.experiments.why.run_landscape import run_landscape

    kw = dict(lr=0.1, width=2, epochs=1, batch_size=16, measure_every=2, seed=1)
    ics = run_ics(tiny, "batch", **kw)
    land = run_landscape(tiny, "batch", etas=(0.05, 0.1), **kw)
    assert [m["ics"] for m in ics["measurements"]] == [m["ics"] for m in land["measurements"]]
    assert ics["test_acc"] == land["test_acc"]
