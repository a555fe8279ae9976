"""Sizes of a network (bnbook.models.summaries): MACs of a forward pass and FLOPs of a training
step, counted by hand for the Keras network and a grouped convolution."""

import pytest
from torch import nn

from bnbook.models.keras_cifar_cnn import keras_cnn
from bnbook.models.summaries import forward_macs, training_flops_per_image


def test_forward_macs_of_the_keras_network_by_hand():
    # layer by layer: H_out * W_out * C_out * C_in * 3 * 3, then in * out
    conv = (32 * 32 * 32 * 3 * 9 + 30 * 30 * 32 * 32 * 9 + 15 * 15 * 64 * 32 * 9
            + 13 * 13 * 64 * 64 * 9)
    linear = 2304 * 512 + 512 * 10
    for bn in (False, True):
        net = keras_cnn(batch_norm=bn)
        m = forward_macs(net, (2, 3, 32, 32))
        assert m == {"conv": conv, "linear": linear, "total": conv + linear,
                     "first_layer": 32 * 32 * 32 * 3 * 9}
        assert training_flops_per_image(net) == 2 * (3 * (conv + linear) - 32 * 32 * 32 * 27)
        assert net.training  # the mode is restored


def test_forward_macs_counts_groups_and_needs_a_dense_layer():
    net = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Flatten(), nn.Linear(8 * 3 * 3, 5))
    m = forward_macs(net, (1, 4, 5, 5))
    assert m["conv"] == 3 * 3 * 8 * 2 * 9 and m["linear"] == 72 * 5
    with pytest.raises(ValueError, match="no Conv2d or Linear"):
        forward_macs(nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Identity(),
                                   nn.BatchNorm1d(3)), (2, 3))
