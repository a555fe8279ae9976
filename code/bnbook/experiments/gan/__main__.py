"""``python -m bnbook.experiments.gan ...``: the DCGAN experiment (see
:mod:`bnbook.experiments.gan.cli`)."""

import sys

from bnbook.experiments.gan.cli import main

sys.exit(main())
