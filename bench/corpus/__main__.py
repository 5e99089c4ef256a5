"""``python -m bench.corpus``: build (and optionally check) an evaluation corpus."""

import sys

from bench.corpus.cli import main

sys.exit(main())
