"""The 19 models of the API, with what it takes to import and serve each one.

A row names its family's adapter (:mod:`runners.families`) and the checkpoint's facts: what
fetching its weights takes (``upstream``) and the architecture facts the family cannot look up
offline (:mod:`models.architectures`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from models import architectures as arch
from runners.contract import FamilyAdapter
from runners.families.blip2 import BLIP2
from runners.families.chinese_clip import CHINESE_CLIP
from runners.families.mobileclip_s0 import MOBILECLIP_S0
from runners.families.open_clip import OPEN_CLIP
from runners.families.text_embedder import TEXT_EMBEDDER

TEXT = "text"
IMAGE = "image"
VIDEO = "video"
MULTIMODAL = (TEXT, IMAGE, VIDEO)
TEXT_ONLY = (TEXT,)


@dataclass(frozen=True)
class CatalogueModel:
    """One servable model.

    ``adapter`` is the family that imports and serves the model; ``upstream`` is what it needs
    to fetch the real weights (an open_clip architecture and pretrained tag, or a Hugging Face
    repository id); ``architecture`` the checkpoint's architecture where the family cannot
    build it offline otherwise (Hugging Face ``config.json`` fields); ``tiny`` how its tiny
    test variant shrinks beyond the family's own rule (a timm tower's arguments).
    ``instruction_template``, for models trained with task instructions, formats a text
    input's optional ``instruction`` with its text (``{instruction}``, ``{text}``).
    ``matryoshka_min_dimension``, for models trained with nested (Matryoshka) dimensions, is
    the smallest leading part of a vector that is itself an embedding.
    """

    family: str
    name: str
    adapter: FamilyAdapter
    upstream: Mapping[str, str]
    dimension: int
    image_size: int | None
    context_length: int
    modalities: tuple[str, ...] = MULTIMODAL
    notes: str = field(default="", compare=False)
    instruction_template: str | None = None
    architecture: Mapping[str, Any] = field(default_factory=dict)
    tiny: Mapping[str, Any] = field(default_factory=dict)
    matryoshka_min_dimension: int | None = None

    @property
    def id(self) -> str:
        """The public identifier, ``Family/name``."""
        return f"{self.family}/{self.name}"

    @property
    def store_name(self) -> str:
        """The BentoML model-store name of this model's entries."""
        return self.name.lower()

    @property
    def supports_images(self) -> bool:
        return IMAGE in self.modalities


def _open_clip(family: str, name: str, architecture: str, pretrained: str, dim: int, size: int,
               context: int = 77, tiny_timm: Mapping[str, Any] | None = None) -> CatalogueModel:
    return CatalogueModel(family, name, OPEN_CLIP, {"arch": architecture, "pretrained": pretrained},
                          dim, size, context, tiny=tiny_timm or {})


def _hf(family: str, name: str, adapter: FamilyAdapter, repo: str, dim: int, size: int, context: int,
        architecture: Mapping[str, Any]) -> CatalogueModel:
    return CatalogueModel(family, name, adapter, {"repo": repo}, dim, size, context, architecture=architecture)


# Qwen3-Embedding's query format (``get_detailed_instruct`` of its model card).
QWEN3_INSTRUCTION = "Instruct: {instruction}\nQuery:{text}"


# Qwen3-Embedding's model card: "MRL Support", output dimensions from 32 up to the full one.
QWEN3_MATRYOSHKA_MIN = 32


def _text_embedder(family: str, name: str, repo: str, dim: int, context: int, pooling: str,
                   architecture: Mapping[str, Any], instruction_template: str | None = None,
                   matryoshka_min_dimension: int | None = None) -> CatalogueModel:
    return CatalogueModel(family, name, TEXT_EMBEDDER, {"repo": repo, "pooling": pooling}, dim, None,
                          context, TEXT_ONLY, instruction_template=instruction_template,
                          architecture=architecture, matryoshka_min_dimension=matryoshka_min_dimension)


CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel("MobileCLIP", "mobileclip_s0", MOBILECLIP_S0, {"repo": "apple/MobileCLIP-S0"},
                   512, 256, 77),
    _open_clip("MobileCLIP", "mobileclip_s1", "MobileCLIP-S1", "datacompdr", 512, 256,
               tiny_timm=arch.TINY_FASTVIT_MCI1),
    _open_clip("MobileCLIP", "mobileclip_s2", "MobileCLIP-S2", "datacompdr", 512, 256,
               tiny_timm=arch.TINY_FASTVIT_MCI2),
    _open_clip("MobileCLIP", "mobileclip_b", "MobileCLIP-B", "datacompdr", 512, 224, tiny_timm=arch.TINY_TIMM_VIT),
    _open_clip("MobileCLIP", "mobileclip_blt", "MobileCLIP-B", "datacompdr_lt", 512, 224,
               tiny_timm=arch.TINY_TIMM_VIT),
    _open_clip("CLIP", "clip-vit-b-32", "ViT-B-32", "laion2b_s34b_b79k", 512, 224),
    _open_clip("CLIP", "clip-vit-b-16", "ViT-B-16", "openai", 512, 224),
    _open_clip("CLIP", "clip-vit-l-14", "ViT-L-14", "datacomp_xl_s13b_b90k", 768, 224),
    _open_clip("CLIP", "clip-vit-h-14", "ViT-H-14", "laion2b_s32b_b79k", 1024, 224),
    _hf("CN-CLIP", "cn-clip-vit-b-16", CHINESE_CLIP, "OFA-Sys/chinese-clip-vit-base-patch16",
        512, 224, 52, arch.CN_CLIP_VIT_B_16),
    _hf("CN-CLIP", "cn-clip-vit-l-14", CHINESE_CLIP, "OFA-Sys/chinese-clip-vit-large-patch14",
        768, 224, 52, arch.CN_CLIP_VIT_L_14),
    _hf("CN-CLIP", "cn-clip-vit-h-14", CHINESE_CLIP, "OFA-Sys/chinese-clip-vit-huge-patch14",
        1024, 224, 52, arch.CN_CLIP_VIT_H_14),
    _open_clip("SigLIP", "siglip2-vit-b-16", "ViT-B-16-SigLIP2", "webli", 768, 224, 64,
               tiny_timm=arch.TINY_TIMM_VIT),
    _open_clip("SigLIP", "siglip2-vit-l-16", "ViT-L-16-SigLIP2-256", "webli", 1024, 256, 64,
               tiny_timm=arch.TINY_TIMM_VIT),
    _open_clip("SigLIP", "siglip2-so400m-patch16-384", "ViT-SO400M-16-SigLIP2-384", "webli",
               1152, 384, 64, tiny_timm=arch.TINY_TIMM_VIT),
    _hf("Blip2", "blip2_transformers", BLIP2, "Salesforce/blip2-itm-vit-g", 256, 224, 32, arch.BLIP2_ITM_VIT_G),
    _text_embedder("QwenText", "qwen3-embedding-0.6b", "Qwen/Qwen3-Embedding-0.6B", 1024, 32768,
                   "lasttoken", arch.QWEN3_EMBEDDING_0_6B, QWEN3_INSTRUCTION, QWEN3_MATRYOSHKA_MIN),
    _text_embedder("QwenText", "qwen3-embedding-4b", "Qwen/Qwen3-Embedding-4B", 2560, 32768,
                   "lasttoken", arch.QWEN3_EMBEDDING_4B, QWEN3_INSTRUCTION, QWEN3_MATRYOSHKA_MIN),
    _text_embedder("QwenText", "qwen3-embedding-8b", "Qwen/Qwen3-Embedding-8B", 4096, 32768,
                   "lasttoken", arch.QWEN3_EMBEDDING_8B, QWEN3_INSTRUCTION, QWEN3_MATRYOSHKA_MIN),
)


class UnknownModel(LookupError):
    """The requested name is not in the catalogue."""


def families() -> dict[str, list[str]]:
    """Model names grouped by family, in catalogue order (the shape of ``GET /models``)."""
    grouped: dict[str, list[str]] = {}
    for model in CATALOGUE:
        grouped.setdefault(model.family, []).append(model.name)
    return grouped


def find_model(requested: str) -> CatalogueModel:
    """Look a model up by ``Family/name`` or, when unambiguous, by its bare ``name``."""
    requested = requested.strip()
    for model in CATALOGUE:
        if requested == model.id:
            return model
    by_name = [model for model in CATALOGUE if model.name == requested]
    if len(by_name) == 1:
        return by_name[0]
    known = ", ".join(model.id for model in CATALOGUE)
    raise UnknownModel(f"Unknown model {requested!r}; known models: {known}")
