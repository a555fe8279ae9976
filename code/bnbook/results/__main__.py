"""``python -m bnbook.results rerun <file> [--dry-run]`` and ``python -m bnbook.results migrate``
(:func:`bnbook.results.main`)."""

import sys

from bnbook.results import main

sys.exit(main())
