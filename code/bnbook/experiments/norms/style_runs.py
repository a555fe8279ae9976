"""``python -m bnbook.experiments.norms.style_runs``: instance norm and style on CIFAR-10 (chapter 8).

Two kinds of unit (:mod:`bnbook.experiments.norms.style`), run with the why-BN experiments' command
line (:mod:`bnbook.experiments.why.cli`: tqdm, partial results, resume, provenance):

* ``statistics``: the spread across ``n_stats`` CIFAR-10 training images (pixels in
  ``[0, 1]``) of their per-channel means and standard deviations, of the pixels and of a
  random convolution's feature maps, before and after batch norm and instance norm
  (:func:`~bnbook.experiments.norms.style.compare_normalisations`), and how closely adaptive instance
  norm gives one image another's channel statistics;
* ``<task>/<norm>/<padding>/seed<s>``: chapter 8's narrow CNN with batch norm, instance norm
  or none, its convolutions zero- or reflection-padded,
  trained briefly on two colour tasks (which channel received a uniform colour cast; which
  colour channel dominates the image) and on CIFAR-10's labels (the control) (:func:`~bnbook.experiments.norms.style.run_colour_task`).

Writes ``data/results/norms/style.json`` (``--quick``: ``style-quick.json``).
"""

from __future__ import annotations

import sys

from bnbook.experiments.why import cli as why_cli
from bnbook.experiments.why.data import cifar_info, load_cifar
from bnbook.provenance import RESULTS_DIR

__all__ = ["EXPERIMENT", "FULL", "QUICK", "build_parser", "main", "statistics_unit"]

FULL = dict(n_train=10000, n_test=2000, data_seed=0, n_stats=1000, conv_channels=16, width=8,
            epochs=3, batch_size=64, lr=0.02, seeds=[0, 1, 2], tasks=["cast", "colour", "cifar"],
            norms=["batch", "instance", "none"], paddings=["zeros", "reflect"])
QUICK = dict(FULL, n_train=256, n_test=128, n_stats=64, width=4, epochs=1, seeds=[0])


def statistics_unit(data, settings: dict) -> dict:
    """The ``statistics`` unit: :func:`compare_normalisations` of the first ``n_stats``
    training images in ``[0, 1]``, plus ``adain_max_error``: the largest difference between
    the channel statistics of ``adain(image 0, image 1)`` and those of image 1."""
    import time

    from bnbook.experiments.norms.style import adain, channel_statistics, compare_normalisations

    start = time.perf_counter()
    mean, std = data.channel_mean[:, None, None], data.channel_std[:, None, None]
    pixels = data.x_train[:settings["n_stats"]] * std + mean
    spreads = compare_normalisations(pixels, settings["conv_channels"], seed=0)
    mixed = adain(pixels[:1], pixels[1:2], eps=0.0)
    error = max(float((a - b).abs().max()) for a, b in zip(channel_statistics(mixed),
                                                            channel_statistics(pixels[1:2])))
    return {**spreads, "adain_max_error": error, "n_images": int(pixels.shape[0]),
            "seconds": round(time.perf_counter() - start, 3)}


def units(data, settings: dict, progress: bool):
    from bnbook.experiments.norms.style import run_colour_task

    kw = {k: settings[k] for k in ("width", "epochs", "batch_size", "lr")}
    runs = [(f"{task}/{norm}/{pad}/seed{s}",
             (lambda task=task, norm=norm, pad=pad, s=s: run_colour_task(
                 data, norm, task, seed=s, padding=pad, progress=progress, **kw)))
            for s in settings["seeds"] for task in settings["tasks"]
            for pad in settings["paddings"] for norm in settings["norms"]]
    return [("statistics", lambda: statistics_unit(data, settings))] + runs


EXPERIMENT = why_cli.Experiment(
    name="style", prog="python -m bnbook.experiments.norms.style_runs",
    description=__doc__.split("\n")[0], full=FULL, quick=QUICK, data_info=cifar_info,
    load=load_cifar, units=units, results_dir=RESULTS_DIR / "norms")


build_parser, main = why_cli.entry_points(EXPERIMENT)


if __name__ == "__main__":
    sys.exit(main())
