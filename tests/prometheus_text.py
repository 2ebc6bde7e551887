"""Reading a served ``/metrics`` page with prometheus_client's own text parser.

Label order, escaping and number formats (``le="1.0"``, ``le="+Inf"``) are the parser's
business, so no test depends on how a server happens to print its labels.
"""

from __future__ import annotations

import math
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str, name: str, **labels: str) -> list[Sample]:
    """The samples called ``name`` (as printed: ``x_bucket``, ``x_count``, ...) whose labels
    include every one of ``labels``."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()]


def observations_above(text: str, histogram: str, bound: float, **labels: str) -> float:
    """Observations of ``histogram`` greater than ``bound``, summed over its series whose labels
    include ``labels``: per series, the ``+Inf`` bucket minus the ``le=bound`` bucket.

    ``bound`` must be a bucket bound of every matching series (ValueError otherwise), and at
    least one series must match, so a misspelt name or label cannot pass as "none above"."""
    buckets: dict[frozenset[tuple[str, str]], dict[float, float]] = defaultdict(dict)
    for sample in samples(text, f"{histogram}_bucket", **labels):
        series = frozenset((key, value) for key, value in sample.labels.items() if key != "le")
        buckets[series][float(sample.labels["le"])] = sample.value
    if not buckets:
        raise ValueError(f"no series of {histogram} with labels {labels}")
    try:
        return sum(counts[math.inf] - counts[bound] for counts in buckets.values())
    except KeyError:
        raise ValueError(f"{bound} is not a bucket bound of every series of {histogram}") from None
