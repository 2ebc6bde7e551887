"""Output formats: float JSON and base64 of little-endian float32."""

from __future__ import annotations

import base64

import numpy as np
import orjson

from embedding_server.http_api.encoding import embedding_body, encode_embedding


def test_base64_round_trip_is_exact():
    vectors = np.random.default_rng(0).standard_normal((3, 7)).astype(np.float32)
    encoded = encode_embedding(vectors, flat=False, encoding_format="base64")
    decoded = np.stack([np.frombuffer(base64.b64decode(row), dtype="<f4") for row in encoded])
    assert np.array_equal(decoded, vectors)
    single = encode_embedding(vectors[:1], flat=True, encoding_format="base64")
    assert np.array_equal(np.frombuffer(base64.b64decode(single), dtype="<f4"), vectors[0])


def test_float_json_keeps_float32_values():
    vectors = np.array([[0.1, -0.25, 1e-8]], dtype=np.float32)
    flat = orjson.loads(embedding_body(encode_embedding(vectors, flat=True, encoding_format="float")))
    assert np.array_equal(np.array(flat["embedding"], dtype=np.float32), vectors[0])
    nested = orjson.loads(embedding_body(encode_embedding(vectors, flat=False, encoding_format="float")))
    assert np.array(nested["embedding"]).shape == (1, 3)
