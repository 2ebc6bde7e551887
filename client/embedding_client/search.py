"""Searching an index with a text or an image."""

from __future__ import annotations

from pathlib import Path

from embedding_client.client import Client
from embedding_client.folder import VIDEO
from embedding_client.inputs import ImageLike
from embedding_client.store import FrameStore, Match

__all__ = ["Match", "search", "time_label"]


def search(client: Client, db: str | Path, *, text: str | None = None, image: ImageLike | None = None,
           top_k: int = 10) -> list[Match]:
    """The ``top_k`` frames of the index at ``db`` nearest to ``text`` or to ``image`` (exactly
    one of them), best first.

    Raises :class:`~embedding_client.index_errors.NoIndexError` and
    :class:`~embedding_client.index_errors.ModelMismatchError` before embedding the query."""
    if (text is None) == (image is None):
        raise ValueError("search takes a text or an image, not both or neither")
    store = FrameStore.open(db, client.model())
    query = client.embed_texts([text]) if text is not None else client.embed_images([image])
    return store.nearest(query.vectors[0], top_k)


def time_label(match: Match) -> str:
    """Where in its video a frame is (``"12.0 s"``); empty for an image."""
    if match.kind != VIDEO or match.timestamp is None:
        return ""
    return f"{match.timestamp:.1f} s"
