"""The engine of BLIP-2: transformers ``Blip2ForImageTextRetrieval`` (Salesforce/blip2-itm-vit-g),
its 256-d image-text contrastive (ITC) projections.

* Text: the normalised text projection of the Q-Former's first ([CLS]) text token, as the
  model's forward pass computes it with ``use_image_text_matching_head=False``; text is cut
  at the catalogue's context length (32 tokens, BLIP-2's Q-Former training length).
* Image: the model gives 32 vectors per image, one per learned query, and scores a text by
  the best of the 32 cosines. One vector per image is the renormalised mean of the 32
  normalised query projections. Its dot product with a text vector is the mean of the 32
  query cosines, divided by a per-image constant: for a fixed image it ranks texts exactly as
  the mean query similarity does, a smooth stand-in for the max that keeps every query's
  evidence, and it is a unit vector like every other family's, usable in any cosine index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Blip2Config, Blip2ForImageTextRetrieval, BlipImageProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from runners.contract import ModelSpec, RunnerOptions, WeightSource
from runners.families import transformers_torch as shared

load_text_inputs = shared.load_text_inputs  # the engine's text inputs: the entry's tokenizer


def architecture_config(model: ModelSpec, tiny: bool, vocab_size: int | None = None) -> Blip2Config:
    """The upstream architecture, or its tiny variant (with the stand-in tokenizer's vocabulary);
    the tiny Q-Former keeps a cross-attention layer (every second layer has one)."""
    shrink = {"vision_config": shared.TINY_TOWER, "qformer_config": {**shared.TINY_TOWER, "vocab_size": vocab_size}}
    return shared.config_from_architecture(Blip2Config, model, shrink if tiny else None)


def _image_processor(size: int) -> BlipImageProcessor:
    """BLIP-2's evaluation preprocessing: a bicubic resize to the square input, CLIP statistics."""
    return BlipImageProcessor(size={"height": size, "width": size}, resample=PILImageResampling.BICUBIC,
                              image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, do_convert_rgb=True)


def _random_parts(model: ModelSpec, tiny: bool) -> shared.EntryParts:
    from runners.fabrication.stand_in_tokenizers import wordpiece_tokenizer
    from runners.fabrication.tiny_towers import tiny_network

    tokenizer = wordpiece_tokenizer()
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # as the upstream tokenizer does
    config = architecture_config(model, tiny, vocab_size=len(tokenizer))

    def build() -> Blip2ForImageTextRetrieval:
        network = Blip2ForImageTextRetrieval(config)
        # transformers initialises the learned queries to zero, which makes all 32 identical;
        # BLIP-2's own Q-Former draws them from N(0, initializer_range), as done here.
        torch.nn.init.normal_(network.query_tokens, std=config.qformer_config.initializer_range)
        return network

    network = tiny_network(build) if tiny else build()
    return shared.EntryParts(network, tokenizer, _image_processor(config.vision_config.image_size), "stand-in")


def write_entry(model: ModelSpec, directory: Path, source: WeightSource) -> dict[str, Any]:
    return shared.write_image_text_entry(model, directory, source, Blip2ForImageTextRetrieval, _random_parts,
                                  "image_text_hidden_size")


class Blip2Runner(shared.TransformersRunner):
    def __init__(self, directory: Path, device: str) -> None:
        super().__init__(directory, device, Blip2ForImageTextRetrieval)
        self.dimension = int(self.model.config.image_text_hidden_size)

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        net = self.model
        embeddings = net.embeddings(input_ids=tokens["input_ids"])
        text = net.qformer(query_embeds=embeddings, query_length=0,
                           attention_mask=tokens["attention_mask"]).last_hidden_state
        return net.text_projection(text[:, 0, :])

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        net = self.model
        patches = net.vision_model(pixel_values=pixel_values).last_hidden_state
        queries = net.query_tokens.expand(patches.shape[0], -1, -1)
        patch_mask = torch.ones(patches.shape[:-1], dtype=torch.long, device=patches.device)
        outputs = net.qformer(query_embeds=queries, encoder_hidden_states=patches,
                              encoder_attention_mask=patch_mask).last_hidden_state
        return F.normalize(net.vision_projection(outputs), dim=-1).mean(dim=1)



def load_runner(directory: Path, options: RunnerOptions) -> Blip2Runner:
    return Blip2Runner(directory, options.device)
