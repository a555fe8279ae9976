"""Plausible student implementations for tests/test_checks.py: correct ones written differently
from the book's, a catalogue of wrong ones, each with one classic mistake, and wrappers of
the library or of PyTorch that the checkers must refuse.

Each wrong implementation is written out in full, the way a reader would write it, rather than
produced by flags, so that the tests do not share code with the checkers' own variants.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _bn_axes(x):
    return (0,) if x.ndim == 2 else (0,) + tuple(range(2, x.ndim))


def _ch(p, ndim):
    return p.reshape((1, -1) + (1,) * (ndim - 2))


# --- correct, but not the book's code ----------------------------------------------------------

def bn_forward_one_pass(x, gamma, beta, eps=1e-5):
    """One-pass variance E[x^2] - E[x]^2 in float64 (fine for these inputs)."""
    axes = _bn_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    mean_sq = (x * x).mean(axis=axes, keepdims=True)
    x_hat = (x - mean) / np.sqrt(mean_sq - mean ** 2 + eps)
    return _ch(gamma, x.ndim) * x_hat + _ch(beta, x.ndim), (x, gamma, eps)


def bn_forward_for_staged(x, gamma, beta, eps=1e-5):
    axes = _bn_axes(x)
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc ** 2).mean(axis=axes, keepdims=True)
    std = np.sqrt(var + eps)
    x_hat = xc / std
    return _ch(gamma, x.ndim) * x_hat + _ch(beta, x.ndim), {"xc": xc, "std": std,
                                                           "x_hat": x_hat, "gamma": gamma}


def bn_backward_staged(dy, cache):
    """Node by node, with a dict cache and different names from the book's."""
    xc, std, x_hat, gamma = cache["xc"], cache["std"], cache["x_hat"], cache["gamma"]
    axes = _bn_axes(dy)
    m = dy.size // dy.shape[1]
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    dxhat = dy * _ch(gamma, dy.ndim)
    dstd = -(dxhat * xc).sum(axis=axes, keepdims=True) / std ** 2
    dvar = dstd / (2 * std)
    dxc = dxhat / std + dvar * 2 * xc / m
    dx = dxc - dxc.sum(axis=axes, keepdims=True) / m
    return dx, dgamma, dbeta


def layer_norm_numpy(x, gamma, beta, eps=1e-5):
    flat = x.reshape(x.shape[0], -1)
    mu = flat.mean(axis=1, keepdims=True)
    var = flat.var(axis=1, keepdims=True)
    x_hat = ((flat - mu) / np.sqrt(var + eps)).reshape(x.shape)
    return gamma * x_hat + beta, (x_hat, var)


def group_norm_numpy(x, gamma, beta, num_groups, eps=1e-5):
    n, c = x.shape[:2]
    xg = x.reshape(n, num_groups, -1)
    mu = xg.mean(axis=2, keepdims=True)
    var = xg.var(axis=2, keepdims=True)
    x_hat = ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)
    return _ch(gamma, x.ndim) * x_hat + _ch(beta, x.ndim), None


class RenamedBatchNorm:
    """Right conventions, different internals: the statistics live in a dict and the mode in
    `is_training`; running_mean/running_var are read-only properties."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.weight, self.bias = np.ones(num_features), np.zeros(num_features)
        self.stats = {"mean": np.zeros(num_features), "var": np.ones(num_features)}
        self.eps, self.momentum, self.is_training = eps, momentum, True

    running_mean = property(lambda self: self.stats["mean"])
    running_var = property(lambda self: self.stats["var"])

    def train(self):
        self.is_training = True

    def eval(self):
        self.is_training = False

    def forward(self, x):
        axes = _bn_axes(x)
        if self.is_training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            m = x.size / x.shape[1]
            a = self.momentum
            self.stats = {"mean": (1 - a) * self.stats["mean"] + a * mean,
                          "var": (1 - a) * self.stats["var"] + a * var * m / (m - 1)}
        else:
            mean, var = self.stats["mean"], self.stats["var"]
        x_hat = (x - _ch(mean, x.ndim)) / np.sqrt(_ch(var, x.ndim) + self.eps)
        return _ch(self.weight, x.ndim) * x_hat + _ch(self.bias, x.ndim)


# --- wrong: batch norm forward -----------------------------------------------------------------

def bn_unbiased(x, gamma, beta, eps=1e-5):
    axes = _bn_axes(x)
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, ddof=1, keepdims=True)
    return _ch(gamma, x.ndim) * (x - mu) / np.sqrt(var + eps) + _ch(beta, x.ndim), None


def bn_eps_outside(x, gamma, beta, eps=1e-5):
    axes = _bn_axes(x)
    mu, std = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
    return _ch(gamma, x.ndim) * (x - mu) / (std + eps) + _ch(beta, x.ndim), None


def bn_no_beta(x, gamma, beta, eps=1e-5):
    axes = _bn_axes(x)
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return _ch(gamma, x.ndim) * (x - mu) / np.sqrt(var + eps), None


def bn_no_gamma(x, gamma, beta, eps=1e-5):
    axes = _bn_axes(x)
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) + _ch(beta, x.ndim), None


def bn_axis0_only(x, gamma, beta, eps=1e-5):
    """The 2-D formula applied to every input: fine for (N, D), wrong for (N, C, H, W)."""
    mu, var = x.mean(axis=0), x.var(axis=0)
    return _ch(gamma, x.ndim) * (x - mu) / np.sqrt(var + eps) + _ch(beta, x.ndim), None


def bn_per_sample(x, gamma, beta, eps=1e-5):
    axes = tuple(range(1, x.ndim))
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return _ch(gamma, x.ndim) * (x - mu) / np.sqrt(var + eps) + _ch(beta, x.ndim), None


def bn_hardcoded_eps(x, gamma, beta, eps=1e-5):
    return bn_forward_one_pass(x, gamma, beta, 1e-5)[0], None


def bn_float32(x, gamma, beta, eps=1e-5):
    return bn_forward_one_pass(x, gamma, beta, eps)[0].astype(np.float32), None


def bn_returns_y_only(x, gamma, beta, eps=1e-5):
    return bn_forward_one_pass(x, gamma, beta, eps)[0]


def bn_in_place(x, gamma, beta, eps=1e-5):
    axes = _bn_axes(x)
    x -= x.mean(axis=axes, keepdims=True)
    x /= np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return _ch(gamma, x.ndim) * x + _ch(beta, x.ndim), None


# --- wrong: batch norm backward (all use bn_forward_for_staged's cache) ------------------------

def _closed_form_parts(dy, cache):
    axes = _bn_axes(dy)
    x_hat, std, gamma = cache["x_hat"], cache["std"], _ch(cache["gamma"], dy.ndim)
    m = dy.size // dy.shape[1]
    return axes, x_hat, std, gamma, m


def bwd_missing_mu_term(dy, cache):
    axes, x_hat, std, gamma, m = _closed_form_parts(dy, cache)
    dgamma = (dy * x_hat).sum(axis=axes, keepdims=True)
    dx = gamma / std / m * (m * dy - x_hat * dgamma)
    return dx, dgamma.reshape(-1), dy.sum(axis=axes)


def bwd_missing_var_term(dy, cache):
    axes, x_hat, std, gamma, m = _closed_form_parts(dy, cache)
    dx = gamma / std * (dy - dy.mean(axis=axes, keepdims=True))
    return dx, (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


def bwd_dbeta_mean(dy, cache):
    dx, dgamma, _ = bn_backward_staged(dy, cache)
    return dx, dgamma, dy.mean(axis=_bn_axes(dy))


def bwd_dgamma_keepdims(dy, cache):
    dx, _, dbeta = bn_backward_staged(dy, cache)
    return dx, (dy * cache["x_hat"]).sum(axis=_bn_axes(dy), keepdims=True), dbeta


def bwd_no_gamma_in_dx(dy, cache):
    ones = dict(cache, gamma=np.ones_like(cache["gamma"]))
    dx, _, _ = bn_backward_staged(dy, ones)
    _, dgamma, dbeta = bn_backward_staged(dy, cache)
    return dx, dgamma, dbeta


def bwd_sums_over_axis0(dy, cache):
    """The 2-D formula for dgamma: one value per (C, H, W) for a 4-D input."""
    dx, _, dbeta = bn_backward_staged(dy, cache)
    return dx, (dy * cache["x_hat"]).sum(axis=0), dbeta


def bwd_returns_torch(dy, cache):
    dx, dgamma, dbeta = bn_backward_staged(dy, cache)
    return torch.from_numpy(dx), dgamma, dbeta


# --- wrong: the layer's running statistics -----------------------------------------------------

class KerasMomentum(RenamedBatchNorm):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, 1 - momentum)  # Keras: weight of the old value


class BiasedRunningVar:
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.running_mean, self.running_var = np.zeros(num_features), np.ones(num_features)
        self.eps, self.momentum, self.training = eps, momentum, True

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def _batch_var(self, x, axes):
        return x.var(axis=axes)

    def _update(self, mu, var):
        a = self.momentum
        self.running_mean = (1 - a) * self.running_mean + a * mu
        self.running_var = (1 - a) * self.running_var + a * var

    def forward(self, x):
        axes = _bn_axes(x)
        if self.training:
            mu, var = x.mean(axis=axes), x.var(axis=axes)
            self._update(mu, self._batch_var(x, axes))
        else:
            mu, var = self.running_mean, self.running_var
        return (x - _ch(mu, x.ndim)) / np.sqrt(_ch(var, x.ndim) + self.eps)


class UpdatesInEval(RenamedBatchNorm):
    def forward(self, x):
        y = super().forward(x)
        if not self.is_training:  # a second, unconditional update
            self.is_training = True
            super().forward(x)
            self.is_training = False
        return y


class EvalUsesBatchStats(RenamedBatchNorm):
    def forward(self, x):
        if self.is_training:
            return super().forward(x)
        axes = _bn_axes(x)
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps)


class IgnoresMode(RenamedBatchNorm):
    def eval(self):
        pass  # forgot to switch


class StuckInEval(RenamedBatchNorm):
    def train(self):
        pass  # the constructor sets is_training = True, so train() "was not needed"


class RunningVarStartsAtZero(RenamedBatchNorm):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.stats["var"] = np.zeros(num_features)


# --- wrong: layer norm and group norm ----------------------------------------------------------

def ln_batch_stats(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=0, keepdims=True), x.var(axis=0, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


def ln_last_axis(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


def ln_unbiased(x, gamma, beta, eps=1e-5):
    axes = tuple(range(1, x.ndim))
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, ddof=1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


def ln_no_sqrt(x, gamma, beta, eps=1e-5):
    axes = tuple(range(1, x.ndim))
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return gamma * (x - mu) / (var + eps) + beta, None


def gn_interleaved(x, gamma, beta, num_groups, eps=1e-5):
    n, c = x.shape[:2]
    xg = x.reshape((n, c // num_groups, num_groups) + x.shape[2:])
    axes = (1,) + tuple(range(3, xg.ndim))
    mu, var = xg.mean(axis=axes, keepdims=True), xg.var(axis=axes, keepdims=True)
    x_hat = ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)
    return _ch(gamma, x.ndim) * x_hat + _ch(beta, x.ndim), None


def gn_group_size(x, gamma, beta, num_groups, eps=1e-5):
    return group_norm_numpy(x, gamma, beta, x.shape[1] // num_groups, eps)


def gn_eps_outside(x, gamma, beta, num_groups, eps=1e-5):
    xg = x.reshape(x.shape[0], num_groups, -1)
    mu, std = xg.mean(axis=2, keepdims=True), xg.std(axis=2, keepdims=True)
    x_hat = ((xg - mu) / (std + eps)).reshape(x.shape)
    return _ch(gamma, x.ndim) * x_hat + _ch(beta, x.ndim), None


def gn_no_beta(x, gamma, beta, num_groups, eps=1e-5):
    return group_norm_numpy(x, gamma, np.zeros_like(beta), num_groups, eps)


def gn_instance_norm(x, gamma, beta, num_groups, eps=1e-5):
    return group_norm_numpy(x, gamma, beta, x.shape[1], eps)


# --- more wrong ones: m = N, std for var, float32, the staged backward's paths ----------------

def bn_m_equals_n(x, gamma, beta, eps=1e-5):
    """Sums over the batch and the positions divided by the batch size N."""
    axes = _bn_axes(x)
    n = x.shape[0]
    mu = x.sum(axis=axes, keepdims=True) / n
    var = ((x - mu) ** 2).sum(axis=axes, keepdims=True) / n
    return _ch(gamma, x.ndim) * (x - mu) / np.sqrt(var + eps) + _ch(beta, x.ndim), None


def bn_std_for_var(x, gamma, beta, eps=1e-5):
    axes = _bn_axes(x)
    mu, std = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
    return _ch(gamma, x.ndim) * (x - mu) / np.sqrt(std + eps) + _ch(beta, x.ndim), None


def bn_float32_inside(x, gamma, beta, eps=1e-5):
    """Computes in float32; y comes back float64 because gamma and beta are float64."""
    x32 = x.astype(np.float32)
    axes = _bn_axes(x)
    mu, var = x32.mean(axis=axes, keepdims=True), x32.var(axis=axes, keepdims=True)
    return _ch(gamma, x.ndim) * ((x32 - mu) / np.sqrt(var + eps)) + _ch(beta, x.ndim), None


def _staged(dy, cache, var_path=True, mean_path=True, half=0.5, m_of=None):
    """The staged backward with one path or one factor changed (all defaults: right)."""
    xc, std, x_hat, gamma = cache["xc"], cache["std"], cache["x_hat"], cache["gamma"]
    axes = _bn_axes(dy)
    m = m_of(dy) if m_of else dy.size // dy.shape[1]
    dxhat = dy * _ch(gamma, dy.ndim)
    dinv_std = (dxhat * xc).sum(axis=axes, keepdims=True)
    dvar = -half * std ** -3 * dinv_std
    dxc = dxhat / std + (dvar * 2 * xc / m if var_path else 0)
    dmu = -dxc.sum(axis=axes, keepdims=True)
    dx = dxc + (dmu / m if mean_path else 0)
    return dx, (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


def bwd_staged_missing_var_path(dy, cache):
    return _staged(dy, cache, var_path=False)


def bwd_staged_missing_mean_path(dy, cache):
    return _staged(dy, cache, mean_path=False)


def bwd_staged_var_factor(dy, cache):
    """d inv_std / d var written as -(var + eps)^(-3/2), without the 1/2."""
    return _staged(dy, cache, half=1.0)


def bwd_staged_m_equals_n(dy, cache):
    return _staged(dy, cache, m_of=lambda a: a.shape[0])


def bwd_closed_form_m_equals_n(dy, cache):
    axes, x_hat, std, gamma, m = _closed_form_parts(dy, cache)
    n = dy.shape[0]
    dgamma = (dy * x_hat).sum(axis=axes, keepdims=True)
    dbeta = dy.sum(axis=axes, keepdims=True)
    dx = gamma / std / n * (n * dy - dbeta - x_hat * dgamma)
    return dx, dgamma.reshape(-1), dbeta.reshape(-1)


def bwd_treats_stats_as_constants(dy, cache):
    return _staged(dy, cache, var_path=False, mean_path=False)


def bwd_wrong_sign(dy, cache):
    dx, dgamma, dbeta = bn_backward_staged(dy, cache)
    return -dx, dgamma, dbeta


def bwd_dgamma_mean(dy, cache):
    dx, dgamma, dbeta = bn_backward_staged(dy, cache)
    return dx, dgamma / (dy.size // dy.shape[1]), dbeta


class UpdatesInEvalFirst(RenamedBatchNorm):
    """In eval mode, updates the running statistics with the batch, then normalises."""

    def forward(self, x):
        if not self.is_training:
            self.is_training = True
            super().forward(x)
            self.is_training = False
        return super().forward(x)


class RunningVarStd(BiasedRunningVar):
    def _batch_var(self, x, axes):
        return x.std(axis=axes, ddof=1)


class RunningCountN(BiasedRunningVar):
    """The unbiased factor with m = N (right for (N, D), wrong for (N, C, H, W))."""

    def _batch_var(self, x, axes):
        n = x.shape[0]
        return x.var(axis=axes) * n / (n - 1)


class NeverUpdates(RenamedBatchNorm):
    def forward(self, x):
        saved = self.stats
        y = super().forward(x)
        self.stats = saved
        return y


# --- wrappers: the implementation the exercise asks for, called instead of written -----------

def bn_forward_torch(x, gamma, beta, eps=1e-5):
    t = torch.from_numpy
    y = F.batch_norm(t(x), None, None, t(gamma), t(beta), training=True, eps=eps)
    return y.numpy(), None


def bn_forward_torch_builtin(x, gamma, beta, eps=1e-5):
    t = torch.from_numpy
    y = torch.batch_norm(t(x), t(gamma), t(beta), None, None, True, 0.1, eps, False)
    return y.numpy(), None


def bn_forward_library(x, gamma, beta, eps=1e-5):
    from bnbook.numpy_norms import batch_norm_forward
    return batch_norm_forward(x, gamma, beta, eps)


def bn_forward_numpy_fast(x, gamma, beta, eps=1e-5):
    from bnbook import numpy_fast
    return numpy_fast.batch_norm_forward(x, gamma, beta, eps)


def bn_forward_via_helper(x, gamma, beta, eps=1e-5):
    """The library call hidden one level down."""
    return _helper_that_calls_the_library(x, gamma, beta, eps)


def _helper_that_calls_the_library(x, gamma, beta, eps):
    from bnbook import numpy_norms
    return numpy_norms.batch_norm_forward(x, gamma, beta, eps)


def bwd_library(dy, cache):
    """The wrapper of the issue: the book's backward, renamed."""
    from bnbook.numpy_norms import batch_norm_backward
    return batch_norm_backward(dy, cache)


def bwd_library_staged(dy, cache):
    from bnbook.numpy_norms import batch_norm_backward_staged
    return batch_norm_backward_staged(dy, cache)


def inference_library(x, gamma, beta, running_mean, running_var, eps=1e-5):
    from bnbook.numpy_norms import batch_norm_inference_forward
    return batch_norm_inference_forward(x, gamma, beta, running_mean, running_var, eps)


def layer_norm_torch(x, gamma, beta, eps=1e-5):
    t = torch.from_numpy
    return F.layer_norm(t(x), x.shape[1:], t(gamma), t(beta), eps).numpy(), None


def layer_norm_library(x, gamma, beta, eps=1e-5):
    from bnbook.numpy_norms import layer_norm_forward
    return layer_norm_forward(x, gamma, beta, eps)


def group_norm_torch(x, gamma, beta, num_groups, eps=1e-5):
    t = torch.from_numpy
    return F.group_norm(t(x), num_groups, t(gamma), t(beta), eps).numpy(), None


def group_norm_library(x, gamma, beta, num_groups, eps=1e-5):
    from bnbook.numpy_norms import group_norm_forward
    return group_norm_forward(x, gamma, beta, num_groups, eps)


def _library_batch_norm():
    from bnbook.numpy_norms import BatchNorm
    return BatchNorm


class LibraryBatchNormInside:
    """Delegates to the book's layer."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.layer = _library_batch_norm()(num_features, eps, momentum)

    running_mean = property(lambda self: self.layer.running_mean)
    running_var = property(lambda self: self.layer.running_var)

    def train(self):
        self.layer.train()

    def eval(self):
        self.layer.eval()

    def forward(self, x):
        return self.layer.forward(x)


class TorchBatchNorm:
    """PyTorch's own layer (float64) behind the book's interface."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.args = dict(num_features=num_features, eps=eps, momentum=momentum,
                         dtype=torch.float64)
        self.layer, self.training = None, True

    def _layer(self, ndim):
        if self.layer is None:
            cls = torch.nn.BatchNorm2d if ndim == 4 else torch.nn.BatchNorm1d
            self.layer = cls(**self.args)
        return self.layer.train(self.training)

    @property
    def running_mean(self):
        return (np.zeros(self.args["num_features"]) if self.layer is None
                else self.layer.running_mean.numpy().copy())

    @property
    def running_var(self):
        return (np.ones(self.args["num_features"]) if self.layer is None
                else self.layer.running_var.numpy().copy())

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def forward(self, x):
        with torch.no_grad():
            return self._layer(x.ndim)(torch.from_numpy(x)).numpy()


