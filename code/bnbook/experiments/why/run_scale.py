"""``python -m bnbook.experiments.why.run_scale``: scale invariance and the effective learning
rate, measured on the Figure-1 BN network trained on Fashion-MNIST.

Each run (:func:`bnbook.experiments.why.scale.run_scale`) trains the network with plain SGD and one
weight decay on its scale-invariant hidden weights, tracking ``||W||`` and the angle each
weight matrix turns per step. One unit of work is one weight decay. Writes
``data/results/why/scale.json`` (``--quick``: ``scale-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import fashion_info, load_fashion

__all__ = ["EXPERIMENT", "build_parser", "main"]

FULL = dict(n_train=60000, n_test=10000, data_seed=0, lr=0.5, n_steps=20_000, init_std=0.1,
            record_every=250, seed=0, weight_decays=[0.0, 1e-4, 1e-3, 1e-2])
QUICK = dict(FULL, n_train=6000, n_test=1000, n_steps=300, record_every=50,
             weight_decays=[0.0, 1e-2])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.scale import run_scale

    kw = {k: settings[k] for k in ("lr", "n_steps", "init_std", "record_every", "seed")}
    return [(f"wd{wd:g}", (lambda wd=wd: run_scale(data.arrays(), weight_decay=wd, **kw)))
            for wd in settings["weight_decays"]]


EXPERIMENT = why_cli.Experiment(
    name="scale", prog="python -m bnbook.experiments.why.run_scale",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=fashion_info,
    load=load_fashion, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
