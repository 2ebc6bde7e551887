"""Tensor conversions at the edges of the PyTorch runners."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from runners.contract import LOGIT_BIAS, LOGIT_SCALE


def pixel_tensor(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` pixels as a tensor on ``device``, still uint8 (what the image
    towers of :mod:`runners.backends.towers` take)."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).to(device)


def unit_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` pixels as float ``(N, 3, H, W)`` in 0..1."""
    return pixels.permute(0, 3, 1, 2).float().div(255.0)


def unit_rows(features: torch.Tensor) -> np.ndarray:
    """L2-normalised float32 rows on the CPU."""
    return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)


def scoring_metadata(logit_scale: torch.Tensor | float, logit_bias: torch.Tensor | None = None) -> dict[str, float]:
    """Entry metadata of how a checkpoint scores image-text pairs: the learnt ``logit_scale``
    (a logarithm, as checkpoints store it) exponentiated, and the learnt bias where the model
    has one."""
    metadata = {LOGIT_SCALE: math.exp(torch.as_tensor(logit_scale).item())}
    if logit_bias is not None:
        metadata[LOGIT_BIAS] = logit_bias.item()
    return metadata
