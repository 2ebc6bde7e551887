"""The MobileCLIP-S0 engine (:mod:`runners.families.mobileclip_s0` is its adapter), which
open_clip does not ship: Apple's ``mobileclip_s0.pt``.

The model is Apple's ``mobileclip_s0`` configuration: the MCi0 image encoder, which timm
provides as ``fastvit_mci0`` (with a converter for Apple's checkpoint layout), and the "MCT"
text encoder of :mod:`runners.families.mobileclip_text`, projected to a shared 512-d space.

A store entry holds ``mobileclip_config.json`` (architecture and preprocessing),
``model.safetensors`` (the weights in this module's layout) and the CLIP BPE vocabulary of
open_clip's ``SimpleTokenizer`` (the tokenizer Apple's code uses), so serving is offline.

Apple's preprocessing is a bilinear resize of the shorter side to 256, a 256x256 centre
crop and a conversion to 0..1: no mean/std normalisation.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import timm
import torch
from open_clip.tokenizer import default_bpe
from safetensors.torch import load_file, save_model
from timm.models.fastvit import checkpoint_filter_fn
from timm.utils.model import reparameterize_model
from torch import nn

from runners.backends.devices import torch_device
from runners.backends.downloads import UpstreamFiles
from runners.backends.torch_io import pixel_tensor, scoring_metadata, unit_pixels, unit_rows
from runners.backends.towers import Tower
from runners.contract import EmbeddingRunner, ModelSpec, RunnerOptions, Towers, WeightSource
from runners.entry_files import read_json
from runners.families.clip_tokenizer import BoundedSimpleTokenizer, count_tokens
from runners.families.mobileclip_s0 import CONFIG_FILE
from runners.families.mobileclip_text import MctTextEncoder, TextConfig

WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CHECKPOINT_FILE = "mobileclip_s0.pt"

EMBED_DIM = 512
IMAGE_SIZE = 256
INTERPOLATION = "bilinear"  # of the resize of the shorter side to IMAGE_SIZE
FULL_IMAGE = {"timm_model": "fastvit_mci0", "layers": [2, 6, 10, 2], "embed_dims": [64, 128, 256, 512]}
TINY_IMAGE = {"timm_model": "fastvit_mci0", "layers": [1, 1, 1, 1], "embed_dims": [16, 32, 64, 128]}
FULL_TEXT = TextConfig()
TINY_TEXT = TextConfig(dim=64, layers=1, heads=2)

# Prefixes of Apple's checkpoint keys, and the one key outside both towers: the learnt
# logarithm of the scale of image-text cosines, recorded in the entry's metadata.
APPLE_IMAGE_PREFIX = "image_encoder.model."
APPLE_TEXT_PREFIX = "text_encoder."
APPLE_LOGIT_SCALE = "logit_scale"
# The logit scale of a random import: CLIP's initial log(1 / 0.07), as Apple's model starts.
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)


class CheckpointMismatch(ValueError):
    """A checkpoint's parameters are not exactly those of MobileCLIP-S0."""


def entry_config(tiny: bool) -> dict[str, Any]:
    """The architecture and preprocessing written to an entry's config file."""
    return {
        "embed_dim": EMBED_DIM,
        "image": TINY_IMAGE if tiny else FULL_IMAGE,
        "text": asdict(TINY_TEXT if tiny else FULL_TEXT),
        "preprocess": {"image_size": IMAGE_SIZE, "interpolation": INTERPOLATION},
    }


class MobileClipS0(nn.Module):
    """Both towers; ``encode_image`` takes 0..1 pixels ``(B, 3, H, W)``, ``encode_text`` token
    ids ``(B, context_length)``. Outputs are unnormalised projections."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        image = dict(config["image"])
        self.image_encoder = timm.create_model(
            image.pop("timm_model"), num_classes=config["embed_dim"], **image
        )
        self.text_encoder = MctTextEncoder(TextConfig(**config["text"]), config["embed_dim"])

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(pixels)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(tokens)


def empty_model(config: Mapping[str, Any]) -> MobileClipS0:
    """The architecture with placeholder tensors, for weights about to be loaded (initialising
    54M parameters only to overwrite them costs seconds of start-up)."""
    with torch.device("meta"):
        return MobileClipS0(config)


def load_apple_state_dict(net: MobileClipS0, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load Apple's checkpoint layout into ``net`` (its tensors are replaced, so ``net`` may be
    uninitialised); every key must be used and every parameter of ``net`` provided, else
    :class:`CheckpointMismatch` lists the differences. :data:`APPLE_LOGIT_SCALE` must be there
    too, though no tower holds it (:func:`write_entry` records it).

    Image keys go through timm's own converter for Apple's MCi checkpoints (which also turns
    the bias-free projection into ``head.fc`` with a zero bias); text keys are Apple's names.
    """
    image = {k: v for k, v in state_dict.items() if k.startswith(APPLE_IMAGE_PREFIX)}
    text = {k[len(APPLE_TEXT_PREFIX):]: v for k, v in state_dict.items() if k.startswith(APPLE_TEXT_PREFIX)}
    unexpected = [k for k in state_dict if k not in image and not k.startswith(APPLE_TEXT_PREFIX)
                  and k != APPLE_LOGIT_SCALE]
    missing = [] if APPLE_LOGIT_SCALE in state_dict else [APPLE_LOGIT_SCALE]
    try:
        converted = {k: v.contiguous() for k, v in checkpoint_filter_fn(image, net.image_encoder).items()}
        image_result = net.image_encoder.load_state_dict(converted, strict=False, assign=True)
        text_result = net.text_encoder.load_state_dict(text, strict=False, assign=True)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointMismatch(f"checkpoint does not fit MobileCLIP-S0: {error}") from None
    missing += [f"image_encoder.{k}" for k in image_result.missing_keys]
    missing += [f"text_encoder.{k}" for k in text_result.missing_keys]
    unexpected += [f"image_encoder.{k}" for k in image_result.unexpected_keys]
    unexpected += [APPLE_TEXT_PREFIX + k for k in text_result.unexpected_keys]
    if missing or unexpected:
        raise CheckpointMismatch(
            "checkpoint does not fit MobileCLIP-S0 (image keys named as timm converts them): "
            f"missing {len(missing)} key(s) {missing[:10]}, unexpected {len(unexpected)} key(s) {unexpected[:10]}"
        )


def _encode_noise(net: MobileClipS0) -> torch.Tensor:
    """``net``'s image features of pixel-noise images in 0..1 (Apple's input range): the sample
    pass that calibrates a tiny tower's batch norms."""
    from runners.fabrication.tiny_towers import noise_images

    return net.encode_image(noise_images(IMAGE_SIZE))


def upstream_files(model: ModelSpec) -> list[UpstreamFiles]:
    """What :func:`write_entry` fetches for upstream weights: Apple's checkpoint."""
    return [UpstreamFiles(model.upstream["repo"], (CHECKPOINT_FILE,))]


def _apple_checkpoint(source: WeightSource, model: ModelSpec) -> Path:
    if source.kind == "upstream":
        from huggingface_hub import hf_hub_download  # shows a progress bar while downloading

        return Path(hf_hub_download(repo_id=model.upstream["repo"], filename=CHECKPOINT_FILE))
    path = source.path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --from-dir needs Apple's {CHECKPOINT_FILE} "
            f"(Hugging Face repository {model.upstream['repo']})"
        )
    return path


def write_entry(model: ModelSpec, directory: Path, source: WeightSource) -> dict[str, Any]:
    """Write config, safetensors weights and tokenizer vocabulary for ``model``; tiny random
    weights are spread and the image tower's batch norms calibrated on noise images, so that
    the one-block towers tell inputs apart (:func:`runners.fabrication.tiny_towers.tiny_network`).
    The metadata records the checkpoint's logit scale, or :data:`INITIAL_LOGIT_SCALE` for random
    weights (the model holds no parameter for it)."""
    config = entry_config(tiny=source.kind == "random" and source.tiny)
    logit_scale: torch.Tensor | float = INITIAL_LOGIT_SCALE
    if source.kind == "random" and source.tiny:
        from runners.fabrication.tiny_towers import tiny_network

        net = tiny_network(partial(MobileClipS0, config), _encode_noise)
    elif source.kind == "random":
        net = MobileClipS0(config)
    else:
        net = empty_model(config)
        checkpoint = torch.load(_apple_checkpoint(source, model), map_location="cpu", weights_only=True)
        load_apple_state_dict(net, checkpoint)
        logit_scale = checkpoint[APPLE_LOGIT_SCALE]
    with open(directory / CONFIG_FILE, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    save_model(net, str(directory / WEIGHTS_FILE))
    shutil.copyfile(default_bpe(), directory / VOCAB_FILE)
    return {"parameters": sum(p.numel() for p in net.parameters()), **scoring_metadata(logit_scale)}


def load_model_from_entry(directory: Path) -> MobileClipS0:
    """The entry's model as trained (branches unfused), in eval mode."""
    net = empty_model(read_json(directory / CONFIG_FILE))
    net.load_state_dict(load_file(directory / WEIGHTS_FILE), strict=True, assign=True)
    return net.eval()


class MobileClipTextInputs:
    """Apple's tokenizer (open_clip's ``SimpleTokenizer`` on the entry's vocabulary, its cost
    bounded: :mod:`runners.families.clip_tokenizer`): ``{"tokens": ids}``, always the full context (the
    text encoder attends to its padding)."""

    def __init__(self, directory: Path) -> None:
        self.tokenizer = BoundedSimpleTokenizer(
            bpe_path=str(directory / VOCAB_FILE),
            context_length=read_json(directory / CONFIG_FILE)["text"]["context_length"],
        )

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokenizer(texts)}

    def count_tokens(self, texts: list[str]) -> list[int]:
        return count_tokens(self.tokenizer, texts)


class MobileClipS0Runner(EmbeddingRunner):
    """Forward passes with the image tower's re-parameterisable branches fused for speed
    (as Apple does for inference)."""

    def __init__(self, directory: Path, device: str) -> None:
        self._device = torch_device(device)
        net = load_model_from_entry(directory)
        reparameterize_model(net.image_encoder, inplace=True)
        self._model = net.to(self._device)
        self.text_inputs = MobileClipTextInputs(directory)
        self.dimension = int(read_json(directory / CONFIG_FILE)["embed_dim"])

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        return unit_rows(self._model.encode_text(self.text_inputs(texts)["tokens"].to(self._device)))

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return unit_rows(self._image_features(pixel_tensor(pixels, self._device)))

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._model.encode_image(unit_pixels(pixels))

    def towers(self) -> Towers:
        return Towers(text=Tower(self._model.encode_text, self._model),
                      image=Tower(self._image_features, self._model))


def load_runner(directory: Path, options: RunnerOptions) -> MobileClipS0Runner:
    return MobileClipS0Runner(directory, options.device)


def load_text_inputs(directory: Path, options: RunnerOptions) -> MobileClipTextInputs:
    return MobileClipTextInputs(directory)
