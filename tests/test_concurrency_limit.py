"""The concurrency limit: 429 with a ``detail`` beyond it, other paths never limited."""

from __future__ import annotations

import asyncio

import httpx

from embedding_server.http_api.concurrency_limit import ConcurrencyLimitMiddleware, too_many_requests


def test_requests_beyond_the_limit_get_429_and_other_paths_pass():
    async def scenario() -> None:
        gate = asyncio.Event()
        admitted = asyncio.Semaphore(0)

        async def app(scope, receive, send) -> None:
            if scope["path"] == "/embeddings":
                admitted.release()
                await gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        limited = ConcurrencyLimitMiddleware(app, max_concurrency=2, paths=("/embeddings",))
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            busy = [asyncio.create_task(client.post("/embeddings")) for _ in range(2)]
            for _ in busy:
                await admitted.acquire()
            refused = await client.post("/embeddings")
            assert refused.status_code == 429
            assert refused.json() == {"detail": too_many_requests(2)}
            assert refused.headers["retry-after"] == "1"
            assert (await client.get("/health")).status_code == 200
            gate.set()
            assert [response.status_code for response in await asyncio.gather(*busy)] == [200, 200]
            assert (await client.post("/embeddings")).status_code == 200  # slots were given back
        assert limited.in_flight == 0

    asyncio.run(scenario())
