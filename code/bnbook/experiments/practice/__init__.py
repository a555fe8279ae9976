"""Chapter 6's experiments on Fashion-MNIST.

* :mod:`bnbook.experiments.practice.runs` - the seeded runners (``run_placement``,
  ``run_batch_size``, ...), built from :mod:`bnbook.data.subsets`, :mod:`bnbook.models`,
  :mod:`bnbook.training` and :mod:`bnbook.diagnostics`;
* :mod:`bnbook.experiments.practice.cli` - their command line,
  ``python -m bnbook.experiments.practice``, which writes ``data/results/practice/*.json``.
"""
