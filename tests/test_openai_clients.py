"""The clients users already have, unchanged, against a real ``bentoml serve`` with API keys
and CORS on: the official ``openai`` SDK, LangChain's ``OpenAIEmbeddings`` and LlamaIndex's
``OpenAILikeEmbedding``. Their vectors equal the documented API's for the same inputs."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from helpers import QWEN_MODEL_ID, SERVED_API_KEY, SERVED_ORIGIN
from helpers import TEST_MODEL_ID as MODEL
from helpers import embedding_body
from samples import b64, encoded, random_image, unit_cosines

pytestmark = pytest.mark.e2e
KEY = SERVED_API_KEY
ORIGIN = SERVED_ORIGIN
TEXTS = ["a photo of a cat", "a diagram of a suspension bridge", "fresh bread"]
QWEN = QWEN_MODEL_ID


@pytest.fixture(scope="module")
def server(keyed_server) -> str:
    return keyed_server.url


@pytest.fixture(scope="module")
def server_log(keyed_server) -> Path:
    return keyed_server.log


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def documented(server: str, item: dict, model: str = MODEL) -> np.ndarray:
    """The documented API's vectors of ``item``, as a ``(N, D)`` array."""
    response = httpx.post(f"{server}/embeddings", json=embedding_body(item, model),
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == 200, response.text
    return np.atleast_2d(np.array(response.json()["embedding"], dtype=np.float32))


def vectors(result) -> np.ndarray:
    return np.array([row.embedding for row in result.data], dtype=np.float32)


def test_the_sdk_embeds_a_string_and_a_list_in_its_default_base64_and_in_float(server, client):
    expected = documented(server, {"type": "text", "text": TEXTS})
    single = client.embeddings.create(model=MODEL, input=TEXTS[0])  # the SDK asks for base64
    assert unit_cosines(vectors(single), expected[:1]).min() > 0.9999
    listed = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert [row.index for row in listed.data] == [0, 1, 2]
    assert unit_cosines(vectors(listed), expected).min() > 0.9999
    assert listed.model == MODEL and listed.usage.prompt_tokens == listed.usage.total_tokens > len(TEXTS)


def test_the_sdk_embeds_images_with_the_modality_extension(server, client):
    image = random_image(seed=5)
    data_uri = "data:image/png;base64," + b64(encoded(image))
    result = client.embeddings.create(model=MODEL, input=[data_uri], extra_body={"modality": "image"})
    expected = documented(server, {"type": "image_base64", "image_base64": b64(encoded(image))})
    assert unit_cosines(vectors(result), expected)[0] > 0.9999


def test_the_sdk_raises_its_usual_exceptions(server, client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="token ids"):
        client.embeddings.create(model=MODEL, input=[[101, 102]])
    with pytest.raises(openai.BadRequestError, match="Matryoshka"):
        client.embeddings.create(model=MODEL, input="a", dimensions=64)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="sk-wrong", max_retries=0).embeddings.create(
            model=MODEL, input="a")


def test_the_sdk_lists_the_model(client):
    assert [model.id for model in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "CLIP"


def test_langchain_openai_embeddings_work_unchanged(server):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model=MODEL, base_url=f"{server}/v1", api_key=KEY,
                                  check_embedding_ctx_length=False, max_retries=0)
    expected = documented(server, {"type": "text", "text": TEXTS})
    assert unit_cosines(np.array(embeddings.embed_documents(TEXTS)), expected).min() > 0.9999
    assert unit_cosines(np.array(embeddings.embed_query(TEXTS[1])), expected[1:2])[0] > 0.9999


def test_llama_index_openai_like_embedding_works_unchanged(server):
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embeddings = OpenAILikeEmbedding(model_name=MODEL, api_base=f"{server}/v1", api_key=KEY, max_retries=0)
    expected = documented(server, {"type": "text", "text": TEXTS})
    batch = np.array(embeddings.get_text_embedding_batch(TEXTS))
    assert unit_cosines(batch, expected).min() > 0.9999
    assert unit_cosines(np.array(embeddings.get_query_embedding(TEXTS[2])), expected[2:])[0] > 0.9999


def test_keys_and_cors_on_the_served_api(server, server_log):
    assert httpx.get(f"{server}/health").json() == {"status": "healthy"}  # open
    refused = httpx.post(f"{server}/embeddings", json=embedding_body({"type": "text", "text": "a"}))
    assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Bearer")
    assert "detail" in refused.json()
    assert httpx.get(f"{server}/model/current", headers={"Authorization": "Bearer nope"}).status_code == 401
    preflight = httpx.options(f"{server}/v1/embeddings", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    httpx.post(f"{server}/v1/embeddings", json={"model": MODEL, "input": "a"}, headers={"Authorization": f"Bearer {KEY}"})
    assert KEY not in server_log.read_text(encoding="utf-8", errors="replace")


# --- nested dimensions through the SDK, on a tiny Qwen3-Embedding entry ---

def test_the_sdk_asks_a_matryoshka_model_for_fewer_dimensions(qwen_server):
    client = openai.OpenAI(base_url=f"{qwen_server}/v1", api_key="unused", max_retries=0)
    full = vectors(client.embeddings.create(model=QWEN, input=TEXTS))
    short = client.embeddings.create(model=QWEN, input=TEXTS, dimensions=64)
    cut = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    assert vectors(short).shape == (3, 64)
    assert unit_cosines(vectors(short), cut).min() > 0.9999
    expected = documented(qwen_server, {"type": "text", "text": TEXTS}, model=QWEN)
    assert unit_cosines(full, expected).min() > 0.9999
    assert short.usage.prompt_tokens > len(TEXTS)
