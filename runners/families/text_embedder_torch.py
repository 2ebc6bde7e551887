"""The engine of transformers text embedders (QwenText: Qwen/Qwen3-Embedding-*; any
sentence-transformers model directory of a Transformer, Pooling and Normalize stack).

A vector is the pooled last hidden state, L2-normalised. The pooling is the one the model
ships in its sentence-transformers ``1_Pooling/config.json`` (Qwen3-Embedding: last token;
all-MiniLM-L6-v2: mean), else the catalogue's ``upstream["pooling"]``, else mean, as
sentence-transformers itself defaults. Last-token models pad on the left, and their tokenizer
appends the end-of-text token that the pooling reads.

Long texts are truncated, never refused, at ``EMBEDDING_TEXT_TOKEN_CAP`` tokens or the model's
own maximum length, whichever is smaller. A batch runs as forward passes of at most
``EMBEDDING_TEXT_TOKEN_BUDGET`` padded tokens, so many long texts cannot exhaust memory.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModel, PreTrainedTokenizerBase, Qwen3Config, Qwen3Model

from runners.contract import ModelSpec, RunnerOptions, Towers, WeightSource
from runners.entry_files import read_json
from runners.families.transformers_torch import (
    EntryParts,
    TokenizerInputs,
    TransformersRunner,
    config_from_architecture,
    pretrained_parts,
    save_entry,
    source_directory,
)
from runners.families.transformers_torch import load_text_inputs as entry_text_inputs

ST_MODULES_FILE = "modules.json"
ST_POOLING_FILE = "1_Pooling/config.json"
ST_SETTINGS_FILE = "sentence_bert_config.json"
# sentence-transformers modules whose effect the runner reproduces (pooling, then L2 norm).
_ST_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
_ST_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                    "pooling_mode_lasttoken": "lasttoken"}
# Tiny decoder: two narrow layers; the width stays the real one (it is the vector dimension).
_TINY_DECODER = {"intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 16, "max_window_layers": 2}


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of each row's last attended token (either padding side)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = (positions * mask).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cls": lambda hidden, mask: hidden[:, 0],
    "mean": _masked_mean,
    "lasttoken": _last_token,
}


def sentence_transformers_pooling(directory: Path) -> str | None:
    """The pooling a sentence-transformers directory declares, or ``None`` when it has none.

    Raises ``ValueError`` for stacks the runner would not reproduce (extra Dense layers,
    several or unsupported pooling modes)."""
    if (directory / ST_MODULES_FILE).is_file():
        for module in read_json(directory / ST_MODULES_FILE):
            kind = module["type"].rsplit(".", 1)[-1]
            if kind not in _ST_SUPPORTED_MODULES:
                raise ValueError(f"{directory}: sentence-transformers module {kind} is not supported "
                                 f"(supported: {', '.join(_ST_SUPPORTED_MODULES)})")
    if not (directory / ST_POOLING_FILE).is_file():
        return None
    flags = read_json(directory / ST_POOLING_FILE)
    chosen = [key for key, value in flags.items() if key.startswith("pooling_mode_") and value is True]
    if len(chosen) != 1 or chosen[0] not in _ST_POOLING_KEYS:
        raise ValueError(f"{directory / ST_POOLING_FILE}: pooling {', '.join(chosen) or 'none'} is not "
                         f"supported; one of: {', '.join(_ST_POOLING_KEYS)}")
    return _ST_POOLING_KEYS[chosen[0]]


def _max_length(directory: Path, model: ModelSpec) -> int:
    """sentence-transformers' ``max_seq_length`` when the directory sets one, else the
    catalogue's context length."""
    settings = directory / ST_SETTINGS_FILE
    declared = read_json(settings).get("max_seq_length") if settings.is_file() else None
    return int(declared) if declared else model.context_length


def architecture_config(model: ModelSpec, tiny: bool,
                        tokenizer: PreTrainedTokenizerBase | None = None) -> Qwen3Config:
    """The upstream architecture, or its tiny variant (with the stand-in tokenizer's vocabulary)."""
    if not tiny:
        return config_from_architecture(Qwen3Config, model)
    eos = tokenizer.eos_token_id
    shrink = {**_TINY_DECODER, "vocab_size": len(tokenizer), "bos_token_id": eos, "eos_token_id": eos}
    return config_from_architecture(Qwen3Config, model, {".": shrink})


def _random_parts(model: ModelSpec, tiny: bool) -> EntryParts:
    from runners.fabrication.stand_in_tokenizers import byte_level_bpe_tokenizer
    from runners.fabrication.tiny_towers import tiny_network

    tokenizer = byte_level_bpe_tokenizer()
    build = partial(Qwen3Model, architecture_config(model, tiny, tokenizer))
    network = tiny_network(build) if tiny else build()
    return EntryParts(network, tokenizer, None, "stand-in")


def _parts(model: ModelSpec, source: WeightSource) -> tuple[EntryParts, str | None, int]:
    """Entry parts, the pooling the weights' directory declares, and the maximum text length."""
    if source.kind == "random":
        return _random_parts(model, source.tiny), None, model.context_length
    directory = source_directory(model, source)
    return (pretrained_parts(AutoModel, directory, with_images=False), sentence_transformers_pooling(directory),
            _max_length(directory, model))


def write_entry(model: ModelSpec, directory: Path, source: WeightSource) -> dict[str, Any]:
    parts, declared_pooling, max_length = _parts(model, source)
    pooling = declared_pooling or model.upstream.get("pooling", "mean")
    if pooling == "lasttoken":
        parts.tokenizer.padding_side = "left"
    parts.settings["pooling"] = pooling
    metadata = save_entry(model, directory, parts, parts.network.config.hidden_size, max_length)
    return {**metadata, "pooling": pooling}


def load_text_inputs(directory: Path, options: RunnerOptions) -> TokenizerInputs:
    """Text inputs cut at the entry's maximum length or ``options.text_token_cap``, whichever
    is smaller."""
    inputs = entry_text_inputs(directory)
    inputs.max_length = min(options.text_token_cap, inputs.max_length)
    return inputs


class TextEmbedderRunner(TransformersRunner):
    """Pooled, normalised last hidden states; text only. Texts are cut at
    ``options.text_token_cap`` tokens; a batch runs as forward passes of at most
    ``options.text_token_budget`` padded tokens."""

    def __init__(self, directory: Path, options: RunnerOptions) -> None:
        super().__init__(directory, options.device, AutoModel, load_text_inputs(directory, options))
        self.token_budget = options.text_token_budget
        self._pool = POOLINGS[self.entry_config["pooling"]]
        self.dimension = int(self.model.config.hidden_size)

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.model(**tokens, use_cache=False).last_hidden_state
        return self._pool(hidden, tokens["attention_mask"])

    def towers(self) -> Towers:
        """The towers, with the model switched to eager attention for tracing: under the causal
        mask, left-padding positions see no token at all; eager attention's additive mask keeps
        those rows finite, where a converted SDPA (OpenVINO) gives NaN that reaches real tokens
        through the zero attention weights."""
        self.model.set_attn_implementation("eager")
        return super().towers()


def load_runner(directory: Path, options: RunnerOptions) -> TextEmbedderRunner:
    return TextEmbedderRunner(directory, options)
