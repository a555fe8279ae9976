"""Runners and command lines for the book's stored experiment results.

* :mod:`bnbook.experiments.practice` - chapter 6's seeded Fashion-MNIST runners
  (``run_placement``, ``run_batch_size``, ...);
* :mod:`bnbook.experiments.practice_cli` - their command line, ``python -m bnbook.experiments``,
  which writes ``data/results/practice/*.json``.

The runners import their ingredients from the modules that hold each idea:
:mod:`bnbook.data.subsets` (seeded subsets, brightness shift), :mod:`bnbook.models` (the MLP),
:mod:`bnbook.training` (the SGD loop) and :mod:`bnbook.diagnostics` (recalibrate, freeze,
health check).

Compatibility: this package re-exports the names the old single module ``bnbook.experiments``
had, so ``from bnbook.experiments import X`` keeps working for now; new code imports ``X``
from its home module.
"""

from bnbook.data.subsets import FashionMNISTSubset, brightness_shift, prepare_fashion_mnist
from bnbook.diagnostics import (BatchNormHealthReport, HealthIssue, batch_statistics_spread,
                                batchnorm_input_shift, batchnorm_modules, check_batchnorm_health,
                                eval_mode, freeze_batchnorm, recalibrate_batchnorm)
from bnbook.experiments.practice import (EXPERIMENTS, FINETUNE_VARIANTS, run_batch_size,
                                         run_depth_init, run_dropout, run_finetune,
                                         run_lr_tolerance, run_placement)
from bnbook.experiments.practice_cli import main
from bnbook.models import NORMS, PLACEMENTS, Standardise, make_mlp
from bnbook.training import TrainResult, evaluate_accuracy, train_classifier

__all__ = [
    "NORMS", "PLACEMENTS", "FashionMNISTSubset", "prepare_fashion_mnist",
    "brightness_shift", "Standardise", "make_mlp",
    "batchnorm_modules", "TrainResult", "train_classifier", "evaluate_accuracy", "eval_mode",
    "batch_statistics_spread", "batchnorm_input_shift", "recalibrate_batchnorm",
    "freeze_batchnorm", "HealthIssue", "BatchNormHealthReport", "check_batchnorm_health",
    "run_placement", "run_batch_size", "run_lr_tolerance", "run_dropout", "run_finetune",
    "run_depth_init", "FINETUNE_VARIANTS", "EXPERIMENTS", "main",
]
