"""``python -m bnbook.experiments.why.run_decay``: chapter 6's "decay the learning rate faster",
tested on the narrow chapter-7 CNN with BN on a 20,000-image CIFAR-10 subset.

The default exponential schedule (the learning rate falls tenfold over the run) against one
decaying five times faster (:func:`bnbook.experiments.why.decay.run_decay`), SGD with momentum, three
seeds each; per epoch the test accuracy, the evaluation-mode training loss and the rate. One
unit of work is one schedule and seed. Writes ``data/results/why/decay.json``
(``--quick``: ``decay-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import cifar_info, load_cifar

__all__ = ["EXPERIMENT", "build_parser", "main"]

FULL = dict(n_train=20000, n_test=10000, data_seed=0, width=16, lr=0.05, momentum=0.9,
            weight_decay=0.0, final_factor=0.1, epochs=10, batch_size=128,
            clean_train_size=10000, seeds=[0, 1, 2], speeds=[1, 5])
QUICK = dict(FULL, n_train=512, n_test=256, width=4, epochs=2, batch_size=64,
             clean_train_size=256, seeds=[0])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.decay import run_decay

    kw = {k: settings[k] for k in ("lr", "momentum", "weight_decay", "final_factor", "width",
                                   "epochs", "batch_size", "clean_train_size")}
    return [(f"x{speed:g}/seed{s}",
             (lambda speed=speed, s=s: run_decay(data, speed=speed, seed=s, progress=progress,
                                                 **kw)))
            for s in settings["seeds"] for speed in settings["speeds"]]


EXPERIMENT = why_cli.Experiment(
    name="decay", prog="python -m bnbook.experiments.why.run_decay",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=cifar_info,
    load=load_cifar, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
