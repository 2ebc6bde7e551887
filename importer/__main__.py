"""``python -m importer``: the import command line (:mod:`importer.cli`)."""

import sys

from importer.cli import main

if __name__ == "__main__":
    sys.exit(main())
