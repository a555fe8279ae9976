"""Tests of bnbook.experiments.motivation.covariate_shift against independent references.

References: NumPy/PyTorch closed forms (autograd Hessians, eigendecompositions, lstsq),
the book's own NumPy batch norm for the sigmoid network, and hand-computed values.
"""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bnbook.experiments.motivation import covariate_shift as cs
from bnbook.numpy_norms import batch_norm_forward


# --- 1. standardised inputs ---------------------------------------------------------------

def test_standardize_gives_zero_mean_unit_std_and_reuses_given_statistics():
    X, _ = cs.make_linear_regression_data(n=300, means=(5.0, -3.0, 100.0),
                                          scales=(0.1, 2.0, 30.0), seed=1)
    Z, mean, std = cs.standardise(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(mean, [np.mean(X[:, j]) for j in range(3)], rtol=1e-14)
    # Applying the training statistics to other data is an affine map with those numbers.
    X2 = X[:10] * 2.0
    Z2, _, _ = cs.standardise(X2, mean, std)
    np.testing.assert_allclose(Z2, (X2 - mean) / std, rtol=1e-14)


def test_standardize_rejects_constant_feature_and_wrong_shape():
    X = np.ones((5, 2))
    X[:, 0] = np.arange(5)
    with pytest.raises(ValueError, match=r"feature\(s\) \[1\] are constant"):
        cs.standardise(X)
    with pytest.raises(ValueError, match="shape"):
        cs.standardise(np.arange(5.0))


def test_make_linear_regression_data_has_requested_moments():
    X, t = cs.make_linear_regression_data(n=20000, means=(10.0, -2.0), scales=(1.0, 10.0),
                                          seed=3)
    assert X.shape == (20000, 2) and t.shape == (20000,)
    np.testing.assert_allclose(X.mean(axis=0), [10.0, -2.0], atol=0.2)
    np.testing.assert_allclose(X.std(axis=0), [1.0, 10.0], rtol=0.03)
    with pytest.raises(ValueError, match="scales must be positive"):
        cs.make_linear_regression_data(scales=(1.0, 0.0))


def test_least_squares_hessian_matches_autograd_hessian():
    X, t = cs.make_linear_regression_data(n=50, means=(3.0, -1.0), scales=(2.0, 0.5), seed=2)
    Xt, tt = torch.tensor(X), torch.tensor(t)

    def loss(w):
        return ((Xt @ w[:2] + w[2] - tt) ** 2).sum() / (2 * len(tt))

    H_ref = torch.autograd.functional.hessian(loss, torch.randn(3, dtype=torch.float64))
    np.testing.assert_allclose(cs.least_squares_hessian(X), H_ref.numpy(), rtol=1e-12)


def test_condition_number_matches_numpy_and_rejects_indefinite():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((4, 4))
    H = B @ B.T + 0.1 * np.eye(4)
    assert cs.condition_number(H) == pytest.approx(np.linalg.cond(H), rel=1e-10)
    with pytest.raises(ValueError, match="positive definite"):
        cs.condition_number(np.diag([1.0, -1.0]))


def test_gd_steps_bound_closed_form():
    # kappa = 2: the worst component shrinks by 1/4 per step; 4**-10 < 1e-6 < 4**-9.
    assert cs.gd_steps_bound(2.0, 1e-6) == 10
    assert cs.gd_steps_bound(1.0, 1e-6) == 1
    # For large kappa the bound approaches kappa * ln(1/tol) / 2.
    assert cs.gd_steps_bound(1e4, 1e-6) == pytest.approx(1e4 * math.log(1e6) / 2, rel=1e-3)
    with pytest.raises(ValueError):
        cs.gd_steps_bound(0.5, 1e-6)


def test_gradient_descent_history_matches_eigen_closed_form():
    X, t = cs.make_linear_regression_data(n=100, means=(4.0, 0.0), scales=(1.0, 3.0), seed=5)
    res = cs.gradient_descent_least_squares(X, t, tol=1e-8, max_steps=5000)
    assert res.steps is not None
    A = np.hstack([X, np.ones((100, 1))])
    H = A.T @ A / 100
    lam, V = np.linalg.eigh(H)
    w_star = np.linalg.solve(H, A.T @ t / 100)  # normal equations, independent of lstsq
    # Converged in the H-norm (the only norm in which gradient descent promises anything).
    d = res.w - w_star
    assert 0.5 * d @ H @ d <= 1e-8 * 0.5 * w_star @ H @ w_star
    assert res.lr == pytest.approx(1.0 / lam[-1], rel=1e-12)
    # Error component i after k steps: c_i (1 - lr lam_i)^k, c = V^T (0 - w*).
    c = V.T @ (-w_star)
    k = np.arange(res.excess_loss.size)[:, None]
    closed = 0.5 * (lam * c**2 * (1 - res.lr * lam) ** (2 * k)).sum(axis=1)
    np.testing.assert_allclose(res.excess_loss, closed, rtol=1e-6, atol=1e-12 * closed[0])
    # Standardising makes convergence take a handful of steps, within the bound.
    kappa = cs.condition_number(H)
    assert res.steps <= cs.gd_steps_bound(kappa, 1e-8)
    Z = cs.standardise(X)[0]
    res_z = cs.gradient_descent_least_squares(Z, t, tol=1e-8)
    assert res_z.steps < res.steps / 10


def test_gradient_descent_reports_non_convergence():
    X, t = cs.make_linear_regression_data(means=(100.0, 0.0), scales=(1.0, 1.0), seed=0)
    res = cs.gradient_descent_least_squares(X, t, tol=1e-10, max_steps=50)
    assert res.steps is None and res.excess_loss.size == 51
    with pytest.raises(ValueError, match="t must have shape"):
        cs.gradient_descent_least_squares(X, t[:-1])


# --- 2. covariate shift between sub-populations ---------------------------------------------

def test_flower_data_follows_the_circle_rule_and_sits_in_two_regions():
    X, label, subset = cs.make_flower_data(n_per_subset=2000, radius=2.0, spread=0.8, seed=4)
    assert X.shape == (4000, 2) and X.dtype == np.float32
    assert label.dtype == np.int64 and subset.dtype == np.int64
    inside = X[:, 0].astype(np.float64) ** 2 + X[:, 1].astype(np.float64) ** 2 < 4.0
    np.testing.assert_array_equal(label, inside.astype(np.int64))
    np.testing.assert_allclose(X[subset == 0].mean(axis=0), [-2.0, 0.0], atol=0.06)
    np.testing.assert_allclose(X[subset == 1].mean(axis=0), [0.0, 2.0], atol=0.06)
    for s in (0, 1):  # both classes occur in both sub-populations
        assert 0.3 < label[subset == s].mean() < 0.7


def test_minibatch_schedule_alternates_blocks_and_shuffles():
    _, _, subset = cs.make_flower_data(n_per_subset=100, seed=0)
    alt = cs.minibatch_schedule(subset, batch_size=16, n_steps=40, mode="alternating",
                                block=7, seed=1)
    assert alt.shape == (40, 16)
    for k, batch in enumerate(alt):
        assert np.all(subset[batch] == (k // 7) % 2)
        assert np.unique(batch).size == 16
    shuf = cs.minibatch_schedule(subset, 16, 200, "shuffled", seed=1)
    frac = subset[shuf].mean()
    assert 0.45 < frac < 0.55
    mixed = [(subset[b] == 0).any() and (subset[b] == 1).any() for b in shuf]
    assert np.mean(mixed) > 0.99
    with pytest.raises(ValueError, match="mode"):
        cs.minibatch_schedule(subset, 16, 10, "random")
    with pytest.raises(ValueError, match="exceeds"):
        cs.minibatch_schedule(subset, 101, 10, "alternating")


def test_train_flower_classifier_initial_loss_matches_numpy_reference():
    X, label, subset = cs.make_flower_data(n_per_subset=200, seed=0)
    sched = cs.minibatch_schedule(subset, 32, 20, "shuffled", seed=0)
    run = cs.train_flower_classifier(X, label, subset, sched, seed=7, eval_every=10,
                              snapshot_steps=[0])
    net = cs.make_small_classifier(seed=7)
    W1, b1 = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
    W2, b2 = net[2].weight.detach().double().numpy(), net[2].bias.detach().double().numpy()
    logit = (np.tanh(X.astype(np.float64) @ W1.T + b1) @ W2.T + b2)[:, 0]
    p = 1.0 / (1.0 + np.exp(-logit))
    bce = -(label * np.log(p) + (1 - label) * np.log(1 - p))
    assert run.loss[0] == pytest.approx(bce.mean(), rel=1e-5)
    assert run.loss_by_subset[0, 1] == pytest.approx(bce[subset == 1].mean(), rel=1e-5)
    np.testing.assert_array_equal(run.steps, [0, 10, 20])
    # The snapshot at step 0 is the untrained model, not a reference to the trained one.
    assert torch.equal(run.snapshots[0][0].weight, net[0].weight)
    assert not torch.equal(run.model[0].weight, net[0].weight)


def test_shuffled_batches_train_better_than_alternating_blocks():
    X, label, subset = cs.make_flower_data(seed=0)
    for seed in (0, 1):
        runs = {mode: cs.train_flower_classifier(
                    X, label, subset,
                    cs.minibatch_schedule(subset, 32, 1000, mode, block=100, seed=seed),
                    seed=seed)
                for mode in ("alternating", "shuffled")}
        assert runs["shuffled"].loss.mean() < 0.7 * runs["alternating"].loss.mean()
        half = len(runs["shuffled"].loss) // 2
        assert (runs["shuffled"].loss[half:].max()
                < runs["alternating"].loss[half:].max())
    # Deterministic: the same seed gives the same run.
    again = cs.train_flower_classifier(X, label, subset,
                                cs.minibatch_schedule(subset, 32, 1000, "shuffled", seed=1),
                                seed=1)
    np.testing.assert_array_equal(again.loss, runs["shuffled"].loss)


def test_steps_to_reach_requires_staying_below():
    steps = np.array([0, 10, 20, 30, 40])
    assert cs.steps_to_reach(steps, [1.0, 0.4, 0.6, 0.3, 0.2], 0.5) == 30
    assert cs.steps_to_reach(steps, [0.1, 0.1, 0.1, 0.1, 0.1], 0.5) == 0
    assert cs.steps_to_reach(steps, [1.0, 0.4, 0.3, 0.3, 0.6], 0.5) is None
    with pytest.raises(ValueError):
        cs.steps_to_reach(steps, [1.0, 2.0], 0.5)


# --- 3. sigmoid inputs over training -------------------------------------------------------

def test_prototype_data_shapes_range_and_shared_prototypes():
    Xtr, ytr, Xte, yte = cs.make_prototype_data(n_train=3000, n_test=3000, noise=0.3, seed=2)
    assert Xtr.shape == (3000, 64) and Xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert Xtr.min() >= 0.0 and Xtr.max() <= 1.0
    assert set(np.unique(ytr)) == set(range(10))
    for c in range(10):  # train and test class means agree: one set of prototypes
        np.testing.assert_allclose(Xtr[ytr == c].mean(0), Xte[yte == c].mean(0), atol=0.08)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_sigmoid_mlp_matches_numpy_forward(batch_norm):
    torch.manual_seed(0)
    net = cs.SigmoidMLP(12, hidden=7, n_layers=2, n_classes=3, batch_norm=batch_norm,
                        init_std=0.5, seed=3).double()
    if batch_norm:  # non-trivial gamma and beta
        with torch.no_grad():
            for bn in net.norms:
                bn.weight.uniform_(0.5, 3.0)
                bn.bias.uniform_(-2.0, 2.0)
    x = torch.rand(20, 12, dtype=torch.float64) * 3 + 1
    zs = net.sigmoid_inputs(x)
    h = x.numpy()
    for layer, norm, z in zip(net.linears, net.norms, zs):
        a = h @ layer.weight.detach().numpy().T
        if batch_norm:
            ref, _ = batch_norm_forward(a, norm.weight.detach().numpy(),
                                        norm.bias.detach().numpy(), eps=norm.eps)
        else:
            ref = a + layer.bias.detach().numpy()
        np.testing.assert_allclose(z.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
        h = 1.0 / (1.0 + np.exp(-ref))
    logits = h @ net.readout.weight.detach().numpy().T + net.readout.bias.detach().numpy()
    np.testing.assert_allclose(net(x).detach().numpy(), logits, rtol=1e-10, atol=1e-12)
    assert all(layer.bias is None for layer in net.linears) == batch_norm


def test_saturated_fraction_counts_beyond_ln19():
    z = torch.tensor([0.0, 2.9, -2.95, 3.0, -10.0, 1.0])
    assert cs.saturated_fraction(z) == pytest.approx(3 / 6)
    s = torch.sigmoid(torch.tensor([cs.SATURATION_THRESHOLD]))
    assert float(s) == pytest.approx(0.95, abs=1e-7)


def test_percentile_drift_by_hand():
    p = np.zeros((3, 3, 2))
    p[:, 1, 0] = [1.0, 3.0, -0.5]
    p[:, 1, 1] = [0.0, 0.1, 0.2]
    np.testing.assert_allclose(cs.percentile_drift(p), [2.0, 0.2])
    with pytest.raises(ValueError, match="shape"):
        cs.percentile_drift(np.zeros((3, 2, 2)))


def test_train_sigmoid_mlp_records_what_it_claims_and_bn_keeps_inputs_put():
    data = cs.make_prototype_data(n_train=2000, n_test=600, seed=0)
    runs = {bn: cs.train_sigmoid_mlp(data, bn, lr=0.5, n_steps=600, record_every=100,
                                     hidden=50, seed=0)
            for bn in (False, True)}
    for bn, run in runs.items():
        np.testing.assert_array_equal(run.steps, [0, 100, 200, 300, 400, 500, 600])
        assert run.percentiles.shape == (7, 3, 3, 50)
        # Recompute the last record independently: NumPy percentiles of the final model's
        # sigmoid inputs on the monitoring batch (batch statistics, as in training).
        monitor = torch.as_tensor(data[2][:500])
        bn_layers = [m for m in run.model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        before = [m.running_mean.clone() for m in bn_layers]
        with torch.no_grad():
            zs = [z.numpy() for z in run.model.sigmoid_inputs(monitor)]
        for m, rm in zip(bn_layers, before):  # restore: that call updated running stats
            m.running_mean.copy_(rm)
        ref = np.stack([np.percentile(z, [15, 50, 85], axis=0) for z in zs])
        np.testing.assert_allclose(run.percentiles[-1], ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(run.saturated[-1],
                                   [np.mean(np.abs(z) > math.log(19)) for z in zs])
        run.model.eval()
        with torch.no_grad():
            acc = (run.model(torch.as_tensor(data[2])).argmax(1).numpy() == data[3]).mean()
        assert run.test_accuracy[-1] == pytest.approx(acc)
    drift = {bn: np.median(cs.percentile_drift(r.percentiles[:, -1])) for bn, r in runs.items()}
    assert drift[True] < 0.5 * drift[False]
    assert runs[True].test_accuracy[2] > runs[False].test_accuracy[2] + 0.2


def test_monitoring_leaves_running_statistics_alone():
    data = cs.make_prototype_data(n_train=500, n_test=500, seed=1)
    threads = torch.get_num_threads()
    a = cs.train_sigmoid_mlp(data, True, n_steps=30, record_every=1, hidden=20, seed=2)
    b = cs.train_sigmoid_mlp(data, True, n_steps=30, record_every=30, hidden=20, seed=2)
    for ma, mb in zip(a.model.norms, b.model.norms):
        torch.testing.assert_close(ma.running_mean, mb.running_mean, rtol=0, atol=0)
        torch.testing.assert_close(ma.running_var, mb.running_var, rtol=0, atol=0)
    assert torch.get_num_threads() == threads  # the one-thread context was undone


def test_train_sigmoid_mlp_rejects_bad_sizes():
    data = cs.make_prototype_data(n_train=100, n_test=50, seed=0)
    with pytest.raises(ValueError, match="monitor_size"):
        cs.train_sigmoid_mlp(data, False, n_steps=1, monitor_size=500)
    with pytest.raises(ValueError, match="data must be"):
        cs.train_sigmoid_mlp((data[0], data[1][:-1], data[2], data[3]), False, n_steps=1)


# --- plotting helpers used with these experiments -----------------------------------------

def test_decision_grid_evaluates_the_function_on_the_grid():
    from bnbook.plots import decision_grid

    xx, yy, logits = decision_grid(lambda p: p[:, 0] - 2 * p[:, 1], (-1, 1, 0, 2), 5)
    assert xx.shape == yy.shape == logits.shape == (5, 5)
    np.testing.assert_allclose(logits, xx - 2 * yy, rtol=1e-6)
    np.testing.assert_allclose(xx[0], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(yy[:, 0], [0, 0.5, 1, 1.5, 2])
    with pytest.raises(ValueError, match="x_min < x_max"):
        decision_grid(lambda p: p[:, 0], (1, -1, 0, 2))


def test_percentile_band_checks_shape_and_draws_median():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bnbook.plots import plot_percentile_band

    fig, ax = plt.subplots()
    p = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.5, 3.0]])
    plot_percentile_band(ax, [0, 10], p, "k", "x")
    medians = [line for line in ax.lines if line.get_label() == "x: median"]
    np.testing.assert_allclose(medians[0].get_ydata(), [0.0, 0.5])
    with pytest.raises(ValueError, match="shape"):
        plot_percentile_band(ax, [0, 10, 20], p, "k", "x")
    plt.close(fig)
