"""Tests of bnbook.experiments: the models, the training loop, the statistics helpers and the
batch norm health check. Synthetic data keeps them fast; the two Fashion-MNIST tests read the
real data set from the data folder (`make data` puts it there) and fail, saying how to get it,
when it is missing."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from bnbook import experiments as E
from bnbook.data import FASHION_MNIST_FILES

torch.set_num_threads(1)



@pytest.fixture
def no_download(monkeypatch):
    """The real-data tests read what `make data` provisioned; they never download."""
    import bnbook.data

    real = bnbook.data.load_fashion_mnist

    def load(root=None, download=True, progress=True, **kw):
        return real(root, download=False, progress=False, **kw)

    monkeypatch.setattr(bnbook.data, "load_fashion_mnist", load)


def synthetic_subset(n_train=600, n_test=200, seed=0) -> E.FashionMNISTSubset:
    """Ten classes of 28x28 'images' in [0, 1]: a class-specific mean pattern plus noise."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(10, 28, 28, generator=g)

    def draw(n):
        y = torch.randint(0, 10, (n,), generator=g)
        x = (0.7 * prototypes[y] + 0.3 * torch.rand(n, 28, 28, generator=g)).clamp(0, 1)
        return x, y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return E.FashionMNISTSubset(xtr, ytr, xte, yte, float(xtr.mean()), float(xtr.std()))


@pytest.fixture(scope="module")
def data():
    return synthetic_subset()


def small_mlp(data, **kw):
    kw.setdefault("hidden", (32, 32))
    return E.make_mlp(pixel_mean=data.pixel_mean, pixel_std=data.pixel_std, **kw)


# ----------------------------------------------------------------------------- models

@pytest.mark.parametrize("placement, order", [("before", [nn.Linear, nn.BatchNorm1d, nn.ReLU]),
                                              ("after", [nn.Linear, nn.ReLU, nn.BatchNorm1d])])
def test_make_mlp_places_batch_norm(placement, order):
    model = E.make_mlp(hidden=(16, 8), norm="batch", placement=placement, seed=0)
    kinds = [type(m) for m in model]
    assert kinds[1:4] == order and kinds[4:7] == order
    # Bias only where no normalisation removes it.
    assert (model[1].bias is None) == (placement == "before")
    assert model(torch.rand(5, 28, 28)).shape == (5, 10)


def test_make_mlp_same_weights_across_variants():
    ref = E.make_mlp(hidden=(16, 8), norm="none", seed=7)
    ref_w = [m.weight for m in ref if isinstance(m, nn.Linear)]
    for kw in (dict(norm="batch"), dict(norm="batch", placement="after"), dict(norm="group",
               groups=4), dict(norm="layer"), dict(norm="batch", dropout=0.3, bias=True)):
        model = E.make_mlp(hidden=(16, 8), seed=7, **kw)
        ws = [m.weight for m in model if isinstance(m, nn.Linear)]
        assert all(torch.equal(a, b) for a, b in zip(ws, ref_w)), kw
    other = E.make_mlp(hidden=(16, 8), norm="none", seed=8)
    assert not torch.equal(other[1].weight, ref_w[0])


def test_make_mlp_standardizes_with_given_constants():
    model = E.make_mlp(hidden=(4,), norm="none", pixel_mean=0.3, pixel_std=0.2, seed=0)
    x = torch.rand(3, 28, 28)
    assert torch.allclose(model[0](x), (x.reshape(3, -1) - 0.3) / 0.2)


@pytest.mark.parametrize("kw, word", [(dict(norm="weight"), "norm"),
                                      (dict(placement="middle"), "placement"),
                                      (dict(dropout=1.0), "dropout"),
                                      (dict(hidden=()), "hidden"),
                                      (dict(norm="group", hidden=(10,), groups=4), "divisible"),
                                      (dict(pixel_std=0.0), "std")])
def test_make_mlp_rejects_bad_arguments(kw, word):
    with pytest.raises(ValueError, match=word):
        E.make_mlp(**kw)


def test_group_and_layer_norm_do_not_depend_on_the_batch():
    x = torch.rand(6, 28, 28)
    for norm in ("group", "layer"):
        model = E.make_mlp(hidden=(16,), norm=norm, groups=4, seed=0).train()
        full = model(x)
        assert torch.allclose(model(x[:1]), full[:1], atol=1e-6)
    bn = E.make_mlp(hidden=(16,), norm="batch", seed=0).train()
    assert not torch.allclose(bn(x[:2])[:1], bn(x)[:1], atol=1e-3)


# ----------------------------------------------------------------------------- training

def test_training_learns_and_is_reproducible(data):
    accs, params = [], []
    for _ in range(2):
        model = small_mlp(data, seed=1)
        before = E.evaluate_accuracy(model, data.x_test, data.y_test)
        res = E.train_classifier(model, data.x_train, data.y_train, epochs=3, batch_size=32,
                                 lr=0.05, seed=3)
        accs.append(E.evaluate_accuracy(model, data.x_test, data.y_test))
        params.append(torch.cat([p.detach().flatten() for p in model.state_dict().values()
                                 if p.is_floating_point()]))
    assert not res.diverged and res.steps == 3 * (600 // 32) and len(res.epoch_loss) == 3
    assert res.epoch_loss[-1] < res.epoch_loss[0]
    assert before < 0.3 and accs[0] > 0.9
    assert torch.equal(params[0], params[1]) and accs[0] == accs[1]
    assert not model.training  # left in evaluation mode


def test_training_detects_divergence(data):
    model = small_mlp(data, norm="none", seed=0)
    res = E.train_classifier(model, data.x_train, data.y_train, epochs=2, batch_size=32,
                             lr=1e4, seed=0)
    assert res.diverged and res.steps < 2 * (600 // 32)


@pytest.mark.parametrize("kw, word", [(dict(batch_size=0), "batch_size"),
                                      (dict(batch_size=601), "batch_size"),
                                      (dict(epochs=0), "epochs"), (dict(lr=0.0), "lr")])
def test_training_rejects_bad_arguments(data, kw, word):
    with pytest.raises(ValueError, match=word):
        E.train_classifier(small_mlp(data), data.x_train, data.y_train, **kw)
    with pytest.raises(ValueError, match="labels"):
        E.train_classifier(small_mlp(data), data.x_train, data.y_train[:-1])


def test_evaluate_accuracy_matches_direct_count_and_restores_modes(data):
    model = small_mlp(data, seed=0, dropout=0.5)
    E.train_classifier(model, data.x_train, data.y_train, epochs=1, batch_size=50, seed=0)
    model.train()
    model[2].eval()  # a deliberately frozen BN layer must stay frozen
    acc = E.evaluate_accuracy(model, data.x_test, data.y_test, batch_size=64)
    with torch.no_grad():
        model.eval()
        direct = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
        model.train()
        model[2].eval()
    assert acc == pytest.approx(direct, abs=1e-12)
    assert model.training and not model[2].training and model[4].training


# ----------------------------------------------------------------------------- statistics noise

def test_batch_statistics_spread_matches_closed_forms():
    g = torch.Generator().manual_seed(0)
    # Skewed, non-zero-mean features with different scales: exponential * scale + shift.
    feats = -torch.log(torch.rand(5000, 6, generator=g)) * torch.tensor([1, 2, 3, 5, 7, 11.0]) + 4
    rows = E.batch_statistics_spread(feats, [2, 8, 64], n_batches=6000, seed=1)
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
        E.batch_statistics_spread(torch.randn(10, 3), [1, 4])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        E.batch_statistics_spread(torch.randn(10), [4])
    with pytest.raises(ValueError, match="constant"):
        E.batch_statistics_spread(torch.ones(10, 3), [4])


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
    (row,) = E.batchnorm_input_shift(model, x, batch_size=700)
    ratio = x.double().var(0) / torch.tensor([1.0, 9.0, 64.0], dtype=torch.float64)
    shift = (x.double().mean(0) - torch.tensor([0.0, -2.0, 5.0], dtype=torch.float64)).abs() \
        / (torch.tensor([1.0, 9.0, 64.0], dtype=torch.float64) + 1e-5).sqrt()
    assert row["layer"] == "1"
    assert row["var_ratio_median"] == pytest.approx(float(ratio.median()), rel=1e-6)
    assert row["mean_shift_median"] == pytest.approx(float(shift.median()), rel=1e-5)
    assert row["var_ratio_q10"] < row["var_ratio_median"] < row["var_ratio_q90"]
    with pytest.raises(ValueError, match="no batch norm"):
        E.batchnorm_input_shift(nn.Linear(3, 3), x)


def test_recalibrate_batchnorm_averages_batch_statistics_with_dropout_off():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g) * 3 + 2
    model = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(5, momentum=0.1)).train()
    E.recalibrate_batchnorm(model, x, batch_size=100)
    bn = model[1]
    batches = x.reshape(4, 100, 5)
    assert torch.allclose(bn.running_mean, batches.mean(1).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, batches.var(1, unbiased=True).mean(0), atol=1e-4)
    assert bn.momentum == 0.1 and model.training and model[0].training and bn.training
    assert int(bn.num_batches_tracked) == 4
    with pytest.raises(ValueError, match="at least 2"):
        E.recalibrate_batchnorm(model, x[:1])


def test_freeze_batchnorm_keeps_statistics_and_affine_during_training(data):
    model = small_mlp(data, seed=0)
    E.train_classifier(model, data.x_train, data.y_train, epochs=1, batch_size=50, seed=0)
    bn = model[2]
    saved = {k: v.clone() for k, v in bn.state_dict().items()}
    w1 = model[1].weight.detach().clone()
    E.freeze_batchnorm(model)
    assert not bn.training and not bn.weight.requires_grad and not bn.bias.requires_grad
    E.train_classifier(model, data.x_train, data.y_train, epochs=1, batch_size=50, seed=1,
                       freeze_bn_stats=True)
    assert all(torch.equal(saved[k], v) for k, v in bn.state_dict().items())
    assert not torch.equal(w1, model[1].weight)
    # Without freeze_bn_stats, model.train() inside the loop un-freezes the statistics.
    E.train_classifier(model, data.x_train, data.y_train, epochs=1, batch_size=50, seed=2)
    assert not torch.equal(saved["running_mean"], bn.running_mean)


def test_brightness_shift():
    x = torch.tensor([0.0, 0.5, 0.9])
    assert torch.allclose(E.brightness_shift(x, 0.2), torch.tensor([0.2, 0.7, 1.0]))
    assert torch.equal(x, torch.tensor([0.0, 0.5, 0.9]))  # input untouched
    with pytest.raises(ValueError, match="delta"):
        E.brightness_shift(x, 2.0)


# ----------------------------------------------------------------------------- health check

@pytest.fixture(scope="module")
def trained(data):
    model = small_mlp(data, seed=0)
    E.train_classifier(model, data.x_train, data.y_train, epochs=2, batch_size=50, seed=0)
    return model


def test_healthy_model_passes(trained, data):
    report = E.check_batchnorm_health(trained, data.x_train)
    assert report.ok and report.issues == [] and report.n_batchnorm == 2
    assert "no problems" in str(report)


def faulty(trained, fault):
    model = __import__("copy").deepcopy(trained)
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
        E.recalibrate_batchnorm(model, torch.rand(100, 28, 28))
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
    report = E.check_batchnorm_health(faulty(trained, fault))
    found = [i for i in report.issues if i.check == check]
    assert found and found[0].severity == severity, str(report)
    assert report.ok == (severity == "info")
    assert check in str(report)
    # The healthy original is untouched by building the faulty copy.
    assert E.check_batchnorm_health(trained).ok


def test_health_check_train_mode_is_fine_when_training_is_expected(trained):
    report = E.check_batchnorm_health(faulty(trained, "train"), expect_eval=False)
    assert report.ok and "train-mode" not in report.checks


def test_health_check_with_data(trained, data):
    shifted = E.brightness_shift(data.x_train, 0.5)
    report = E.check_batchnorm_health(trained, shifted)
    assert "stats-mismatch" in report.checks and not report.ok
    bad = data.x_train.clone()
    bad[0, 0, 0] = float("nan")
    assert "nonfinite-input" in E.check_batchnorm_health(trained, bad).checks
    # Modes are restored after the data pass.
    trained.train()
    E.check_batchnorm_health(trained, data.x_train, expect_eval=False)
    assert trained.training
    trained.eval()


def test_health_check_rejects_bad_input(trained):
    with pytest.raises(ValueError, match="nn.Module"):
        E.check_batchnorm_health("model")
    with pytest.raises(ValueError, match="ratio_bounds"):
        E.check_batchnorm_health(trained, ratio_bounds=(2.0, 3.0))
    with pytest.raises(ValueError, match="x must be"):
        E.check_batchnorm_health(trained, torch.zeros(5))


# ----------------------------------------------------------------------------- experiments

def test_run_finetune_and_dropout_on_synthetic_data(data):
    out = E.run_finetune(data, n_new=100, seeds=(0,), epochs=2, finetune_epochs=2,
                         hidden=(32, 32), delta=0.3)
    res = out["runs"]["seed0"]
    assert set(res) == set(E.FINETUNE_VARIANTS)
    # Recalibrating on shifted data helps on shifted data.
    assert res["recalibrate-only"]["new_acc"] >= res["pretrained"]["new_acc"]
    # After recalibration the stored statistics describe the (dropout-free) test-time input.
    out = E.run_dropout(data, rates=(0.5,), seeds=(0,), epochs=1, hidden=(32, 32))
    row = out["runs"]["p0.5/seed0"]
    assert all(abs(r["var_ratio_median"] - 1) < 0.02 for r in row["shift_recalibrated"])


def test_experiment_runner_resumes(data):
    done = {"bn-before/seed0": {"test_acc": -1.0}}
    seen = []
    out = E.run_placement(data, seeds=(0,), epochs=1, hidden=(16,), done=done,
                          on_result=lambda d: seen.append(len(d)))
    assert out["runs"]["bn-before/seed0"] == {"test_acc": -1.0}  # not re-run
    assert seen == [2, 3] and list(out["runs"]) == ["bn-before/seed0", "bn-after/seed0",
                                                    "no-bn/seed0"]


def test_prepare_fashion_mnist_subset(no_download):
    d = E.prepare_fashion_mnist(n_train=500, n_test=100, seed=3)
    assert d.x_train.shape == (500, 28, 28) and d.x_test.shape == (100, 28, 28)
    assert d.x_train.dtype == torch.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert d.y_train.dtype == torch.int64 and set(d.y_train.tolist()) <= set(range(10))
    # Fashion-MNIST's pixel mean is about 0.286 and its std about 0.353.
    assert abs(d.pixel_mean - 0.286) < 0.02 and abs(d.pixel_std - 0.353) < 0.02
    again = E.prepare_fashion_mnist(n_train=500, n_test=100, seed=3)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    with pytest.raises(ValueError, match="n_train"):
        E.prepare_fashion_mnist(n_train=0)


def test_command_line_writes_result_with_provenance(tmp_path, no_download):
    rc = E.main(["placement", "--quick", "--n-train", "600", "--n-test", "100",
                 "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    result = json.loads((tmp_path / "placement-quick.json").read_text())
    prov = result["provenance"]
    assert set(prov["dataset_sha256"]) == set(FASHION_MNIST_FILES.values())
    assert all(len(v) == 64 for v in prov["dataset_sha256"].values())
    assert prov["dataset_subset"] == {"n_train": 600, "n_test": 100, "seed": 0}
    assert len(result["runs"]) == 3 and not (tmp_path / "placement-quick.partial.json").exists()


def test_make_mlp_activation_and_init_scale():
    ref = E.make_mlp(hidden=(16, 8), norm="none", seed=2)
    model = E.make_mlp(hidden=(16, 8), norm="batch", activation="sigmoid", init_scale=3.0, seed=2)
    assert isinstance(model[3], nn.Sigmoid) and isinstance(model[6], nn.Sigmoid)
    assert torch.allclose(model[1].weight, 3.0 * ref[1].weight)
    assert torch.allclose(model[4].weight, 3.0 * ref[3].weight)
    assert torch.equal(model[7].weight, ref[5].weight)  # the output layer is not rescaled
    with pytest.raises(ValueError, match="activation"):
        E.make_mlp(activation="gelu")
    with pytest.raises(ValueError, match="init_scale"):
        E.make_mlp(init_scale=0.0)
