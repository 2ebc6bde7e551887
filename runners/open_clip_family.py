"""Adapter for every model that open_clip runs: CLIP, MobileCLIP (S1, S2, B) and SigLIP2.

A store entry is an open_clip "local-dir": ``open_clip_config.json`` (``model_cfg`` and
``preprocess_cfg``) beside ``open_clip_model.safetensors``, plus the Hugging Face tokenizer
files when the config names one (SigLIP2's Gemma tokenizer), so serving loads it with
``open_clip.create_model("local-dir:...")`` and ``open_clip.get_tokenizer("local-dir:...")``
and never touches the network.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.transform import MaybeToTensor, PreprocessCfg, image_transform_v2, merge_preprocess_dict
from PIL import Image
from safetensors.torch import save_model
from timm.utils.model import reparameterize_model

from models.catalogue import CatalogueModel
from runners import causal_text
from runners import tiny_towers  # registers the tiny timm towers that tiny entries name
from runners.base import EmbeddingRunner, WeightSource
from runners.clip_tokenizer import bounded
from runners.centre_crop_guard import guard_for_torchvision
from runners.devices import torch_device
from runners.hf_tokenizers import STAND_IN_VOCAB_SIZE, save_tokenizer
from runners.torch_io import pixel_tensor, unit_pixels, unit_rows
from runners.towers import Tower, Towers

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
TINY_WIDTH = 64
TINY_LAYERS = 2
TINY_HEAD_WIDTH = 32


def _local_dir(directory: Path) -> str:
    return f"local-dir:{directory}"


def _tiny_config(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """Shrink a config to a few layers, keeping context, patch and image size and output
    dimension, so preprocessing is the real one.

    A timm image tower becomes its registered tiny variant (:mod:`runners.tiny_towers`). The
    vocabulary stays, except where the config names a Hugging Face tokenizer: random entries
    carry a stand-in for it (:mod:`runners.hf_tokenizers`) and the embedding table its size.
    """
    cfg = copy.deepcopy(model_cfg)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    if "timm_model_name" in vision:
        vision["timm_model_name"] = tiny_towers.tiny_timm_name(vision["timm_model_name"])
    else:
        vision.update(width=TINY_WIDTH, layers=TINY_LAYERS, head_width=TINY_HEAD_WIDTH)
    text.update(width=TINY_WIDTH, layers=TINY_LAYERS, heads=TINY_WIDTH // TINY_HEAD_WIDTH)
    if text.get("hf_tokenizer_name"):
        text["vocab_size"] = STAND_IN_VOCAB_SIZE
    return cfg


def _base_config(arch: str, quick_gelu: bool, tiny: bool) -> dict[str, Any]:
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(f"open_clip has no architecture named {arch!r}")
    if quick_gelu:
        cfg["quick_gelu"] = True
    return _tiny_config(cfg) if tiny else cfg


def _quick_gelu(model: CatalogueModel) -> bool:
    pretrained_cfg = open_clip.get_pretrained_cfg(model.upstream["arch"], model.upstream["pretrained"])
    return bool(pretrained_cfg.get("quick_gelu", False))


def _is_local_dir(source: WeightSource) -> bool:
    """``source`` is an open_clip local-dir (or hf-hub snapshot) with its own config."""
    return source.kind == "dir" and (source.path / CONFIG_FILE).is_file()


def model_config(model: CatalogueModel, source: WeightSource) -> dict[str, Any]:
    """The ``model_cfg`` an entry of ``model`` imported from ``source`` holds."""
    if _is_local_dir(source):
        return _read_config(source.path)["model_cfg"]
    return _base_config(model.upstream["arch"], _quick_gelu(model), source.tiny)


def build_model(model: CatalogueModel, source: WeightSource,
                device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Instantiate the architecture with the weights ``source`` names; return it and its config.

    ``device="meta"`` (inside ``with torch.device("meta")``) builds random weights without
    allocating them, to count parameters. Tiny random weights are reproducible, spread and
    their batch norms calibrated on noise images, so that different inputs give clearly
    different vectors (:func:`tiny_towers.tiny_network`).
    """
    arch, tag = model.upstream["arch"], model.upstream["pretrained"]
    quick_gelu = _quick_gelu(model)
    model_cfg = model_config(model, source)
    if _is_local_dir(source):
        return open_clip.create_model(_local_dir(source.path)), model_cfg
    if source.kind == "random":
        create = partial(open_clip.create_model, arch, force_quick_gelu=quick_gelu, device=device,
                         **_overrides(model_cfg, source))
        net = tiny_towers.tiny_network(create, partial(_encode_noise, model)) if source.tiny else create()
    else:
        pretrained = tag if source.kind == "upstream" else str(_checkpoint_in(source.path))
        net = open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=quick_gelu)
    return net, model_cfg


def _entry_preprocess(model: CatalogueModel, net: torch.nn.Module) -> PreprocessCfg:
    """The preprocessing an entry of ``model`` records: the architecture's, with the upstream
    pretrained config's values."""
    pretrained_cfg = open_clip.get_pretrained_cfg(model.upstream["arch"], model.upstream["pretrained"])
    return PreprocessCfg(**merge_preprocess_dict(net.visual.preprocess_cfg, pretrained_cfg))


def _encode_noise(model: CatalogueModel, net: torch.nn.Module) -> torch.Tensor:
    """``net``'s image features of a batch of pixel-noise images, normalised as the entry's
    preprocessing normalises (the sample pass that calibrates a tiny tower's batch norms)."""
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


def write_entry(model: CatalogueModel, directory: Path, source: WeightSource) -> dict[str, Any]:
    """Write a self-contained open_clip local-dir for ``model`` into ``directory``.

    The tokenizer goes first: a missing one fails the import before any weights download.
    """
    metadata: dict[str, Any] = {}
    tokenizer_name = model_config(model, source)["text_cfg"].get("hf_tokenizer_name")
    if tokenizer_name:
        metadata.update(save_tokenizer(tokenizer_name, directory, source))
    net, model_cfg = build_model(model, source)
    preprocess = asdict(_entry_preprocess(model, net))
    with open(directory / CONFIG_FILE, "w", encoding="utf-8") as handle:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, handle, indent=2)
    save_model(net, str(directory / WEIGHTS_FILE))
    metadata["parameters"] = sum(p.numel() for p in net.parameters())
    return metadata


def _read_config(directory: Path) -> dict[str, Any]:
    with open(directory / CONFIG_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def _preprocess_cfg(directory: Path) -> PreprocessCfg:
    return PreprocessCfg(**_read_config(directory)["preprocess_cfg"])


class OpenClipImagePreparer:
    """open_clip's own inference transform up to (not including) tensor conversion, so the
    pixels match open_clip's preprocessing exactly while staying compact uint8; extreme aspect
    ratios are first cut to what the centre crop keeps (:mod:`runners.centre_crop_guard`)."""

    def __init__(self, directory: Path) -> None:
        transform = image_transform_v2(_preprocess_cfg(directory), is_train=False)
        steps = transform.transforms
        cut = next(i for i, step in enumerate(steps) if isinstance(step, MaybeToTensor))
        self._steps = steps[:cut]
        self._guard = guard_for_torchvision(self._steps)

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = self._guard(image)
        for step in self._steps:
            image = step(image)
        return np.array(image.convert("RGB"), dtype=np.uint8)


def load_image_preparer(directory: Path) -> OpenClipImagePreparer:
    return OpenClipImagePreparer(directory)


class ClipTextInputs:
    """The entry's tokenizer as the runner calls it: ``{"tokens": ids}``, cut after the
    batch's last end-of-text token for towers where that padding does not matter
    (:mod:`runners.causal_text`). ``model`` only decides that (it may be weightless).
    The tokenizer's work and cache are bounded (:mod:`runners.clip_tokenizer`)."""

    def __init__(self, directory: Path, model: torch.nn.Module) -> None:
        self.tokenizer = bounded(open_clip.get_tokenizer(_local_dir(directory)))
        self._trim_by = model if causal_text.trimmable(model) else None

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(texts)
        return {"tokens": tokens if self._trim_by is None else causal_text.trim(self._trim_by, tokens)}


def load_text_inputs(directory: Path) -> ClipTextInputs:
    """The runner's text inputs, without loading the weights (the model is built on the meta
    device)."""
    with torch.device("meta"):
        shape_only = open_clip.create_model(_local_dir(directory), load_weights=False, device="meta")
    return ClipTextInputs(directory, shape_only)


class OpenClipRunner(EmbeddingRunner):
    """Forward passes of an open_clip model; normalisation of pixels happens here."""

    def __init__(self, directory: Path, device: str) -> None:
        self._device = torch_device(device)
        model = open_clip.create_model(_local_dir(directory), device=self._device).eval()
        # Fuses the train-time branches of re-parameterisable blocks (MobileCLIP's FastViT);
        # leaves other models unchanged.
        self._model = reparameterize_model(model, inplace=True)
        self.text_inputs = ClipTextInputs(directory, self._model)
        self._trim_text = causal_text.trimmable(self._model)  # CLIP towers skip trailing padding
        config = _read_config(directory)
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


def load_runner(directory: Path, device: str) -> OpenClipRunner:
    return OpenClipRunner(directory, device)
