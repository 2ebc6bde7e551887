"""Request bodies over the cap are refused before they are buffered."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from embedding_server.http_api.body_limit import BodyLimitMiddleware

CAP = 1000


def make_client() -> TestClient:
    app = FastAPI()
    app.add_middleware(BodyLimitMiddleware, max_bytes=CAP, timeout_s=10)

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"length": len(await request.body())}

    return TestClient(app)


def test_body_within_cap_passes():
    assert make_client().post("/echo", content=b"x" * CAP).json() == {"length": CAP}


def test_declared_length_over_cap_is_413():
    response = make_client().post("/echo", content=b"x" * (CAP + 1))
    assert response.status_code == 413
    assert response.json() == {"detail": f"Request body too large: exceeds {CAP} bytes"}


def test_streamed_body_without_length_is_counted():
    def chunks():
        for _ in range(5):
            yield b"y" * 400

    response = make_client().post("/echo", content=chunks())
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
