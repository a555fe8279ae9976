"""Training the narrow CNN with hooks (bnbook.experiments.why.cnn) and the noisy-BN run on it, on random
images (the real CIFAR-10 subset is what the stored results use)."""

import pytest
import torch

from bnbook.models.small_cnn import small_cifar_cnn
from bnbook.experiments.why.cnn import relu_inputs, run_noisy_cnn, train_small_cnn

torch.set_num_threads(1)


def test_hooks_run_before_and_after_every_update(tiny):
    model = small_cifar_cnn(2, "batch", seed=0)
    calls = []
    first = model[0].weight.detach().clone()

    def before(k):
        calls.append(("before", k, torch.equal(model[0].weight.detach(), first)))

    def after(k, loss, logits, batch):
        calls.append(("after", k, logits.shape == (16, 10)))

    out = train_small_cnn(model, tiny, lr=0.01, epochs=2, batch_size=16, before_step=before,
                          on_step=after)
    assert out["steps"] == 8 and len(out["test_acc"]) == 2 and not out["diverged"]
    assert [c[:2] for c in calls[:4]] == [("before", 0), ("after", 1), ("before", 1),
                                          ("after", 2)]
    assert calls[0][2] and not calls[2][2]          # the first update happens in between
    assert all(c[2] for c in calls if c[0] == "after")
    with pytest.raises(ValueError, match="epochs"):
        train_small_cnn(model, tiny, lr=0.01, epochs=0)


def test_relu_inputs_are_the_four_conv_relus():
    for norm, kind in (("none", torch.nn.Identity), ("batch", torch.nn.BatchNorm2d)):
        model = small_cifar_cnn(2, norm, seed=0)
        layers = list(model)
        # every ReLU that follows a convolution and its norm, in forward order
        after_conv = [relu for conv, normed, relu in zip(layers, layers[1:], layers[2:])
                      if isinstance(conv, torch.nn.Conv2d) and isinstance(normed, kind)
                      and isinstance(relu, torch.nn.ReLU)]
        assert len(after_conv) == 4 == sum(isinstance(m, torch.nn.Conv2d) for m in layers)
        assert relu_inputs(model) == after_conv


def test_noisy_run_moves_its_distributions_more_than_bn_per_update(tiny):
    kw = dict(width=2, lr=0.01, epochs=2, batch_size=16, log_every=2, monitor_size=16)
    bn = run_noisy_cnn(tiny, "batch", **kw)
    noisy = run_noisy_cnn(tiny, "noisy-batch", shift_max=1.0, scale_max=2.0, **kw)
    assert len(noisy["movement"]) == 4 and len(noisy["movement_per_update"]) == 4
    for a, b in zip(noisy["movement_per_update"], bn["movement_per_update"]):
        assert a["location_shift_rel"] > 3 * b["location_shift_rel"]
        assert a["spread_change"] > 3 * b["spread_change"]
    assert len(noisy["mean_abs_channel_mean"]) == 5            # steps 0, 2, 4, 6, 8
    with pytest.raises(ValueError, match="variant"):
        run_noisy_cnn(tiny, "group", **kw)
