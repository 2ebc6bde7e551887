"""Error bodies in the shape of the API a path belongs to.

The documented routes answer ``{"detail": "..."}`` (``spec/api-reference.txt``); the
OpenAI-compatible routes under ``/v1/`` answer OpenAI's ``{"error": {"message", "type",
"param", "code"}}`` with the status OpenAI uses for the same mistake, so that its SDKs (and
the clients built on them) raise their usual exceptions. Every error of the app, from a route,
validation or a middleware, is shaped here.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson
from starlette.responses import Response

from embedding_server.http_api.errors import INVALID_INPUT_PREFIX, INVALID_API_KEY, MODEL_NOT_FOUND, ApiError

OPENAI_PATHS = "/v1/"
# OpenAI answers invalid input 400, never 422; a model it does not serve is 404.
_OPENAI_STATUS = {422: 400}
_OPENAI_STATUS_OF_CODE = {MODEL_NOT_FOUND: 404}
_OPENAI_TYPE = {401: "invalid_request_error", 429: "requests"}
_OPENAI_CODE = {401: INVALID_API_KEY, 429: "rate_limit_exceeded"}


def speaks_openai(path: str) -> bool:
    return path.startswith(OPENAI_PATHS)


def _printable(text: str) -> str:
    """``text`` that encodes as UTF-8: a message may quote the client's input (a key, a tag, a
    model name), and a lone surrogate in it would fail the response itself."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _openai_error(error: ApiError) -> tuple[int, dict[str, Any]]:
    status = _OPENAI_STATUS_OF_CODE.get(error.code or "", _OPENAI_STATUS.get(error.status_code, error.status_code))
    message = error.detail.removeprefix(INVALID_INPUT_PREFIX)
    kind = _OPENAI_TYPE.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return status, {"error": {"message": _printable(message), "type": kind, "param": error.param,
                              "code": error.code or _OPENAI_CODE.get(status)}}


def error_payload(path: str, error: ApiError) -> tuple[int, bytes]:
    """The status and JSON body answering ``error`` on ``path``."""
    if speaks_openai(path):
        status, body = _openai_error(error)
    else:
        status, body = error.status_code, {"detail": _printable(error.detail)}
    return status, orjson.dumps(body)


def error_response(path: str, error: ApiError, headers: Mapping[str, str] | None = None) -> Response:
    status, body = error_payload(path, error)
    return Response(body, status_code=status, headers=headers, media_type="application/json")
