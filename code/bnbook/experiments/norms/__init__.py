"""Chapter 8's experiments: other normalisations.

* :mod:`bnbook.experiments.norms.figures` - which values each method averages over, drawn from
  the index sets of :mod:`bnbook.numpy_norms.axes`;
* :mod:`bnbook.experiments.norms.sweep` - the batch-size sweep of the narrow CNN with each
  normalisation, ``python -m bnbook.experiments.norms.sweep``;
  :mod:`bnbook.experiments.norms.sweep_report` - its table and figure;
* :mod:`bnbook.experiments.norms.sequence_norms` - batch and layer norm in a sequence model
  with padding; :mod:`bnbook.experiments.norms.sequences` - its stored result,
  ``python -m bnbook.experiments.norms.sequences``;
* :mod:`bnbook.experiments.norms.lr_sweep` - Experiment 1 at each method's own learning rate
  (grid rule in :mod:`bnbook.experiments.norms.lr_grid`), staged and resumable,
  ``python -m bnbook.experiments.norms.lr_sweep``;
* :mod:`bnbook.experiments.norms.style` - what instance norm removes from an image (its
  per-channel mean and contrast, the "style") and a colour-dependent task;
  ``python -m bnbook.experiments.norms.style_runs`` stores it.
"""
