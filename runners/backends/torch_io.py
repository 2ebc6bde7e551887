"""Tensor conversions at the edges of the PyTorch runners."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
