"""The interface every model-family adapter implements.

An adapter module in this package provides these functions:

* ``write_entry(model, directory, source)`` fills a model-store directory with everything
  the model needs at run time (weights, config, tokenizer, preprocessing), from upstream
  weights, a local directory, or random initialisation;
* ``load_runner(directory, device)`` returns an :class:`EmbeddingRunner` (the forward pass,
  used by the Encoder service);
* ``load_image_preparer(directory)`` returns an :class:`ImagePreparer` (resize and crop,
  used by the entry service so that only compact uint8 arrays reach the Encoder);
* ``load_text_inputs(directory)`` returns the runner's tokenisation without loading weights
  (:data:`runners.towers.TextInputs`), and the runner's ``towers()`` its encoders as torch
  modules: what the OpenVINO backend converts and feeds (:mod:`runners.towers`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from runners.towers import Towers


@dataclass(frozen=True)
class WeightSource:
    """Where ``write_entry`` takes weights from.

    ``kind`` is ``"upstream"`` (download), ``"dir"`` (``path`` holds downloaded files) or
    ``"random"`` (random initialisation; ``tiny`` shrinks the architecture for tests).
    """

    kind: str
    path: Path | None = None
    tiny: bool = False


class ImagePreparer(Protocol):
    """Turns an RGB image into the model's input pixels, uint8 ``(H, W, 3)``."""

    def __call__(self, image: Image.Image) -> np.ndarray: ...


class EmbeddingRunner(ABC):
    """A loaded model: batches in, L2-normalised float32 vectors out.

    ``backend`` names the runtime; ``device`` is the device in use where the runner resolves
    it itself (``None``: the configured one).
    """

    dimension: int
    backend: str = "pytorch"
    device: str | None = None

    @abstractmethod
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dimension)``, rows of unit norm."""

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """Embed uint8 ``(N, H, W, 3)`` pixels from the matching :class:`ImagePreparer`."""
        raise NotImplementedError("this model does not embed images")

    def towers(self) -> Towers:
        """The encoders as torch modules, for conversion; the runner may adapt its model for
        tracing, so convert from a runner loaded for that purpose."""
        raise NotImplementedError(f"{type(self).__name__} has no torch towers")
