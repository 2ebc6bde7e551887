"""The text-embedder family: transformers text embedders (QwenText: Qwen/Qwen3-Embedding-*; any
sentence-transformers directory of a Transformer, Pooling and Normalize stack), its engine in
:mod:`runners.families.text_embedder_torch`. Text only: no image preparer.
"""

from __future__ import annotations

from types import ModuleType

from runners.contract import FamilyAdapter


class TextEmbedderFamily(FamilyAdapter):
    name = "text_embedder"

    def engine(self) -> ModuleType:
        from runners.families import text_embedder_torch

        return text_embedder_torch


TEXT_EMBEDDER = TextEmbedderFamily()
