"""Prometheus metrics of the entry service's Encoder calls, served with BentoML's own on
``/metrics`` as :mod:`embedding_server.http_api.metrics` tells. The Encoder's own batches are
BentoML's ``bentoml_service_adaptive_batch_size``; what it does not show is how the entry's
coalescer merges requests and how long they wait for it.
"""

from __future__ import annotations

from prometheus_client import Histogram

from embedding_server.http_api.metrics import SECONDS_BUCKETS

# Upper bounds that tell apart calls of 1, 2-4, 5-16, 17-64, 65-256 and 257-1024 items.
ITEM_BUCKETS = (1, 4, 16, 64, 256, 1024)

COALESCED_ITEMS = Histogram(
    "embedding_coalesced_items",
    "Items per Encoder call sent by the entry service's coalescer (requests merged into one call)",
    labelnames=["modality"],
    buckets=ITEM_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "embedding_queue_wait_seconds",
    "Time a request's items waited in the entry service's coalescer before their Encoder call left",
    labelnames=["modality"],
    buckets=SECONDS_BUCKETS,
)
