"""The OpenAI-compatible routes in-process: ``POST /v1/embeddings`` (texts, images, base64,
``dimensions``, usage), ``GET /v1/models``, and every mistake answered in OpenAI's error shape."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from helpers import TEST_MODEL_ID as MODEL
from helpers import embed, in_process_pipeline, vectors_of
from local_http import serve_routes
from samples import b64, encoded, random_image, unit_cosines

DIMENSION = 512  # the tiny CLIP entry's


def create(client, **body):
    return client.post("/v1/embeddings", json={"model": MODEL, **body})


def openai_error(response, status: int) -> dict:
    """The ``error`` object of an OpenAI-shaped error response (asserted to be one)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def clip_token_count(reference_clip, text: str) -> int:
    """Tokens of ``text`` open_clip's own tokenizer gives, through the end-of-text token."""
    tokens = reference_clip[2]([text])[0].tolist()
    return tokens.index(max(tokens)) + 1  # the end-of-text token has the largest id


def test_a_list_of_texts_answers_in_openai_shape_with_the_documented_vectors(api_client, reference_clip):
    texts = ["a photo of a cat", "a diagram of a bridge", "!!!"]
    response = create(api_client, input=texts)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["object"], body["model"]) == ("list", MODEL)
    assert [(row["object"], row["index"]) for row in body["data"]] == [("embedding", i) for i in range(3)]
    vectors = np.array([row["embedding"] for row in body["data"]], dtype=np.float32)
    documented = vectors_of(embed(api_client, {"type": "text", "text": texts}))
    assert vectors.shape == (3, DIMENSION)
    assert unit_cosines(vectors, documented).min() > 0.9999
    tokens = sum(clip_token_count(reference_clip, text) for text in texts)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_a_single_string_and_its_token_count(api_client, reference_clip):
    body = create(api_client, input="a dog on a beach").json()
    assert len(body["data"]) == 1
    assert body["usage"]["prompt_tokens"] == clip_token_count(reference_clip, "a dog on a beach")


def test_usage_counts_the_tokens_after_truncation(api_client):
    body = create(api_client, input=["word " * 500]).json()
    assert body["usage"]["prompt_tokens"] == 77  # CLIP's context


def test_base64_is_the_float_vectors_as_little_endian_float32(api_client):
    floats = create(api_client, input=["one", "two"]).json()["data"]
    packed = create(api_client, input=["one", "two"], encoding_format="base64").json()["data"]
    for plain, row in zip(floats, packed):
        decoded = np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.array(plain["embedding"], dtype=np.float32))


def test_user_is_accepted_and_dimensions_equal_to_the_model_s_own(api_client):
    response = create(api_client, input="x", user="someone", dimensions=DIMENSION)
    assert len(response.json()["data"][0]["embedding"]) == DIMENSION


def test_images_by_data_uri_and_url_equal_the_documented_image_vectors(api_client):
    first, second = random_image(seed=11), random_image(200, 300, seed=12)
    data_uri = "data:image/png;base64," + b64(encoded(first))
    with serve_routes({"/second.png": (200, encoded(second), "image/png")}) as base:
        response = create(api_client, modality="image", input=[data_uri, f"{base}/second.png"])
        assert response.status_code == 200, response.text
        vectors = np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)
        documented = np.stack([
            vectors_of(embed(api_client, {"type": "image_base64", "image_base64": b64(encoded(first))})),
            vectors_of(embed(api_client, {"type": "image_url", "image_url": f"{base}/second.png"})),
        ])
    assert unit_cosines(vectors, documented).min() > 0.9999
    assert response.json()["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize("body, param, fragment", [
    ({"input": [1, 2, 3]}, "input", "check_embedding_ctx_length=False"),
    ({"input": [[1, 2], [3]]}, "input", "token ids"),
    ({"input": []}, "input", "must not be an empty list"),
    ({"input": ["a", 3]}, "input", "item 1 is not a string"),
    ({"input": {"text": "a"}}, "input", "must be a string or a list of strings"),
    ({}, "input", "Field required"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
    ({"input": "a", "dimensions": 0}, "dimensions", "greater than or equal to 1"),
    ({"input": "a", "dimensions": 64}, "dimensions", "not trained with nested (Matryoshka) dimensions"),
    ({"input": "a", "modality": "audio"}, "modality", "'text' or 'image'"),
    ({"input": "a", "instructions": "x"}, "instructions", "Extra inputs are not permitted"),
], ids=["token-ids", "token-id-lists", "empty-list", "non-string-item", "object", "no-input",
        "encoding", "zero-dimensions", "dimensions-of-a-plain-model", "modality", "unknown-field"])
def test_invalid_requests_are_400_in_openai_shape(api_client, body, param, fragment):
    error = openai_error(create(api_client, **body), 400)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert fragment in error["message"]


def test_a_lone_surrogate_is_400(api_client):
    body = f'{{"model": "{MODEL}", "input": ["fine", "\\ud800"]}}'.encode()
    response = api_client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
    assert "surrogate" in openai_error(response, 400)["message"]  # refused by the JSON parser


def test_an_image_that_fails_names_its_item(api_client):
    good = "data:image/png;base64," + b64(encoded(random_image(seed=1)))
    error = openai_error(create(api_client, modality="image", input=[good, "data:image/png;base64,AAAA"]), 400)
    assert error["message"].startswith("input[1]: ") and error["param"] == "input"
    error = openai_error(create(api_client, modality="image", input="file:///etc/passwd"), 400)
    assert error["message"].startswith("input: ")


def test_more_images_than_the_cap_are_refused_before_any_is_decoded(api_client, service_module):
    cap = service_module.settings.max_image_items
    undecodable = ["data:image/png;base64,AAAA"] * (cap + 1)  # decoding any would fail differently
    error = openai_error(create(api_client, modality="image", input=undecodable), 400)
    assert error["message"] == f"too many images: {cap + 1} > {cap} per request"
    texts = openai_error(create(api_client, input=["a"] * (service_module.settings.max_text_items + 1)), 400)
    assert texts["message"].startswith("too many texts")


def test_a_wrong_model_is_404_model_not_found(api_client):
    error = openai_error(api_client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a"}),
                         404)
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "text-embedding-3-small" in error["message"]


def test_the_bare_model_name_is_accepted(api_client):
    response = api_client.post("/v1/embeddings", json={"model": "clip-vit-b-32", "input": "a"})
    assert response.status_code == 200 and response.json()["model"] == MODEL


def test_malformed_json_is_400_in_openai_shape(api_client):
    response = api_client.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert "malformed JSON body" in openai_error(response, 400)["message"]


def test_a_wrong_method_is_405_in_openai_shape(api_client):
    assert openai_error(api_client.get("/v1/embeddings"), 405)["message"] == "Method Not Allowed"
    assert api_client.get("/embeddings").json() == {"detail": "Method Not Allowed"}


def test_the_documented_routes_keep_their_detail_bodies(api_client):
    response = embed(api_client, {"type": "text", "text": "a"}, model="text-embedding-3-small")
    assert response.status_code == 400 and set(response.json()) == {"detail"}


def test_models_list_the_loaded_model(api_client):
    listed = api_client.get("/v1/models").json()
    assert listed["object"] == "list"
    (model,) = listed["data"]
    assert (model["id"], model["object"], model["owned_by"]) == (MODEL, "model", "CLIP")
    assert isinstance(model["created"], int) and model["created"] > 1_600_000_000
    assert api_client.get(f"/v1/models/{MODEL}").json() == model
    assert api_client.get("/v1/models/clip-vit-b-32").json() == model
    assert openai_error(api_client.get("/v1/models/gpt-4"), 404)["code"] == "model_not_found"


# --- nested dimensions, on a tiny Qwen3-Embedding entry ---

@pytest.fixture(scope="module")
def qwen_pipeline(tiny_import):
    from models.catalogue import find_model

    model = find_model("QwenText/qwen3-embedding-0.6b")
    directory = tiny_import(model.id)
    return in_process_pipeline(model, model.adapter.load_runner(directory), None), directory


def test_dimensions_cut_a_matryoshka_model_s_vectors_and_renormalise(api_client, use_pipeline, qwen_pipeline):
    pipeline, _ = qwen_pipeline
    use_pipeline(pipeline)
    texts = ["a short text", "another, somewhat longer text"]
    full = np.array([row["embedding"] for row in api_client.post(
        "/v1/embeddings", json={"model": pipeline.model.id, "input": texts}).json()["data"]])
    response = api_client.post("/v1/embeddings", json={"model": pipeline.model.id, "input": texts, "dimensions": 64})
    short = np.array([row["embedding"] for row in response.json()["data"]])
    assert short.shape == (2, 64)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("dimensions", [16, 31, 100_000])
def test_dimensions_outside_a_matryoshka_model_s_range_are_400(api_client, use_pipeline, qwen_pipeline, dimensions):
    pipeline, _ = qwen_pipeline
    use_pipeline(pipeline)
    response = api_client.post("/v1/embeddings", json={"model": pipeline.model.id, "input": "a",
                                                       "dimensions": dimensions})
    error = openai_error(response, 400)
    assert error["param"] == "dimensions" and f"not {dimensions}" in error["message"]


def test_qwen_usage_counts_its_own_tokenizer_s_tokens(api_client, use_pipeline, qwen_pipeline):
    from transformers import AutoTokenizer

    pipeline, directory = qwen_pipeline
    use_pipeline(pipeline)
    texts = ["one text", "and a second one, longer than the first"]
    tokenizer = AutoTokenizer.from_pretrained(Path(directory))
    expected = sum(len(ids) for ids in tokenizer(texts)["input_ids"])
    body = api_client.post("/v1/embeddings", json={"model": pipeline.model.id, "input": texts}).json()
    assert body["usage"]["prompt_tokens"] == expected > 0
