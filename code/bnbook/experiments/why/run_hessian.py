"""``python -m bnbook.experiments.why.run_hessian``: the sharpness (the Hessian's largest
eigenvalue) and the curvature along the gradient during training of the narrow chapter-7 CNN,
with and without BN, at several learning rates.

Each run (:func:`bnbook.experiments.why.hessian.run_sharpness`) trains with plain SGD on a CIFAR-10 subset
and, before the first update, every 200 updates and after the last, measures ``lambda_max``
(20 power-iteration steps of Hessian-vector products) and ``g^T H g / ||g||^2`` on a fixed
batch of 1,024 training images, to compare with ``2 / lr`` (Cohen et al., 2021). One unit of
work is one network, learning rate and seed. Writes ``data/results/why/hessian.json``
(``--quick``: ``hessian-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import cifar_info, load_cifar

__all__ = ["EXPERIMENT", "build_parser", "main"]

FULL = dict(n_train=10000, n_test=2000, data_seed=0, width=16, epochs=12, batch_size=128,
            momentum=0.0, measure_every=200, n_iter=20, hessian_batch=1024, seeds=[0, 1, 2],
            norms=["none", "batch"], lrs=[0.05, 0.1, 0.2, 0.4])
QUICK = dict(FULL, n_train=512, n_test=256, width=4, epochs=1, batch_size=64,
             measure_every=4, n_iter=3, hessian_batch=128, seeds=[0], lrs=[0.1])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.hessian import run_sharpness

    kw = {k: settings[k] for k in ("width", "epochs", "batch_size", "momentum",
                                   "measure_every", "n_iter", "hessian_batch")}
    return [(f"{norm}/lr{lr:g}/seed{s}",
             (lambda norm=norm, lr=lr, s=s: run_sharpness(data, norm, lr=lr, seed=s,
                                                          progress=progress, **kw)))
            for s in settings["seeds"] for lr in settings["lrs"] for norm in settings["norms"]]


EXPERIMENT = why_cli.Experiment(
    name="hessian", prog="python -m bnbook.experiments.why.run_hessian",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=cifar_info,
    load=load_cifar, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
