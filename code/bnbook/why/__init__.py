"""Why does batch norm work? The measurements behind the "why" chapter.

One module per idea (the chapter imports them; arrows point one way, to
:mod:`bnbook.covariate_shift`, :mod:`bnbook.training` and :mod:`bnbook.small_cnn`):

* :mod:`bnbook.why.figure1` - the paper's Figure 1 on real images (Fashion-MNIST; MNIST as
  an option), with a third, noisy-BN network;
* :mod:`bnbook.why.noise` - noisy batch norm (Santurkar et al., 2018) and how far the
  distributions of layer inputs move;
* :mod:`bnbook.why.cnn` - training the narrow chapter-7 CNN on a CIFAR-10 subset with hooks
  before and after every step;
* :mod:`bnbook.why.landscape` - the loss and the gradient along the gradient direction
  ("loss landscape", "gradient predictiveness", effective beta-smoothness);
* :mod:`bnbook.why.ics` - Santurkar et al.'s measure of internal covariate shift, the change
  of a layer's gradient caused by the updates of the layers before it;
* :mod:`bnbook.why.scale` - scale invariance of BN, the gradient's 1/a law, and the effective
  learning rate with and without weight decay;
* :mod:`bnbook.why.sphere` - the equilibrium angle of a scale-invariant weight under SGD with
  and without momentum, simulated;
* :mod:`bnbook.why.figures` - the chapter's figures; :mod:`bnbook.why.checks` - the
  checkers of its coding exercises.

The stored results come from ``python -m bnbook.experiments.why_figure1`` (and
``why_noisy_cnn``, ``why_landscape``, ``why_scale``), written to ``data/results/why/``.
"""
