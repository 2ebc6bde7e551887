"""CLIP text towers run on the batch's real length instead of the full context.

A CLIP text tower has a causal attention mask (position ``i`` attends to positions ``<= i``)
and pools the feature at the end-of-text token. The padding after the last end-of-text
token of a batch therefore cannot change the result, and cutting it off saves most of the
compute for short queries (a 9-token query costs 1/8 of the 77-token context). open_clip's
``encode_text`` always runs the whole context, so :func:`encode_trimmed` runs the same
modules itself.

Only ``open_clip.CLIP`` models with a causal mask and end-of-text pooling qualify: towers
without a causal mask (SigLIP, MobileCLIP) attend to their padding and must keep it.
"""

from __future__ import annotations

import open_clip
import torch
from open_clip.transformer import text_global_pool

END_OF_TEXT_POOLS = ("argmax", "eos")


def trimmable(model: torch.nn.Module) -> bool:
    """Whether ``model``'s text tower gives the same result on trimmed padding."""
    return (isinstance(model, open_clip.CLIP) and getattr(model, "attn_mask", None) is not None
            and model.text_pool_type in END_OF_TEXT_POOLS)


def _pooled_positions(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """Where ``text_global_pool`` takes each row's feature from."""
    if model.text_pool_type == "argmax":
        return tokens.argmax(dim=-1)
    return (tokens == model.text_eos_id).int().argmax(dim=-1)


def trim(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``tokens`` without the columns after the batch's last pooled position."""
    return tokens[:, :int(_pooled_positions(model, tokens).max()) + 1]


def encode_trimmed(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` of tokens that :func:`trim` cut: the length is the tensor's (it
    stays symbolic when the tower is traced with a dynamic sequence length)."""
    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=model.text_eos_id)
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x if model.text_projection is None else x @ model.text_projection
