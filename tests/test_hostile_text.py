"""Hostile text inputs: cost bounded by the model's context, one bad item failing only its own
request, and strings that are not valid Unicode refused with 422.

Timings are compared with a baseline measured in the same test (the machine is shared).
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import pytest
import torch

from embedding_server.encoder.coalescing import Coalescer
from embedding_server.http_api.errors import ApiError, InvalidInput
from embedding_server.encoder.failed_rows import check_embedded, embed_isolating
from embedding_server.pipeline import EmbeddingPipeline
from embedding_server.http_api.schemas import EmbeddingRequest, ModelInfo, TextInput
from embedding_server.settings import Settings
from models.catalogue import find_model
from runners.contract import RunnerOptions
from runners.families import clip_tokenizer, mobileclip_s0_torch
from runners.families.mobileclip_s0 import MOBILECLIP_S0
from runners.families.open_clip import OPEN_CLIP
from runners.families.open_clip_torch import ClipTextInputs
from runners.families.text_embedder import TEXT_EMBEDDER
from runners.families.clip_tokenizer import BoundedSimpleTokenizer
from runners.backends.token_budget import budget_groups
from helpers import TEST_MODEL_ID, embedding_body

def random_word(seed: int, chars: int = 100_000) -> str:
    return "".join(random.Random(seed).choices(string.ascii_lowercase, k=chars))


WORD_100K = random_word(0)
ORDINARY = "a photo of a cat sitting on a red chair"
PROSE = "The quick brown fox jumps over the lazy dog, and then it rests in the sun. " * 1300
SURROGATE = "\ud800"


def random_words(seed: int, chars: int = 100_000) -> str:
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 12))) for _ in range(chars // 7)]
    return " ".join(words)[:chars]


def seconds(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def baseline(call, *args, repeats: int = 5) -> float:
    """The fastest of a few runs: the cost of ``call`` on this machine now."""
    return min(seconds(call, *args) for _ in range(repeats))


def fastest(call: Callable[..., object], inputs: list) -> float:
    """The fastest run of ``call`` over ``inputs``, distinct so that no run profits from a cache."""
    return min(seconds(call, value) for value in inputs)


def assert_long_words_cost_about_ordinary_words(tokenize: Callable[[list[str]], object]) -> None:
    """A word of 2,000 and one of 100,000 characters tokenise within a few times the time of
    ordinary words of the same length (upstream's merging is quadratic in the word: 0.2 s at
    2,000 characters, minutes at 100,000)."""
    for chars in (2000, 100_000):
        words = fastest(tokenize, [[random_words(seed, chars)] for seed in range(3)])
        word = fastest(tokenize, [[random_word(seed, chars)] for seed in range(3)])
        assert word < 10 * words, (chars, word, words)


def text_request(text, model: str = TEST_MODEL_ID, **extra) -> dict:
    return embedding_body({"type": "text", "text": text, **extra}, model)


# --- 1. cost bounded by the context ---------------------------------------------------------

ORDINARY_TEXTS = [ORDINARY, "", "<start_of_text> special <end_of_text>", "ünïcødé café 猫 一只猫的照片城市夜景",
                  "🐱" * 40, "A much longer caption, with punctuation! " * 12, PROSE[:3000], "x" * 2000,
                  "ab" * 1200]


@pytest.fixture(scope="module")
def clip_inputs(tiny_entry: Path) -> ClipTextInputs:
    return OPEN_CLIP.load_text_inputs(tiny_entry)


def test_bounded_clip_tokenizer_gives_upstream_tokens_for_ordinary_texts(tiny_entry):
    upstream = open_clip.get_tokenizer(f"local-dir:{tiny_entry}")
    bounded = clip_tokenizer.bounded(open_clip.get_tokenizer(f"local-dir:{tiny_entry}"))
    assert isinstance(bounded, BoundedSimpleTokenizer)
    assert torch.equal(bounded(ORDINARY_TEXTS), upstream(ORDINARY_TEXTS))


def test_the_heap_merge_gives_upstreams_merges_for_any_word(tiny_entry):
    upstream = open_clip.get_tokenizer(f"local-dir:{tiny_entry}")
    bounded = clip_tokenizer.bounded(open_clip.get_tokenizer(f"local-dir:{tiny_entry}"))
    rng = random.Random(5)
    alphabets = [string.ascii_lowercase, "ab", "x", "aeiou", "éàüß🐱", [chr(0x4E00 + i) for i in range(300)]]
    for _ in range(500):
        word = "".join(rng.choices(rng.choice(alphabets), k=rng.randint(1, 400)))
        symbols = "".join(upstream.byte_encoder[byte] for byte in word.encode("utf-8"))
        assert bounded.bpe(symbols) == upstream.bpe(symbols), word


def test_a_100k_character_word_tokenises_in_about_the_time_of_ordinary_words(clip_inputs):
    assert_long_words_cost_about_ordinary_words(clip_inputs)
    tokens = clip_inputs([WORD_100K])["tokens"]
    assert tokens.shape[1] <= 77 and int(tokens[0, -1]) == clip_inputs.tokenizer.eot_token_id


def test_the_tokenizer_cache_stays_bounded_and_special_tokens_survive_eviction(clip_inputs):
    tokenizer = clip_inputs.tokenizer
    # bpe itself, word by word: encode stops at the context, so it would reach few words
    for index in range(clip_tokenizer.CACHE_SIZE + 5_000):  # more distinct words than it holds
        tokenizer.bpe(f"word{index}")
    assert len(tokenizer.cache) == clip_tokenizer.CACHE_SIZE  # filled, and no further
    ids = tokenizer.encode("<start_of_text> <end_of_text>")
    assert ids == [tokenizer.sot_token_id, tokenizer.eot_token_id]


def test_mobileclip_s0_tokenizer_is_bounded_and_unchanged(tmp_path):
    (tmp_path / mobileclip_s0_torch.CONFIG_FILE).write_text(json.dumps(mobileclip_s0_torch.entry_config(tiny=True)))
    (tmp_path / mobileclip_s0_torch.VOCAB_FILE).write_bytes(Path(open_clip.tokenizer.default_bpe()).read_bytes())
    inputs = MOBILECLIP_S0.load_text_inputs(tmp_path)
    assert isinstance(inputs.tokenizer, BoundedSimpleTokenizer)
    assert torch.equal(inputs(ORDINARY_TEXTS)["tokens"], open_clip.get_tokenizer("ViT-B-16")(ORDINARY_TEXTS))
    assert_long_words_cost_about_ordinary_words(inputs)


class RecordingEncoder:
    """An Encoder that records the texts it is sent and answers unit vectors."""

    def __init__(self, dimension: int = 4) -> None:
        self.texts: list[str] = []
        self.dimension = dimension

    async def encode_text(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return np.eye(1, self.dimension, dtype=np.float32).repeat(len(texts), axis=0)

    async def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        raise AssertionError("no images here")

    async def info(self) -> ModelInfo:
        return ModelInfo(id="x", dimension=self.dimension, modalities=["text"], image_size=None,
                         context_length=77, device="CPU", backend="pytorch", precision="f32", weights="random",
                         variant="tiny", store_tag="test")


def embed_with(model_id: str, item: TextInput, **settings) -> tuple[RecordingEncoder, object]:
    model = find_model(model_id)
    encoder = RecordingEncoder()
    pipeline = EmbeddingPipeline(model, encoder, None, Settings(**settings))
    request = EmbeddingRequest(model=model.id, input=item, encoding_format="float")
    try:
        return encoder, asyncio.run(pipeline.embed(request))
    except ApiError as error:
        return encoder, error


def test_the_entry_service_sends_only_what_the_context_can_hold():
    texts = [WORD_100K, random_words(1), ORDINARY]
    sent, _ = embed_with(TEST_MODEL_ID, TextInput(type="text", text=texts))
    assert [len(text) for text in sent.texts] == [77 * 32, 77 * 32, len(ORDINARY)]
    assert sent.texts[2] == ORDINARY
    # Long-context models: min(context 32768, EMBEDDING_TEXT_TOKEN_CAP) tokens' worth.
    sent, _ = embed_with("QwenText/qwen3-embedding-0.6b", TextInput(type="text", text=[WORD_100K]),
                         text_token_cap=1000)
    assert len(sent.texts[0]) == 32_000


def test_a_request_over_the_total_text_limit_is_422():
    sent, error = embed_with(TEST_MODEL_ID, TextInput(type="text", text=[ORDINARY] * 10),
                             max_request_text_chars=len(ORDINARY) * 9)
    assert isinstance(error, InvalidInput) and "per request" in error.detail
    assert sent.texts == []


def test_a_long_prose_text_embeds_exactly_as_upstream_truncates_it(api_client, reference_clip):
    model, _, tokenizer = reference_clip
    response = api_client.post("/embeddings", json=text_request(PROSE))
    assert response.status_code == 200
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(tokenizer([PROSE])), dim=-1)[0]
    assert np.allclose(response.json()["embedding"], expected.numpy(), atol=1e-6)


@pytest.mark.timeout(120)  # upstream's tokenizer takes minutes on the 100,000-character word
def test_hostile_texts_are_answered_in_about_the_time_of_ordinary_prose(api_client):
    def post(text):
        response = api_client.post("/embeddings", json=text_request(text))
        assert response.status_code == 200, response.text

    # Each hostile request against a request of ordinary prose of the same length, so that only
    # what makes it hostile (one huge word, words never seen before) can cost more.
    prose = baseline(post, PROSE, repeats=3)
    assert fastest(post, [random_word(seed) for seed in range(3)]) < 5 * prose
    assert fastest(post, [random_words(seed) for seed in range(3)]) < 5 * prose
    many_prose = baseline(post, [PROSE[:20_000]] * 64, repeats=3)
    many_new_words = [[random_words(seed * 64 + i, 20_000) for i in range(64)] for seed in range(2)]
    assert fastest(post, many_new_words) < 5 * many_prose


def test_budget_groups_keep_order_and_bound_padded_tokens():
    lengths = [5, 5, 40, 3, 3, 3, 100, 2]
    groups = budget_groups(lengths, budget=16)
    assert [index for group in groups for index in group] == list(range(len(lengths)))
    for group in groups:
        assert len(group) == 1 or len(group) * max(lengths[i] for i in group) <= 16
    assert budget_groups([7] * 10, budget=70) == [range(10)]  # within the budget: one pass


def test_long_context_batches_run_within_the_token_budget(tiny_import):
    entry = tiny_import("QwenText/qwen3-embedding-0.6b")
    texts = ["a photo of a cat", "quarterly earnings report " * 40, "a dog", "sky " * 100, "red"]
    whole = TEXT_EMBEDDER.load_runner(entry, RunnerOptions(text_token_budget=10**9))
    budgeted = TEXT_EMBEDDER.load_runner(entry, RunnerOptions(text_token_budget=128))
    shapes = []
    features = budgeted.text_features
    budgeted.text_features = lambda tokens: shapes.append(tuple(tokens["input_ids"].shape)) or features(tokens)
    vectors = budgeted.encode_text(texts)
    assert len(shapes) > 1 and all(rows == 1 or rows * length <= 128 for rows, length in shapes)
    assert np.allclose(vectors, whole.encode_text(texts), atol=1e-5)
    assert np.allclose(vectors[0], whole.encode_text(texts[:1])[0], atol=1e-5)


# --- 2. one bad item fails only its own request ----------------------------------------------

BAD = "BAD"


class MarkedEncoder:
    """Fails any call holding the marked text (as a tokenizer or forward pass would); rows are
    the texts' lengths. Calls wait for ``gate`` so that requests can queue behind the first."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(texts)
        self.started.set()
        await self.gate.wait()
        if BAD in texts:
            raise ValueError("the tokenizer failed")
        return np.array([[len(text)] for text in texts], dtype=np.float32)


def test_a_failing_item_fails_only_its_own_request_in_a_merged_call():
    async def scenario() -> None:
        encoder = MarkedEncoder()
        batcher = Coalescer(encoder, lambda parts: [t for part in parts for t in part], max_items=16,
                            max_wait_s=60.0, clock=lambda: 0.0)
        first = asyncio.create_task(batcher(["first"], 1))
        await encoder.started.wait()
        parts = [["a"], ["bb", "ccc"], [BAD], ["dddd"], ["eeeee"]]
        tasks = [asyncio.create_task(batcher(part, len(part))) for part in parts]
        await asyncio.sleep(0)  # one loop turn: the tasks enqueue themselves (no timing)
        encoder.gate.set()
        assert (await first).tolist() == [[5]]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [r.tolist() for i, r in enumerate(results) if i != 2] == [[[1]], [[2], [3]], [[4]], [[5]]]
        assert isinstance(results[2], ValueError)
        assert encoder.calls[1] == ["a", "bb", "ccc", BAD, "dddd", "eeeee"]  # merged first
        assert [BAD] in encoder.calls[2:]  # then narrowed down to the bad request alone

    asyncio.run(scenario())


def test_encoder_state_errors_are_answered_to_all_without_resending():
    async def scenario() -> None:
        calls = []

        async def overloaded(texts: list[str]) -> np.ndarray:
            calls.append(texts)
            raise ApiError(503, "The encoder is overloaded; retry later")

        batcher = Coalescer(overloaded, lambda parts: [t for part in parts for t in part], max_items=16,
                            max_wait_s=60.0)
        results = await asyncio.gather(batcher(["a"], 1), batcher(["b"], 1), return_exceptions=True)
        assert all(isinstance(r, ApiError) and r.status_code == 503 for r in results)
        assert calls == [["a", "b"]]  # one merged call, not sent again in parts

    asyncio.run(scenario())


def test_the_encoder_answers_items_that_fail_alone_as_nan_rows_and_embeds_the_rest():
    calls = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        if BAD in texts:
            raise RuntimeError("forward pass failed")
        return np.array([[len(text), 0.0] for text in texts], dtype=np.float32)

    texts = ["a", "bb", BAD, "dddd", "eeeee", "ffffff", "g", "hh"]
    rows = embed_isolating(encode, texts, dimension=2)
    assert np.isnan(rows[2]).all()
    assert rows[[0, 1, 3, 4, 5, 6, 7], 0].tolist() == [1, 2, 4, 5, 6, 1, 2]
    assert len(calls) <= 1 + 2 * 3  # halving: a few calls, not one per item
    with pytest.raises(InvalidInput, match=r"text\[2\] could not be embedded"):
        check_embedded(rows, lambda index: f"text[{index}]")


@pytest.fixture
def tokenizer_failing_on_bad(monkeypatch):
    """The CLIP tokenizer raises for any batch that holds ``BAD``."""
    real_call = ClipTextInputs.__call__

    def failing_on_bad(self, texts):
        if BAD in texts:
            raise ValueError("tokenizer failed")
        return real_call(self, texts)

    monkeypatch.setattr(ClipTextInputs, "__call__", failing_on_bad)


def test_the_encoder_service_isolates_items_merged_from_several_callers(service_module,
                                                                       tokenizer_failing_on_bad):
    encoder = service_module.Encoder()
    good = ["a photo of a cat", "a dog"]
    expected = encoder.encode_text(good)
    rows = encoder.encode_text([good[0], BAD, good[1]])  # as the adaptive batcher merges calls
    assert np.isnan(rows[1]).all()
    assert np.allclose(rows[[0, 2]], expected, atol=1e-6)


def test_through_the_api_a_text_the_model_fails_on_is_422_and_others_still_embed(api_client,
                                                                                 tokenizer_failing_on_bad):
    response = api_client.post("/embeddings", json=text_request(["fine", BAD]))
    assert response.status_code == 422
    assert response.json() == {"detail": "Invalid input data: text[1] could not be embedded by the model"}
    assert api_client.post("/embeddings", json=text_request(["fine", "also fine"])).status_code == 200


# --- 3. strings that are not valid Unicode ---------------------------------------------------

def surrogate_bodies() -> list[tuple[str, dict]]:
    def video(kind: str, field: str) -> dict:
        return {"type": kind, field: f"x{SURROGATE}y"}

    return [
        ("model", {**text_request("cat"), "model": f"CLIP/{SURROGATE}"}),
        ("text", text_request(f"a {SURROGATE} cat")),
        ("text list", text_request(["ok", SURROGATE])),
        ("instruction", text_request("cat", instruction=SURROGATE)),
        ("image_url", {**text_request(""), "input": {"type": "image_url", "image_url": f"http://a/{SURROGATE}"}}),
        ("image_base64", {**text_request(""), "input": {"type": "image_base64", "image_base64": SURROGATE}}),
        ("video_url", {**text_request(""), "input": video("video_url", "video_url")}),
        ("video_base64", {**text_request(""), "input": video("video_base64", "video_base64")}),
        ("video_path", {**text_request(""), "input": video("video_file", "video_path")}),
        ("frames_manifest_path", {**text_request(""), "input": video("frames_batch", "frames_manifest_path")}),
        ("video_frames", {**text_request(""), "input": {"type": "video_frames", "video_frames": [
            {"type": "image_url", "image_url": SURROGATE}]}}),
        ("unknown key", {**text_request(""), "input": {"type": "text", "text": "a", SURROGATE: 1}}),
        ("type tag", {**text_request(""), "input": {"type": SURROGATE, "text": "a"}}),
        ("encoding_format", {**text_request("a"), "encoding_format": SURROGATE}),
    ]


@pytest.mark.parametrize("field,body", surrogate_bodies(), ids=[name for name, _ in surrogate_bodies()])
def test_lone_surrogates_are_422_with_a_utf8_json_body(api_client, field, body):
    # json.dumps writes the surrogate as the escape "\ud800", as a client's JSON would.
    response = api_client.post("/embeddings", content=json.dumps(body),
                               headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = json.loads(response.content.decode("utf-8"))["detail"]  # strict UTF-8
    assert detail.startswith("Invalid input data: ")

