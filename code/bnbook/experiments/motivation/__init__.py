"""Chapter 1's small experiments: :mod:`bnbook.experiments.motivation.covariate_shift` (the
condition number of a shifted input, the flower data's minibatch order, the saturating sigmoid
network). Chapter 9 reuses its networks."""
