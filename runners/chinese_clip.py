"""Adapter for CN-CLIP: transformers ``ChineseCLIPModel`` (OFA-Sys/chinese-clip-vit-*).

Vectors are ``get_text_features`` / ``get_image_features``, L2-normalised; text is cut at the
catalogue's context length (52 tokens, Chinese-CLIP's own tokenisation length).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel

from models.catalogue import CatalogueModel
from runners.base import WeightSource
from runners.stand_in_tokenizers import wordpiece_tokenizer
from runners.tiny_towers import tiny_network
from runners.transformers_common import (
    TINY_TOWER,
    EntryParts,
    TransformersRunner,
    config_from_upstream,
    load_image_preparer,
    load_text_inputs,
    pretrained_parts,
    save_entry,
    source_directory,
)

__all__ = ["write_entry", "load_runner", "load_image_preparer", "load_text_inputs", "architecture_config"]


def architecture_config(model: CatalogueModel, tiny: bool, vocab_size: int | None = None) -> ChineseCLIPConfig:
    """The upstream architecture, or its tiny variant (with the stand-in tokenizer's vocabulary)."""
    shrink = {"text_config": {**TINY_TOWER, "vocab_size": vocab_size}, "vision_config": TINY_TOWER}
    return config_from_upstream(ChineseCLIPConfig, model.upstream["repo"], shrink if tiny else None)


def _random_parts(model: CatalogueModel, tiny: bool) -> EntryParts:
    tokenizer = wordpiece_tokenizer()
    build = partial(ChineseCLIPModel, architecture_config(model, tiny, vocab_size=len(tokenizer)))
    network = tiny_network(build) if tiny else build()
    return EntryParts(network, tokenizer, ChineseCLIPImageProcessor(), "stand-in")


def write_entry(model: CatalogueModel, directory: Path, source: WeightSource) -> dict[str, Any]:
    parts = (_random_parts(model, source.tiny) if source.kind == "random"
             else pretrained_parts(ChineseCLIPModel, source_directory(model, source), with_images=True))
    return save_entry(model, directory, parts, parts.network.config.projection_dim, model.context_length)


class ChineseClipRunner(TransformersRunner):
    def __init__(self, directory: Path, device: str) -> None:
        super().__init__(directory, device, ChineseCLIPModel)
        self.dimension = int(self.model.config.projection_dim)

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.get_text_features(**tokens).pooler_output

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output


def load_runner(directory: Path, device: str) -> ChineseClipRunner:
    return ChineseClipRunner(directory, device)
