"""MobileCLIP's "MCT" text encoder: a transformer framed by two convolutional RepMixer blocks.

Written from the architecture of Apple's ``ml-mobileclip`` (``mobileclip/text_encoder.py`` with
``model_name: "mct"``). Module and parameter names follow Apple's, so the ``text_encoder.*``
part of a released checkpoint (``mobileclip_s0.pt``) loads here unchanged and strictly:

    embedding_layer, positional_embedding.pos_embed.pos_embed,
    transformer.0 (RepMixer block), transformer.1..N (pre-norm transformer layers),
    transformer.N+1 (RepMixer block), final_layer_norm, projection_layer

The encoder has no causal mask and no padding mask: every position attends to the padding
it was trained with, so inputs are always the full context length. The feature of a text is
the one at its end-of-text token (the highest token id), as in CLIP.

Apple's layer norms compute in float32 whatever the input dtype; the runners here run in
float32, where a plain :class:`torch.nn.LayerNorm` is the same computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TextConfig:
    """Shape of an MCT text encoder (Apple's ``text_cfg`` fields, under shorter names)."""

    dim: int = 512
    layers: int = 4
    heads: int = 8
    ffn_multiplier: float = 4.0
    vocab_size: int = 49408
    context_length: int = 77
    repmixer_kernel: int = 11

    @property
    def ffn_dim(self) -> int:
        """Hidden width of a transformer layer's MLP, rounded up to a multiple of 16."""
        return int(math.ceil(self.dim * self.ffn_multiplier / 16.0) * 16)


def _depthwise_row_conv(dim: int, kernel: int) -> nn.Conv2d:
    """A depthwise ``1 x kernel`` convolution over a ``(B, dim, 1, L)`` sequence."""
    return nn.Conv2d(dim, dim, (1, kernel), padding=(0, kernel // 2), groups=dim, bias=False)


class _ConvBN(nn.Sequential):
    """``conv`` then ``bn``: one training-time branch of a re-parameterisable block."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.conv = _depthwise_row_conv(dim, kernel)
        self.bn = nn.BatchNorm2d(dim)


class _RepBranches(nn.Module):
    """Sum of a batch-norm skip branch and ``conv_branches`` depthwise conv+BN branches
    (Apple's MobileOneBlock as the text RepMixer configures it: no activation, no scale
    branch)."""

    def __init__(self, dim: int, kernel: int, conv_branches: int) -> None:
        super().__init__()
        self.rbr_skip = nn.BatchNorm2d(dim)
        self.rbr_conv = nn.ModuleList(_ConvBN(dim, kernel) for _ in range(conv_branches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rbr_skip(x)
        for branch in self.rbr_conv:
            out = out + branch(x)
        return out


class _RepMixer(nn.Module):
    """Token mixing along the sequence: ``x + scale * (mixer(x) - norm(x))``."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.norm = _RepBranches(dim, kernel, conv_branches=0)
        self.mixer = _RepBranches(dim, kernel, conv_branches=1)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))


class _ConvFFN(nn.Module):
    """Depthwise conv + BN, then a 1x1-conv MLP with GELU."""

    def __init__(self, dim: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.conv = _ConvBN(dim, kernel)
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    """A MetaFormer block with a RepMixer token mixer, on ``(B, L, D)`` sequences."""

    def __init__(self, dim: int, kernel: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.token_mixer = _RepMixer(dim, kernel)
        self.convffn = _ConvFFN(dim, int(dim * mlp_ratio), kernel)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2).unsqueeze(2)  # (B, L, D) -> (B, D, 1, L)
        x = self.token_mixer(x)
        x = x + self.layer_scale * self.convffn(x)
        return x.squeeze(2).transpose(1, 2)


class _SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv_proj``, no mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"text width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv_proj(x).reshape(batch, length, 3, self.heads, dim // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(query, key, value)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer. The sequential indices (attention at ``pre_norm_mha.1``,
    MLP linears at ``pre_norm_ffn.1`` and ``.4``) are those of Apple's checkpoints; the
    identities hold the places of its dropout layers."""

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.pre_norm_mha = nn.Sequential(nn.LayerNorm(dim), _SelfAttention(dim, heads), nn.Identity())
        self.pre_norm_ffn = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, ffn_dim), nn.GELU(), nn.Identity(), nn.Linear(ffn_dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pre_norm_mha(x)
        return x + self.pre_norm_ffn(x)


class _LearnablePositions(nn.Module):
    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, 1, length, dim))
        nn.init.trunc_normal_(self.pos_embed, std=dim**-0.5)


class _PositionalEmbedding(nn.Module):
    """Holds the table at ``positional_embedding.pos_embed.pos_embed``, as Apple nests it."""

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = _LearnablePositions(length, dim)

    def forward(self) -> torch.Tensor:
        table = self.pos_embed.pos_embed
        return table.reshape(1, table.shape[-2], table.shape[-1])


class MctTextEncoder(nn.Module):
    """Token ids ``(B, context_length)`` in, projected features ``(B, projection_dim)`` out."""

    def __init__(self, config: TextConfig, projection_dim: int) -> None:
        super().__init__()
        self.context_length = config.context_length
        self.embedding_layer = nn.Embedding(config.vocab_size, config.dim)
        self.positional_embedding = _PositionalEmbedding(config.context_length, config.dim)
        self.transformer = nn.ModuleList(
            [RepMixerBlock(config.dim, config.repmixer_kernel)]
            + [TransformerLayer(config.dim, config.heads, config.ffn_dim) for _ in range(config.layers)]
            + [RepMixerBlock(config.dim, config.repmixer_kernel)]
        )
        self.final_layer_norm = nn.LayerNorm(config.dim)
        self.projection_layer = nn.Parameter(torch.empty(config.dim, projection_dim))
        nn.init.normal_(self.projection_layer, std=config.dim**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != self.context_length:
            raise ValueError(
                f"expected {self.context_length} tokens per text (padding included), got {tokens.shape[1]}"
            )
        x = self.embedding_layer(tokens) + self.positional_embedding()
        for layer in self.transformer:
            x = layer(x)
        x = self.final_layer_norm(x)
        end_of_text = x[torch.arange(tokens.shape[0], device=tokens.device), tokens.argmax(dim=-1)]
        return end_of_text @ self.projection_layer
