"""Few-block variants of the timm image towers that open_clip configs name.

open_clip builds a timm tower from its registered name alone (``TimmModel`` forwards no
architecture arguments), so a tiny test entry can only shrink such a tower through a name
that timm knows. Each variant registered here calls the real architecture's own timm
entrypoint with fewer blocks or narrower stages: same classes (FastViT with its RepMixer,
attention and conditional-position-encoding stages; the MobileCLIP conv-stem ViT; the SigLIP
ViT with attention-pool head), same pretrained config and input size, same output width.

Importing this module registers the variants; the open_clip adapter imports it, so every
process that loads an entry (service, tests, reference checks) knows the names.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn
from timm.models import model_entrypoint, register_model

TINY_PREFIX = "tiny_"

# Per real timm architecture: the entrypoint arguments that shrink it. FastViT stages keep
# their kinds (RepMixer x3, then attention) with one block each and a quarter of the width;
# the ViTs keep their width (it is the SigLIP output dimension and the width of MobileCLIP-B's
# conv stem) with one block and a narrow MLP.
_SHRINK: dict[str, dict[str, Any]] = {
    "fastvit_mci1": {"layers": (1, 1, 1, 1), "embed_dims": (16, 32, 64, 128)},
    "fastvit_mci2": {"layers": (1, 1, 1, 1), "embed_dims": (20, 40, 80, 160)},
    "vit_base_mci_224": {"depth": 1, "mlp_ratio": 0.25},
    "vit_base_patch16_siglip_224": {"depth": 1, "mlp_ratio": 0.25},
    "vit_large_patch16_siglip_256": {"depth": 1, "mlp_ratio": 0.25},
    "vit_so400m_patch16_siglip_384": {"depth": 1, "mlp_ratio": 0.25},
}


def tiny_timm_name(name: str) -> str:
    """The registered tiny variant of timm architecture ``name``."""
    if name not in _SHRINK:
        raise ValueError(f"no tiny variant of timm architecture {name!r}; known: {', '.join(_SHRINK)}")
    return TINY_PREFIX + name


def _tiny_entrypoint(name: str, shrink: dict[str, Any]) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return model_entrypoint(name)(pretrained=pretrained, **{**shrink, **kwargs})

    entrypoint.__name__ = TINY_PREFIX + name
    entrypoint.__qualname__ = entrypoint.__name__
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{name} with {shrink} (tests only)."
    return entrypoint


for _name, _shrink in _SHRINK.items():
    register_model(_tiny_entrypoint(_name, _shrink))
