"""bnbook: the library behind the book *Batch Normalization, derived, built and tested*.

One module per idea; the chapter that builds or uses each one is in brackets.

* :mod:`bnbook.numpy_norms` - batch norm forward/backward from scratch in NumPy
  (chapters 2 and 3), and the re-exported layer class :class:`bnbook.layers.BatchNorm`;
* :mod:`bnbook.layers` - the NumPy ``BatchNorm`` layer: parameters, running statistics,
  train/eval bookkeeping (chapter 4);
* :mod:`bnbook.folding` - inference-time BN as an affine map, folded into Linear/Conv (chapter 4);
* :mod:`bnbook.gradcheck` - finite differences and the book's relative error (chapter 3);
* :mod:`bnbook.torch_bn` - a ``torch.autograd.Function`` on the book's backward (chapter 5);
* :mod:`bnbook.verify` - the device x dtype comparison against PyTorch (chapter 5);
* :mod:`bnbook.distributed` - synchronised batch statistics over processes (chapter 5);
* :mod:`bnbook.covariate_shift` - the motivation experiments (chapter 1);
* :mod:`bnbook.experiments` - small seeded Fashion-MNIST experiments (chapters 4 and 6);
* :mod:`bnbook.data` - CIFAR-10 and Fashion-MNIST loading, checksums, safe extraction;
* :mod:`bnbook.models`, :mod:`bnbook.train`, :mod:`bnbook.cifar` - the Keras CIFAR-10 CNN,
  its training loop and command line (chapter 7);
* :mod:`bnbook.results` - loading and plotting training histories (chapter 7);
* :mod:`bnbook.plots` - shared plotting helpers;
* :mod:`bnbook.provenance` - result files with provenance, written atomically.
"""

__version__ = "0.1.0"
