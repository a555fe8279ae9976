"""Why does batch norm work? The measurements behind the "why" chapter.

One module per idea (the chapter imports them; arrows point one way, to
:mod:`bnbook.experiments.motivation.covariate_shift`, :mod:`bnbook.training` and :mod:`bnbook.models.small_cnn`):

* :mod:`bnbook.experiments.why.figure1` - the paper's Figure 1 on real images (Fashion-MNIST; MNIST as
  an option), with a third, noisy-BN network;
* :mod:`bnbook.experiments.why.noise` - noisy batch norm (Santurkar et al., 2018) and how far the
  distributions of layer inputs move;
* :mod:`bnbook.experiments.why.cnn` - training the narrow chapter-7 CNN on a CIFAR-10 subset with hooks
  before and after every step;
* :mod:`bnbook.experiments.why.landscape` - the loss and the gradient along the gradient direction
  ("loss landscape", "gradient predictiveness", effective beta-smoothness);
* :mod:`bnbook.experiments.why.ics` - Santurkar et al.'s measure of internal covariate shift, the change
  of a layer's gradient caused by the updates of the layers before it;
* :mod:`bnbook.experiments.why.scale` - scale invariance of BN, the gradient's 1/a law, and the effective
  learning rate with and without weight decay;
* :mod:`bnbook.experiments.why.sphere` - the equilibrium angle of a scale-invariant weight under SGD with
  and without momentum, simulated;
* :mod:`bnbook.experiments.why.figures` - the chapter's figures; :mod:`bnbook.experiments.why.checks` - the
  checkers of its coding exercises.

The controls the chapter's verdicts need (issue "Chapters 7 and 9"):

* :mod:`bnbook.experiments.why.noise_kinds` - drifting and per-activation noise beside the
  per-channel jitter; :mod:`bnbook.experiments.why.figure1_arms` and
  :mod:`bnbook.experiments.why.cnn_runs` - the sigmoid network's and the CNN's noise arms with
  the noise-free training loss;
* :mod:`bnbook.experiments.why.ics_seeds` - the ICS measure over seeds;
* :mod:`bnbook.experiments.why.hessian` - sharpness (lambda_max, lambda_min, g'Hg/|g|^2) by
  Hessian-vector products (Lanczos; power iteration for comparison);
* :mod:`bnbook.experiments.why.weightnorm` - weight normalisation with and without batch
  statistics, the control for the step-size story;
* :mod:`bnbook.experiments.why.filter_angles` - the equilibrium angle measured on a network's
  filters; :mod:`bnbook.experiments.why.decay` - the faster learning-rate decay of chapter 6;
* :mod:`bnbook.experiments.why.report_controls` - their summaries.

The stored results come from ``python -m bnbook.experiments.why.run_figure1`` (and
``run_noisy_cnn``, ``run_landscape``, ``run_scale``; the controls from ``run_figure1_noise``,
``run_cnn_noise``, ``run_ics_seeds``, ``run_hessian``, ``run_weightnorm``,
``run_filter_angles``, ``run_decay``), written to ``data/results/why/``.
"""
