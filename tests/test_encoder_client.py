"""How the entry service maps the Encoder's transport outcomes to HTTP answers."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from types import SimpleNamespace

import aiohttp
import numpy as np
import pytest
from bentoml.exceptions import BentoMLException, ServiceUnavailable

from embedding_server.encoder.client import TIMED_OUT, EncoderConnection
from embedding_server.http_api.errors import ENCODER_OVERLOADED, MODEL_NOT_INITIALIZED, ApiError


def connection(*outcomes: object) -> tuple[EncoderConnection, list[list[str]]]:
    """An EncoderConnection whose encode_text calls meet ``outcomes`` in turn (an exception is
    raised, anything else returned); also the list of calls made."""
    calls: list[list[str]] = []
    remaining = list(outcomes)

    async def encode_text(texts: list[str]) -> object:
        calls.append(texts)
        outcome = remaining.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return EncoderConnection(SimpleNamespace(to_async=SimpleNamespace(encode_text=encode_text))), calls


@pytest.mark.parametrize(
    "failure",
    [aiohttp.ServerDisconnectedError(),
     aiohttp.ClientOSError(32, "Can not write request body for http://encoder/encode_images")],
    ids=["disconnected", "body-write-on-closed-socket"],
)
def test_a_call_meeting_a_closing_keep_alive_connection_is_sent_again(failure):
    vectors = np.ones((1, 4), dtype=np.float32)
    encoder, calls = connection(failure, vectors)
    assert asyncio.run(encoder.encode_text(["a"])) is vectors
    assert calls == [["a"], ["a"]]


@pytest.mark.parametrize(
    "failure, status, detail",
    [
        (aiohttp.ServerDisconnectedError(), 503, MODEL_NOT_INITIALIZED),
        (aiohttp.ClientOSError(32, "Broken pipe"), 503, MODEL_NOT_INITIALIZED),
        (ServiceUnavailable("process is overloaded"), 503, ENCODER_OVERLOADED),
        (asyncio.TimeoutError(), 504, TIMED_OUT),
        (BentoMLException("timed out", error_code=HTTPStatus.GATEWAY_TIMEOUT), 504, TIMED_OUT),
    ],
    ids=["disconnected-twice", "write-failed-twice", "shed-by-encoder", "client-timeout", "encoder-timeout"],
)
def test_transport_failures_become_designed_answers(failure, status, detail):
    encoder, _ = connection(failure, failure)
    with pytest.raises(ApiError) as raised:
        asyncio.run(encoder.encode_text(["a"]))
    assert (raised.value.status_code, raised.value.detail) == (status, detail)
