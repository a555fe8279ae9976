"""The why-BN exercise checker accepts a right probe and names the usual wrong ones."""

import pytest
import torch

from bnbook.experiments.why.checks import check_gradient_probe
from bnbook.experiments.why.landscape import loss_and_grad, probe_gradient_direction


def right(model, loss_fn, batch, etas):
    p = probe_gradient_direction(model, loss_fn, batch, etas)
    return p["losses"], p["grad_diffs"]


def make_wrong(sign=1.0, change=True):
    def probe(model, loss_fn, batch, etas):
        w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        _, g0 = loss_and_grad(model, loss_fn, batch)
        losses, diffs = [], []
        for eta in etas:
            loss, g = loss_and_grad(model, loss_fn, batch,
                                    {n: w0[n] + sign * eta * g0[n] for n in w0})
            losses.append(loss)
            vec = torch.cat([(g[n] - g0[n] if change else g[n]).flatten() for n in g])
            diffs.append(float(vec.double().norm()))
        return losses, diffs
    return probe


def test_a_right_probe_passes(capsys):
    check_gradient_probe(right)
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize("probe, hint", [(make_wrong(+1.0), "uphill"),
                                         (make_wrong(-1.0, change=False), "norm of the new")])
def test_wrong_probes_are_named(probe, hint):
    with pytest.raises(AssertionError, match=hint):
        check_gradient_probe(probe)


def test_a_probe_that_moves_the_model_is_caught_and_a_stub_is_named():
    def careless(model, loss_fn, batch, etas):
        out = right(model, loss_fn, batch, etas)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return out

    with pytest.raises(AssertionError, match="changed"):
        check_gradient_probe(careless)

    def stub(model, loss_fn, batch, etas):
        raise NotImplementedError

    with pytest.raises(NotImplementedError, match="`.*stub` is not written yet"):
        check_gradient_probe(stub)
