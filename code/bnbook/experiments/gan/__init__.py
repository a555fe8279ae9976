"""A small DCGAN on Fashion-MNIST with and without batch norm (the seeds' claim that batch
norm "makes DCGANs work" and prevents mode collapse).

* :mod:`bnbook.experiments.gan.networks` - the generator and discriminator, with batch, layer
  or no normalisation where Radford et al. put batch norm, and one training epoch;
* :mod:`bnbook.experiments.gan.scores` - the scores of generated images under a Fashion-MNIST
  classifier: class histogram, entropy, classes covered, confidence, Fréchet distance;
* :mod:`bnbook.experiments.gan.cli` - ``python -m bnbook.experiments.gan``, resumable
  (``data/results/gan/``).
"""
