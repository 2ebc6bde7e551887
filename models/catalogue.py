"""The 19 models of the API, with what it takes to import and serve each one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

TEXT = "text"
IMAGE = "image"
VIDEO = "video"
MULTIMODAL = (TEXT, IMAGE, VIDEO)
TEXT_ONLY = (TEXT,)


@dataclass(frozen=True)
class CatalogueModel:
    """One servable model.

    ``adapter`` names the runner module in ``runners/`` that imports and serves the model;
    ``upstream`` is what that adapter needs to fetch the real weights (an open_clip
    architecture and pretrained tag, or a Hugging Face repository id).
    ``instruction_template``, for models trained with task instructions, formats a text
    input's optional ``instruction`` with its text (``{instruction}``, ``{text}``).
    """

    family: str
    name: str
    adapter: str
    upstream: Mapping[str, str]
    dimension: int
    image_size: int | None
    context_length: int
    modalities: tuple[str, ...] = MULTIMODAL
    notes: str = field(default="", compare=False)
    instruction_template: str | None = None

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


def _open_clip(family: str, name: str, arch: str, pretrained: str, dim: int, size: int,
               context: int = 77, **extra: str) -> CatalogueModel:
    return CatalogueModel(family, name, "open_clip", {"arch": arch, "pretrained": pretrained, **extra},
                          dim, size, context)


def _hf(family: str, name: str, adapter: str, repo: str, dim: int, size: int, context: int) -> CatalogueModel:
    return CatalogueModel(family, name, adapter, {"repo": repo}, dim, size, context)


# Qwen3-Embedding's query format (``get_detailed_instruct`` of its model card).
QWEN3_INSTRUCTION = "Instruct: {instruction}\nQuery:{text}"


def _text_embedder(family: str, name: str, repo: str, dim: int, context: int, pooling: str,
                   instruction_template: str | None = None) -> CatalogueModel:
    return CatalogueModel(family, name, "text_embedder", {"repo": repo, "pooling": pooling}, dim, None,
                          context, TEXT_ONLY, instruction_template=instruction_template)


CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel("MobileCLIP", "mobileclip_s0", "mobileclip_s0", {"repo": "apple/MobileCLIP-S0"},
                   512, 256, 77),
    _open_clip("MobileCLIP", "mobileclip_s1", "MobileCLIP-S1", "datacompdr", 512, 256),
    _open_clip("MobileCLIP", "mobileclip_s2", "MobileCLIP-S2", "datacompdr", 512, 256),
    _open_clip("MobileCLIP", "mobileclip_b", "MobileCLIP-B", "datacompdr", 512, 224),
    _open_clip("MobileCLIP", "mobileclip_blt", "MobileCLIP-B", "datacompdr_lt", 512, 224),
    _open_clip("CLIP", "clip-vit-b-32", "ViT-B-32", "laion2b_s34b_b79k", 512, 224),
    _open_clip("CLIP", "clip-vit-b-16", "ViT-B-16", "openai", 512, 224),
    _open_clip("CLIP", "clip-vit-l-14", "ViT-L-14", "datacomp_xl_s13b_b90k", 768, 224),
    _open_clip("CLIP", "clip-vit-h-14", "ViT-H-14", "laion2b_s32b_b79k", 1024, 224),
    _hf("CN-CLIP", "cn-clip-vit-b-16", "chinese_clip", "OFA-Sys/chinese-clip-vit-base-patch16",
        512, 224, 52),
    _hf("CN-CLIP", "cn-clip-vit-l-14", "chinese_clip", "OFA-Sys/chinese-clip-vit-large-patch14",
        768, 224, 52),
    _hf("CN-CLIP", "cn-clip-vit-h-14", "chinese_clip", "OFA-Sys/chinese-clip-vit-huge-patch14",
        1024, 224, 52),
    _open_clip("SigLIP", "siglip2-vit-b-16", "ViT-B-16-SigLIP2", "webli", 768, 224, 64),
    _open_clip("SigLIP", "siglip2-vit-l-16", "ViT-L-16-SigLIP2-256", "webli", 1024, 256, 64),
    _open_clip("SigLIP", "siglip2-so400m-patch16-384", "ViT-SO400M-16-SigLIP2-384", "webli",
               1152, 384, 64),
    _hf("Blip2", "blip2_transformers", "blip2", "Salesforce/blip2-itm-vit-g", 256, 224, 32),
    _text_embedder("QwenText", "qwen3-embedding-0.6b", "Qwen/Qwen3-Embedding-0.6B", 1024, 32768,
                   "lasttoken", QWEN3_INSTRUCTION),
    _text_embedder("QwenText", "qwen3-embedding-4b", "Qwen/Qwen3-Embedding-4B", 2560, 32768,
                   "lasttoken", QWEN3_INSTRUCTION),
    _text_embedder("QwenText", "qwen3-embedding-8b", "Qwen/Qwen3-Embedding-8B", 4096, 32768,
                   "lasttoken", QWEN3_INSTRUCTION),
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
