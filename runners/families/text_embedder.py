"""The text-embedder family: transformers text embedders (QwenText: Qwen/Qwen3-Embedding-*; any
sentence-transformers directory of a Transformer, Pooling and Normalize stack), its engine in
:mod:`runners.families.text_embedder_torch`. Text only: no image preparer.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from runners.contract import FamilyAdapter, ModelSpec

if TYPE_CHECKING:
    from runners.backends.downloads import UpstreamFiles


class TextEmbedderFamily(FamilyAdapter):
    name = "text_embedder"

    def engine(self) -> ModuleType:
        from runners.families import text_embedder_torch

        return text_embedder_torch

    def upstream_files(self, model: ModelSpec) -> list[UpstreamFiles]:
        """The Hub files an import of ``model``'s upstream weights fetches (a snapshot)."""
        from runners.families import transformers_torch

        return transformers_torch.upstream_files(model)


TEXT_EMBEDDER = TextEmbedderFamily()
