"""Typed exceptions for the server's refusals, each carrying the server's own ``detail``."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

DETAIL_CHARS = 2_000  # of a body that is not the server's JSON (a proxy's HTML page, say)


class EmbeddingServerError(Exception):
    """The server answered with an error status; ``detail`` is its explanation."""

    retryable = False

    def __init__(self, status_code: int, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.retry_after_s = retry_after_s  # the server's Retry-After, when it sent one


class ClientRequestError(EmbeddingServerError):
    """4xx: the request is wrong; sending it again will not help."""


class BadRequestError(ClientRequestError):
    """400: for example a model mismatch or an unsupported modality."""


class AuthenticationError(ClientRequestError):
    """401: no API key, or a wrong one (the server's ``EMBEDDING_API_KEYS``)."""


class NotFoundError(ClientRequestError):
    """404: a file on the server, or a model, that does not exist."""


class PayloadTooLargeError(ClientRequestError):
    """413: the request body is over the server's limit; send fewer or smaller items."""


class InvalidInputError(BadRequestError):
    """422: the input failed validation (the detail names the field). A kind of
    :class:`BadRequestError`: the OpenAI-compatible route, which ``embed_images`` uses,
    answers the same mistakes 400, as OpenAI does."""


class RateLimitError(ClientRequestError):
    """429: the server is at its concurrency limit; retried with back-off before it is raised."""

    retryable = True


class ServerError(EmbeddingServerError):
    """5xx."""


class ServiceUnavailableError(ServerError):
    """503: the model is not loaded yet, or the server is overloaded; retried before it is raised."""

    retryable = True


class GatewayError(ServerError):
    """502 or 504 from a proxy in front of the server; retried before it is raised."""

    retryable = True


_BY_STATUS: dict[int, type[EmbeddingServerError]] = {
    400: BadRequestError, 401: AuthenticationError, 404: NotFoundError, 413: PayloadTooLargeError,
    422: InvalidInputError, 429: RateLimitError, 502: GatewayError, 503: ServiceUnavailableError,
    504: GatewayError,
}


def detail_of(response: httpx.Response) -> str:
    """The documented routes' ``{"detail": ...}``, the OpenAI-compatible ``{"error": {"message"}}``,
    or the start of whatever else the body is."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:DETAIL_CHARS] or response.reason_phrase
    if isinstance(body, dict):
        if isinstance(body.get("detail"), str):
            return body["detail"]
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    return response.text[:DETAIL_CHARS]


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds: the server sends seconds, a proxy may send an HTTP date."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_for(response: httpx.Response) -> EmbeddingServerError:
    """The exception for an error ``response``."""
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ClientRequestError)
    return kind(status, detail_of(response), retry_after_s(response))
