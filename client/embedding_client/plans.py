"""Each intent as a plan: the HTTP calls it takes and how their answers combine.

The sync and the async client execute the same plans, so what a method sends and how it reads
the answers is written once. A call's body is built only when it is sent, so a bulk job over a
million files holds only the bodies in flight.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

import numpy as np

from embedding_client.inputs import ImageLike, ImageUrl, VideoLike, image_input, image_uri, is_pil_image, video_input
from embedding_client.results import Embeddings, RankedCandidate, Ranking, VideoEmbeddings

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Call(Generic[P]):
    """``POST path`` with ``body()``; ``parse`` reads the JSON answer; ``items`` counts for the
    progress bar."""

    path: str
    body: Callable[[], dict[str, Any]]
    parse: Callable[[dict[str, Any]], P]
    items: int = 1


@dataclass(frozen=True)
class Plan(Generic[P, R]):
    calls: list[Call[P]]
    combine: Callable[[list[P]], R]

    @property
    def items(self) -> int:
        return sum(call.items for call in self.calls)


def decode_vector(encoded: str) -> np.ndarray:
    """A base64 vector (little-endian float32, the server's ``encoding_format: base64``)."""
    return np.frombuffer(base64.b64decode(encoded), dtype="<f4").astype(np.float32)


def _matrix(rows: Sequence[str]) -> np.ndarray:
    return np.stack([decode_vector(row) for row in rows]) if rows else np.empty((0, 0), np.float32)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, not {size}")
    return [items[start:start + size] for start in range(0, len(items), size)]


def _stacked(model: str) -> Callable[[list[np.ndarray]], Embeddings]:
    def combine(parts: list[np.ndarray]) -> Embeddings:
        return Embeddings(np.concatenate(parts) if parts else np.empty((0, 0), np.float32), model)
    return combine


def _as_list(items: Any) -> Sequence[Any]:
    """A lone item (a string, which is not a sequence of characters here, bytes, a path, a PIL
    image, an ``ImageUrl``) is a list of one; any other iterable becomes a list."""
    if isinstance(items, (str, bytes, bytearray, os.PathLike, ImageUrl)) or is_pil_image(items):
        return [items]
    return items if isinstance(items, Sequence) else list(items)


def texts(model: str, items: Sequence[str] | str, batch_size: int, instruction: str | None) -> Plan:
    """``POST /embeddings`` with ``batch_size`` texts per request."""
    def call(chunk: Sequence[str]) -> Call[np.ndarray]:
        text_input: dict[str, Any] = {"type": "text", "text": list(chunk)}
        if instruction is not None:
            text_input["instruction"] = instruction
        return Call("/embeddings", lambda: {"model": model, "input": text_input, "encoding_format": "base64"},
                    lambda answer: _matrix(answer["embedding"]), len(chunk))

    return Plan([call(chunk) for chunk in _chunks(_as_list(items), batch_size)], _stacked(model))


def images(model: str, items: Sequence[ImageLike] | str, batch_size: int) -> Plan:
    """``POST /v1/embeddings`` with ``modality: image`` and ``batch_size`` images per request."""
    def call(chunk: Sequence[ImageLike]) -> Call[np.ndarray]:
        def body() -> dict[str, Any]:
            return {"model": model, "input": [image_uri(image) for image in chunk], "modality": "image",
                    "encoding_format": "base64"}

        def parse(answer: dict[str, Any]) -> np.ndarray:
            rows = sorted(answer["data"], key=lambda row: row["index"])
            return _matrix([row["embedding"] for row in rows])

        return Call("/v1/embeddings", body, parse, len(chunk))

    return Plan([call(chunk) for chunk in _chunks(_as_list(items), batch_size)], _stacked(model))


def video(model: str, item: VideoLike, config: dict[str, Any]) -> Plan:
    """``POST /embeddings/frames``: the frames' vectors with their frame numbers and times."""
    def parse(answer: dict[str, Any]) -> VideoEmbeddings:
        return VideoEmbeddings(_matrix(answer["embedding"]), answer["model"], frames=list(answer["frames"]),
                               timestamps=list(answer["timestamps"]), fps=answer["fps"])

    call = Call("/embeddings/frames", lambda: {"model": model, "input": video_input(item, config),
                                               "encoding_format": "base64"}, parse)
    return Plan([call], lambda parts: parts[0])


def _query(query: str | ImageLike, instruction: str | None) -> dict[str, Any]:
    if isinstance(query, str):
        text: dict[str, Any] = {"type": "text", "text": query}
        if instruction is not None:
            text["instruction"] = instruction
        return text
    if instruction is not None:
        raise ValueError("instruction applies to a text query only")
    return image_input(query)


def rank(model: str, query: str | ImageLike, candidates: Sequence[str | ImageLike], top_k: int | None,
         instruction: str | None) -> Plan:
    """``POST /rank``: strings are texts; anything else is an image (a URL as ``ImageUrl``)."""
    def body() -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model, "query": _query(query, instruction),
            "candidates": [item if isinstance(item, str) else image_input(item) for item in candidates]}
        if top_k is not None:
            request["top_k"] = top_k
        return request

    def parse(answer: dict[str, Any]) -> Ranking:
        return Ranking(answer["model"], answer["scoring"],
                       [RankedCandidate(row["index"], row["cosine"], row["probability"]) for row in answer["results"]])

    return Plan([Call("/rank", body, parse, len(candidates))], lambda parts: parts[0])
