"""When and how long to wait before sending a request again (tenacity does the looping).

Retried: 429 (the server's concurrency limit), 502/503/504 (starting up, overloaded, a proxy
between restarts) and connections that could not be made or were dropped. Waits follow the
server's ``Retry-After`` when it sends one, else exponential back-off with jitter. Embedding
is idempotent, so a retried request cannot do anything twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from embedding_client.errors import EmbeddingServerError

logger = logging.getLogger("embedding_client")

RETRIED_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` sends in all (1: no retries); waits of ``initial_wait_s`` doubling up to
    ``max_wait_s``; a ``Retry-After`` above ``max_wait_s`` is cut to it."""

    attempts: int = 6
    initial_wait_s: float = 0.5
    max_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")

    def tenacity_arguments(self) -> dict[str, Any]:
        """The arguments of ``tenacity.Retrying`` and ``AsyncRetrying`` for this policy."""
        backoff = wait_exponential_jitter(initial=self.initial_wait_s, max=self.max_wait_s)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            asked = getattr(error, "retry_after_s", None)
            return min(asked, self.max_wait_s) if asked is not None else backoff(state)

        return {"retry": retry_if_exception(is_retryable), "stop": stop_after_attempt(self.attempts),
                "wait": wait, "reraise": True, "before_sleep": _log_retry}


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, EmbeddingServerError):
        return error.retryable
    return isinstance(error, RETRIED_TRANSPORT_ERRORS)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    logger.info("retrying after attempt %d: %s (waiting %.2f s)", state.attempt_number, error,
                state.upcoming_sleep)
