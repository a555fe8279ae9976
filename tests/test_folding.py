"""BN folding against torch.nn.utils.fusion and torch eval mode (the eval-mode affine map
itself is tested in test_numpy_norms.py)."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval

from bnbook.folding import (
    fold_batch_norm_into_weights,
    fold_batch_norms_in_sequential,
    fold_conv_batch_norm,
    fold_linear_batch_norm,
)
from bnbook.gradcheck import rel_error


def randomise_bn(bn, gen):
    """Non-trivial gamma, beta and running statistics (mean far from 0, variance far from 1)."""
    c = bn.num_features
    with torch.no_grad():
        if bn.affine:
            bn.weight.copy_((0.5 + 2.5 * torch.rand(c, generator=gen)) * torch.sign(
                torch.randn(c, generator=gen)))
            bn.bias.copy_(4 * torch.rand(c, generator=gen) - 2)
        bn.running_mean.copy_(10 * torch.rand(c, generator=gen) - 5)
        bn.running_var.copy_(0.01 + 50 * torch.rand(c, generator=gen))
    return bn


@pytest.mark.parametrize("seed", range(3))
def test_numpy_fold_matches_torch_fuse_weights(seed):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(6, 3, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    bn = randomise_bn(nn.BatchNorm2d(6).double(), gen)
    W_f, b_f = fold_batch_norm_into_weights(W.numpy(), b.numpy(), bn.weight.detach().numpy(),
                                            bn.bias.detach().numpy(), bn.running_mean.numpy(),
                                            bn.running_var.numpy(), bn.eps)
    W_t, b_t = fuse_conv_bn_weights(W, b, bn.running_mean, bn.running_var, bn.eps,
                                    bn.weight, bn.bias)
    assert rel_error(W_f, W_t.detach()) < 1e-14 and rel_error(b_f, b_t.detach()) < 1e-14
    # No bias is the same as a zero bias.
    W0, b0 = fold_batch_norm_into_weights(W.numpy(), None, bn.weight.detach().numpy(),
                                          bn.bias.detach().numpy(), bn.running_mean.numpy(),
                                          bn.running_var.numpy(), bn.eps)
    _, b0_t = fuse_conv_bn_weights(W, None, bn.running_mean, bn.running_var, bn.eps,
                                   bn.weight, bn.bias)
    assert np.array_equal(W0, W_f) and rel_error(b0, b0_t.detach()) < 1e-14


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_fold_linear_matches_torch(seed, bias):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    linear = nn.Linear(7, 5, bias=bias).double().eval()
    bn = randomise_bn(nn.BatchNorm1d(5).double(), gen).eval()
    weight_before = linear.weight.detach().clone()
    folded = fold_linear_batch_norm(linear, bn)
    reference = fuse_linear_bn_eval(linear, bn)
    x = 2 + 3 * torch.randn(11, 7, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        expected = bn(linear(x))
        assert rel_error(folded(x), expected) < 1e-13
        assert rel_error(folded.weight, reference.weight) < 1e-14
        assert rel_error(folded.bias, reference.bias) < 1e-14
    assert isinstance(folded, nn.Linear) and folded is not linear
    assert torch.equal(linear.weight, weight_before) and (linear.bias is None) != bias


@pytest.mark.parametrize("conv_kwargs", [
    dict(in_channels=3, out_channels=8, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=3, groups=2, dilation=2, padding="same"),
])
def test_fold_conv_matches_torch(conv_kwargs):
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    conv = nn.Conv2d(**conv_kwargs).double().eval()
    bn = randomise_bn(nn.BatchNorm2d(conv.out_channels).double(), gen).eval()
    weight_before = conv.weight.detach().clone()
    folded = fold_conv_batch_norm(conv, bn)
    reference = fuse_conv_bn_eval(conv, bn)
    x = 1 + 2 * torch.randn(2, conv.in_channels, 9, 10, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert rel_error(folded(x), bn(conv(x))) < 1e-13
        assert rel_error(folded(x), reference(x)) < 1e-13
    assert folded.stride == conv.stride and folded.groups == conv.groups
    assert torch.equal(conv.weight, weight_before)


def test_fold_sequential_removes_every_foldable_pair_and_keeps_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
        nn.BatchNorm2d(8),  # after an activation: cannot be folded into a previous layer
        nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4),
    )
    # Real running statistics from a few training-mode passes, then non-trivial gamma/beta.
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        model(4 + 3 * torch.randn(16, 3, 8, 8, generator=gen))
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d | nn.BatchNorm1d):
            with torch.no_grad():
                bn.weight.uniform_(-3, 3)
                bn.bias.uniform_(-1, 1)
    model.eval()
    folded = fold_batch_norms_in_sequential(model)
    kinds = [type(m) for m in folded.modules()]
    assert kinds.count(nn.BatchNorm2d) == 1 and nn.BatchNorm1d not in kinds
    assert sum(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in model.modules()) == 4
    assert not folded.training
    x = 4 + 3 * torch.randn(5, 3, 8, 8, generator=gen)
    with torch.no_grad():
        assert rel_error(folded(x), model(x)) < 1e-5  # float32


def test_errors_are_clear():
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match="inference only"):
        fold_conv_batch_norm(conv, bn)  # both in training mode
    conv.eval(), bn.eval()
    with pytest.raises(ValueError, match="5 features"):
        fold_conv_batch_norm(conv, nn.BatchNorm2d(5).eval())
    with pytest.raises(ValueError, match="running statistics"):
        fold_conv_batch_norm(conv, nn.BatchNorm2d(4, track_running_stats=False).eval())
    with pytest.raises(ValueError, match="transposed"):
        fold_conv_batch_norm(nn.ConvTranspose2d(4, 4, 3).eval(), bn)
    with pytest.raises(ValueError, match="nn.Linear"):
        fold_linear_batch_norm(conv, bn)
    with pytest.raises(ValueError, match="batch norm module"):
        fold_linear_batch_norm(nn.Linear(3, 4).eval(), nn.ReLU())
    with pytest.raises(ValueError, match="eval"):
        fold_batch_norms_in_sequential(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    with pytest.raises(ValueError, match="nn.Sequential"):
        fold_batch_norms_in_sequential(nn.Linear(3, 4))
    W = np.ones((4, 3))
    with pytest.raises(ValueError, match="4 output channels"):
        fold_batch_norm_into_weights(W, None, np.ones(5), np.zeros(5), np.zeros(5), np.ones(5))
    with pytest.raises(ValueError, match="running_var"):
        fold_batch_norm_into_weights(W, None, np.ones(4), np.zeros(4), np.zeros(4), -np.ones(4))
    with pytest.raises(ValueError, match="b must have shape"):
        fold_batch_norm_into_weights(W, np.ones(3), np.ones(4), np.zeros(4), np.zeros(4),
                                     np.ones(4))
