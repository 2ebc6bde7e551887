"""Prometheus metrics of the entry service, served with BentoML's own on ``/metrics``.

``bentoml serve`` starts every worker with ``PROMETHEUS_MULTIPROC_DIR`` set, so metrics
created with ``prometheus_client`` (``bentoml.metrics`` is a deprecated alias of it in 1.4)
write to BentoML's multiprocess store, and ``/metrics`` sums them over all workers.
Outside a server (tests, ``to_asgi()``) they live in the process's default registry.
"""

from __future__ import annotations

from prometheus_client import Histogram

# Upper bounds that tell apart calls of 1, 2-4, 5-16, 17-64, 65-256 and 257-1024 items.
ITEM_BUCKETS = (1, 4, 16, 64, 256, 1024)

COALESCED_ITEMS = Histogram(
    "embedding_coalesced_items",
    "Items per Encoder call sent by the entry service's coalescer (requests merged into one call)",
    labelnames=["modality"],
    buckets=ITEM_BUCKETS,
)
