"""The engine of CN-CLIP: transformers ``ChineseCLIPModel`` (OFA-Sys/chinese-clip-vit-*).

Vectors are ``get_text_features`` / ``get_image_features``, L2-normalised; text is cut at the
catalogue's context length (52 tokens, Chinese-CLIP's own tokenisation length). The entry's
metadata records the checkpoint's exponentiated logit scale.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel

from runners.backends.torch_io import scoring_metadata
from runners.contract import ModelSpec, RunnerOptions, WeightSource
from runners.families import transformers_torch as shared

load_text_inputs = shared.load_text_inputs  # the engine's text inputs: the entry's tokenizer


def architecture_config(model: ModelSpec, tiny: bool, vocab_size: int | None = None) -> ChineseCLIPConfig:
    """The upstream architecture, or its tiny variant (with the stand-in tokenizer's vocabulary)."""
    shrink = {"text_config": {**shared.TINY_TOWER, "vocab_size": vocab_size}, "vision_config": shared.TINY_TOWER}
    return shared.config_from_architecture(ChineseCLIPConfig, model, shrink if tiny else None)


def _random_parts(model: ModelSpec, tiny: bool) -> shared.EntryParts:
    from runners.fabrication.stand_in_tokenizers import wordpiece_tokenizer
    from runners.fabrication.tiny_towers import tiny_network

    tokenizer = wordpiece_tokenizer()
    build = partial(ChineseCLIPModel, architecture_config(model, tiny, vocab_size=len(tokenizer)))
    network = tiny_network(build) if tiny else build()
    return shared.EntryParts(network, tokenizer, ChineseCLIPImageProcessor(), "stand-in")


def write_entry(model: ModelSpec, directory: Path, source: WeightSource) -> dict[str, Any]:
    return shared.write_image_text_entry(model, directory, source, ChineseCLIPModel, _random_parts, "projection_dim",
                                         scoring=lambda network: scoring_metadata(network.logit_scale))


class ChineseClipRunner(shared.TransformersRunner):
    def __init__(self, directory: Path, device: str) -> None:
        super().__init__(directory, device, ChineseCLIPModel)
        self.dimension = int(self.model.config.projection_dim)

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.get_text_features(**tokens).pooler_output

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output


def load_runner(directory: Path, options: RunnerOptions) -> ChineseClipRunner:
    return ChineseClipRunner(directory, options.device)
