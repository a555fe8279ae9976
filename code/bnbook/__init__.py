"""bnbook: the library behind the book *Batch Normalization, derived, built and tested*.

One module per idea; the chapter that builds or uses each one is in brackets.

* :mod:`bnbook.numpy_norms` - batch norm in plain NumPy: forward, staged and closed-form
  backward (chapters 2 and 3), the eval-mode affine map, and the ``BatchNorm`` layer that keeps
  parameters, running statistics and train/eval mode (chapter 4);
* :mod:`bnbook.numpy_fast` - the same forward and backward as cache-blocked kernels, tested
  against :mod:`bnbook.numpy_norms` (chapter 3 counts their passes over memory);
* :mod:`bnbook.folding` - folding eval-mode BN into the Linear/Conv layer before it (chapter 4);
* :mod:`bnbook.gradcheck` - finite differences and the book's relative error (chapter 3);
* :mod:`bnbook.torch_bn` - a ``torch.autograd.Function`` on the book's backward (chapter 5);
* :mod:`bnbook.verify` - the device x dtype comparison against PyTorch (chapter 5);
* :mod:`bnbook.distributed` - synchronised batch statistics over processes (chapter 5);
* :mod:`bnbook.covariate_shift` - the motivation experiments (chapter 1);
* :mod:`bnbook.data` - CIFAR-10 and Fashion-MNIST loading, checksums, safe extraction;
  :mod:`bnbook.data.subsets` - seeded Fashion-MNIST subsets as tensors (chapters 4 and 6);
* :mod:`bnbook.models` - every network the book trains: the Fashion-MNIST MLP (chapters 4
  and 6) and the Keras CIFAR-10 CNN (chapter 7);
* :mod:`bnbook.training` - the SGD loop and accuracy of the MLP experiments (chapters 4, 6);
* :mod:`bnbook.diagnostics` - batch norm diagnostics and repairs: batch statistics noise,
  variance shift, recalibration, freezing, the health check (chapters 4, 6 and 7);
* :mod:`bnbook.experiments` - runners and command lines for stored results:
  :mod:`bnbook.experiments.practice` (chapter 6, ``python -m bnbook.experiments``);
* :mod:`bnbook.train`, :mod:`bnbook.cifar` - the CIFAR-10 CNN's training loop and command
  line (chapter 7);
* :mod:`bnbook.results` - loading and plotting training histories (chapter 7);
* :mod:`bnbook.plots` - shared plotting helpers;
* :mod:`bnbook.provenance` - result files with provenance, written atomically.
"""

__version__ = "0.1.0"
