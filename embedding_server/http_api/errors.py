"""Errors that map to an HTTP status and the spec's ``detail`` text."""

from __future__ import annotations

INVALID_INPUT_PREFIX = "Invalid input data: "
MODEL_NOT_INITIALIZED = "Model is not initialized"
MODEL_NOT_HEALTHY = "Model is not healthy"
ENCODER_OVERLOADED = "The encoder is overloaded; retry later"


class ApiError(Exception):
    """An error answered to the client as ``{"detail": detail}`` with ``status_code``."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class InvalidInput(ApiError):
    """422 ``Invalid input data: <message>``."""

    def __init__(self, message: str) -> None:
        super().__init__(422, INVALID_INPUT_PREFIX + message)


class ModelNotInitialized(ApiError):
    """503 while the encoder has not loaded its model."""

    def __init__(self) -> None:
        super().__init__(503, MODEL_NOT_INITIALIZED)


def payload_too_large(what: str, limit: int) -> ApiError:
    """413 for media over its byte cap (``what`` is "image", "video", ...)."""
    return ApiError(413, f"{what.capitalize()} too large: exceeds {limit} bytes")


def located(where: str, error: ApiError) -> ApiError:
    """``error`` naming the failing item ``where`` (say ``video_frames[3]``) in its message."""
    detail = error.detail
    if detail.startswith(INVALID_INPUT_PREFIX):
        detail = f"{INVALID_INPUT_PREFIX}{where}: {detail[len(INVALID_INPUT_PREFIX):]}"
    else:
        detail = f"{where}: {detail}"
    return ApiError(error.status_code, detail)
