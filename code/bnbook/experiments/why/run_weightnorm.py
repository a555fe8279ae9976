"""``python -m bnbook.experiments.why.run_weightnorm``: weight normalisation, with and without
batch statistics, as the control for chapter 9's step-size story, on the narrow chapter-7 CNN.

The arms of :data:`bnbook.experiments.why.weightnorm.WN_ARMS` (no normalisation, BN, weight
normalisation alone, with mean-only BN, with BN), trained with SGD and momentum on a CIFAR-10
subset at two learning rates (:func:`bnbook.experiments.why.weightnorm.run_weightnorm`); per epoch the
test accuracy, the evaluation-mode training loss and the filters' direction norms. One unit of
work is one arm, learning rate and seed. Writes ``data/results/why/weightnorm.json``
(``--quick``: ``weightnorm-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import cifar_info, load_cifar

__all__ = ["EXPERIMENT", "build_parser", "main"]

FULL = dict(n_train=10000, n_test=2000, data_seed=0, width=16, momentum=0.9, epochs=12,
            batch_size=128, clean_train_size=None, seeds=[0, 1, 2], lrs=[0.05, 0.2],
            arms=["none", "batch", "wn", "wn-mean", "wn-batch"])
QUICK = dict(FULL, n_train=512, n_test=256, width=4, epochs=2, batch_size=64, seeds=[0],
             lrs=[0.05])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.weightnorm import run_weightnorm

    kw = {k: settings[k] for k in ("width", "momentum", "epochs", "batch_size",
                                   "clean_train_size")}
    return [(f"{arm}/lr{lr:g}/seed{s}",
             (lambda arm=arm, lr=lr, s=s: run_weightnorm(data, arm, lr=lr, seed=s,
                                                         progress=progress, **kw)))
            for s in settings["seeds"] for lr in settings["lrs"] for arm in settings["arms"]]


EXPERIMENT = why_cli.Experiment(
    name="weightnorm", prog="python -m bnbook.experiments.why.run_weightnorm",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=cifar_info,
    load=load_cifar, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
