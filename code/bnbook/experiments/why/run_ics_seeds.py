"""``python -m bnbook.experiments.why.run_ics_seeds``: Santurkar et al.'s internal-covariate-shift
measure on the narrow chapter-7 CNN, with and without BN, on three seeds.

The same training and measurement as the ICS part of ``why_landscape`` (plain SGD on a
CIFAR-10 subset, every layer's gradient change measured every 24 updates; seed 0 repeats the
stored one-seed run) without the landscape probe (:func:`bnbook.experiments.why.ics_seeds.run_ics`);
:func:`bnbook.experiments.why.ics_seeds.ics_seed_summary` gives the median and spread over seeds per
layer. One unit of work is one network, learning rate and seed. Writes
``data/results/why/ics-seeds.json`` (``--quick``: ``ics-seeds-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import cifar_info, load_cifar

__all__ = ["EXPERIMENT", "build_parser", "main"]

FULL = dict(n_train=10000, n_test=2000, data_seed=0, width=16, epochs=8, batch_size=128,
            measure_every=24, seeds=[0, 1, 2], norms=["none", "batch"], lrs=[0.1, 0.4])
QUICK = dict(FULL, n_train=512, n_test=256, width=4, epochs=1, batch_size=64,
             measure_every=3, seeds=[0, 1], lrs=[0.1])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.ics_seeds import run_ics

    kw = {k: settings[k] for k in ("width", "epochs", "batch_size", "measure_every")}
    return [(f"{norm}/lr{lr:g}/seed{s}",
             (lambda norm=norm, lr=lr, s=s: run_ics(data, norm, lr=lr, seed=s,
                                                    progress=progress, **kw)))
            for s in settings["seeds"] for lr in settings["lrs"] for norm in settings["norms"]]


EXPERIMENT = why_cli.Experiment(
    name="ics-seeds", prog="python -m bnbook.experiments.why.run_ics_seeds",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=cifar_info,
    load=load_cifar, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
