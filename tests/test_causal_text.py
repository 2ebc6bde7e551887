"""The trimmed CLIP text tower equals open_clip's full-context ``encode_text``."""

from __future__ import annotations

import open_clip
import pytest
import torch

from runners.families.causal_text import encode_trimmed, trim, trimmable
from runners.families.open_clip import OPEN_CLIP
from samples import DISTINCT, reference_text, smallest_gap, unit_cosines

TINY_VISION = {"width": 64, "layers": 1, "head_width": 32, "patch_size": 32, "image_size": 224}
TINY_TEXT = {"width": 64, "layers": 2, "heads": 2}
TEXTS = ["", "a cat", "a photo of two dogs playing in the snow at night",
         " ".join(["a very long caption that the tokenizer truncates"] * 20)]


def encode_text_trimmed(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` as the runner computes it: on the positions up to the
    batch's last pooled one."""
    return encode_trimmed(model, trim(model, tokens))


def tiny_clip(**text_overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32", vision_cfg=TINY_VISION,
                                  text_cfg={**TINY_TEXT, **text_overrides}).eval()


@torch.inference_mode()
def test_trimmed_tower_equals_encode_text(reference_clip):
    model, _, tokenizer = reference_clip
    assert trimmable(model)
    tokens = tokenizer(TEXTS)
    trimmed, full = encode_text_trimmed(model, tokens), model.encode_text(tokens)
    assert (unit_cosines(trimmed.numpy(), full.numpy()) > 0.9999).all()
    assert smallest_gap(full.numpy()) > DISTINCT


@torch.inference_mode()
def test_short_batches_run_fewer_positions(reference_clip):
    """A batch of short texts runs only up to its longest one, and each text's vector does not
    depend on what else is in the batch."""
    model, _, tokenizer = reference_clip
    seen: list[int] = []
    hook = model.transformer.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[1]))
    try:
        alone = encode_text_trimmed(model, tokenizer(["a cat"]))
        among = encode_text_trimmed(model, tokenizer(["a cat", TEXTS[2]]))
    finally:
        hook.remove()
    assert seen == [4, len(TEXTS[2].split()) + 2]
    assert unit_cosines(alone.numpy(), among[:1].numpy())[0] > 0.9999


def test_runner_text_equals_open_clip(tiny_entry, reference_clip):
    vectors, expected = OPEN_CLIP.load_runner(tiny_entry).encode_text(TEXTS), reference_text(reference_clip, TEXTS)
    assert (unit_cosines(vectors, expected) > 0.9999).all()
    assert smallest_gap(expected) > DISTINCT


@pytest.mark.parametrize("overrides", [{"no_causal_mask": True}, {"pool_type": "last"}],
                         ids=["no-causal-mask", "last-token-pooling"])
def test_towers_that_see_their_padding_are_not_trimmed(overrides):
    assert trimmable(tiny_clip())
    assert not trimmable(tiny_clip(**overrides))
