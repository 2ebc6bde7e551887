"""``POST /rank``: one query against candidates, each candidate's cosine with the query and,
where the candidates are all of the other modality, the model's probability
(:mod:`embedding_server.scoring`), best first.

Texts and images embed through the pipeline (its limits, its fetching and decoding): the
candidates' texts in one Encoder call, their images a chunk ahead of the Encoder, the query
meanwhile.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedding_server.http_api.schemas import RankRequest, TextQuery
from embedding_server.media.blocking import all_or_error
from embedding_server.pipeline import EmbeddingPipeline
from embedding_server.scoring import COSINE_ONLY


async def _query_vector(pipeline: EmbeddingPipeline, request: RankRequest) -> np.ndarray:
    query = request.query
    if isinstance(query, TextQuery):
        return (await pipeline.text_vectors([query.text], lambda _: "query", query.instruction))[0]
    return (await pipeline.image_vectors([query], lambda _: "query"))[0]


async def _candidate_vectors(pipeline: EmbeddingPipeline, request: RankRequest, dimension: int) -> np.ndarray:
    """The candidates' vectors in their order; texts and images embed concurrently."""
    candidates = request.candidates
    texts = [position for position, item in enumerate(candidates) if isinstance(item, str)]
    images = [position for position, item in enumerate(candidates) if not isinstance(item, str)]
    calls = []
    if texts:
        calls.append(pipeline.text_vectors([candidates[at] for at in texts],
                                           lambda index: f"candidates[{texts[index]}]"))
    if images:
        calls.append(pipeline.image_vectors([candidates[at] for at in images],
                                            lambda index: f"candidates[{images[index]}]"))
    vectors = np.empty((len(candidates), dimension), dtype=np.float32)
    for positions, rows in zip([part for part in (texts, images) if part], await all_or_error(*calls)):
        vectors[positions] = rows
    return vectors


def _across_modalities(request: RankRequest) -> bool:
    """Every candidate is of the other modality than the query (image against texts, text
    against images): the pairs a contrastive model's scale and bias are trained on. Its
    probabilities of text-text or image-image pairs, or over candidates of both kinds (an image
    is far nearer another image than any text), would mean nothing."""
    text_query = isinstance(request.query, TextQuery)
    return all(isinstance(candidate, str) != text_query for candidate in request.candidates)


async def rank(pipeline: EmbeddingPipeline, request: RankRequest) -> dict[str, Any]:
    """The ``POST /rank`` answer."""
    pipeline.check_model(request.model)
    info = await pipeline.model_info()
    query, candidates = await all_or_error(_query_vector(pipeline, request),
                                           _candidate_vectors(pipeline, request, info.dimension))
    # Unit float32 vectors: a cosine may come out a rounding error beyond +-1.
    cosines = np.clip(candidates.astype(np.float64) @ query.astype(np.float64), -1.0, 1.0)
    scoring = pipeline.scoring if _across_modalities(request) else COSINE_ONLY
    probabilities = scoring.probabilities(cosines)
    order = np.argsort(-cosines, kind="stable")[:request.top_k]
    return {
        "model": pipeline.model.id,
        "scoring": scoring.kind,
        "logit_scale": scoring.logit_scale,
        "logit_bias": scoring.logit_bias,
        "results": [{"index": int(at), "cosine": float(cosines[at]),
                     "probability": None if probabilities is None else float(probabilities[at])}
                    for at in order],
    }
