"""The sync :class:`Client` and the async :class:`AsyncClient`: the same methods, over httpx.

Both execute the plans of :mod:`embedding_client.plans`: long lists are split into requests
of ``batch_size`` items, at most ``max_concurrency`` of them in flight, answers kept in input
order; 429/503 are retried (:mod:`embedding_client.retrying`); other error statuses raise the
typed exceptions of :mod:`embedding_client.errors` with the server's ``detail``.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

import httpx
from tenacity import AsyncRetrying, Retrying
from tqdm.auto import tqdm

from embedding_client import plans
from embedding_client.errors import error_for
from embedding_client.inputs import ImageLike, VideoLike, segment_config
from embedding_client.plans import Call, Plan
from embedding_client.results import Embeddings, Ranking, VideoEmbeddings
from embedding_client.retrying import RetryPolicy

R = TypeVar("R")
DEFAULT_URL = "http://localhost:8000"


@dataclass(frozen=True)
class ClientOptions:
    """How a client talks to the server (shared by both clients).

    ``timeout_s`` bounds each request (a long video can take minutes); ``model`` is the served
    model's id, asked of ``/model/current`` on first use when not given."""

    base_url: str = DEFAULT_URL
    api_key: str | None = None
    model: str | None = None
    batch_size: int = 32
    max_concurrency: int = 4
    timeout_s: float = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    progress: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_concurrency < 1:
            raise ValueError("batch_size and max_concurrency must be at least 1")

    def http_arguments(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        return {"base_url": self.base_url.rstrip("/"), "headers": headers, "timeout": self.timeout_s,
                "limits": limits}


JSON_HEADERS = {"Content-Type": "application/json"}


def _encoded(call: Call) -> bytes:
    """The call's body as JSON bytes, made once (retries resend the same bytes) and off the
    event loop in the async client: base64 media make it megabytes."""
    return json.dumps(call.body(), separators=(",", ":")).encode()


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_for(response)
    return response.json()


def _progress(plan: Plan, options: ClientOptions, progress: bool | None) -> tqdm:
    shown = options.progress if progress is None else progress
    return tqdm(total=plan.items, unit="item", disable=not shown, leave=False)


class _Methods:
    """Argument handling shared by both clients (what each public method plans)."""

    options: ClientOptions

    def _texts_plan(self, model: str, texts: Sequence[str] | str, instruction: str | None) -> Plan:
        return plans.texts(model, texts, self.options.batch_size, instruction)

    def _images_plan(self, model: str, images: Sequence[ImageLike]) -> Plan:
        return plans.images(model, images, self.options.batch_size)

    @staticmethod
    def _video_plan(model: str, video: VideoLike, segment: dict[str, Any]) -> Plan:
        return plans.video(model, video, segment_config(**segment))


class Client(_Methods):
    """Blocking client; safe to share between threads. Use as a context manager, or ``close()``."""

    def __init__(self, base_url: str = DEFAULT_URL, *, http: httpx.Client | None = None, **options: Any) -> None:
        """``options`` are :class:`ClientOptions`' fields; ``http`` replaces the httpx client
        (its own base URL, headers and time-outs then apply)."""
        self.options = ClientOptions(base_url=base_url, **options)
        self._http = http or httpx.Client(**self.options.http_arguments())
        self._model = self.options.model

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def model(self) -> str:
        """The served model's id."""
        if self._model is None:
            self._model = self._get("/model/current")["model"]
        return self._model

    def capabilities(self) -> dict[str, Any]:
        """``GET /model/capabilities``: which modalities the served model embeds."""
        return self._get("/model/capabilities")

    def embed_texts(self, texts: Sequence[str] | str, *, instruction: str | None = None,
                    progress: bool | None = None) -> Embeddings:
        return self._execute(self._texts_plan(self.model(), texts, instruction), progress)

    def embed_images(self, images: Sequence[ImageLike], *, progress: bool | None = None) -> Embeddings:
        return self._execute(self._images_plan(self.model(), images), progress)

    def embed_video(self, video: VideoLike, **segment: Any) -> VideoEmbeddings:
        """``segment`` takes ``start_offset_sec``, ``clip_duration``, ``num_frames``,
        ``extraction_fps``, ``frame_indexes`` (the server's ``segment_config``)."""
        return self._execute(self._video_plan(self.model(), video, segment), False)

    def rank(self, query: str | ImageLike, candidates: Sequence[str | ImageLike], *, top_k: int | None = None,
             instruction: str | None = None) -> Ranking:
        """A string, as query or candidate, is a text (a file name too); images are paths as
        ``Path``, bytes, PIL images, or ``ImageUrl(url)``."""
        return self._execute(plans.rank(self.model(), query, candidates, top_k, instruction), False)

    def _get(self, path: str) -> Any:
        for attempt in Retrying(**self.options.retry.tenacity_arguments()):
            with attempt:
                return _answer(self._http.get(path))

    def _send(self, call: Call) -> Any:
        body = _encoded(call)
        for attempt in Retrying(**self.options.retry.tenacity_arguments()):
            with attempt:
                return call.parse(_answer(self._http.post(call.path, content=body, headers=JSON_HEADERS)))

    def _execute(self, plan: Plan[Any, R], progress: bool | None) -> R:
        if len(plan.calls) <= 1:
            return plan.combine([self._send(call) for call in plan.calls])
        with _progress(plan, self.options, progress) as bar:
            def sent(call: Call) -> Any:
                answer = self._send(call)
                bar.update(call.items)
                return answer

            pool = ThreadPoolExecutor(self.options.max_concurrency, thread_name_prefix="embedding-client")
            try:
                futures = [pool.submit(sent, call) for call in plan.calls]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = next((future for future in done if future.exception() is not None), None)
                if failed is not None:
                    raise failed.exception()
                return plan.combine([future.result() for future in futures])
            finally:
                # On a refusal or Ctrl-C: nothing more is sent, and requests in flight end on
                # their own without holding the caller.
                pool.shutdown(wait=False, cancel_futures=True)


class AsyncClient(_Methods):
    """asyncio client; one per event loop. Use as an async context manager, or ``aclose()``."""

    def __init__(self, base_url: str = DEFAULT_URL, *, http: httpx.AsyncClient | None = None,
                 **options: Any) -> None:
        self.options = ClientOptions(base_url=base_url, **options)
        self._http = http or httpx.AsyncClient(**self.options.http_arguments())
        self._model = self.options.model

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def model(self) -> str:
        if self._model is None:
            self._model = (await self._get("/model/current"))["model"]
        return self._model

    async def capabilities(self) -> dict[str, Any]:
        return await self._get("/model/capabilities")

    async def embed_texts(self, texts: Sequence[str] | str, *, instruction: str | None = None,
                          progress: bool | None = None) -> Embeddings:
        return await self._execute(self._texts_plan(await self.model(), texts, instruction), progress)

    async def embed_images(self, images: Sequence[ImageLike], *, progress: bool | None = None) -> Embeddings:
        return await self._execute(self._images_plan(await self.model(), images), progress)

    async def embed_video(self, video: VideoLike, **segment: Any) -> VideoEmbeddings:
        return await self._execute(self._video_plan(await self.model(), video, segment), False)

    async def rank(self, query: str | ImageLike, candidates: Sequence[str | ImageLike], *,
                   top_k: int | None = None, instruction: str | None = None) -> Ranking:
        return await self._execute(plans.rank(await self.model(), query, candidates, top_k, instruction), False)

    async def _get(self, path: str) -> Any:
        async for attempt in AsyncRetrying(**self.options.retry.tenacity_arguments()):
            with attempt:
                return _answer(await self._http.get(path))

    async def _send(self, call: Call) -> Any:
        body = await asyncio.to_thread(_encoded, call)  # reads and encodes files: not on the loop
        async for attempt in AsyncRetrying(**self.options.retry.tenacity_arguments()):
            with attempt:
                return call.parse(_answer(await self._http.post(call.path, content=body, headers=JSON_HEADERS)))

    async def _execute(self, plan: Plan[Any, R], progress: bool | None) -> R:
        if len(plan.calls) <= 1:
            return plan.combine([await self._send(call) for call in plan.calls])
        slots = asyncio.Semaphore(self.options.max_concurrency)
        with _progress(plan, self.options, progress) as bar:
            async def sent(call: Call) -> Any:
                async with slots:
                    answer = await self._send(call)
                bar.update(call.items)
                return answer

            tasks = [asyncio.ensure_future(sent(call)) for call in plan.calls]
            try:
                return plan.combine(await asyncio.gather(*tasks))
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
