"""``python -m bnbook.experiments.cifar ...``: chapter 7's CIFAR-10 trainer (see
:mod:`bnbook.experiments.cifar.cli`)."""

import sys

from bnbook.experiments.cifar.cli import main

sys.exit(main())
