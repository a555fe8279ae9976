"""``python -m bnbook.experiments.practice ...``: chapter 6's experiments (see
:mod:`bnbook.experiments.practice.cli`)."""

import sys

from bnbook.experiments.practice.cli import main

sys.exit(main())
