"""Santurkar et al.'s internal-covariate-shift measure (bnbook.experiments.why.ics) against a brute-force
computation: a network assembled from the updated earlier layers and the old later layers."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bnbook.models.small_cnn import small_cifar_cnn
from bnbook.experiments.why.ics import gradient_change, layer_groups

torch.set_num_threads(1)


def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_layer_groups_follow_the_forward_order():
    assert layer_groups(net()) == [["0.weight", "0.bias", "1.weight", "1.bias"],
                                   ["3.weight", "3.bias", "4.weight", "4.bias"],
                                   ["6.weight", "6.bias"]]
    groups = layer_groups(small_cifar_cnn(4, "batch", seed=0))
    assert [g[0] for g in groups] == ["0.weight", "3.weight", "7.weight", "10.weight",
                                      "15.weight", "17.weight"]
    assert groups[0] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(ValueError, match="Sequential"):
        layer_groups(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="before the first weight"):
        layer_groups(nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 2)))


def test_gradient_change_matches_brute_force():
    model = net()
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    after = {n: v + 0.3 * torch.randn(v.shape, generator=g) for n, v in before.items()}
    groups = layer_groups(model)
    rows = gradient_change(model, ce_loss, (x, y), before, after, groups)

    def grad_of(values, name):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.copy_(values[n])
        ce_loss(m, (x, y)).backward()
        return dict(m.named_parameters())[name].grad.double()

    for i, group in enumerate(groups):
        earlier = {n for grp in groups[:i] for n in grp}
        mixed = {n: after[n] if n in earlier else before[n] for n in before}
        G, G2 = grad_of(before, group[0]), grad_of(mixed, group[0])
        l2 = float((G - G2).norm())
        assert rows[i]["l2"] == pytest.approx(l2, rel=1e-4, abs=1e-9)
        assert rows[i]["rel"] == pytest.approx(l2 / float(G.norm()), rel=1e-4, abs=1e-9)
        cos = float((G * G2).sum() / (G.norm() * G2.norm()))
        assert rows[i]["cos"] == pytest.approx(cos, rel=1e-5)
    assert rows[0] == {"l2": 0.0, "rel": 0.0, "cos": pytest.approx(1.0)}
    assert all(r["l2"] > 1e-4 for r in rows[1:])           # the earlier updates do matter
    for n, p in model.named_parameters():                   # the model is unchanged
        assert torch.equal(p.detach(), before[n])


def test_no_update_means_no_shift_and_missing_names_are_refused():
    model = net()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    same = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = gradient_change(model, ce_loss, (x, y), same, same, layer_groups(model))
    assert all(r["l2"] == 0.0 and math.isclose(r["cos"], 1.0) for r in rows)
    with pytest.raises(ValueError, match="lack"):
        gradient_change(model, ce_loss, (x, y), {}, same, layer_groups(model))
