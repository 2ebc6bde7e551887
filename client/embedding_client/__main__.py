"""``python -m embedding_client``: the command line of :mod:`embedding_client.cli`."""

from embedding_client.cli import main

raise SystemExit(main())
