"""``python -m bnbook.experiments.why.run_noisy_cnn``: noisy batch norm on the narrow chapter-7
CNN, trained on a CIFAR-10 subset.

The networks (:func:`bnbook.experiments.why.cnn.run_noisy_cnn`): no normalisation, BN, and BN followed by
per-step random per-channel shifts and scales (:class:`bnbook.experiments.why.noise.BatchNormNoise`) at
two noise levels; same initial conv/dense weights and batch order for one seed, SGD with
momentum. One unit of work is one run. Writes ``data/results/why/noisy-cnn.json``
(``--quick``: ``noisy-cnn-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import cifar_info, load_cifar

__all__ = ["EXPERIMENT", "build_parser", "main"]

#: variant name -> (norm of run_noisy_cnn, [shift_max, scale_max] or None)
FULL = dict(n_train=10000, n_test=2000, data_seed=0, width=16, lr=0.05, momentum=0.9,
            epochs=12, batch_size=128, log_every=20, monitor_size=256, seeds=[0, 1],
            variants={"none": ["none", None], "batch": ["batch", None],
                      "noisy-0.5": ["noisy-batch", [0.5, 1.5]],
                      "noisy-1": ["noisy-batch", [1.0, 2.0]]})
QUICK = dict(FULL, n_train=512, n_test=256, width=4, epochs=1, batch_size=64, log_every=4,
             monitor_size=64, seeds=[0])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.cnn import run_noisy_cnn

    kw = {k: settings[k] for k in ("width", "lr", "momentum", "epochs", "batch_size",
                                   "log_every", "monitor_size")}

    def one(variant, seed):
        norm, noise = settings["variants"][variant]
        shift, scale = noise if noise is not None else (0.0, 1.0)
        return run_noisy_cnn(data, norm, seed=seed, shift_max=shift, scale_max=scale,
                             progress=progress, **kw)

    return [(f"{v}/seed{s}", (lambda v=v, s=s: one(v, s)))
            for s in settings["seeds"] for v in settings["variants"]]


EXPERIMENT = why_cli.Experiment(
    name="noisy-cnn", prog="python -m bnbook.experiments.why.run_noisy_cnn",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=cifar_info,
    load=load_cifar, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
