"""The public API in-process: every route, parity with open_clip, and every bad input."""

from __future__ import annotations

import base64
import io

import aiohttp
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers import TEST_MODEL_ID as MODEL
from helpers import embed
from local_http import serve_routes
from samples import b64, encoded, random_image, reference_images, reference_text, unit_cosines

SPEC_FAMILIES = {
    "MobileCLIP": ["mobileclip_s0", "mobileclip_s1", "mobileclip_s2", "mobileclip_b", "mobileclip_blt"],
    "CLIP": ["clip-vit-b-32", "clip-vit-b-16", "clip-vit-l-14", "clip-vit-h-14"],
    "CN-CLIP": ["cn-clip-vit-b-16", "cn-clip-vit-l-14", "cn-clip-vit-h-14"],
    "SigLIP": ["siglip2-vit-b-16", "siglip2-vit-l-16", "siglip2-so400m-patch16-384"],
    "Blip2": ["blip2_transformers"],
    "QwenText": ["qwen3-embedding-0.6b", "qwen3-embedding-4b", "qwen3-embedding-8b"],
}


def test_health(api_client):
    response = api_client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "healthy"})


def test_models_lists_all_19_grouped_by_family(api_client):
    body = api_client.get("/models").json()
    assert body == {"current_model": MODEL, "available_models": SPEC_FAMILIES, "total_models": 19}


def test_current_model_reports_runtime_and_random_weights(api_client):
    body = api_client.get("/model/current").json()
    assert body["model"] == MODEL
    assert (body["device"], body["use_openvino"], body["backend"]) == ("CPU", False, "pytorch")
    assert (body["weights"], body["variant"], body["dimension"]) == ("random", "tiny", 512)
    assert body["precision"] == "f32"  # the runner as the adapter loads it, without the Encoder's math mode
    assert body["store_tag"].startswith("clip-vit-b-32:")


def test_capabilities(api_client):
    body = api_client.get("/model/capabilities").json()
    assert body == {"model": MODEL, "modalities": ["text", "image", "video"], "supports_text": True,
                    "supports_image": True, "supports_video": True}


def test_single_text_is_a_flat_unit_vector_equal_to_open_clip(api_client, reference_clip):
    response = embed(api_client, {"type": "text", "text": "A photo of a cat"})
    assert response.status_code == 200
    vector = np.array(response.json()["embedding"], dtype=np.float32)
    assert vector.shape == (512,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    assert unit_cosines(vector, reference_text(reference_clip, ["A photo of a cat"]))[0] > 0.9999


def test_text_list_gives_one_vector_per_string_in_order(api_client, reference_clip):
    texts = ["A photo of a cat", "A photo of a dog", "", "x" * 2000]
    response = embed(api_client, {"type": "text", "text": texts})
    assert response.status_code == 200
    vectors = np.array(response.json()["embedding"], dtype=np.float32)
    assert vectors.shape == (4, 512)
    assert (unit_cosines(vectors, reference_text(reference_clip, texts)) > 0.9999).all()


def test_image_base64_equals_open_clip(api_client, reference_clip):
    image = random_image(333, 211, seed=1)
    response = embed(api_client, {"type": "image_base64", "image_base64": b64(encoded(image))})
    assert response.status_code == 200
    vector = np.array(response.json()["embedding"], dtype=np.float32)
    assert unit_cosines(vector, reference_images(reference_clip, [image]))[0] > 0.9999


def test_image_url_equals_open_clip(api_client, reference_clip):
    image = random_image(180, 260, seed=2)
    with serve_routes({"/cat.jpg": (200, encoded(image, "JPEG"), "image/jpeg")}) as base:
        response = embed(api_client, {"type": "image_url", "image_url": f"{base}/cat.jpg"})
    assert response.status_code == 200
    decoded = Image.open(io.BytesIO(encoded(image, "JPEG"))).convert("RGB")
    vector = np.array(response.json()["embedding"], dtype=np.float32)
    assert unit_cosines(vector, reference_images(reference_clip, [decoded]))[0] > 0.9999


def test_data_url_base64_is_accepted(api_client):
    data_url = "data:image/png;base64," + b64(encoded(random_image(seed=3)))
    assert embed(api_client, {"type": "image_base64", "image_base64": data_url}).status_code == 200


def test_base64_encoding_format_is_little_endian_float32(api_client):
    item = {"type": "text", "text": ["first", "second"]}
    floats = np.array(embed(api_client, item).json()["embedding"], dtype=np.float32)
    encoded_rows = embed(api_client, item, "base64").json()["embedding"]
    assert isinstance(encoded_rows, list) and len(encoded_rows) == 2
    decoded = np.stack([np.frombuffer(base64.b64decode(row), dtype="<f4") for row in encoded_rows])
    np.testing.assert_allclose(decoded, floats, atol=1e-7)
    single = embed(api_client, {"type": "text", "text": "first"}, "base64").json()["embedding"]
    assert isinstance(single, str)


def test_bare_model_name_is_accepted(api_client):
    assert embed(api_client, {"type": "text", "text": "a"}, model="clip-vit-b-32").status_code == 200


def test_wrong_model_is_400_with_the_spec_text(api_client):
    response = embed(api_client, {"type": "text", "text": "a"}, model="CLIP/clip-vit-b-16")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Model mismatch: requested model 'CLIP/clip-vit-b-16' does not match the currently loaded "
        "model 'CLIP/clip-vit-b-32'. Please use the correct model name or restart the server with "
        "the desired model."
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": MODEL, "input": {"type": "sound", "text": "a"}, "encoding_format": "float"},
                     id="unknown-type"),
        pytest.param({"model": MODEL, "input": {"type": "text"}, "encoding_format": "float"},
                     id="missing-text"),
        pytest.param({"model": MODEL, "input": {"type": "text", "text": "a"}}, id="missing-encoding"),
        pytest.param({"input": {"type": "text", "text": "a"}, "encoding_format": "float"}, id="missing-model"),
        pytest.param({"model": MODEL, "input": {"type": "text", "text": 5}, "encoding_format": "float"},
                     id="text-not-string"),
        pytest.param({"model": MODEL, "input": {"type": "text", "text": []}, "encoding_format": "float"},
                     id="empty-list"),
        pytest.param({"model": MODEL, "input": {"type": "text", "text": ["a", 3]}, "encoding_format": "float"},
                     id="non-string-item"),
        pytest.param({"model": MODEL, "input": {"type": "text", "text": "a"}, "encoding_format": "int8"},
                     id="bad-encoding-format"),
        pytest.param({"model": 7, "input": {"type": "text", "text": "a"}, "encoding_format": "float"},
                     id="model-not-string"),
        pytest.param({"model": MODEL, "input": "a cat", "encoding_format": "float"}, id="input-not-object"),
        pytest.param({"model": MODEL, "input": {"type": "image_url", "image_ur1": "x"},
                      "encoding_format": "float"}, id="misspelt-field"),
        pytest.param([1, 2], id="body-not-object"),
    ],
)
def test_invalid_requests_are_422_invalid_input_data(api_client, body):
    response = api_client.post("/embeddings", json=body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid input data: ")


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"model": "x",', b"\xff\xfe"])
def test_malformed_json_is_422(api_client, raw):
    response = api_client.post("/embeddings", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid input data: ")


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ("@@@not base64@@@", "not valid base64"),
        (b64(b"this is plain text, not an image"), "not a decodable image"),
        (b64(encoded(random_image(seed=4))[:60]), "decod"),
    ],
    ids=["undecodable-base64", "not-an-image", "truncated-image"],
)
def test_bad_image_data_is_422(api_client, payload, fragment):
    response = embed(api_client, {"type": "image_base64", "image_base64": payload})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid input data: ")
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    "url, status, fragment",
    [
        ("http://10.1.2.3/cat.png", 400, "URL not allowed"),
        ("http://169.254.169.254/latest/meta-data", 400, "URL not allowed"),
        ("file:///etc/passwd", 422, "only http and https"),
    ],
)
def test_refused_urls(api_client, url, status, fragment):
    response = embed(api_client, {"type": "image_url", "image_url": url})
    assert response.status_code == status
    assert fragment in response.json()["detail"]


def test_upstream_404_and_non_image_url_are_422(api_client):
    routes = {"/page.html": (200, b"<html>hello</html>", "text/html")}
    with serve_routes(routes) as base:
        missing = embed(api_client, {"type": "image_url", "image_url": f"{base}/missing.png"})
        not_image = embed(api_client, {"type": "image_url", "image_url": f"{base}/page.html"})
    assert missing.status_code == 422 and "404" in missing.json()["detail"]
    assert not_image.status_code == 422 and "not a decodable image" in not_image.json()["detail"]


def test_unreachable_url_is_422(api_client):
    with serve_routes({}) as base:
        closed = base  # the port is free again once the server has stopped
    response = embed(api_client, {"type": "image_url", "image_url": f"{closed}/cat.png"})
    assert response.status_code == 422
    assert "could not fetch image URL" in response.json()["detail"]


def test_too_many_texts_is_422(api_client, service_module):
    limit = service_module.settings.max_text_items
    response = embed(api_client, {"type": "text", "text": ["a"] * (limit + 1)})
    assert response.status_code == 422
    assert str(limit) in response.json()["detail"]


class _UnreachableEncoder:
    """An Encoder whose process is not up: every call fails to connect."""

    class _Calls:
        async def _refuse(self, *args):
            raise aiohttp.ServerDisconnectedError()

        encode_text = encode_images = info = _refuse

    to_async = _Calls()


@pytest.fixture
def client_without_model(service_module, use_pipeline):
    from embedding_server.encoder.client import EncoderConnection
    from embedding_server.pipeline import EmbeddingPipeline

    use_pipeline(EmbeddingPipeline(service_module.MODEL, EncoderConnection(_UnreachableEncoder()), None,
                                   service_module.settings))
    with TestClient(service_module.app) as client:
        yield client


def test_model_not_ready(client_without_model):
    health = client_without_model.get("/health")
    assert (health.status_code, health.json()) == (500, {"detail": "Model is not healthy"})
    for path in ("/model/capabilities", "/model/current"):
        response = client_without_model.get(path)
        assert (response.status_code, response.json()) == (503, {"detail": "Model is not initialized"})
    response = embed(client_without_model, {"type": "text", "text": "a"})
    assert (response.status_code, response.json()) == (503, {"detail": "Model is not initialized"})
    assert client_without_model.get("/models").status_code == 200
