"""``python -m importer``: the import command line (:mod:`importer.cli`)."""

import sys

from importer.cli import main

sys.exit(main())
