"""Tiny random networks whose vectors tell inputs apart.

:func:`tiny_network` builds a tiny random network reproducibly, redraws its weights
(:func:`spread_weights`) and measures its batch-norm statistics (:func:`calibrate_batch_norms`),
so that different inputs give clearly different vectors and the parity tests on tiny entries
can tell a wrong input pipeline from a right one. Every tiny entry is built through it; how
each family shrinks its architecture is the family's (and its catalogue rows') own.
"""

from __future__ import annotations

import re
from typing import Any, Callable, TypeVar

import torch
import torch.nn as nn

TINY_SEED = 0
# Query and key projections (whole fused projections where they are fused) of every
# attention layer the tiny entries hold: open_clip's and torch's ``in_proj_weight``, timm's
# ``qkv`` and attention-pool ``q``/``kv``, the MCT ``qkv_proj``, BERT's ``query``/``key``,
# CLIP-style ``q_proj``/``k_proj`` and BLIP-2's ``qkv``.
QUERY_KEY_WEIGHTS = re.compile(r"(^|\.)((q|k)_proj|query|key|q|kv|qkv|qkv_proj)\.weight$|(^|\.)in_proj_weight$")
# Scale of query and key projections under :func:`spread_weights`: attention logits get a
# standard deviation of its square (1 at unit scale).
ATTENTION_GAIN = 2.0
# Sample images in the pass that calibrates batch norms (:func:`calibrate_batch_norms`).
CALIBRATION_IMAGES = 8

Network = TypeVar("Network", bound=nn.Module)

def spread_weights(network: nn.Module, seed: int = TINY_SEED) -> None:
    """Redraw every weight matrix (every parameter of two or more dimensions) of a tiny random
    network from N(0, 1/fan_in), query and key projections at :data:`ATTENTION_GAIN` times that
    deviation.

    Initialisers are tuned for training large networks: small deviations (BLIP-2's vision
    tower uses 1e-10), layer scales of 1e-5 (FastViT, MCT) that leave every block close to the
    identity. In a network of one or two blocks that makes outputs almost independent of the
    input (1 - cos ~ 1e-6 between a red and a blue image on the tiny FastViT towers). At unit
    activation scale different inputs give different vectors; attention logits of standard
    deviation 1 still let every token attend to nearly all others, so a pooled feature averages
    fine detail away (1 - cos ~ 5e-3 between two noise images on the tiny CLIP tower); a gain
    on queries and keys makes attention selective.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if parameter.dim() >= 2:
                gain = ATTENTION_GAIN if QUERY_KEY_WEIGHTS.search(name) else 1.0
                parameter.normal_(0.0, gain * parameter[0].numel() ** -0.5, generator=generator)


def noise_images(size: int) -> torch.Tensor:
    """:data:`CALIBRATION_IMAGES` pixel-noise images, ``(N, 3, size, size)`` in 0..1: the sample
    inputs of the pass that calibrates a tiny image tower's batch norms."""
    return torch.rand(CALIBRATION_IMAGES, 3, size, size)


def calibrate_batch_norms(network: nn.Module, forward: Callable[[], Any]) -> None:
    """Set every batch norm's running statistics to those of the activations that ``forward()``
    (a pass of ``network`` over sample inputs) produces, as training would have.

    A random network's statistics are placeholders (mean 0, variance 1), which in eval mode
    leave every activation uncentred: MobileCLIP's pixels (0..1, no normalisation) then carry
    an offset that all images share, and pooled FastViT features of two noise images differ
    by ~1e-3. Centred on sample images, each layer passes on what tells images apart.
    """
    norms = [module for module in network.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    training = network.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one pass sets the batch's statistics
    network.train()
    with torch.no_grad():
        forward()
    network.train(training)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def tiny_network(build: Callable[[], Network], calibrate: Callable[[Network], Any] | None = None,
                 seed: int = TINY_SEED) -> Network:
    """``build()`` with its weights spread (:func:`spread_weights`) and, where ``calibrate(network)``
    is given (a forward pass over random sample inputs), its batch-norm statistics measured on
    that pass (:func:`calibrate_batch_norms`). torch's random generator is seeded throughout
    (its state restored afterwards): the same tiny entry on every import."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build()
        spread_weights(network, seed)
        if calibrate is not None:
            calibrate_batch_norms(network, lambda: calibrate(network))
    return network
