"""Serialise embedding vectors in the requested ``encoding_format``."""

from __future__ import annotations

import base64
from typing import Literal, Union

import numpy as np
import orjson

EncodingFormat = Literal["float", "base64"]
Embedding = Union[np.ndarray, str, list[str]]


def _as_base64(vector: np.ndarray) -> str:
    """A vector as base64 of its little-endian float32 bytes (the OpenAI convention)."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def encode_embedding(vectors: np.ndarray, *, flat: bool, encoding_format: EncodingFormat) -> Embedding:
    """``vectors`` is ``(N, D)``; ``flat`` returns the single row instead of a list of rows."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if encoding_format == "base64":
        encoded = [_as_base64(row) for row in vectors]
        return encoded[0] if flat else encoded
    return vectors[0] if flat else vectors


def embedding_body(embedding: Embedding) -> bytes:
    """The JSON response body; orjson writes numpy float32 arrays directly, and fast."""
    return orjson.dumps({"embedding": embedding}, option=orjson.OPT_SERIALIZE_NUMPY)


def openai_embeddings_body(vectors: np.ndarray, encoding_format: EncodingFormat, model: str, tokens: int) -> bytes:
    """OpenAI's embeddings response: a list of ``embedding`` objects, the model, the usage."""
    rows = encode_embedding(vectors, flat=False, encoding_format=encoding_format)
    return orjson.dumps({
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": row} for index, row in enumerate(rows)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }, option=orjson.OPT_SERIALIZE_NUMPY)


def frames_body(vectors: np.ndarray, frames: list[int], timestamps: list[float | None],
                fps: float | None, *, model: str, encoding_format: EncodingFormat) -> bytes:
    """``POST /embeddings/frames``'s answer: the rows ``POST /embeddings`` gives, and per row
    its frame number and time in seconds, with the video's frame rate."""
    return orjson.dumps({
        "model": model,
        "embedding": encode_embedding(vectors, flat=False, encoding_format=encoding_format),
        "frames": frames,
        "timestamps": timestamps,
        "fps": fps,
    }, option=orjson.OPT_SERIALIZE_NUMPY)
