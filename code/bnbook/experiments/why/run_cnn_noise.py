"""``python -m bnbook.experiments.why.run_cnn_noise``: the narrow chapter-7 CNN on a CIFAR-10
subset with three kinds of noise after its BN layers, and the noise-free training loss.

Each arm (:func:`bnbook.experiments.why.cnn_runs.run_cnn_noise_arm`) is the network without
normalisation, with BN, or with BN and one noise of :func:`bnbook.experiments.why.noise_kinds.make_noise`:
the per-channel jitter of the stored ``noisy-cnn.json`` (its weaker level), a drift
(per-channel random walks in shift and scale) and Santurkar et al.'s per-activation noise.
SGD with momentum, as the stored noisy-BN runs; per epoch the test accuracy and the loss and
accuracy on the training subset in evaluation mode (noise off). One unit of work is one arm
and seed. Writes ``data/results/why/cnn-noise.json`` (``--quick``: ``cnn-noise-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import cifar_info, load_cifar

__all__ = ["EXPERIMENT", "build_parser", "main"]

#: arm name -> [norm, noise kind or None, noise parameters or None]
FULL = dict(n_train=10000, n_test=2000, data_seed=0, width=16, lr=0.05, momentum=0.9,
            epochs=12, batch_size=128, log_every=20, monitor_size=256, clean_train_size=None,
            seeds=[0, 1, 2],
            arms={"none": ["none", None, None], "batch": ["batch", None, None],
                  "jitter": ["batch", "jitter", {"shift_max": 0.5, "scale_max": 1.5}],
                  "drift": ["batch", "drift", {"shift_end_std": 3.0, "log_scale_end_std": 0.7}],
                  "per-activation": ["batch", "per-activation",
                                     {"shift_max": 0.5, "scale_max": 1.5, "mean_max": 0.5}]})
QUICK = dict(FULL, n_train=512, n_test=256, width=4, epochs=2, batch_size=64, log_every=4,
             monitor_size=64, seeds=[0])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.cnn_runs import run_cnn_noise_arm

    kw = {k: settings[k] for k in ("width", "lr", "momentum", "epochs", "batch_size",
                                   "log_every", "monitor_size", "clean_train_size")}

    def one(arm, seed):
        norm, kind, params = settings["arms"][arm]
        return run_cnn_noise_arm(data, norm, kind, params, seed=seed, progress=progress, **kw)

    return [(f"{a}/seed{s}", (lambda a=a, s=s: one(a, s)))
            for s in settings["seeds"] for a in settings["arms"]]


EXPERIMENT = why_cli.Experiment(
    name="cnn-noise", prog="python -m bnbook.experiments.why.run_cnn_noise",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=cifar_info,
    load=load_cifar, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
