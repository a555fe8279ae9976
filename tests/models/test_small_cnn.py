"""The narrow chapter-7 network of bnbook.models.small_cnn: shapes, where the norms go, seeding."""

import pytest
import torch
from torch import nn

from bnbook.models.small_cnn import CONV_NORMS, conv_norm_layer, small_cifar_cnn

FAST_NORMS = ("none", "batch", "group", "layer", "instance")


@pytest.mark.parametrize("norm", FAST_NORMS)
def test_shapes_and_norm_placement(norm):
    net = small_cifar_cnn(width=8, norm=norm)
    out = net(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    norms = [m for m in net if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert len(norms) == (0 if norm == "none" else 4)
    # the dense head is never normalised: nothing but ReLU between the two Linear layers
    kinds = [type(m) for m in net][-3:]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear]


def test_group_counts_match_the_method():
    x = torch.randn(2, 8, 5, 5)
    assert conv_norm_layer("layer", 8).num_groups == 1
    assert conv_norm_layer("instance", 8).num_groups == 8
    assert conv_norm_layer("group", 8, groups=4).num_groups == 4
    # instance norm: each (n, c) slice has mean 0 after the layer
    y = conv_norm_layer("instance", 8)(x)
    assert torch.allclose(y.mean(dim=(2, 3)), torch.zeros(2, 8), atol=1e-5)
    # layer norm: each sample has mean 0 over (C, H, W), but single channels do not
    y = conv_norm_layer("layer", 8)(x)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert y.mean(dim=(2, 3)).abs().max() > 1e-3


def test_same_seed_same_weights_across_norms():
    a, b = small_cifar_cnn(width=8, norm="none", seed=3), small_cifar_cnn(width=8, norm="group", seed=3)
    wa = [m.weight for m in a if isinstance(m, (nn.Conv2d, nn.Linear))]
    wb = [m.weight for m in b if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(wa) == len(wb) == 6
    assert all(torch.equal(p, q) for p, q in zip(wa, wb))
    c = small_cifar_cnn(width=8, norm="none", seed=4)
    assert not torch.equal(wa[0], next(c.parameters()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown norm"):
        small_cifar_cnn(norm="weight")
    with pytest.raises(ValueError, match="divide"):
        conv_norm_layer("group", 10, groups=4)
    assert set(FAST_NORMS) < set(CONV_NORMS)


def test_cifar10_subset_is_seeded_and_standardised():
    from bnbook.data.subsets import prepare_cifar10

    a = prepare_cifar10(n_train=300, n_test=50, seed=1)
    b = prepare_cifar10(n_train=300, n_test=50, seed=1)
    c = prepare_cifar10(n_train=300, n_test=50, seed=2)
    assert a.x_train.shape == (300, 3, 32, 32) and a.x_test.shape == (50, 3, 32, 32)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    # standardised per channel with the training subset's own statistics
    assert torch.allclose(a.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(a.x_train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)
    # undoing it gives pixels in [0, 1]
    raw = a.x_train * a.channel_std[:, None, None] + a.channel_mean[:, None, None]
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="n_train"):
        prepare_cifar10(n_train=0)
