"""One item that a model cannot embed must not fail the others batched with it.

The Encoder's adaptive batcher merges the calls of several entry-service workers (and each
call already holds several requests), and a batch either returns a row per item or fails as a
whole, for every caller. So the Encoder embeds a failing batch again in halves, down to the
single items that fail alone, and returns those as rows of NaN (a model's unit vectors never
hold one). The entry service answers a request that got such a row 422, naming the item; the
other requests get their vectors.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

import numpy as np

from embedding_server.http_api.errors import InvalidInput

logger = logging.getLogger(__name__)
Batch = TypeVar("Batch", list[str], np.ndarray)


def embed_isolating(encode: Callable[[Batch], np.ndarray], batch: Batch, dimension: int) -> np.ndarray:
    """``encode(batch)``; where it raises, the items that fail alone become NaN rows."""
    try:
        return encode(batch)
    except Exception:
        if len(batch) == 1:
            logger.exception("the model failed on one item; it is answered as not embeddable")
            return np.full((1, dimension), np.nan, dtype=np.float32)
    middle = len(batch) // 2
    return np.concatenate([embed_isolating(encode, batch[:middle], dimension),
                           embed_isolating(encode, batch[middle:], dimension)])


def check_embedded(rows: np.ndarray, name_of: Callable[[int], str]) -> np.ndarray:
    """``rows`` when every item was embedded; else 422 naming the first failed item
    (``name_of(i)`` is the client's name for item ``i``, such as ``text[3]``)."""
    failed = np.flatnonzero(np.isnan(rows).any(axis=1))
    if failed.size:
        raise InvalidInput(f"{name_of(int(failed[0]))} could not be embedded by the model")
    return rows
