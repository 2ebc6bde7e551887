"""The ``/metrics`` reader against a page captured from a served instance (BentoML 1.4.40).

BentoML prints ``le`` before its other labels and bucket bounds as floats (``le="1.0"``); in
the capture, ``encode_text`` was never merged while 2 of 22 ``encode_images`` batches held two
calls, so a reader that ignores a label's value, or reads the wrong bucket, gets other numbers.
"""

from __future__ import annotations

import pytest

from prometheus_text import observations_above, samples

ADAPTIVE = "bentoml_service_adaptive_batch_size"
COALESCED = "embedding_coalesced_items"

# Captured from `bentoml serve` with EMBEDDING_ENTRY_WORKERS=2 after three bursts of 300 texts
# and 64 images (other families left out).
CAPTURED = """\
# HELP bentoml_service_adaptive_batch_size Service adaptive batch size
# TYPE bentoml_service_adaptive_batch_size histogram
bentoml_service_adaptive_batch_size_sum{method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_bucket{le="1.0",method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_bucket{le="2.0",method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_bucket{le="4.0",method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_bucket{le="8.0",method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_bucket{le="16.0",method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_bucket{le="32.0",method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_bucket{le="64.0",method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_bucket{le="+Inf",method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_count{method_name="encode_text",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 23.0
bentoml_service_adaptive_batch_size_sum{method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 24.0
bentoml_service_adaptive_batch_size_bucket{le="1.0",method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 20.0
bentoml_service_adaptive_batch_size_bucket{le="2.0",method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 22.0
bentoml_service_adaptive_batch_size_bucket{le="4.0",method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 22.0
bentoml_service_adaptive_batch_size_bucket{le="8.0",method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 22.0
bentoml_service_adaptive_batch_size_bucket{le="16.0",method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 22.0
bentoml_service_adaptive_batch_size_bucket{le="32.0",method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 22.0
bentoml_service_adaptive_batch_size_bucket{le="64.0",method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 22.0
bentoml_service_adaptive_batch_size_bucket{le="+Inf",method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 22.0
bentoml_service_adaptive_batch_size_count{method_name="encode_images",runner_name="encoder",service_name="encoder",service_version="not available",worker_index="1"} 22.0
# HELP embedding_coalesced_items Items per Encoder call sent by the entry service's coalescer (requests merged into one call)
# TYPE embedding_coalesced_items histogram
embedding_coalesced_items_sum{modality="text"} 900.0
embedding_coalesced_items_bucket{le="1.0",modality="text"} 1.0
embedding_coalesced_items_bucket{le="4.0",modality="text"} 2.0
embedding_coalesced_items_bucket{le="16.0",modality="text"} 7.0
embedding_coalesced_items_bucket{le="64.0",modality="text"} 23.0
embedding_coalesced_items_bucket{le="256.0",modality="text"} 23.0
embedding_coalesced_items_bucket{le="1024.0",modality="text"} 23.0
embedding_coalesced_items_bucket{le="+Inf",modality="text"} 23.0
embedding_coalesced_items_count{modality="text"} 23.0
embedding_coalesced_items_sum{modality="image"} 192.0
embedding_coalesced_items_bucket{le="1.0",modality="image"} 5.0
embedding_coalesced_items_bucket{le="4.0",modality="image"} 9.0
embedding_coalesced_items_bucket{le="16.0",modality="image"} 22.0
embedding_coalesced_items_bucket{le="64.0",modality="image"} 22.0
embedding_coalesced_items_bucket{le="256.0",modality="image"} 22.0
embedding_coalesced_items_bucket{le="1024.0",modality="image"} 22.0
embedding_coalesced_items_bucket{le="+Inf",modality="image"} 22.0
embedding_coalesced_items_count{modality="image"} 22.0
# HELP bentoml_service_request_total Total number of runner RPC
# TYPE bentoml_service_request_total counter
bentoml_service_request_total{endpoint="/readyz",http_response_code="200",runner_name="embedding_service",service_name="embedding_service",service_version="not available"} 8.0
bentoml_service_request_total{endpoint="/embeddings",http_response_code="200",runner_name="embedding_service",service_name="embedding_service",service_version="not available"} 1092.0
bentoml_service_request_total{endpoint="/encode_images",http_response_code="200",runner_name="encoder",service_name="encoder",service_version="not available"} 22.0
bentoml_service_request_total{endpoint="/encode_images",http_response_code="500",runner_name="encoder",service_name="encoder",service_version="not available"} 0.0
bentoml_service_request_total{endpoint="/encode_text",http_response_code="200",runner_name="encoder",service_name="encoder",service_version="not available"} 23.0
bentoml_service_request_total{endpoint="/encode_text",http_response_code="500",runner_name="encoder",service_name="encoder",service_version="not available"} 0.0
bentoml_service_request_total{endpoint="/info",http_response_code="200",runner_name="encoder",service_name="encoder",service_version="not available"} 174.0
bentoml_service_request_total{endpoint="/info",http_response_code="500",runner_name="encoder",service_name="encoder",service_version="not available"} 0.0
bentoml_service_request_total{endpoint="/readyz",http_response_code="200",runner_name="encoder",service_name="encoder",service_version="not available"} 8.0
"""


def test_adaptive_batch_size_is_read_per_method_whatever_the_label_order():
    assert observations_above(CAPTURED, ADAPTIVE, 1, method_name="encode_images") == 2
    assert observations_above(CAPTURED, ADAPTIVE, 1, method_name="encode_text") == 0
    assert observations_above(CAPTURED, ADAPTIVE, 1, method_name="encode_images", worker_index="1") == 2


@pytest.mark.parametrize("bound, text, image", [(1, 22, 17), (4, 21, 13), (16, 16, 0), (64, 0, 0), (1024, 0, 0)])
def test_observations_above_a_bound_are_the_inf_bucket_less_that_bound(bound, text, image):
    assert observations_above(CAPTURED, COALESCED, bound, modality="text") == text
    assert observations_above(CAPTURED, COALESCED, bound, modality="image") == image


def test_without_labels_every_series_is_summed():
    assert observations_above(CAPTURED, COALESCED, 1) == 22 + 17
    assert observations_above(CAPTURED, ADAPTIVE, 2) == 0


def test_samples_match_by_name_and_label_values():
    [count] = samples(CAPTURED, f"{ADAPTIVE}_count", method_name="encode_images")
    assert (count.value, count.labels["worker_index"]) == (22, "1")
    assert [s.value for s in samples(CAPTURED, f"{COALESCED}_sum")] == [900, 192]
    assert samples(CAPTURED, f"{ADAPTIVE}_count", method_name="encode_image") == []
    assert len(samples(CAPTURED, "bentoml_service_request_total", endpoint="/encode_text")) == 2


@pytest.mark.parametrize("histogram, bound, labels", [
    (COALESCED, 1, {"modality": "video"}),  # no such series
    ("embedding_coalesced_item", 1, {}),  # no such histogram
    (COALESCED, 2, {"modality": "text"}),  # not a bucket bound
])
def test_a_question_the_page_cannot_answer_is_an_error_not_zero(histogram, bound, labels):
    with pytest.raises(ValueError):
        observations_above(CAPTURED, histogram, bound, **labels)
