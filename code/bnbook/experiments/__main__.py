"""``python -m bnbook.experiments ...``: chapter 6's experiments (see
:mod:`bnbook.experiments.practice_cli`)."""

import sys

from bnbook.experiments.practice_cli import main

sys.exit(main())
