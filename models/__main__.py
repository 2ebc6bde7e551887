"""``python -m models``: the import command line (:mod:`importer.cli`), under the name the
README and the server's start-up errors give."""

import sys

from importer.cli import main

if __name__ == "__main__":
    sys.exit(main())
