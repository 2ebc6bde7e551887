"""Why an index cannot be used, apart from :mod:`embedding_client.store` so that the command
line can tell these errors without importing LanceDB (not installed without the ``index`` extra)."""


class StoreError(Exception):
    """The index cannot be used as asked."""


class NoIndexError(StoreError):
    pass


class ModelMismatchError(StoreError):
    """The index was built with another model: vectors of two models are not comparable."""
