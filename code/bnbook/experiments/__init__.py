"""The book's experiments: one folder per chapter, each with its runs, command line, report
and figures. They import the shared machinery (:mod:`bnbook.data`, :mod:`bnbook.models`,
:mod:`bnbook.training`, :mod:`bnbook.diagnostics`, :mod:`bnbook.results`, ...) and the layer;
nothing below imports them.

* :mod:`bnbook.experiments.motivation` - chapter 1's small experiments (covariate shift);
* :mod:`bnbook.experiments.practice` - chapter 6's seeded Fashion-MNIST runs,
  ``python -m bnbook.experiments.practice`` (``data/results/practice/``);
* :mod:`bnbook.experiments.cifar` - chapter 7's CIFAR-10 trainer, its command line
  ``python -m bnbook.experiments.cifar``, report, ablations and speed tables
  (``data/results/cifar10/``);
* :mod:`bnbook.experiments.norms` - chapter 8's batch-size sweep
  (``python -m bnbook.experiments.norms.sweep``), the sequence models
  (``python -m bnbook.experiments.norms.sequences``) and the statistics-set figure
  (``data/results/norms/``);
* :mod:`bnbook.experiments.why` - chapter 9's explanations tested,
  ``python -m bnbook.experiments.why.run_figure1`` (and ``run_noisy_cnn``, ``run_landscape``,
  ``run_scale``) (``data/results/why/``);
* :mod:`bnbook.experiments.gan` - a small DCGAN on Fashion-MNIST, with and without batch norm,
  ``python -m bnbook.experiments.gan`` (``data/results/gan/``);
* :mod:`bnbook.experiments.runner` - the one partial -> resume -> provenance -> write sequence
  of practice, the sweeps, sequences and the why experiments;
* :mod:`bnbook.experiments.gpu_results` - on a lent GPU, chapters 5, 7 and 8's GPU results,
  ``python -m bnbook.experiments.gpu_results`` (``make gpu-results``).
"""
