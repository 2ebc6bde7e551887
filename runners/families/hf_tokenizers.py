"""Hugging Face tokenizers named by open_clip configs (SigLIP2's Gemma tokenizer), stored in
the entry.

open_clip's ``get_tokenizer("local-dir:<entry>")`` builds an ``HFTokenizer`` from the entry
directory itself whenever the config's ``text_cfg`` names ``hf_tokenizer_name``, so the files
written here are what serving uses, offline; padding to the context length and truncation stay
open_clip's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from runners.contract import WeightSource

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# What ``AutoTokenizer.from_pretrained`` fetches of a repository (glob patterns of its files).
TOKENIZER_PATTERNS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json")


def _has_tokenizer_files(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def _pretrained_tokenizer(name: str, source: WeightSource) -> PreTrainedTokenizerBase:
    """The real tokenizer: downloaded, from the import directory, or from the local HF cache."""
    if source.kind == "upstream":
        return AutoTokenizer.from_pretrained(name)
    if _has_tokenizer_files(source.path):
        return AutoTokenizer.from_pretrained(source.path)
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError as error:
        raise FileNotFoundError(
            f"{source.path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}) and the "
            f"Hugging Face cache has no copy of {name!r}: put the tokenizer files of {name} "
            "beside the weights (an hf-hub snapshot has them)"
        ) from error


def save_tokenizer(name: str, directory: Path, source: WeightSource) -> dict[str, Any]:
    """Write tokenizer ``name`` (or, for random weights, a stand-in) into ``directory``;
    returns the entry metadata that says which one it is."""
    if source.kind == "random":
        from runners.fabrication.stand_in_tokenizers import GEMMA_STAND_IN_VOCAB_SIZE, gemma_tokenizer

        gemma_tokenizer().save_pretrained(directory)
        return {"tokenizer": "stand-in", "tokenizer_stands_in_for": name,
                "tokenizer_vocab_size": GEMMA_STAND_IN_VOCAB_SIZE}
    tokenizer = _pretrained_tokenizer(name, source)
    tokenizer.save_pretrained(directory)
    return {"tokenizer": name, "tokenizer_vocab_size": len(tokenizer)}
