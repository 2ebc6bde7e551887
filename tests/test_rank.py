"""``POST /rank``: cosines and the model's own probabilities (open_clip's zero-shot softmax for
CLIP, SigLIP2's sigmoid with its bias), the order, ``top_k``, mixed candidates, cosine-only
models and every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import TEST_MODEL_ID as MODEL
from helpers import in_process_pipeline, stored_entry
from samples import b64, encoded, random_image, reference_images, reference_text

LABELS = ["a photo of a cat", "a photo of a dog", "a diagram", "a red car", "a blue sky"]


def image_item(image) -> dict:
    return {"type": "image_base64", "image_base64": b64(encoded(image))}


def rank(client, query: dict, candidates: list, model: str = MODEL, **extra):
    return client.post("/rank", json={"model": model, "query": query, "candidates": candidates, **extra})


def by_index(body: dict) -> dict[int, dict]:
    return {result["index"]: result for result in body["results"]}


def test_zero_shot_probabilities_equal_open_clip_s_own(api_client, reference_clip):
    image = random_image(seed=21)
    response = rank(api_client, image_item(image), LABELS)
    assert response.status_code == 200, response.text
    body = response.json()
    model = reference_clip[0]
    image_features = torch.from_numpy(reference_images(reference_clip, [image]))
    text_features = torch.from_numpy(reference_text(reference_clip, LABELS))
    with torch.inference_mode():
        expected = (model.logit_scale.exp() * image_features @ text_features.T).softmax(dim=-1)[0].numpy()
    results = by_index(body)
    np.testing.assert_allclose([results[i]["probability"] for i in range(len(LABELS))], expected, atol=1e-4)
    assert (body["model"], body["scoring"], body["logit_bias"]) == (MODEL, "softmax", None)
    assert body["logit_scale"] == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
    cosines = (text_features @ image_features.T)[:, 0].numpy()
    np.testing.assert_allclose([results[i]["cosine"] for i in range(len(LABELS))], cosines, atol=1e-4)


def test_retrieval_probabilities_are_the_softmax_over_the_images(api_client, reference_clip):
    images = [random_image(seed=seed) for seed in (51, 52, 53)]
    body = rank(api_client, {"type": "text", "text": LABELS[0]}, [image_item(image) for image in images]).json()
    model = reference_clip[0]
    text_features = torch.from_numpy(reference_text(reference_clip, LABELS[:1]))
    image_features = torch.from_numpy(reference_images(reference_clip, images))
    with torch.inference_mode():
        expected = (model.logit_scale.exp() * text_features @ image_features.T).softmax(dim=-1)[0].numpy()
    results = by_index(body)
    assert body["scoring"] == "softmax"
    np.testing.assert_allclose([results[i]["probability"] for i in range(3)], expected, atol=1e-4)


def test_results_are_best_first_and_top_k_keeps_the_best(api_client):
    body = rank(api_client, image_item(random_image(seed=22)), LABELS).json()
    cosines = [result["cosine"] for result in body["results"]]
    assert cosines == sorted(cosines, reverse=True)
    probabilities = [result["probability"] for result in body["results"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sorted(result["index"] for result in body["results"]) == list(range(len(LABELS)))
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-9)
    top = rank(api_client, image_item(random_image(seed=22)), LABELS, top_k=2).json()
    assert top["results"] == body["results"][:2]


def test_same_modality_candidates_are_ranked_by_cosine_only(api_client):
    body = rank(api_client, {"type": "text", "text": LABELS[2]}, LABELS).json()
    assert body["results"][0]["index"] == 2 and body["results"][0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert body["scoring"] == "cosine" and {result["probability"] for result in body["results"]} == {None}


def test_mixed_candidates_keep_their_positions_and_get_cosines_only(api_client):
    images = [random_image(seed=31), random_image(seed=32)]
    candidates = [LABELS[0], image_item(images[0]), LABELS[1], image_item(images[1])]
    body = rank(api_client, image_item(images[1]), candidates).json()
    assert body["results"][0]["index"] == 3 and body["results"][0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert body["scoring"] == "cosine" and {result["probability"] for result in body["results"]} == {None}
    alone = by_index(rank(api_client, image_item(images[1]), [LABELS[0], image_item(images[0])]).json())
    mixed = by_index(body)
    assert mixed[0]["cosine"] == pytest.approx(alone[0]["cosine"], abs=1e-6)
    assert mixed[1]["cosine"] == pytest.approx(alone[1]["cosine"], abs=1e-6)


@pytest.mark.parametrize("body, fragment", [
    ({"query": {"type": "text", "text": "a"}, "candidates": []}, "candidates: List should have at least 1 item"),
    ({"query": {"type": "text", "text": ["a", "b"]}, "candidates": ["a"]}, "query.text.text"),
    ({"query": {"type": "video_url", "video_url": "x"}, "candidates": ["a"]}, "query"),
    ({"query": {"type": "text", "text": "a"}, "candidates": [{"type": "image_url"}]}, "candidates.0"),
    ({"query": {"type": "text", "text": "a"}, "candidates": ["a"], "top_k": 0}, "top_k"),
    ({"query": {"type": "text", "text": "a"}, "candidates": ["a"], "limit": 3}, "limit: Extra inputs"),
], ids=["no-candidates", "query-list", "video-query", "incomplete-image", "top-k-0", "unknown-field"])
def test_invalid_rank_requests_are_422(api_client, body, fragment):
    response = api_client.post("/rank", json={"model": MODEL, **body})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_a_bad_candidate_is_named(api_client):
    candidates = ["a cat", image_item(random_image(seed=1)), {"type": "image_base64", "image_base64": "AAAA"}]
    response = rank(api_client, {"type": "text", "text": "a cat"}, candidates)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("Invalid input data: candidates[2]: ")


def test_a_wrong_model_is_the_documented_400(api_client):
    response = rank(api_client, {"type": "text", "text": "a"}, ["b"], model="CLIP/clip-vit-h-14")
    assert response.status_code == 400 and response.json()["detail"].startswith("Model mismatch")


def test_candidates_share_the_text_limits(api_client, service_module):
    too_many = ["a"] * (service_module.settings.max_text_items + 1)
    response = rank(api_client, {"type": "text", "text": "a"}, too_many)
    assert response.status_code == 422 and "too many texts" in response.json()["detail"]
    cap = service_module.settings.max_image_items
    images = [{"type": "image_base64", "image_base64": "AAAA"}] * (cap + 1)  # refused before decoding
    response = rank(api_client, {"type": "text", "text": "a"}, images)
    assert response.json() == {"detail": f"Invalid input data: too many images: {cap + 1} > {cap} per request"}


# --- SigLIP2: sigmoid with its bias; a text-only model: cosine only ---

@pytest.fixture(scope="module")
def siglip(tiny_import):
    from embedding_server.composition import load_preparer
    from models.catalogue import find_model

    model = find_model("SigLIP/siglip2-vit-b-16")
    directory = tiny_import(model.id)
    pipeline = in_process_pipeline(model, model.adapter.load_runner(directory), load_preparer(model, directory),
                                   entry=stored_entry(directory))
    return pipeline, directory


def test_siglip_probabilities_are_its_sigmoid_with_scale_and_bias(api_client, use_pipeline, siglip):
    import open_clip

    from runners.families.open_clip_torch import load_entry_model

    pipeline, directory = siglip
    use_pipeline(pipeline)
    image = random_image(seed=41)
    response = rank(api_client, image_item(image), LABELS, model=pipeline.model.id)
    assert response.status_code == 200, response.text
    body = response.json()
    net = load_entry_model(directory).eval()
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{directory}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    with torch.inference_mode():
        image_features = F.normalize(net.encode_image(preprocess(image)[None]), dim=-1)
        text_features = F.normalize(net.encode_text(tokenizer(LABELS)), dim=-1)
        logits = image_features @ text_features.T * net.logit_scale.exp() + net.logit_bias
        expected = torch.sigmoid(logits)[0].numpy()
    assert body["scoring"] == "sigmoid"
    assert body["logit_bias"] == pytest.approx(float(net.logit_bias.detach()), rel=1e-6)
    results = by_index(body)
    np.testing.assert_allclose([results[i]["probability"] for i in range(len(LABELS))], expected, atol=1e-4)


def test_a_model_without_probabilities_answers_cosines_only(api_client, use_pipeline, tiny_import):
    from embedding_server.composition import load_preparer
    from models.catalogue import find_model

    model = find_model("Blip2/blip2_transformers")
    directory = tiny_import(model.id)
    use_pipeline(in_process_pipeline(model, model.adapter.load_runner(directory), load_preparer(model, directory),
                                     entry=stored_entry(directory)))
    body = rank(api_client, image_item(random_image(seed=1)), ["a", "b"], model=model.id).json()
    assert (body["scoring"], body["logit_scale"], body["logit_bias"]) == ("cosine", None, None)
    assert [result["probability"] for result in body["results"]] == [None, None]


def test_a_text_only_model_refuses_an_image_query(api_client, use_pipeline, tiny_import):
    from models.catalogue import find_model

    model = find_model("QwenText/qwen3-embedding-0.6b")
    directory = tiny_import(model.id)
    use_pipeline(in_process_pipeline(model, model.adapter.load_runner(directory), None))
    image_query = rank(api_client, image_item(random_image(seed=1)), ["a"], model=model.id)
    assert image_query.status_code == 400 and "not supported" in image_query.json()["detail"]
