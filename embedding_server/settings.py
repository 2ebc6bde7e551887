"""The one place that reads the environment.

Every knob of the server is a field of :class:`Settings`, read from ``EMBEDDING_*``
variables. An invalid value stops start-up with :class:`SettingsError`, whose message names
the variable and the offending value.
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import os
import re
from pathlib import Path
from typing import Annotated, Callable, Literal, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from embedding_server.validation_errors import ErrorItem, describe_errors
from runners.contract import DEFAULT_TEXT_TOKEN_BUDGET, DEFAULT_TEXT_TOKEN_CAP

ENV_PREFIX = "EMBEDDING_"
DEVICE_PATTERN = re.compile(r"^(CPU|GPU|GPU\.\d+|AUTO)$")
MiB = 1024 * 1024
API_KEY_PATTERN = re.compile(r"[!-~]+")  # what an Authorization header carries unchanged
SECRET_FIELDS = {"api_keys"}
# Variables of earlier releases, and what replaced them: set, they stop start-up rather than
# be ignored.
REPLACED_VARIABLES = {"EMBEDDING_OV_INFERENCE_PRECISION": "EMBEDDING_PRECISION (exact, fast or int8)"}
T = TypeVar("T", int, float)


class SettingsError(RuntimeError):
    """A configuration value is invalid; the message names the variable. Not a ``ValueError``:
    BentoML's loader takes one raised while it loads a Bento by tag for "not a Bento tag" and
    reports a failed module import instead of this message."""


class Settings(BaseSettings):
    """Server configuration. Field ``x`` is read from ``EMBEDDING_X``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", protected_namespaces=()
    )

    # --- model and runtime ---
    model_name: str = Field("CLIP/clip-vit-b-16", min_length=1)
    server_port: int = Field(8000, ge=1, le=65535)
    device: str = "CPU"
    use_ov: bool = False
    # How the model computes (bench/RESULTS.md, "Precision"): exact, float32 as trained; fast,
    # the device's native reduced precision where it has one (bf16 on CPUs with AVX512-BF16 or
    # AMX, TF32 on CUDA GPUs, OpenVINO's own default on its devices), else float32; int8
    # (OpenVINO only), the encoders quantised to int8 by NNCF, once per entry.
    precision: Literal["exact", "fast", "int8"] = "fast"

    # --- OpenVINO (use_ov): how the converted encoders are compiled; None: OpenVINO's choice ---
    ov_performance_hint: Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"] = "LATENCY"
    ov_num_streams: int | None = Field(None, ge=1)
    ov_inference_threads: int | None = Field(None, ge=1)
    # Where entries imported without --openvino get their converted encoders on first start;
    # None: <BENTOML_HOME>/openvino.
    ov_cache_dir: Path | None = None

    # --- video (used by the video inputs) ---
    video_root: Path = Path("/tmp/videoQnA")
    # Further directories whose files video_file / frames_batch may name by absolute path
    # (os.pathsep-separated); the video root is always allowed.
    video_allowed_roots: Annotated[tuple[Path, ...], NoDecode] = ()
    video_temp_dir: Path | None = None  # downloads and base64 videos; None: the system's
    max_video_bytes: int = Field(256 * MiB, ge=1024)
    max_frames_per_request: int = Field(1024, ge=1)
    video_default_num_frames: int = Field(64, ge=1)
    max_extraction_fps: float = Field(240.0, gt=0, allow_inf_nan=False)

    # --- hostile input: video and paths ---
    # Pixels one request may decode from videos (frames x width x height): 1024 1080p frames.
    max_video_pixels_per_request: int = Field(1024 * 1920 * 1080, ge=1)
    # Longest a request waits for its video's decoding process (probe and every chunk
    # together); past it the process is killed and the request answered 504.
    video_decode_timeout_s: float = Field(60.0, gt=0, le=3600)

    # --- remote media policy ---
    url_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    url_connect_timeout_s: float = Field(5.0, gt=0, le=120)
    url_read_timeout_s: float = Field(10.0, gt=0, le=600)
    url_total_timeout_s: float = Field(30.0, gt=0, le=3600)
    url_max_redirects: int = Field(5, ge=0, le=20)

    # --- input size limits ---
    max_body_bytes: int = Field(32 * MiB, ge=1024)
    max_image_bytes: int = Field(20 * MiB, ge=1024)
    max_image_pixels: int = Field(64_000_000, ge=1)
    max_text_items: int = Field(1024, ge=1)
    # Images of one request's list (/v1/embeddings with modality "image", /rank candidates).
    max_image_items: int = Field(1024, ge=1)
    max_text_chars: int = Field(100_000, ge=1)
    # Long-context text embedders (QwenText) truncate texts at this many tokens, or at the
    # model's own maximum when smaller; short-context models cut at their context length.
    text_token_cap: int = Field(DEFAULT_TEXT_TOKEN_CAP, ge=1)

    # --- hostile input: text ---
    # The entry service cuts each text to (the model's token limit x this) characters: only
    # that many tokens are embedded, so the rest is never sent or tokenised. 32 is above the
    # longest token of the tokenizers served (CLIP's: 28 bytes).
    text_chars_per_token: int = Field(32, ge=1)
    # Characters of text (after that cut) one request may send; 422 beyond. Bounds the work one
    # request asks of a long-context model (77-token models never reach it: 1024 x 77 x 32).
    max_request_text_chars: int = Field(4 * MiB, ge=1)
    # Padded tokens per forward pass of long-context text embedders (QwenText): a batch of long
    # texts runs as consecutive forward passes of at most this many (one text may exceed it).
    text_token_budget: int = Field(DEFAULT_TEXT_TOKEN_BUDGET, ge=1)

    # --- hostile input: images ---
    # A JPEG image input is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) when both
    # sides stay at least this many times the model's input size; 0 decodes every JPEG in full.
    # At 2 the resize to the model's input still averages 2x2 source pixels or more per pixel.
    jpeg_draft_factor: float = Field(2.0, ge=0, le=64, allow_inf_nan=False)

    # --- encoder batching and traffic (measured defaults: bench/RESULTS.md) ---
    text_max_batch_size: int = Field(64, ge=2)
    # 16, not 32: two batches alternate, so one computes while the other's clients decode.
    image_max_batch_size: int = Field(16, ge=2)
    max_latency_ms: int = Field(20_000, ge=10)  # longest wait for a batch before a 503
    max_concurrency: int = Field(512, ge=1)  # /embeddings requests in flight before a 429
    # Background jobs in flight per server (split across the entry workers like max_concurrency)
    # before a submit or retry is refused 429: each running job holds its body in memory.
    max_jobs: int = Field(8, ge=1)
    request_timeout_s: float = Field(120.0, gt=0)
    entry_workers: int = Field(1, ge=1, le=64)  # entry-service processes (decoding, HTTP)
    torch_threads: int = Field(0, ge=0, le=1024)  # Encoder intra-op threads; 0: PyTorch's default
    # PyTorch on the CPU: a batch runs as this many concurrent single-threaded slices
    # (runners/backends/cpu_lanes.py); 1 runs every batch whole on all threads.
    torch_lanes: int = Field(2, ge=1, le=1024)

    # --- access: API keys and CORS ---
    # Keys, comma-separated, or the absolute path of an existing file of keys, one a line
    # (blank lines and "#" comments ignored). When set, every route of the API but /health
    # requires "Authorization: Bearer <key>". Never printed, not even in a configuration error.
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field((), repr=False)
    # Origins (comma-separated, "*" for any) whose browser pages may call the API; none: CORS off.
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = ()
    cors_allow_methods: Annotated[tuple[str, ...], NoDecode] = ("GET", "POST")
    # Any request header by default: the OpenAI JS SDK sends its own X-Stainless-* headers.
    cors_allow_headers: Annotated[tuple[str, ...], NoDecode] = ("*",)
    cors_max_age_s: int = Field(600, ge=0, le=86_400)  # how long browsers may cache a preflight

    # --- hostile input: http ---
    # The whole request body must arrive within this many seconds (408 beyond), before the
    # request counts against max_concurrency. 30 s carries the full 32 MiB body cap at about
    # 9 Mbit/s, while a stalled upload holds only its socket, never a slot, for that long.
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    # Threads reserved for DNS look-ups of media URLs, apart from the decoding threads, so
    # hung look-ups cannot stall decoding (each look-up waits at most url_connect_timeout_s).
    url_dns_threads: int = Field(8, ge=1, le=256)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        upper = value.strip().upper()
        if not DEVICE_PATTERN.match(upper):
            raise ValueError("expected CPU, GPU, GPU.<n> or AUTO")
        return upper

    @field_validator("ov_performance_hint", "precision", mode="before")
    @classmethod
    def _normalise_case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        return value.upper() if info.field_name == "ov_performance_hint" else value.lower()

    @field_validator("precision")
    @classmethod
    def _int8_on_openvino(cls, value: str, info: ValidationInfo) -> str:
        if value == "int8" and info.data.get("use_ov") is False:
            raise ValueError("int8 is computed by the OpenVINO backend only: set EMBEDDING_USE_OV=true too")
        return value

    @field_validator("model_name")
    @classmethod
    def _strip_model_name(cls, value: str) -> str:
        return value.strip()

    @field_validator("video_allowed_roots", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(os.pathsep) if part.strip())
        return value

    @field_validator("video_root", "video_allowed_roots", "video_temp_dir", "ov_cache_dir")
    @classmethod
    def _absolute_paths(cls, value: Path | tuple[Path, ...] | None) -> object:
        for path in (value if isinstance(value, tuple) else (value,)):
            if path is not None and not path.is_absolute():
                raise ValueError(f"{str(path)!r} is not an absolute path")
        return value

    @field_validator("video_default_num_frames")
    @classmethod
    def _default_within_cap(cls, value: int, info: ValidationInfo) -> int:
        return _checked_against(value, info, "max_frames_per_request", operator.le,
                                "exceeds EMBEDDING_MAX_FRAMES_PER_REQUEST ({limit})")

    @field_validator("body_timeout_s")
    @classmethod
    def _body_deadline_before_request_deadline(cls, value: float, info: ValidationInfo) -> float:
        return _checked_against(value, info, "request_timeout_s", operator.lt,
                                "must be below EMBEDDING_REQUEST_TIMEOUT_S ({limit:g})")

    @field_validator("url_allowed_hosts", "cors_allow_origins", "cors_allow_methods", "cors_allow_headers",
                     mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return _comma_separated(value)
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _read_keys(cls, value: object) -> object:
        """A file's keys when the value is the path of an existing file, else the keys it
        lists; set but holding no key stops start-up (an unset secret would otherwise leave
        the API open)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        names_a_file = text.startswith("/") and "," not in text and Path(text).is_file()
        keys = _key_file(Path(text)) if names_a_file else _comma_separated(text)
        if not keys:
            raise ValueError("is set but holds no key; unset it to serve without API keys")
        return keys

    @field_validator("api_keys")
    @classmethod
    def _header_safe_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for number, key in enumerate(value, 1):
            if not API_KEY_PATTERN.fullmatch(key):
                raise ValueError(f"key {number} holds a character other than printable ASCII without spaces")
        return value

    @field_validator("url_allowed_hosts")
    @classmethod
    def _valid_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if "/" in entry:
                ipaddress.ip_network(entry, strict=False)  # ValueError names the entry
        return tuple(entry.lower() for entry in value)


def _checked_against(value: T, info: ValidationInfo, other: str, holds: Callable[[T, T], bool], message: str) -> T:
    """``value`` if ``holds(value, <field other>)`` (or that field is itself invalid), else a
    ``ValueError`` of ``message`` formatted with ``limit``."""
    limit = info.data.get(other)
    if limit is not None and not holds(value, limit):
        raise ValueError(message.format(limit=limit))
    return value


def _comma_separated(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _key_file(path: Path) -> tuple[str, ...]:
    """The keys of a key file (its lines, blank ones and ``#`` comments skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the key file {path}: {type(error).__name__}") from None
    return tuple(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))


def _variable(item: ErrorItem) -> str:
    field = str(item["loc"][0]) if item["loc"] else "?"
    shown = "<hidden>" if field in SECRET_FIELDS else repr(item.get("input"))
    return f"{ENV_PREFIX}{field.upper()}={shown}"


def _describe(error: ValidationError) -> str:
    return "Invalid configuration: " + describe_errors(error.errors(), _variable)


def load_settings() -> Settings:
    """Read the environment now; raise :class:`SettingsError` naming any bad variable."""
    for name, replacement in REPLACED_VARIABLES.items():
        if name in os.environ:
            raise SettingsError(f"Invalid configuration: {name} is no longer read; set {replacement} instead")
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
