"""The contract between the server and the model families, free of torch.

Everything above the runners (the catalogue, the importer, the entry and Encoder services)
depends on these types, never on an engine: the entry service imports this module and the
image preparers without loading torch, open_clip, transformers or OpenVINO.

* :class:`EmbeddingRunner`: a loaded model, texts or pixels in, unit vectors out (the Encoder);
* :class:`ImagePreparer`: an RGB image to the model's uint8 input pixels (the entry service);
* :class:`WeightSource`: where an import takes weights from;
* :class:`RunnerOptions`: the run-time choices a runner is loaded with (plain values, read from
  the settings at the top);
* :class:`FamilyAdapter`: what a model family implements (write an entry, load a runner, a
  preparer and the text inputs); a catalogue row names its family's adapter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_TEXT_TOKEN_CAP = 8192  # tokens per text of long-context text embedders
DEFAULT_TEXT_TOKEN_BUDGET = 16_384  # padded tokens per forward pass of those
PIXELS = "pixels"  # the image towers' input name: uint8 (N, H, W, 3), the preparer's output

# Entry metadata of the families whose checkpoints score image-text pairs (written at import,
# read by ``POST /rank``): the multiplier of cosine similarities (the exponentiated learnt
# ``logit_scale``) and, for sigmoid-trained models (SigLIP2), the learnt ``logit_bias``.
LOGIT_SCALE = "logit_scale"
LOGIT_BIAS = "logit_bias"


class TextInputs(Protocol):
    """A family's tokenizer exactly as its PyTorch runner calls it, built without loading
    weights: what other backends feed."""

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The named integer tensors the text tower takes."""

    def count_tokens(self, texts: list[str]) -> list[int]:
        """The tokens of each text that the tower sees: special tokens included, after
        truncation to the tower's length, padding not (an API's usage figure)."""


@dataclass(frozen=True)
class WeightSource:
    """Where ``write_entry`` takes weights from.

    ``kind`` is ``"upstream"`` (download), ``"dir"`` (``path`` holds downloaded files) or
    ``"random"`` (random initialisation; ``tiny`` shrinks the architecture for tests).
    """

    kind: str
    path: Path | None = None
    tiny: bool = False


@dataclass(frozen=True)
class RunnerOptions:
    """How a runner is loaded: ``device`` (``CPU``, ``GPU``, ``GPU.<n>``, ``AUTO``); for
    long-context text embedders the token cap per text and the padded-token budget per
    forward pass."""

    device: str = "CPU"
    text_token_cap: int = DEFAULT_TEXT_TOKEN_CAP
    text_token_budget: int = DEFAULT_TEXT_TOKEN_BUDGET


DEFAULT_RUNNER_OPTIONS = RunnerOptions()


@dataclass(frozen=True)
class OpenVinoOptions:
    """How an entry's converted encoders are compiled: OpenVINO properties, whether from the
    int8 IR, and where IR of entries imported without it is cached (``None``:
    ``<BENTOML_HOME>/openvino``)."""

    compile_options: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None
    int8: bool = False  # compile the entry's int8 IR (runners/backends/openvino_int8.py)


@dataclass(frozen=True)
class Towers:
    """A runner's encoders as torch modules, for conversion to other runtimes (OpenVINO): the
    text tower takes :class:`TextInputs`' tensors as keyword arguments, the image tower
    :data:`PIXELS`; both return unnormalised features ``(N, dimension)``
    (:class:`runners.backends.towers.Tower`). ``image`` is ``None`` for text-only models."""

    text: nn.Module
    image: nn.Module | None = None


class WeightsUnavailable(RuntimeError):
    """Upstream weights (or their tokenizer, config) could not be downloaded; the message says
    what and why, in one line."""


class DeviceUnavailable(RuntimeError):
    """The configured device is not available to the backend (the message lists those it sees)."""


class ModelSpec(Protocol):
    """What an adapter reads of a catalogue row (:class:`models.catalogue.CatalogueModel`)."""

    @property
    def id(self) -> str: ...

    upstream: Mapping[str, Any]  # what fetching the real weights takes (repository, tags)
    architecture: Mapping[str, Any]  # architecture facts the family cannot look up itself
    tiny: Mapping[str, Any]  # how a tiny test variant shrinks what ``architecture`` does not say
    dimension: int
    image_size: int | None
    context_length: int


class ImagePreparer(Protocol):
    """Turns an RGB image into the model's input pixels, uint8 ``(H, W, 3)``."""

    def __call__(self, image: Image.Image) -> np.ndarray: ...


class EmbeddingRunner(ABC):
    """A loaded model: batches in, L2-normalised float32 vectors out.

    ``backend`` names the runtime; ``device`` is the device in use where the runner resolves
    it itself (``None``: the configured one); ``precision`` is what its matmuls compute in
    (``f32``, ``bf16``, ``tf32``, ``f16``, ``int8``).
    """

    dimension: int
    text_inputs: TextInputs
    backend: str = "pytorch"
    device: str | None = None
    precision: str = "f32"

    @abstractmethod
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dimension)``, rows of unit norm."""

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """Embed uint8 ``(N, H, W, 3)`` pixels from the matching :class:`ImagePreparer`."""
        raise NotImplementedError("this model does not embed images")

    def count_tokens(self, texts: list[str]) -> list[int]:
        """What :meth:`encode_text` would see of each text, in tokens (:attr:`text_inputs`)."""
        return self.text_inputs.count_tokens(texts)

    def towers(self) -> Towers:
        """The encoders as torch modules, for conversion; the runner may adapt its model for
        tracing, so convert from a runner loaded for that purpose."""
        raise NotImplementedError(f"{type(self).__name__} has no torch towers")


class FamilyEngine(Protocol):
    """A family's engine module (torch and the family's libraries): what its adapter calls."""

    def write_entry(self, model: ModelSpec, directory: Path, source: WeightSource) -> dict[str, Any]: ...

    def load_runner(self, directory: Path, options: RunnerOptions) -> EmbeddingRunner: ...

    def load_text_inputs(self, directory: Path, options: RunnerOptions) -> TextInputs: ...


class FamilyAdapter(ABC):
    """A model family: how its store entries are written and loaded.

    An adapter's module stays free of torch: :meth:`engine` imports the family's engine (the
    module that runs it with torch) when an entry is written or a runner loaded, so the
    catalogue, which names the adapters, and the entry service, which only calls
    :meth:`load_image_preparer` (Pillow and numpy), stay light.
    """

    name: str  # recorded in each entry's metadata

    @abstractmethod
    def engine(self) -> FamilyEngine:
        """The family's engine module, imported on first use."""

    def write_entry(self, model: ModelSpec, directory: Path, source: WeightSource) -> dict[str, Any]:
        """Fill a model-store directory with everything ``model`` needs at run time (weights,
        config, tokenizer, preprocessing); returns metadata for the entry."""
        return self.engine().write_entry(model, directory, source)

    def load_runner(self, directory: Path, options: RunnerOptions = DEFAULT_RUNNER_OPTIONS) -> EmbeddingRunner:
        """The PyTorch runner of an entry (the Encoder's forward passes)."""
        return self.engine().load_runner(directory, options)

    def load_text_inputs(self, directory: Path, options: RunnerOptions = DEFAULT_RUNNER_OPTIONS) -> TextInputs:
        """The runner's tokenisation without loading weights (what OpenVINO is fed)."""
        return self.engine().load_text_inputs(directory, options)

    def load_image_preparer(self, directory: Path) -> ImagePreparer:
        """Resize and crop to the model's input, with Pillow and numpy only (entry service)."""
        raise NotImplementedError(f"the {self.name} family does not embed images")
