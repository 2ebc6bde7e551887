"""Errors that map to an HTTP status and the spec's ``detail`` text (how each API shapes
them: :mod:`embedding_server.http_api.error_bodies`)."""

from __future__ import annotations

INVALID_INPUT_PREFIX = "Invalid input data: "
MODEL_NOT_INITIALIZED = "Model is not initialized"
MODEL_NOT_HEALTHY = "Model is not healthy"
ENCODER_OVERLOADED = "The encoder is overloaded; retry later"


MODEL_NOT_FOUND = "model_not_found"  # OpenAI's error code for a model it does not serve
INVALID_API_KEY = "invalid_api_key"


class ApiError(Exception):
    """An error answered to the client with ``status_code``: ``{"detail": detail}`` on the
    documented routes. ``param`` (the request field at fault) and ``code`` (a machine-readable
    reason) fill the OpenAI-shaped body of ``/v1/*``."""

    def __init__(self, status_code: int, detail: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.param = param
        self.code = code


class InvalidInput(ApiError):
    """422 ``Invalid input data: <message>``."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(422, INVALID_INPUT_PREFIX + message, param=param)


class ModelMismatch(ApiError):
    """400 (the spec's status; 404 on ``/v1/*``): the request names another model than the
    one loaded."""

    def __init__(self, requested: str, loaded: str) -> None:
        super().__init__(
            400,
            f"Model mismatch: requested model '{requested}' does not match the currently loaded "
            f"model '{loaded}'. Please use the correct model name or restart the server with the "
            "desired model.",
            param="model", code=MODEL_NOT_FOUND,
        )


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
    return ApiError(error.status_code, detail, param=error.param, code=error.code)
