"""``python -m bnbook.experiments.why.run_figure1``: the paper's Figure 1 on Fashion-MNIST, with
a noisy-BN network beside the plain and BN ones.

Three fully connected hidden layers of 100 sigmoid units
(:class:`bnbook.experiments.motivation.covariate_shift.SigmoidMLP`, weights ``N(0, 0.1^2)``), softmax cross-entropy,
plain SGD on batches of 60 for 50,000 steps, for each variant of
:data:`bnbook.experiments.why.figure1.VARIANTS` and each seed; one unit of work is one run
(:func:`bnbook.experiments.why.figure1.run_figure1`). Writes ``data/results/why/figure1.json``;
``--quick`` writes ``figure1-quick.json`` in seconds.
The stored results use Fashion-MNIST; MNIST is an option of the live version in the chapter.
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import fashion_info, load_fashion

__all__ = ["EXPERIMENT", "build_parser", "main"]

FULL = dict(n_train=60000, n_test=10000, data_seed=0, n_steps=50_000, lr=0.5, init_std=0.1,
            shift_max=1.0, scale_max=2.0, record_every=500, monitor_size=500, stored_units=10,
            seeds=[0, 1], variants=["plain", "bn", "noisy-bn"])
QUICK = dict(FULL, n_train=6000, n_test=1000, n_steps=400, record_every=100, seeds=[0])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.figure1 import run_figure1

    kw = {k: settings[k] for k in ("n_steps", "lr", "init_std", "shift_max", "scale_max",
                                   "record_every", "monitor_size", "stored_units")}
    return [(f"{v}/seed{s}", (lambda v=v, s=s: run_figure1(data, v, seed=s, progress=progress,
                                                          **kw)))
            for s in settings["seeds"] for v in settings["variants"]]


EXPERIMENT = why_cli.Experiment(
    name="figure1", prog="python -m bnbook.experiments.why.run_figure1",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=fashion_info,
    load=load_fashion, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
