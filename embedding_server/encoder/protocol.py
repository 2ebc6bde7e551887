"""The Encoder service as the entry service sees it."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from embedding_server.http_api.schemas import ModelInfo


class EncoderClient(Protocol):
    """The Encoder service as the entry service sees it."""

    async def encode_text(self, texts: list[str]) -> np.ndarray: ...

    async def encode_images(self, pixels: np.ndarray) -> np.ndarray: ...

    async def count_tokens(self, texts: list[str]) -> np.ndarray:
        """The tokens the model sees of each text (an integer per text)."""

    async def info(self) -> ModelInfo: ...
