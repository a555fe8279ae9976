"""bnbook: the library behind the book *Batch Normalization, derived, built and tested*.

One module per idea; the chapter that builds or uses each one is in brackets. The folders
show three floors, and arrows point one way, down: the experiments and the website's tools
-> the shared machinery -> the layer (``tests/test_layering.py`` holds the contract).

The layer, in NumPy and PyTorch
* :mod:`bnbook.numpy_norms` - batch norm in plain NumPy: forward, staged and closed-form
  backward (chapters 2 and 3), the eval-mode affine map, and the ``BatchNorm`` layer that keeps
  parameters, running statistics and train/eval mode (chapter 4); layer, instance and group
  norm as the same closed form over other axes (``numpy_norms.shared``), RMS norm, and the
  index sets of each method;
* :mod:`bnbook.numpy_fast` - the same forward and backward as cache-blocked kernels, tested
  against :mod:`bnbook.numpy_norms` (Appendix B counts their passes over memory);
* :mod:`bnbook.folding` - folding eval-mode BN into the Linear/Conv layer before it (chapter 4);
* :mod:`bnbook.gradcheck` - finite differences and the book's relative error (chapter 3);
* :mod:`bnbook.torch_bn` - a ``torch.autograd.Function`` on the book's backward (chapter 5);
* :mod:`bnbook.torch_norms` - batch renormalisation, ghost batch norm and weight-standardised
  convolution as PyTorch modules (chapter 8);
* :mod:`bnbook.distributed` - synchronised batch statistics over processes (chapter 5).

The shared machinery
* :mod:`bnbook.data` - CIFAR-10 and Fashion-MNIST: provisioning (``make data``), checksums,
  safe reading; :mod:`bnbook.data.subsets` - seeded subsets of both as tensors;
* :mod:`bnbook.models` - every network the book trains, one module each:
  :mod:`~bnbook.models.mlp`, the Fashion-MNIST MLP (chapters 4 and 6);
  :mod:`~bnbook.models.keras_cifar_cnn`, the Keras CIFAR-10 CNN (chapter 7);
  :mod:`~bnbook.models.small_cnn`, its narrow version with a choice of normalisation
  (chapters 8 and 9); :mod:`~bnbook.models.summaries`, parameter counts, MACs and FLOPs;
* :mod:`bnbook.training` - the one training loop, ``fit`` (a per-step callback records what
  each experiment needs), and the MLP experiments' ``train_classifier``;
* :mod:`bnbook.diagnostics` - batch norm diagnostics and repairs: batch statistics noise,
  variance shift, recalibration, freezing, the health check (chapters 4, 6 and 7);
* :mod:`bnbook.verify` - the device x dtype comparison against PyTorch, and planted-bug
  reference layers (chapter 5);
* :mod:`bnbook.checks` - checkers for the exercises in which the reader writes the layer
  (each says what is wrong and where, with the likely mistake and the chapter's equation as
  hints on request; they run without torch);
* :mod:`bnbook.plots` - every figure helper; :mod:`bnbook.widgets` - the explorers;
* :mod:`bnbook.notebook` - the one set-up call every chapter makes, the glue helpers that
  keep plumbing out of the visible cells, and the batch-norm case builder ``make_case`` shared
  by the chapters and the tests;
* :mod:`bnbook.provenance` - what every result records, collected in one place;
* :mod:`bnbook.results` - the one result schema: ``write_result`` (validated, atomic),
  ``read_result``, table helpers; :mod:`bnbook.results.rerun` - ``python -m bnbook.results
  rerun`` (``make results``), old module names in recorded commands mapped to today's;
  :mod:`bnbook.results.migration` - the one migration of the stored results into today's
  provenance (``python -m bnbook.results migrate``);
* :mod:`bnbook.cli` - what every command line shares: one-line errors with exit 2, argument
  types, ``--allow-unknown-data``.

The experiments, one folder per chapter (:mod:`bnbook.experiments`)
* :mod:`bnbook.experiments.motivation` - the motivation experiments (chapter 1);
* :mod:`bnbook.experiments.practice` - chapter 6's seeded runs,
  ``python -m bnbook.experiments.practice``;
* :mod:`bnbook.experiments.cifar` - the CIFAR-10 experiment (chapter 7): its settings,
  augmentation, checkpoints, run record, trainer, command line
  (``python -m bnbook.experiments.cifar``), report, ablations and speed tables;
* :mod:`bnbook.experiments.norms` - other normalisations (chapter 8): the statistics-set
  figure, the batch-size sweep (and at each method's own learning rate), the sequence models,
  and instance norm and style;
* :mod:`bnbook.experiments.why` - why batch norm works (chapter 9): Figure 1 on real images,
  noisy BN, the ICS measure, the loss landscape, scale invariance, their controls and verdicts;
* :mod:`bnbook.experiments.gan` - a small DCGAN on Fashion-MNIST with and without batch norm,
  ``python -m bnbook.experiments.gan``;
* :mod:`bnbook.experiments.runner` - the one partial -> resume -> provenance -> write sequence
  the experiments' command lines share;
* :mod:`bnbook.experiments.gpu_results` - on a lent GPU, in one run: chapters 5 and 8's
  verification, chapter 7's epoch times and 50-epoch fp32 pair, and the chapters' tables of
  those stored results (``make gpu-results``).

The website's tools (:mod:`bnbook.site`)
* :mod:`bnbook.site.numbering`, :mod:`bnbook.site.html` - Sphinx extensions of the build
  (appendix numbering; no thebe scripts or stored widget state on the pages); ``site/static/``
  - the site's stylesheet and icon;
* :mod:`bnbook.site.vendor` - MathJax and the widget manager from pinned, checksummed npm
  tarballs;
* :mod:`bnbook.site.check` - every page in headless Chromium (``make site-test``);
  :mod:`bnbook.site.page_checks` - the checks it runs inside each page;
  :mod:`bnbook.site.selftest` - the planted bugs it must catch first;
* :mod:`bnbook.site.myst_to_markdown` - MyST to plain Jupyter Markdown, numbered as the website
  numbers; :mod:`bnbook.site.jupyter_edition` - the Jupyter edition that ``make lab`` opens
  (and the student edition's cells); :mod:`bnbook.site.student` - the student edition of the
  chapters, without solutions (``make student``); :mod:`bnbook.site.lab_check` - every edition
  in JupyterLab in headless Chromium (``make lab-test``);
* :mod:`bnbook.site.lite` - the browser edition (JupyterLite with the Pyodide kernel, files checked
  against the Pyodide lock); :mod:`bnbook.site.lite_files` - its notebook copies, the book's wheel
  and the start page (``lite_start.html``); :mod:`bnbook.site.lite_check` - it, in headless
  Chromium (``make lite-test``).
"""

__version__ = "0.1.0"
