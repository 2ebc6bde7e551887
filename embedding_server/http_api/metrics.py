"""Prometheus metrics of the entry service's requests, embedded items and media, served with
BentoML's own on ``/metrics`` (README, "Metrics").

They are ``prometheus_client`` metrics, BentoML 1.4's supported way (``bentoml.metrics`` is a
deprecated alias of it): ``bentoml serve`` starts every worker with ``PROMETHEUS_MULTIPROC_DIR``
set, so they write to BentoML's multiprocess store and ``/metrics`` sums them over the workers;
outside a server (tests, ``to_asgi()``) they live in the process's default registry. The
Encoder calls' metrics are :mod:`embedding_server.encoder.metrics`.

Labels take a handful of values each (a route, an input type, a status, a reason): never a
URL, a path or a model name. Nothing here runs in a video's decoding child, whose process
would leave a metrics file of its own behind.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import Counter, Histogram

from embedding_server.http_api.error_bodies import error_payload
from embedding_server.http_api.errors import ApiError

# From a millisecond (a small image's decode) to a minute (a long video's).
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter(
    "embedding_requests_total",
    "Requests that reached an embedding route, by route, input type and answered status",
    labelnames=["route", "input_type", "status"],
)
ITEMS_EMBEDDED = Counter(
    "embedding_items_embedded_total",
    "Items answered with a vector: texts, images and video frames",
    labelnames=["modality"],
)
FETCHED_BYTES = Counter(
    "embedding_media_fetched_bytes_total",
    "Body bytes received from media URLs, refused downloads included",
    labelnames=["media"],
)
FETCH_FAILURES = Counter(
    "embedding_media_fetch_failures_total",
    "Media URL downloads that failed, by reason",
    labelnames=["media", "reason"],
)
FETCH_SECONDS = Histogram(
    "embedding_media_fetch_seconds",
    "Time to download a media URL (redirects included), whatever the outcome",
    labelnames=["media"],
    buckets=SECONDS_BUCKETS,
)
DECODE_SECONDS = Histogram(
    "embedding_decode_seconds",
    "Time to decode an image's bytes, or to wait for a video's decoding process (probe, decode "
    "and preparation of its frames, overlapping the Encoder's work on earlier frames)",
    labelnames=["media"],
    buckets=SECONDS_BUCKETS,
)
PREPROCESS_SECONDS = Histogram(
    "embedding_preprocess_seconds",
    "Time to turn a decoded image into the model's input pixels (resize, crop)",
    buckets=SECONDS_BUCKETS,
)


TIMED_OUT = 504  # the status a request cancelled in flight is counted with (counted_request)


def count_request(route: str, input_type: str, status: int) -> None:
    """One answered request (or ended background job) in :data:`REQUESTS`."""
    REQUESTS.labels(route, input_type, str(status)).inc()


@contextmanager
def counted_request(route: str, input_type: str) -> Iterator[None]:
    """Counts the request the block answers in :data:`REQUESTS`: 200, or the status its
    :class:`ApiError` is answered with on ``route``, or 500.

    A request cancelled in flight is counted 504 (:data:`TIMED_OUT`): while the server runs,
    only the request time-out (embedding_server/http_api/request_timeout.py) cancels a
    request, and it answers 504. A client that disconnects does not cancel its request
    (uvicorn lets the handler run on and drops its answer), so that one is counted with the
    status it was answered; the rare request cancelled by a shutdown counts 504 too."""
    try:
        yield
    except ApiError as error:
        count_request(route, input_type, error_payload(route, error)[0])
        raise
    except asyncio.CancelledError:
        count_request(route, input_type, TIMED_OUT)
        raise
    except Exception:
        count_request(route, input_type, 500)
        raise
    count_request(route, input_type, 200)


class Stopwatch:
    """The seconds spent inside its :meth:`running` blocks, summed: the waits of one request
    that are spread over several awaits."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started
