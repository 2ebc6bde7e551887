"""Shorter vectors for models trained with nested (Matryoshka) dimensions: the OpenAI API's
``dimensions``.

Such a model's vector begins with smaller embeddings of the same text: its first ``d``
components, normalised again, are the ``d``-dimensional embedding. Any other model's leading
components are not an embedding, so asking it for fewer dimensions is refused rather than
answered with vectors that only look right.
"""

from __future__ import annotations

import numpy as np

from embedding_server.http_api.errors import InvalidInput
from models.catalogue import CatalogueModel


def check_dimensions(model: CatalogueModel, dimensions: int | None, native: int) -> None:
    """400 (422 on the documented routes) unless ``model`` can answer ``dimensions``:
    ``None`` or its own dimension always, fewer down to its smallest nested one."""
    if dimensions is None or dimensions == native:
        return
    smallest = model.matryoshka_min_dimension
    if smallest is None:
        raise InvalidInput(f"dimensions: {model.id} gives {native}-dimensional vectors only; it was not trained "
                           "with nested (Matryoshka) dimensions, so shorter vectors would not be embeddings",
                           param="dimensions")
    if not smallest <= dimensions <= native:
        raise InvalidInput(f"dimensions: {model.id} gives vectors of {smallest} to {native} dimensions, "
                           f"not {dimensions}", param="dimensions")


def shortened(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first ``dimensions`` components of each unit vector, normalised again."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    leading = vectors[:, :dimensions]
    return leading / np.maximum(np.linalg.norm(leading, axis=1, keepdims=True), 1e-12)
