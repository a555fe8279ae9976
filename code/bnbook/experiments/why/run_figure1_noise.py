"""``python -m bnbook.experiments.why.run_figure1_noise``: the Figure-1 sigmoid network on
Fashion-MNIST with three kinds of noise after its BN layers, and the noise-free training loss.

Each arm (:func:`bnbook.experiments.why.figure1_arms.run_figure1_arm`) is the plain network, the BN network
or the BN network with one noise of :func:`bnbook.experiments.why.noise_kinds.make_noise`: the per-channel
jitter of the stored ``figure1.json``, a drift (per-channel random walks in shift and scale)
and Santurkar et al.'s per-activation noise. Plain SGD on batches of 60 for 50,000 steps; at
every logged step the test accuracy and the loss and accuracy on 10,000 training images in
evaluation mode (noise off). One unit of work is one arm and seed. Writes
``data/results/why/figure1-noise.json`` (``--quick``: ``figure1-noise-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import fashion_info, load_fashion

__all__ = ["EXPERIMENT", "build_parser", "main"]

#: arm name -> [batch_norm, noise kind or None, noise parameters or None]
FULL = dict(n_train=60000, n_test=10000, data_seed=0, n_steps=50_000, lr=0.5, init_std=0.1,
            record_every=500, monitor_size=500, clean_train_size=10000, seeds=[0, 1, 2],
            arms={"plain": [False, None, None], "bn": [True, None, None],
                  "jitter": [True, "jitter", {"shift_max": 1.0, "scale_max": 2.0}],
                  "drift": [True, "drift", {"shift_end_std": 3.0, "log_scale_end_std": 0.7}],
                  "per-activation": [True, "per-activation",
                                     {"shift_max": 1.0, "scale_max": 2.0, "mean_max": 1.0}]})
QUICK = dict(FULL, n_train=6000, n_test=1000, n_steps=300, record_every=100,
             clean_train_size=2000, seeds=[0])


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.why.figure1_arms import run_figure1_arm

    kw = {k: settings[k] for k in ("n_steps", "lr", "init_std", "record_every", "monitor_size",
                                   "clean_train_size")}

    def one(arm, seed):
        batch_norm, kind, params = settings["arms"][arm]
        return run_figure1_arm(data, batch_norm, kind, params, seed=seed, progress=progress,
                               **kw)

    return [(f"{a}/seed{s}", (lambda a=a, s=s: one(a, s)))
            for s in settings["seeds"] for a in settings["arms"]]


EXPERIMENT = why_cli.Experiment(
    name="figure1-noise", prog="python -m bnbook.experiments.why.run_figure1_noise",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=fashion_info,
    load=load_fashion, units=units)


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
