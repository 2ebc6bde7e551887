"""The open_clip family's engine (:mod:`runners.families.open_clip` is its adapter): CLIP,
MobileCLIP (S1, S2, B) and SigLIP2.

A store entry is an open_clip "local-dir": ``open_clip_config.json`` (``model_cfg`` and
``preprocess_cfg``) beside ``open_clip_model.safetensors``, plus the Hugging Face tokenizer
files when the config names one (SigLIP2's Gemma tokenizer), so serving loads it with
``open_clip.create_model("local-dir:...")`` and ``open_clip.get_tokenizer("local-dir:...")``
and never touches the network. A tiny test entry also records the few-block timm towers it
names (``timm_variants``), which are registered with timm before the entry is built.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.constants import HF_WEIGHTS_NAME
from open_clip.pretrained import _get_safe_alternatives
from open_clip.transform import PreprocessCfg, merge_preprocess_dict
from safetensors.torch import save_model
from timm.models import is_model, model_entrypoint, register_model
from timm.utils.model import reparameterize_model
from torch import nn

from runners.backends.devices import torch_device
from runners.backends.downloads import UpstreamFiles
from runners.backends.torch_io import pixel_tensor, scoring_metadata, unit_pixels, unit_rows
from runners.backends.towers import Tower
from runners.contract import EmbeddingRunner, ModelSpec, RunnerOptions, Towers, WeightSource
from runners.entry_files import read_json
from runners.families import causal_text
from runners.families.clip_tokenizer import bounded, count_tokens
from runners.families.hf_tokenizers import TOKENIZER_PATTERNS, save_tokenizer
from runners.families.open_clip import CONFIG_FILE, WEIGHTS_FILE

TINY_WIDTH = 64
TINY_LAYERS = 2
TINY_HEAD_WIDTH = 32
TINY_PREFIX = "tiny_"
TIMM_VARIANTS = "timm_variants"  # config key: {variant name: {"base": timm name, "arguments": {...}}}


def _local_dir(directory: Path) -> str:
    return f"local-dir:{directory}"


def _register_timm_variant(name: str, base: str, arguments: dict[str, Any]) -> None:
    """Make timm build ``name`` as its architecture ``base`` with ``arguments`` (fewer blocks,
    narrower stages): open_clip builds a timm tower from its registered name alone, so a tiny
    tower can only be named. Same classes, pretrained config and input size as ``base``; the
    arguments' lists (as JSON stores them) become the tuples timm's entrypoints give."""
    fixed = {key: tuple(value) if isinstance(value, list) else value for key, value in arguments.items()}

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return model_entrypoint(base)(pretrained=pretrained, **{**fixed, **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    register_model(entrypoint)


def _register_variants(config: dict[str, Any]) -> None:
    """Register the timm variants an entry's config names (tiny test entries), once each."""
    for name, variant in config.get(TIMM_VARIANTS, {}).items():
        if not is_model(name):
            _register_timm_variant(name, variant["base"], variant["arguments"])


def _tiny_config(model: ModelSpec, model_cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Shrink a config to a few layers, keeping context, patch and image size and output
    dimension, so preprocessing is the real one; returns it and the timm variants it names.

    A timm image tower becomes a variant with the catalogue row's ``tiny`` arguments. The
    vocabulary stays, except where the config names a Hugging Face tokenizer: random entries
    carry a stand-in for it (:mod:`runners.fabrication.stand_in_tokenizers`) and the embedding
    table its size.
    """
    from runners.fabrication.stand_in_tokenizers import GEMMA_STAND_IN_VOCAB_SIZE

    cfg = copy.deepcopy(model_cfg)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    variants: dict[str, Any] = {}
    if "timm_model_name" in vision:
        base = vision["timm_model_name"]
        if not model.tiny:
            raise ValueError(f"{model.id}: the catalogue gives no tiny variant of timm tower {base!r}")
        vision["timm_model_name"] = TINY_PREFIX + base
        variants[TINY_PREFIX + base] = {"base": base, "arguments": dict(model.tiny)}
        _register_variants({TIMM_VARIANTS: variants})
    else:
        vision.update(width=TINY_WIDTH, layers=TINY_LAYERS, head_width=TINY_HEAD_WIDTH)
    text.update(width=TINY_WIDTH, layers=TINY_LAYERS, heads=TINY_WIDTH // TINY_HEAD_WIDTH)
    if text.get("hf_tokenizer_name"):
        text["vocab_size"] = GEMMA_STAND_IN_VOCAB_SIZE
    return cfg, variants


def _base_config(model: ModelSpec, quick_gelu: bool, tiny: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    arch = model.upstream["arch"]
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(f"open_clip has no architecture named {arch!r}")
    if quick_gelu:
        cfg["quick_gelu"] = True
    return _tiny_config(model, cfg) if tiny else (cfg, {})


def _quick_gelu(model: ModelSpec) -> bool:
    pretrained_cfg = open_clip.get_pretrained_cfg(model.upstream["arch"], model.upstream["pretrained"])
    return bool(pretrained_cfg.get("quick_gelu", False))


def _is_local_dir(source: WeightSource) -> bool:
    """``source`` is an open_clip local-dir (or hf-hub snapshot) with its own config."""
    return source.kind == "dir" and (source.path / CONFIG_FILE).is_file()


def entry_config(model: ModelSpec, source: WeightSource) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``model_cfg`` an entry of ``model`` imported from ``source`` holds, and the timm
    variants it names."""
    if _is_local_dir(source):
        config = read_json(source.path / CONFIG_FILE)
        return config["model_cfg"], config.get(TIMM_VARIANTS, {})
    return _base_config(model, _quick_gelu(model), source.tiny)


def build_model(model: ModelSpec, source: WeightSource,
                device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Instantiate the architecture with the weights ``source`` names; return it and its config.

    ``device="meta"`` (inside ``with torch.device("meta")``) builds random weights without
    allocating them, to count parameters. Tiny random weights are reproducible, spread and
    their batch norms calibrated on noise images, so that different inputs give clearly
    different vectors (:func:`runners.fabrication.tiny_towers.tiny_network`).
    """
    arch, tag = model.upstream["arch"], model.upstream["pretrained"]
    quick_gelu = _quick_gelu(model)
    model_cfg = entry_config(model, source)[0]
    if _is_local_dir(source):
        return load_entry_model(source.path), model_cfg
    if source.kind == "random":
        create = partial(open_clip.create_model, arch, force_quick_gelu=quick_gelu, device=device,
                         **_overrides(model_cfg, source))
        if source.tiny:
            from runners.fabrication.tiny_towers import tiny_network

            net = tiny_network(create, partial(_encode_noise, model))
        else:
            net = create()
    else:
        pretrained = tag if source.kind == "upstream" else str(_checkpoint_in(source.path))
        net = open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=quick_gelu)
    return net, model_cfg


def _entry_preprocess(model: ModelSpec, net: torch.nn.Module) -> PreprocessCfg:
    """The preprocessing an entry of ``model`` records: the architecture's, with the upstream
    pretrained config's values."""
    pretrained_cfg = open_clip.get_pretrained_cfg(model.upstream["arch"], model.upstream["pretrained"])
    return PreprocessCfg(**merge_preprocess_dict(net.visual.preprocess_cfg, pretrained_cfg))


def _encode_noise(model: ModelSpec, net: torch.nn.Module) -> torch.Tensor:
    """``net``'s image features of a batch of pixel-noise images, normalised as the entry's
    preprocessing normalises (the sample pass that calibrates a tiny tower's batch norms)."""
    from runners.fabrication import tiny_towers

    preprocess = _entry_preprocess(model, net)
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (preprocess.mean, preprocess.std))
    return net.encode_image((tiny_towers.noise_images(model.image_size) - mean) / std)


def _overrides(model_cfg: dict[str, Any], source: WeightSource) -> dict[str, Any]:
    """Keyword overrides that make ``create_model(arch)`` build the tiny variant."""
    if not source.tiny:
        return {}
    return {"vision_cfg": model_cfg["vision_cfg"], "text_cfg": model_cfg["text_cfg"]}


def _checkpoint_in(directory: Path) -> Path:
    candidates = sorted(
        p for p in directory.iterdir() if p.suffix in {".safetensors", ".bin", ".pt", ".pth"}
    )
    if not candidates:
        raise FileNotFoundError(f"no checkpoint (*.safetensors, *.bin, *.pt, *.pth) in {directory}")
    return candidates[0]


def upstream_files(model: ModelSpec) -> list[UpstreamFiles]:
    """What :func:`write_entry` fetches for upstream weights: the checkpoint that open_clip
    downloads from the Hub (its pretrained config's ``hf_hub``, ``org/name/`` or
    ``org/name/file``; open_clip's default file name where it names none, and safetensors
    first, by open_clip's own rule), and the Hugging Face tokenizer the architecture names."""
    hf_hub = open_clip.get_pretrained_cfg(model.upstream["arch"], model.upstream["pretrained"]).get("hf_hub")
    tokenizer = open_clip.get_model_config(model.upstream["arch"])["text_cfg"].get("hf_tokenizer_name")
    wanted: dict[str, UpstreamFiles] = {}
    if hf_hub:
        repo, filename = os.path.split(hf_hub)
        filename = filename or HF_WEIGHTS_NAME
        wanted[repo] = UpstreamFiles(repo, weights=(*_get_safe_alternatives(filename), filename))
    if tokenizer:  # from the checkpoint's repository (SigLIP2's), or from its own
        wanted[tokenizer] = replace(wanted.get(tokenizer, UpstreamFiles(tokenizer)), patterns=TOKENIZER_PATTERNS)
    return list(wanted.values())


def write_entry(model: ModelSpec, directory: Path, source: WeightSource) -> dict[str, Any]:
    """Write a self-contained open_clip local-dir for ``model`` into ``directory``.

    The tokenizer goes first: a missing one fails the import before any weights download. The
    metadata records the network's learnt logit scale and, where it has one (SigLIP2), bias.
    """
    metadata: dict[str, Any] = {}
    model_cfg, variants = entry_config(model, source)
    tokenizer_name = model_cfg["text_cfg"].get("hf_tokenizer_name")
    if tokenizer_name:
        metadata.update(save_tokenizer(tokenizer_name, directory, source))
    net, model_cfg = build_model(model, source)
    config = {"model_cfg": model_cfg, "preprocess_cfg": asdict(_entry_preprocess(model, net))}
    with open(directory / CONFIG_FILE, "w", encoding="utf-8") as handle:
        json.dump({**config, TIMM_VARIANTS: variants} if variants else config, handle, indent=2)
    save_model(net, str(directory / WEIGHTS_FILE))
    metadata["parameters"] = sum(p.numel() for p in net.parameters())
    metadata.update(scoring_metadata(net.logit_scale, net.logit_bias))
    return metadata


def load_entry_model(directory: Path, **options: Any) -> torch.nn.Module:
    """``open_clip.create_model`` of the entry (its timm variants registered first). A tiny
    entry written before entries recorded their variants names a tower timm does not know: that
    fails here, naming the fix, rather than deep inside timm."""
    config = read_json(directory / CONFIG_FILE)
    _register_variants(config)
    tower = config["model_cfg"].get("vision_cfg", {}).get("timm_model_name")
    if tower and tower.startswith(TINY_PREFIX) and not is_model(tower):
        raise ValueError(f"{directory}: this tiny entry names the timm tower {tower!r} without recording it "
                         "(an entry of an earlier version); import it again with --random-weights --tiny")
    return open_clip.create_model(_local_dir(directory), **options)


class ClipTextInputs:
    """The entry's tokenizer as the runner calls it: ``{"tokens": ids}``, cut after the
    batch's last end-of-text token for towers where that padding does not matter
    (:mod:`runners.families.causal_text`). ``model`` only decides that (it may be weightless).
    The tokenizer's work and cache are bounded (:mod:`runners.families.clip_tokenizer`)."""

    def __init__(self, directory: Path, model: torch.nn.Module) -> None:
        self.tokenizer = bounded(open_clip.get_tokenizer(_local_dir(directory)))
        self._trim_by = model if causal_text.trimmable(model) else None

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(texts)
        return {"tokens": tokens if self._trim_by is None else causal_text.trim(self._trim_by, tokens)}

    def count_tokens(self, texts: list[str]) -> list[int]:
        return count_tokens(self.tokenizer, texts)


def load_text_inputs(directory: Path, options: RunnerOptions) -> ClipTextInputs:
    """The runner's text inputs, without loading the weights (the model is built on the meta
    device)."""
    with torch.device("meta"):
        shape_only = load_entry_model(directory, load_weights=False, device="meta")
    return ClipTextInputs(directory, shape_only)


class OpenClipRunner(EmbeddingRunner):
    """Forward passes of an open_clip model; normalisation of pixels happens here."""

    def __init__(self, directory: Path, device: str) -> None:
        self._device = torch_device(device)
        model = load_entry_model(directory, device=self._device).eval()
        # Fuses the train-time branches of re-parameterisable blocks (MobileCLIP's FastViT);
        # leaves other models unchanged.
        self._model = reparameterize_model(model, inplace=True)
        self.text_inputs = ClipTextInputs(directory, self._model)
        self._trim_text = causal_text.trimmable(self._model)  # CLIP towers skip trailing padding
        config = read_json(directory / CONFIG_FILE)
        preprocess = PreprocessCfg(**config["preprocess_cfg"])
        self._mean = torch.tensor(preprocess.mean, device=self._device).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess.std, device=self._device).view(1, 3, 1, 1)
        self.dimension = int(config["model_cfg"]["embed_dim"])

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        return unit_rows(self._text_features(self.text_inputs(texts)["tokens"].to(self._device)))

    def _text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._trim_text:
            return causal_text.encode_trimmed(self._model, tokens)
        return self._model.encode_text(tokens)

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return unit_rows(self._image_features(pixel_tensor(pixels, self._device)))

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._model.encode_image((unit_pixels(pixels) - self._mean) / self._std)

    def towers(self) -> Towers:
        return Towers(text=Tower(self._text_features, self._model), image=Tower(self._image_features, self._model))


def load_runner(directory: Path, options: RunnerOptions) -> OpenClipRunner:
    return OpenClipRunner(directory, options.device)
