"""``python -m bnbook.experiments.why.run_landscape``: the loss landscape, gradient
predictiveness, effective beta-smoothness and Santurkar et al.'s internal-covariate-shift
measure along training, for the narrow chapter-7 CNN with and without BN.

Each run (:func:`run_landscape`) trains :func:`bnbook.models.small_cnn.small_cifar_cnn` with plain
SGD on a CIFAR-10 subset; every ``measure_every`` updates it takes the update's starting
point ``w``, its batch and gradient ``g`` and measures

* :func:`bnbook.experiments.why.landscape.probe_gradient_direction` at the step sizes ``etas`` (the same
  for every run, so networks trained with different learning rates are probed alike);
* :func:`bnbook.experiments.why.ics.gradient_change` for every layer, from ``w`` and the parameters after
  the update.

Writes ``data/results/why/landscape.json`` (``--quick``: ``landscape-quick.json``); one unit
of work is one run.
"""

from __future__ import annotations

import math
import sys
import time

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import cifar_info, load_cifar

__all__ = ["EXPERIMENT", "run_landscape", "build_parser", "main"]

FULL = dict(n_train=10000, n_test=2000, data_seed=0, width=16, epochs=8, batch_size=128,
            measure_every=24, etas=[0.025, 0.05, 0.1, 0.2, 0.4], seeds=[0],
            norms=["none", "batch"], lrs=[0.1, 0.4])
QUICK = dict(FULL, n_train=512, n_test=256, width=4, epochs=1, batch_size=64,
             measure_every=3, lrs=[0.1])


def _json_safe(value):
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN or
    infinity): a probe far along the gradient of a network about to diverge can overflow, and
    the ICS ratios of a layer whose gradient is exactly zero are undefined."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_landscape(data, norm: str, *, lr: float, width: int = 16, epochs: int = 8,
                  batch_size: int = 128, measure_every: int = 24,
                  etas=(0.025, 0.05, 0.1, 0.2, 0.4), seed: int = 0,
                  progress: bool = False) -> dict:
    """Train one network and measure it every ``measure_every`` updates (and at the first).

    Returns the history of :func:`bnbook.experiments.why.cnn.train_small_cnn` and ``measurements``:
    per measured update (``step`` = updates done before it), the loss and ``||g||`` at its
    start, per ``eta`` the loss and gradient change (``losses``, ``grad_diffs``), the summary
    of :func:`bnbook.experiments.why.landscape.landscape_summary` and ``ics`` (one dict per layer of
    :func:`bnbook.experiments.why.ics.layer_groups`), ``conv_weight_norm`` (the norm of the four conv
    weights together at the start of the update: with BN they are scale-invariant, see
    :mod:`bnbook.experiments.why.scale`); ``layers`` names each layer by its weight. A value
    that overflowed (a loss far along the gradient of a network about to diverge) is ``None``.
    """
    from torch import nn

    from bnbook.models.small_cnn import small_cifar_cnn
    from bnbook.training import cross_entropy_loss
    from bnbook.experiments.why.cnn import train_small_cnn
    from bnbook.experiments.why.ics import gradient_change, layer_groups
    from bnbook.experiments.why.landscape import (landscape_summary, probe_gradient_direction,
                                                  trainable)

    model = small_cifar_cnn(width, norm, seed=seed)
    groups = layer_groups(model)
    conv_weights = [f"{i}.weight" for i, m in enumerate(model) if isinstance(m, nn.Conv2d)]
    start_point: dict = {}
    measured: list[dict] = []

    def before(step):
        start_point.clear()
        if step % measure_every == 0:
            start_point.update({n: p.detach().clone() for n, p in trainable(model).items()})

    def after(step, loss, logits, batch):
        if not start_point:
            return
        now = {n: p.detach().clone() for n, p in trainable(model).items()}
        probe = probe_gradient_direction(model, cross_entropy_loss, batch, etas, start_point)
        ics = gradient_change(model, cross_entropy_loss, batch, start_point, now, groups)
        conv_norm = math.sqrt(sum(float((start_point[n].double() ** 2).sum())
                                  for n in conv_weights))
        measured.append(_json_safe({"step": step - 1, "loss0": probe["loss0"],
                                    "grad_norm": probe["grad_norm"], "losses": probe["losses"],
                                    "grad_diffs": probe["grad_diffs"],
                                    **landscape_summary(probe), "ics": ics,
                                    "conv_weight_norm": conv_norm}))

    t0 = time.perf_counter()
    hist = train_small_cnn(model, data, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
                           before_step=before, on_step=after, progress=progress,
                           desc=f"{norm} lr {lr}")
    return {**hist, "etas": list(etas), "layers": [g[0] for g in groups],
            "measurements": measured, "seconds": round(time.perf_counter() - t0, 2)}


def units(data, settings: dict, progress: bool):
    kw = {k: settings[k] for k in ("width", "epochs", "batch_size", "measure_every", "etas")}
    return [(f"{norm}/lr{lr:g}/seed{s}",
             (lambda norm=norm, lr=lr, s=s: run_landscape(data, norm, lr=lr, seed=s,
                                                          progress=progress, **kw)))
            for s in settings["seeds"] for lr in settings["lrs"] for norm in settings["norms"]]


EXPERIMENT = why_cli.Experiment(
    name="landscape", prog="python -m bnbook.experiments.why.run_landscape",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=cifar_info,
    load=load_cifar, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
