"""``python -m bnbook.experiments.why.run_filter_angles``: the angle each conv filter of the
narrow chapter-7 CNN with BN turns per update, against the equilibrium angle
``sqrt(2 eta lambda / (1 + mu))`` (Wan et al., 2021) and plain SGD's ``sqrt(2 eta lambda)``.

Each run (:func:`bnbook.experiments.why.filter_angles.run_filter_angles`) trains with SGD, weight decay on
the conv weights only, on a CIFAR-10 subset; two optimiser settings with the same
``eta / (1 - mu)`` (momentum 0.9 at 0.05, plain SGD at 0.5) separate the two predictions. One
unit of work is one setting, weight decay and seed. Writes
``data/results/why/filter-angles.json`` (``--quick``: ``filter-angles-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import cifar_info, load_cifar

__all__ = ["EXPERIMENT", "build_parser", "main"]

#: optimisers: name -> [learning rate, momentum]
FULL = dict(n_train=10000, n_test=2000, data_seed=0, width=16, epochs=15, batch_size=128,
            window_steps=390, seeds=[0, 1, 2], weight_decays=[5e-3, 1e-2],
            optimisers={"momentum": [0.05, 0.9], "plain": [0.5, 0.0]})
QUICK = dict(FULL, n_train=512, n_test=256, width=4, epochs=2, batch_size=64, window_steps=8,
             seeds=[0], weight_decays=[1e-2])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.filter_angles import run_filter_angles

    kw = {k: settings[k] for k in ("width", "epochs", "batch_size", "window_steps")}

    def one(name, wd, seed):
        lr, momentum = settings["optimisers"][name]
        return run_filter_angles(data, lr=lr, momentum=momentum, weight_decay=wd, seed=seed,
                                 progress=progress, **kw)

    return [(f"{name}/wd{wd:g}/seed{s}", (lambda name=name, wd=wd, s=s: one(name, wd, s)))
            for s in settings["seeds"] for wd in settings["weight_decays"]
            for name in settings["optimisers"]]


EXPERIMENT = why_cli.Experiment(
    name="filter-angles", prog="python -m bnbook.experiments.why.run_filter_angles",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=cifar_info,
    load=load_cifar, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
