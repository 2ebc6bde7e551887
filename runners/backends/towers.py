"""A runner's encoders as plain torch modules, for conversion to other runtimes (OpenVINO).

An adapter describes a loaded model by two things, both used by its own PyTorch runner, so
another backend consumes exactly what the PyTorch path consumes:

* its text inputs (``adapter.load_text_inputs(directory)``, :data:`runners.contract.TextInputs`):
  texts -> named integer tensors, the tokenizer exactly as the runner calls it, built without
  loading any weights;
* its towers (``runner.towers()``): the text tower takes those tensors as keyword arguments,
  the image tower takes :data:`runners.contract.PIXELS` (uint8 ``(N, H, W, 3)``, the image
  preparer's output) and does the normalisation itself; both return unnormalised features
  ``(N, dimension)``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class Tower(nn.Module):
    """``features(**inputs)`` as a module that owns ``owner``'s parameters, so that tracing
    (``torch.export``) sees them as the model's weights rather than as loose constants."""

    def __init__(self, features: Callable[..., torch.Tensor], owner: nn.Module) -> None:
        super().__init__()
        self.owner = owner
        self._features = features

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self._features(**inputs)
