"""Tests of the Fashion-MNIST MLP in bnbook.models.mlp: where the norm goes, same weights across
variants, fixed standardisation, argument checks."""

import pytest
import torch
from torch import nn

from bnbook.models.mlp import make_mlp

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- models

@pytest.mark.parametrize("placement, order", [("before", [nn.Linear, nn.BatchNorm1d, nn.ReLU]),
                                              ("after", [nn.Linear, nn.ReLU, nn.BatchNorm1d])])
def test_make_mlp_places_batch_norm(placement, order):
    model = make_mlp(hidden=(16, 8), norm="batch", placement=placement, seed=0)
    kinds = [type(m) for m in model]
    assert kinds[1:4] == order and kinds[4:7] == order
    # Bias only where no normalisation removes it.
    assert (model[1].bias is None) == (placement == "before")
    assert model(torch.rand(5, 28, 28)).shape == (5, 10)


def test_make_mlp_same_weights_across_variants():
    ref = make_mlp(hidden=(16, 8), norm="none", seed=7)
    ref_w = [m.weight for m in ref if isinstance(m, nn.Linear)]
    for kw in (dict(norm="batch"), dict(norm="batch", placement="after"), dict(norm="group",
               groups=4), dict(norm="layer"), dict(norm="batch", dropout=0.3, bias=True)):
        model = make_mlp(hidden=(16, 8), seed=7, **kw)
        ws = [m.weight for m in model if isinstance(m, nn.Linear)]
        assert all(torch.equal(a, b) for a, b in zip(ws, ref_w)), kw
    other = make_mlp(hidden=(16, 8), norm="none", seed=8)
    assert not torch.equal(other[1].weight, ref_w[0])


def test_make_mlp_standardizes_with_given_constants():
    model = make_mlp(hidden=(4,), norm="none", pixel_mean=0.3, pixel_std=0.2, seed=0)
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
        make_mlp(**kw)


def test_group_and_layer_norm_do_not_depend_on_the_batch():
    x = torch.rand(6, 28, 28)
    for norm in ("group", "layer"):
        model = make_mlp(hidden=(16,), norm=norm, groups=4, seed=0).train()
        full = model(x)
        assert torch.allclose(model(x[:1]), full[:1], atol=1e-6)
    bn = make_mlp(hidden=(16,), norm="batch", seed=0).train()
    assert not torch.allclose(bn(x[:2])[:1], bn(x)[:1], atol=1e-3)


def test_make_mlp_activation_and_init_scale():
    ref = make_mlp(hidden=(16, 8), norm="none", seed=2)
    model = make_mlp(hidden=(16, 8), norm="batch", activation="sigmoid", init_scale=3.0, seed=2)
    assert isinstance(model[3], nn.Sigmoid) and isinstance(model[6], nn.Sigmoid)
    assert torch.allclose(model[1].weight, 3.0 * ref[1].weight)
    assert torch.allclose(model[4].weight, 3.0 * ref[3].weight)
    assert torch.equal(model[7].weight, ref[5].weight)  # the output layer is not rescaled
    with pytest.raises(ValueError, match="activation"):
        make_mlp(activation="gelu")
    with pytest.raises(ValueError, match="init_scale"):
        make_mlp(init_scale=0.0)
