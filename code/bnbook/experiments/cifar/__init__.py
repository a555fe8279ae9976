"""Chapter 7's CIFAR-10 experiment: the Keras example network trained with and without batch norm.

* :mod:`~bnbook.experiments.cifar.config` - a run's settings (:class:`TrainConfig`);
* :mod:`~bnbook.experiments.cifar.augment` - its random order, shifts and flips as functions of
  (seed, epoch);
* :mod:`~bnbook.experiments.cifar.checkpoints` - its checkpoint and resume;
* :mod:`~bnbook.experiments.cifar.run` - its data, record and refusal to overwrite;
* :mod:`~bnbook.experiments.cifar.train` - the trainer, one :func:`bnbook.training.fit` per epoch;
* :mod:`~bnbook.experiments.cifar.cli` - its command line, ``python -m bnbook.experiments.cifar``;
* :mod:`~bnbook.experiments.cifar.report` - the chapter's tables and statistics;
* :mod:`~bnbook.experiments.cifar.ablation` - the ablation arms (shifts, dropout, logit BN);
* :mod:`~bnbook.experiments.cifar.speed` - the speed benchmarks' tables.

A run's config travels only inside this folder: cli -> train -> run, checkpoints, augment.
"""
