"""The CORS rules of the settings, as Starlette ``CORSMiddleware`` arguments: one source for the
app (embedding_server/app.py) and the background-job routes BentoML serves outside it
(embedding_server/jobs.py)."""

from __future__ import annotations

from typing import Any

from embedding_server.settings import Settings

EXPOSED_HEADERS = ("Retry-After", "WWW-Authenticate")  # what a browser client may read of a refusal


def cors_options(settings: Settings) -> dict[str, Any] | None:
    """``CORSMiddleware``'s keyword arguments for ``settings``; ``None`` without allowed origins
    (no CORS headers at all)."""
    if not settings.cors_allow_origins:
        return None
    return {"allow_origins": list(settings.cors_allow_origins), "allow_methods": list(settings.cors_allow_methods),
            "allow_headers": list(settings.cors_allow_headers), "max_age": settings.cors_max_age_s,
            "expose_headers": EXPOSED_HEADERS}
