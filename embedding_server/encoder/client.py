"""The entry service's view of the Encoder: typed calls and transport errors mapped to HTTP."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp
import numpy as np
from bentoml.exceptions import BentoMLException, ServiceUnavailable

from embedding_server.http_api.errors import ENCODER_OVERLOADED, ApiError, ModelNotInitialized
from embedding_server.http_api.schemas import ModelInfo

T = TypeVar("T")
TIMED_OUT = "Timed out waiting for the encoder"


class EncoderConnection:
    """Wraps ``bentoml.depends(Encoder).to_async``.

    Until the Encoder process is up its socket refuses connections: that is "not
    initialized" (503). Load shedding by the Encoder's batcher is also a 503, and a call that
    outlives the traffic timeout a 504; anything else is a real error and propagates.

    The Encoder's HTTP server closes keep-alive connections idle for 5 s while the client
    pool keeps them for 15 s, so a call can meet a connection that is just closing and fail
    before it ran: the server disconnects, or writing a large body meets a closed socket
    ("Can not write request body", broken pipe). Such a call is sent once more (encoding is
    idempotent).
    """

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder

    async def encode_text(self, texts: list[str]) -> np.ndarray:
        return await self._call(self._encoder.to_async.encode_text, texts)

    async def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return await self._call(self._encoder.to_async.encode_images, pixels)

    async def count_tokens(self, texts: list[str]) -> np.ndarray:
        return await self._call(self._encoder.to_async.count_tokens, texts)

    async def info(self) -> ModelInfo:
        return ModelInfo.model_validate(await self._call(self._encoder.to_async.info))

    @staticmethod
    async def _call(method: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            try:
                return await method(*args)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                return await method(*args)
        except ServiceUnavailable:
            raise ApiError(503, ENCODER_OVERLOADED) from None
        except (aiohttp.ClientConnectionError, ConnectionError, FileNotFoundError):
            raise ModelNotInitialized() from None
        except asyncio.TimeoutError:
            raise ApiError(504, TIMED_OUT) from None
        except BentoMLException as error:
            if error.error_code == HTTPStatus.GATEWAY_TIMEOUT:  # the Encoder's traffic time-out
                raise ApiError(504, TIMED_OUT) from None
            raise
