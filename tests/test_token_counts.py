"""Token counts (the usage figure of the OpenAI-compatible route) and the scoring parameters an
import records (what ``POST /rank`` turns cosines into probabilities with).

Counts are compared with each family's upstream tokenizer on the tiny entries of the session:
special tokens included, truncated to the tower's length, padding not. The recorded logit
scale and bias are compared with those the entry's network holds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer
from transformers import AutoTokenizer, ChineseCLIPModel

from helpers import stored_entry
from models.catalogue import find_model
from runners.backends import openvino_backend
from runners.backends.cpu_lanes import SlicedRunner
from runners.contract import LOGIT_BIAS, LOGIT_SCALE, OpenVinoOptions, RunnerOptions, WeightSource
from runners.families import mobileclip_s0_torch
from runners.families.open_clip_torch import load_entry_model

CLIP = "CLIP/clip-vit-b-32"
MOBILECLIP_S0 = "MobileCLIP/mobileclip_s0"
SIGLIP2 = "SigLIP/siglip2-vit-b-16"
CN_CLIP = "CN-CLIP/cn-clip-vit-b-16"
BLIP2 = "Blip2/blip2_transformers"
QWEN = "QwenText/qwen3-embedding-0.6b"
QWEN_CAP = 16  # a token cap far below the model's own length, so truncation shows cheaply

SHORT = "a photo of a cat"
BANGS = "!$ " * 5  # "!" inside a word is id 0: CLIP's padding id, here a real token
SPELLED = "<start_of_text> a cat <end_of_text> on a mat"  # CLIP's special tokens, as text
LONG = "a photo of a cat on the street at night " * 30  # beyond every context
TEXTS = [SHORT, "", BANGS, SPELLED, LONG]
WORD_100K = "ab" * 50_000  # upstream's CLIP tokenizer takes minutes over this one word


def store_metadata(directory: Path) -> dict:
    """The BentoML metadata of the entry at ``directory``."""
    return dict(stored_entry(directory).metadata)


def simple_tokenizer_counts(tokenizer: SimpleTokenizer, texts: list[str]) -> list[int]:
    """Upstream's tokens of each text: start, the text's own, end; cut at the context."""
    return [min(len(tokenizer.encode(text)) + 2, tokenizer.context_length) for text in texts]


def hf_counts(tokenizer, texts: list[str], max_length: int) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]


# --- token counts ---------------------------------------------------------------------------


def test_clip_counts_every_token_through_the_end_of_text(tiny_import):
    directory = tiny_import(CLIP)
    inputs = find_model(CLIP).adapter.load_text_inputs(directory)
    upstream = open_clip.get_tokenizer(f"local-dir:{directory}")
    assert 0 in upstream.encode(BANGS)
    expected = simple_tokenizer_counts(upstream, TEXTS)
    assert expected[1] == 2 and expected[-1] == 77
    assert inputs.count_tokens(TEXTS) == expected
    assert [inputs.count_tokens([text])[0] for text in TEXTS] == expected
    assert inputs.count_tokens([WORD_100K]) == [77]


def test_mobileclip_s0_counts_like_open_clips_tokenizer(tiny_import):
    directory = tiny_import(MOBILECLIP_S0)
    inputs = find_model(MOBILECLIP_S0).adapter.load_text_inputs(directory)
    upstream = SimpleTokenizer(bpe_path=str(directory / mobileclip_s0_torch.VOCAB_FILE),
                               context_length=find_model(MOBILECLIP_S0).context_length)
    assert inputs.count_tokens(TEXTS) == simple_tokenizer_counts(upstream, TEXTS)
    assert inputs.count_tokens([WORD_100K]) == [upstream.context_length]


def test_siglip2_counts_the_gemma_tokens_short_of_padding(tiny_import):
    directory = tiny_import(SIGLIP2)
    inputs = find_model(SIGLIP2).adapter.load_text_inputs(directory)
    upstream = open_clip.get_tokenizer(f"local-dir:{directory}")
    context = find_model(SIGLIP2).context_length
    expected = hf_counts(upstream.tokenizer, [upstream.clean_fn(text) for text in TEXTS], context)
    assert expected[1] == 1 and expected[-1] == context  # Gemma appends its end token only
    assert inputs.count_tokens(TEXTS) == expected


@pytest.mark.parametrize("model_id", [CN_CLIP, BLIP2])
def test_transformers_families_count_the_truncated_tokens(tiny_import, model_id):
    directory = tiny_import(model_id)
    inputs = find_model(model_id).adapter.load_text_inputs(directory)
    context = find_model(model_id).context_length
    expected = hf_counts(AutoTokenizer.from_pretrained(directory), TEXTS, context)
    assert expected[1] == 2 and expected[-1] == context  # [CLS] and [SEP]
    assert inputs.count_tokens(TEXTS) == expected


def test_the_text_embedder_counts_up_to_the_configured_cap(tiny_import):
    directory = tiny_import(QWEN)
    inputs = find_model(QWEN).adapter.load_text_inputs(directory, RunnerOptions(text_token_cap=QWEN_CAP))
    expected = hf_counts(AutoTokenizer.from_pretrained(directory), TEXTS, QWEN_CAP)
    assert expected[1] == 1 and expected[-1] == QWEN_CAP  # the appended end-of-text token
    assert inputs.count_tokens(TEXTS) == expected


def test_wrapped_and_openvino_runners_count_as_the_pytorch_runner(tiny_import, tmp_path):
    directory = tiny_import(CLIP)
    adapter = find_model(CLIP).adapter
    runner = adapter.load_runner(directory)
    expected = runner.count_tokens(TEXTS)
    assert expected == adapter.load_text_inputs(directory).count_tokens(TEXTS)
    assert SlicedRunner(runner, lanes=2, threads=2).count_tokens(TEXTS) == expected
    openvino = openvino_backend.load_runner(adapter, directory, f"{directory.parent.name}:{directory.name}",
                                            RunnerOptions(), OpenVinoOptions(cache_dir=tmp_path))
    assert openvino.count_tokens(TEXTS) == expected


# --- scoring parameters ---------------------------------------------------------------------


def test_open_clip_entries_record_their_networks_scale_and_bias(tiny_import):
    clip, siglip = (tiny_import(model_id) for model_id in (CLIP, SIGLIP2))
    clip_net, siglip_net = load_entry_model(clip), load_entry_model(siglip)
    assert clip_net.logit_bias is None and LOGIT_BIAS not in store_metadata(clip)
    assert store_metadata(clip)[LOGIT_SCALE] == pytest.approx(clip_net.logit_scale.exp().item())
    recorded = store_metadata(siglip)
    assert recorded[LOGIT_SCALE] == pytest.approx(siglip_net.logit_scale.exp().item())
    assert recorded[LOGIT_BIAS] == pytest.approx(siglip_net.logit_bias.item())
    assert (recorded[LOGIT_SCALE], recorded[LOGIT_BIAS]) != (1.0, 0.0)


def test_cn_clip_records_its_networks_scale(tiny_import):
    directory = tiny_import(CN_CLIP)
    network = ChineseCLIPModel.from_pretrained(directory, local_files_only=True)
    assert store_metadata(directory)[LOGIT_SCALE] == pytest.approx(network.logit_scale.exp().item())
    assert LOGIT_BIAS not in store_metadata(directory)


@pytest.mark.parametrize("model_id", [BLIP2, QWEN])
def test_cosine_scored_families_record_no_scale(tiny_import, model_id):
    assert not {LOGIT_SCALE, LOGIT_BIAS} & set(store_metadata(tiny_import(model_id)))


def test_mobileclip_s0_records_clips_initial_scale_for_random_weights(tiny_import):
    recorded = store_metadata(tiny_import(MOBILECLIP_S0))
    assert recorded[LOGIT_SCALE] == pytest.approx(1 / 0.07) and LOGIT_BIAS not in recorded


def test_mobileclip_s0_records_the_scale_of_apples_checkpoint(tmp_path):
    """A checkpoint in Apple's layout (zeros, of the shapes Apple's ``mobileclip_s0.pt`` has)
    whose logit scale is not the initial one."""
    with open(Path(__file__).parent / "data" / "mobileclip_s0_reference.json", encoding="utf-8") as handle:
        shapes = json.load(handle)["checkpoint_shapes"]
    checkpoint = {name: torch.zeros(shape, dtype=torch.int64 if name.endswith("num_batches_tracked") else None)
                  for name, shape in shapes.items()}
    checkpoint[mobileclip_s0_torch.APPLE_LOGIT_SCALE] = torch.tensor(math.log(50.0))
    (tmp_path / "download").mkdir()
    torch.save(checkpoint, tmp_path / "download" / mobileclip_s0_torch.CHECKPOINT_FILE)
    (tmp_path / "entry").mkdir()
    metadata = find_model(MOBILECLIP_S0).adapter.write_entry(
        find_model(MOBILECLIP_S0), tmp_path / "entry", WeightSource("dir", path=tmp_path / "download"))
    assert metadata[LOGIT_SCALE] == pytest.approx(50.0) and LOGIT_BIAS not in metadata
