"""The pipeline's first ``info`` call to the Encoder is shared by concurrent requests."""

from __future__ import annotations

import asyncio


from embedding_server.http_api.errors import ApiError
from embedding_server.pipeline import EmbeddingPipeline
from embedding_server.settings import get_settings
from helpers import TEST_MODEL_ID, model_info
from models.catalogue import find_model

MODEL = find_model(TEST_MODEL_ID)


class GatedInfoEncoder:
    """Answers ``info`` when the test opens the gate; fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.calls = 0
        self.entered = asyncio.Event()  # the call has begun: every request made before it waits on it
        self.gate = asyncio.Event()
        self._failures = failures

    async def info(self):
        self.calls += 1
        call = self.calls
        self.entered.set()
        await self.gate.wait()
        if call <= self._failures:
            raise ApiError(503, "Model is not initialized")
        return model_info(MODEL, 512)


def _pipeline(encoder: GatedInfoEncoder) -> EmbeddingPipeline:
    return EmbeddingPipeline(MODEL, encoder, None, get_settings())


def test_concurrent_first_requests_share_one_info_call():
    async def scenario() -> None:
        encoder = GatedInfoEncoder()
        pipeline = _pipeline(encoder)
        waiting = [asyncio.ensure_future(pipeline.model_info()) for _ in range(50)]
        await encoder.entered.wait()
        waiting[0].cancel()  # a client going away does not cancel the call for the others
        encoder.gate.set()
        answers = await asyncio.gather(*waiting[1:])
        assert encoder.calls == 1
        assert {answer.id for answer in answers} == {TEST_MODEL_ID}
        assert (await pipeline.model_info()).id == TEST_MODEL_ID and encoder.calls == 1

    asyncio.run(scenario())


def test_a_failed_info_call_is_tried_again_by_the_next_request():
    async def scenario() -> None:
        encoder = GatedInfoEncoder(failures=1)
        pipeline = _pipeline(encoder)
        encoder.gate.set()
        first = await asyncio.gather(pipeline.model_info(), pipeline.model_info(), return_exceptions=True)
        assert [type(answer) for answer in first] == [ApiError, ApiError] and encoder.calls == 1
        assert (await pipeline.model_info()).id == TEST_MODEL_ID and encoder.calls == 2

    asyncio.run(scenario())
