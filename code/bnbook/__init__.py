"""bnbook: the library behind the book *Batch Normalization, derived, built and tested*.

One module per idea; the chapter that builds or uses each one is in brackets. Arrows point
one way: experiments -> training, models, data -> numpy_norms.

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
* :mod:`bnbook.verify` - the device x dtype comparison against PyTorch, and planted-bug
  reference layers (chapter 5);
* :mod:`bnbook.distributed` - synchronised batch statistics over processes (chapter 5).

Data, networks, training
* :mod:`bnbook.data` - CIFAR-10 and Fashion-MNIST: provisioning (``make data``), checksums,
  safe reading; :mod:`bnbook.data.subsets` - seeded subsets of both as tensors;
* :mod:`bnbook.models` - every network the book trains: the Fashion-MNIST MLP (chapters 4
  and 6) and the Keras CIFAR-10 CNN (chapter 7); :mod:`bnbook.small_cnn` - its narrow version
  with a choice of normalisation (chapter 8);
* :mod:`bnbook.training` - the one training loop, ``fit`` (a per-step callback records what
  each experiment needs), and the MLP experiments' ``train_classifier``;
* :mod:`bnbook.diagnostics` - batch norm diagnostics and repairs: batch statistics noise,
  variance shift, recalibration, freezing, the health check (chapters 4, 6 and 7);
* :mod:`bnbook.covariate_shift` - the motivation experiments (chapter 1).

The CIFAR-10 experiment (chapter 7)
* :mod:`bnbook.cifar_config` - a run's settings; :mod:`bnbook.cifar_augment` - its random
  order, shifts and flips as functions of (seed, epoch); :mod:`bnbook.checkpoints` - its
  checkpoint and resume; :mod:`bnbook.cifar_run` - its data, record and refusal to overwrite;
  :mod:`bnbook.train` - the trainer; :mod:`bnbook.cifar` - its command line;
  :mod:`bnbook.cifar_report` - the chapter's tables and statistics;
  :mod:`bnbook.cifar_ablation` - the ablation arms (shifts, dropout, logit BN);
  :mod:`bnbook.cifar_speed` - the speed benchmarks' tables.

Other normalisations, and why batch norm works (chapters 8 and 9)
* :mod:`bnbook.norm_plots` - which values each method averages over, drawn from the index sets;
* :mod:`bnbook.sequence_norms` - batch and layer norm in a sequence model with padding;
* :mod:`bnbook.why` - the explanations tested: Figure 1 on real images, noisy BN, the ICS
  measure, the loss landscape, scale invariance, and their verdicts.

Stored results, figures, exercises
* :mod:`bnbook.experiments` - runners and command lines for stored results:
  :mod:`bnbook.experiments.practice` (chapter 6, ``python -m bnbook.experiments``),
  ``norm_sweep`` and ``sequences`` (chapter 8), ``why_*`` (chapter 9);
* :mod:`bnbook.gpu_results` - on a lent GPU, in one run: chapters 5 and 8's verification,
  chapter 7's epoch times and 50-epoch fp32 pair, and the chapters' tables of those stored
  results (``make gpu-results``);
* :mod:`bnbook.provenance` - what every result records, collected in one place;
* :mod:`bnbook.results` - the one result schema: ``write_result`` (validated, atomic),
  ``read_result``, table helpers, ``python -m bnbook.results rerun`` (``make results``);
* :mod:`bnbook.result_migration` - the one migration of the stored results into today's
  provenance (``python -m bnbook.results migrate``);
* :mod:`bnbook.plots` - every figure helper;
* :mod:`bnbook.checks` - checkers for the exercises in which the reader writes the layer
  (each says what is wrong and where, with the likely mistake and the chapter's equation as
  hints on request; they run without torch);
* :mod:`bnbook.student` - the student edition of the chapters, without solutions
  (``make student``);
* :mod:`bnbook.notebook` - the one set-up call every chapter makes, and the glue helpers that
  keep plumbing out of the visible cells;
* :mod:`bnbook.cli` - what every command line shares: one-line errors with exit 2, argument
  types, ``--allow-unknown-data``.

The website's build and test
* :mod:`bnbook.book_numbering`, :mod:`bnbook.book_html` - Sphinx extensions of the build
  (appendix numbering; no thebe scripts or stored widget state on the pages);
* :mod:`bnbook.vendor` - MathJax and the widget manager from pinned, checksummed npm tarballs;
* :mod:`bnbook.site_test` - every page in headless Chromium (``make site-test``);
  :mod:`bnbook.site_page` - the checks it runs inside each page; :mod:`bnbook.site_selftest` -
  the planted bugs it must catch first; ``book_static/`` - the site's stylesheet and icon;
* :mod:`bnbook.myst_to_markdown` - MyST to plain Jupyter Markdown, numbered as the website
  numbers; :mod:`bnbook.jupyter_edition` - the Jupyter edition that ``make lab`` opens (and the
  student edition's cells); :mod:`bnbook.lab_test` - every edition in JupyterLab in headless
  Chromium (``make lab-test``);
* :mod:`bnbook.lite` - the browser edition (JupyterLite with the Pyodide kernel, files checked
  against the Pyodide lock); :mod:`bnbook.lite_files` - its notebook copies, the book's wheel and
  the start page (``lite_start.html``); :mod:`bnbook.lite_test` - it, in headless Chromium
  (``make lite-test``).
"""

__version__ = "0.1.0"
