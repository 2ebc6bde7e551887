"""What the engines of transformers-run families share (their adapters share
:mod:`runners.families.transformers_entry`).

A store entry is a Hugging Face directory: the model's ``save_pretrained`` files, its
tokenizer and (for image models) its image processor, plus :data:`ENTRY_CONFIG_FILE` with
what serving needs beyond them (text length cap, pooling). Serving loads everything from the
entry with ``local_files_only=True``.

Images: the entry service's preparer resizes and crops as the entry's own image processor does
(:mod:`runners.families.transformers_entry`), leaving uint8 pixels; the runner then rescales
and normalises on the model's device with the processor's own factors.
"""

from __future__ import annotations

import copy
import json
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.image_processing_utils import BaseImageProcessor

from runners.backends.devices import torch_device
from runners.backends.downloads import UpstreamFiles
from runners.backends.token_budget import budget_groups
from runners.backends.torch_io import pixel_tensor, unit_rows
from runners.backends.towers import Tower
from runners.contract import DEFAULT_RUNNER_OPTIONS, EmbeddingRunner, ModelSpec, RunnerOptions, Towers, WeightSource
from runners.families.transformers_entry import ENTRY_CONFIG_FILE, PROCESSOR_CONFIG_FILE, read_entry_config

_CONFIG_PATTERNS = ["*.json", "*.txt", "*.model", "*.tiktoken"]
_SAFETENSORS, _PICKLE = "*.safetensors", "*.bin"


def upstream_snapshot(repo: str) -> Path:
    """Download hub repository ``repo`` (config, tokenizer, preprocessing, weights) with
    progress bars; safetensors weights when the repository has them, else ``*.bin``."""
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(repo, allow_patterns=[*_CONFIG_PATTERNS, _SAFETENSORS]))
    if not any(path.rglob(_SAFETENSORS)):
        path = Path(snapshot_download(repo, allow_patterns=[*_CONFIG_PATTERNS, _PICKLE]))
    return path


def upstream_files(model: ModelSpec) -> list[UpstreamFiles]:
    """What :func:`upstream_snapshot` fetches of ``model``'s repository."""
    return [UpstreamFiles(model.upstream["repo"], tuple(_CONFIG_PATTERNS), (_SAFETENSORS, _PICKLE))]


def source_directory(model: ModelSpec, source: WeightSource) -> Path:
    """The Hugging Face directory that pretrained weights come from (downloaded when upstream)."""
    if source.kind == "upstream":
        return upstream_snapshot(model.upstream["repo"])
    if source.kind == "dir":
        return source.path
    raise ValueError(f"{source.kind!r} weights do not come from a directory")


@dataclass
class EntryParts:
    """What a transformers entry is written from."""

    network: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    image_processor: BaseImageProcessor | None
    tokenizer_origin: str  # "pretrained" (shipped with the weights) or "stand-in"
    settings: dict[str, Any] = field(default_factory=dict)  # adapter-specific serving settings


def pretrained_parts(model_class: type[PreTrainedModel], directory: Path, with_images: bool) -> EntryParts:
    """Model, tokenizer and (``with_images``) image processor from a Hugging Face directory."""
    network = model_class.from_pretrained(directory, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True) if with_images else None
    return EntryParts(network, tokenizer, processor, "pretrained")


# A tiny tower: two narrow layers. Image and patch sizes, position tables, query counts and
# output widths stay the real ones, so preprocessing and vector width are the model's.
TINY_TOWER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}


def config_from_architecture(config_class: type[PretrainedConfig], model: ModelSpec,
                             shrink: Mapping[str, Mapping[str, Any]] | None = None) -> PretrainedConfig:
    """``config_class`` with the catalogue row's architecture (the hub repository's
    ``config.json`` fields); ``shrink`` maps a sub-config name (``"."``: the top level) to the
    sizes that replace its own."""
    if not model.architecture:
        raise ValueError(f"the catalogue gives no architecture for {model.id}")
    config = copy.deepcopy(dict(model.architecture))
    for part, sizes in (shrink or {}).items():
        (config if part == "." else config[part]).update(sizes)
    del config["model_type"]
    return config_class(**config)


def save_entry(model: ModelSpec, directory: Path, parts: EntryParts, dimension: int,
               max_length: int) -> dict[str, Any]:
    """Write ``parts`` into the entry; returns the entry metadata.

    ``dimension`` is the width of the model's vectors: an import whose weights do not give the
    catalogue's dimension (a wrong ``--from-dir``) is refused.
    """
    if dimension != model.dimension:
        raise ValueError(f"{model.id} gives {model.dimension}-d vectors, but these weights give "
                         f"{dimension}-d: is this the right model directory?")
    parts.network.save_pretrained(directory)
    parts.tokenizer.save_pretrained(directory)
    if parts.image_processor is not None:
        parts.image_processor.save_pretrained(directory)
    config = {"max_length": max_length, "tokenizer": parts.tokenizer_origin, **parts.settings}
    with open(directory / ENTRY_CONFIG_FILE, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    metadata: dict[str, Any] = {"parameters": sum(p.numel() for p in parts.network.parameters()),
                                "tokenizer": parts.tokenizer_origin, "tokenizer_vocab_size": len(parts.tokenizer)}
    if parts.tokenizer_origin == "stand-in":
        metadata["tokenizer_stands_in_for"] = model.upstream["repo"]
    return metadata


def write_image_text_entry(model: ModelSpec, directory: Path, source: WeightSource,
                           model_class: type[PreTrainedModel],
                           random_parts: Callable[[ModelSpec, bool], EntryParts], dimension_field: str,
                           scoring: Callable[[PreTrainedModel], dict[str, float]] | None = None) -> dict[str, Any]:
    """``write_entry`` of an image-text family: ``random_parts(model, tiny)`` for random weights,
    else ``model_class`` with its tokenizer and image processor from the weights' directory;
    the vectors' width is the model config's ``dimension_field``. ``scoring(network)`` gives
    the metadata of how the checkpoint scores image-text pairs, for families that record it."""
    parts = (random_parts(model, source.tiny) if source.kind == "random"
             else pretrained_parts(model_class, source_directory(model, source), with_images=True))
    metadata = save_entry(model, directory, parts, int(getattr(parts.network.config, dimension_field)),
                          model.context_length)
    return {**metadata, **(scoring(parts.network) if scoring is not None else {})}


class PixelNormaliser:
    """Rescales and normalises prepared uint8 pixels as the entry's image processor does, as
    one fused step (``(x - mean / factor) / (std / factor)``, the processor's own fusion)."""

    def __init__(self, directory: Path, device: torch.device) -> None:
        processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True)
        factor = processor.rescale_factor if processor.do_rescale else 1.0
        mean = processor.image_mean if processor.do_normalize else [0.0, 0.0, 0.0]
        std = processor.image_std if processor.do_normalize else [1.0, 1.0, 1.0]
        self._mean = (torch.tensor(mean, dtype=torch.float32) / factor).view(1, 3, 1, 1).to(device)
        self._std = (torch.tensor(std, dtype=torch.float32) / factor).view(1, 3, 1, 1).to(device)

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` to the model's float ``(N, 3, H, W)`` input."""
        return self.normalise(pixel_tensor(pixels, self._mean.device))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """The same, from a uint8 tensor."""
        return (pixels.permute(0, 3, 1, 2).float() - self._mean) / self._std


def lengths(encoded: Mapping[str, list[list[int]]]) -> list[int]:
    """The length of each text of :meth:`TokenizerInputs.encode`'s output, in tokens."""
    return [len(ids) for ids in encoded["input_ids"]]


class TokenizerInputs:
    """The entry's tokenizer as the runners call it: padded to the batch's longest text,
    truncated at :attr:`max_length` tokens. :meth:`encode` and :meth:`pad` are the two halves
    of a call, for runners that pad parts of a batch separately."""

    def __init__(self, directory: Path, max_length: int) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.pad(self.encode(texts))

    def encode(self, texts: list[str]) -> dict[str, list[list[int]]]:
        """Unpadded token ids (and the tokenizer's other inputs) of ``texts``, truncated."""
        return dict(self.tokenizer(texts, truncation=True, max_length=self.max_length))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return lengths(self.encode(texts))

    def pad(self, encoded: Mapping[str, list[list[int]]]) -> dict[str, torch.Tensor]:
        """Tensors of encoded texts padded to their longest, on the tokenizer's padding side."""
        return dict(self.tokenizer.pad(dict(encoded), return_tensors="pt"))


def load_text_inputs(directory: Path, options: RunnerOptions = DEFAULT_RUNNER_OPTIONS) -> TokenizerInputs:
    """Text inputs cut at the entry's ``max_length``."""
    return TokenizerInputs(directory, int(read_entry_config(directory)["max_length"]))


class TransformersRunner(EmbeddingRunner):
    """Loads an entry's model and tokenizer; subclasses say how features come out of them.

    Weights run in float32 whatever dtype the entry stores them in. ``text_inputs`` defaults
    to :func:`load_text_inputs`. With a ``token_budget``, a text batch runs as consecutive
    forward passes of at most that many padded tokens (:mod:`runners.backends.token_budget`).
    """

    token_budget: int | None = None

    def __init__(self, directory: Path, device: str, model_class: type[PreTrainedModel],
                 text_inputs: TokenizerInputs | None = None) -> None:
        self._device = torch_device(device)
        self.entry_config = read_entry_config(directory)
        self.text_inputs = text_inputs or load_text_inputs(directory)
        self.model = model_class.from_pretrained(directory, local_files_only=True,
                                                 dtype=torch.float32).to(self._device).eval()
        has_images = (directory / PROCESSOR_CONFIG_FILE).is_file()
        self._normalise = PixelNormaliser(directory, self._device) if has_images else None

    @property
    def max_length(self) -> int:
        return self.text_inputs.max_length

    def tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """:attr:`text_inputs` on the model's device."""
        return self._on_device(self.text_inputs(texts))

    def _on_device(self, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: tensor.to(self._device) for name, tensor in tokens.items()}

    @abstractmethod
    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unnormalised text vectors of a tokenised batch."""

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("this model does not embed images")

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        if self.token_budget is None:
            return unit_rows(self.text_features(self.tokens(texts)))
        encoded = self.text_inputs.encode(texts)
        groups = budget_groups(lengths(encoded), self.token_budget)
        return np.concatenate([self._encode_group(encoded, group) for group in groups])

    def _encode_group(self, encoded: Mapping[str, list[list[int]]], group: range) -> np.ndarray:
        part = {name: values[group.start:group.stop] for name, values in encoded.items()}
        return unit_rows(self.text_features(self._on_device(self.text_inputs.pad(part))))

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        if self._normalise is None:
            raise NotImplementedError("this model does not embed images")
        return unit_rows(self._pixel_features(pixel_tensor(pixels, self._device)))

    def _pixel_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_features(self._normalise.normalise(pixels))

    def towers(self) -> Towers:
        image = Tower(self._pixel_features, self.model) if self._normalise is not None else None
        return Towers(text=Tower(lambda **tokens: self.text_features(tokens), self.model), image=image)
