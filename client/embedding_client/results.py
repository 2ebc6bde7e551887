"""What the client returns: vectors as float32 numpy arrays, one row per item, with the model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Embeddings:
    """``vectors`` is ``(items, dimension)`` float32, in the order of the inputs; each row is
    unit length, so a dot product is a cosine. An empty input gives a ``(0, 0)`` array."""

    vectors: np.ndarray
    model: str

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass(frozen=True)
class VideoEmbeddings(Embeddings):
    """One row per embedded frame. ``frames`` are frame numbers in the video (for a list of
    frames, positions in it); ``timestamps`` are seconds into the video (``None`` where the
    server cannot know them: a list of frames); ``fps`` is the video's frame rate if decoded."""

    frames: list[int] = field(default_factory=list)
    timestamps: list[float | None] = field(default_factory=list)
    fps: float | None = None


@dataclass(frozen=True)
class RankedCandidate:
    """``index`` is the candidate's position in the request; ``probability`` is ``None`` when
    the server scores by cosine only (README of the server, "Ranking")."""

    index: int
    cosine: float
    probability: float | None


@dataclass(frozen=True)
class Ranking:
    """The candidates best first (at most ``top_k`` of them)."""

    model: str
    scoring: str
    results: list[RankedCandidate]
