"""The Keras cifar10_cnn network and its BN variant (bnbook.models.keras_cifar_cnn)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from bnbook.models.keras_cifar_cnn import (BASELINE_PARAMS, KERAS_BN_EPS, KERAS_BN_MOMENTUM,
                                           FlattenNHWC, keras_cnn)
from bnbook.models.summaries import count_parameters


def keras_param_count(batch_norm: bool) -> int:
    """Count by hand from the Keras layer list: conv k*k*C_in*C_out + C_out, dense in*out+out."""
    convs = [(3, 32), (32, 32), (32, 64), (64, 64)]
    n = sum(9 * cin * cout + cout for cin, cout in convs)
    n += 6 * 6 * 64 * 512 + 512 + 512 * 10 + 10
    if batch_norm:  # gamma and beta per channel after every Conv/Dense
        n += 2 * (32 + 32 + 64 + 64 + 512 + 10)
    return n


def test_baseline_parameter_count_matches_keras_summary():
    model = keras_cnn(batch_norm=False)
    assert keras_param_count(False) == 1_250_858 == BASELINE_PARAMS
    assert count_parameters(model) == BASELINE_PARAMS


def test_bn_parameter_count():
    model = keras_cnn(batch_norm=True)
    assert count_parameters(model) == keras_param_count(True) == BASELINE_PARAMS + 1428
    # running mean and variance are buffers, as Keras' non-trainable weights
    n_running = sum(b.numel() for name, b in model.named_buffers() if "running" in name)
    assert n_running == 1428


def output_shapes(model, x):
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((type(m).__name__,
                                                                    tuple(o.shape[1:]))))
             for m in model if not isinstance(m, (nn.ReLU, nn.Dropout, nn.BatchNorm1d,
                                                  nn.BatchNorm2d))]
    model(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("batch_norm", [False, True])
def test_layer_shapes(batch_norm):
    model = keras_cnn(batch_norm=batch_norm).eval()
    shapes = output_shapes(model, torch.rand(4, 3, 32, 32))
    assert shapes == [
        ("Conv2d", (32, 32, 32)), ("Conv2d", (32, 30, 30)), ("MaxPool2d", (32, 15, 15)),
        ("Conv2d", (64, 15, 15)), ("Conv2d", (64, 13, 13)), ("MaxPool2d", (64, 6, 6)),
        ("FlattenNHWC", (2304,)), ("Linear", (512,)), ("Linear", (10,)),
    ]


def layer_kinds(model):
    names = {nn.Conv2d: "conv", nn.Linear: "dense", nn.BatchNorm2d: "bn", nn.BatchNorm1d: "bn",
             nn.ReLU: "relu", nn.Dropout: "drop", nn.MaxPool2d: "pool", FlattenNHWC: "flat"}
    return [names[type(m)] for m in model]


def test_baseline_layer_order_and_dropout():
    model = keras_cnn(batch_norm=False)
    assert layer_kinds(model) == ["conv", "relu", "conv", "relu", "pool", "drop",
                                  "conv", "relu", "conv", "relu", "pool", "drop",
                                  "flat", "dense", "relu", "drop", "dense"]
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.25, 0.25, 0.5]


def test_bn_placement_after_every_conv_dense_before_activation():
    model = keras_cnn(batch_norm=True)
    kinds = layer_kinds(model)
    assert "drop" not in kinds
    assert kinds == ["conv", "bn", "relu", "conv", "bn", "relu", "pool",
                     "conv", "bn", "relu", "conv", "bn", "relu", "pool",
                     "flat", "dense", "bn", "relu", "dense", "bn"]
    layers = list(model)
    for i, m in enumerate(layers):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bn = layers[i + 1]
            width = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            assert isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm1d)) and bn.num_features == width
            assert m.bias is not None  # Keras keeps the (redundant) bias before BN
    no_logit_bn = keras_cnn(batch_norm=True, bn_on_logits=False)
    assert layer_kinds(no_logit_bn)[-2:] == ["relu", "dense"]


def test_bn_uses_keras_momentum_and_eps():
    torch.manual_seed(0)
    model = keras_cnn(batch_norm=True).train()
    bns = [m for m in model if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert all(b.momentum == pytest.approx(0.01) and b.eps == 1e-3 for b in bns)
    assert KERAS_BN_MOMENTUM == pytest.approx(0.01) and KERAS_BN_EPS == 1e-3
    # Keras: moving = 0.99 * moving + 0.01 * batch statistic (unbiased variance), from 0 and 1.
    x = torch.rand(8, 3, 32, 32) * 2.0 + 0.5
    conv_out = model[0](x)
    model(x)
    mean = conv_out.mean(dim=(0, 2, 3)).detach()
    var = conv_out.var(dim=(0, 2, 3), unbiased=True).detach()
    torch.testing.assert_close(bns[0].running_mean, 0.99 * 0.0 + 0.01 * mean)
    torch.testing.assert_close(bns[0].running_var, 0.99 * 1.0 + 0.01 * var)


def test_glorot_uniform_init_statistics():
    torch.manual_seed(3)
    model = keras_cnn(batch_norm=False)
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().double()
            if isinstance(m, nn.Conv2d):  # Keras: fan = receptive field size * channels
                k = m.kernel_size[0] * m.kernel_size[1]
                fan_in, fan_out = k * m.in_channels, k * m.out_channels
            else:
                fan_in, fan_out = m.in_features, m.out_features
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            assert w.abs().max() <= limit
            assert w.abs().max() > 0.95 * limit  # fills the interval
            # U(-a, a): mean 0, std a / sqrt(3); tolerance from the sampling error of n draws
            n = w.numel()
            assert abs(w.mean().item()) < 5 * limit / math.sqrt(3 * n)
            assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=max(0.02, 5 / math.sqrt(n)))
            assert torch.count_nonzero(m.bias) == 0


def test_flatten_uses_keras_channels_last_order():
    x = torch.randn(2, 4, 3, 5)
    flat = FlattenNHWC()(x)
    n, c, h, w = 1, 2, 1, 3
    assert flat[n, (h * 5 + w) * 4 + c] == x[n, c, h, w]
    # same numbers as NumPy's reshape of the NHWC array Keras would hold
    np.testing.assert_array_equal(flat.numpy(), x.numpy().transpose(0, 2, 3, 1).reshape(2, -1))
    # and channels_last memory makes it a view, not a copy
    xc = x.contiguous(memory_format=torch.channels_last)
    assert FlattenNHWC()(xc).data_ptr() == xc.data_ptr()


def test_models_are_deterministic_given_seed_and_bad_input_is_rejected():
    torch.manual_seed(5)
    a = keras_cnn(batch_norm=True)
    torch.manual_seed(5)
    b = keras_cnn(batch_norm=True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="num_classes"):
        keras_cnn(num_classes=0)
