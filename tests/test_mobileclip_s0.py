"""MobileCLIP-S0: Apple's checkpoint layout loads strictly, and the served vectors equal Apple's.

``data/mobileclip_s0_reference.json`` holds

* ``checkpoint_shapes``: every tensor name and shape of Apple's ``mobileclip_s0.pt`` (the
  state dict of Apple's ``mobileclip.clip.CLIP`` for ``configs/mobileclip_s0.json``, which
  Apple's ``create_model_and_transforms`` loads with ``strict=True``: 893 tensors, 11.4M
  image + 42.4M text parameters as Apple publishes);
* vectors that Apple's own code (github apple/ml-mobileclip at 4144bb1:
  ``create_model_and_transforms("mobileclip_s0", pretrained=...)`` with its default
  re-parameterisation, its ``preprocess`` and ``get_tokenizer``) computed for the texts and
  :func:`pattern_image` images below, with the weights :func:`deterministic_state_dict` makes
  from those shapes. Matching them shows the architecture, preprocessing and tokenizer here
  are Apple's, on the full-size model, without the real weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from models.catalogue import find_model
from importer.store import import_model
from runners.contract import EmbeddingRunner, ImagePreparer, WeightSource
from runners.families.mobileclip_s0 import MOBILECLIP_S0
from runners.families.mobileclip_s0_torch import (
    CHECKPOINT_FILE,
    TINY_IMAGE,
    WEIGHTS_FILE,
    CheckpointMismatch,
    empty_model,
    entry_config,
    load_apple_state_dict,
    load_model_from_entry,
)
from runners.entry_files import read_json
from runners.families.mobileclip_s0 import CONFIG_FILE
from samples import DISTINCT, apple_mobileclip_preprocess, distinct_images, random_image, smallest_gap, unit_cosines

MODEL_ID = "MobileCLIP/mobileclip_s0"
REFERENCE = Path(__file__).parent / "data" / "mobileclip_s0_reference.json"
APPLE_IMAGE_PARAMETERS = 11_406_464  # Apple's MCi0 + projection ("11.4M")
APPLE_TEXT_PARAMETERS = 42_441_216  # Apple's MCT text encoder ("42.4M")
TIMM_HEAD_BIAS = 512  # timm's head is a Linear with a (zero) bias where Apple has a bare matrix
POOL_SIZE = 1_000_003  # prime, so the value pattern does not line up with tensor rows


def deterministic_state_dict(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Weights for ``shapes`` that every platform reproduces (from PCG64's raw stream),
    scaled like trained weights: fan-in scaled matrices, norm weights near 1, positive
    running variances, layer scales large enough that every branch matters."""
    raw = np.random.PCG64(20240306).random_raw(POOL_SIZE)
    pool = torch.from_numpy((raw >> np.uint64(40)).astype(np.float32) * np.float32(2 / 2**24) - 1)
    longest = max(math.prod(shape) for shape in shapes.values())
    stream = pool.repeat(longest // POOL_SIZE + 2)
    tensors = {}
    for index, (name, shape) in enumerate(shapes.items()):
        if name.endswith("num_batches_tracked"):
            tensors[name] = torch.zeros(shape, dtype=torch.int64)
            continue
        start = index * 7919 % POOL_SIZE
        u = stream[start:start + math.prod(shape)]
        if name.endswith("running_var"):
            values = 1 + 0.5 * u
        elif "layer_scale" in name:
            values = 0.3 * u
        elif len(shape) >= 2 and shape[0] > 1:
            values = u * math.sqrt(6 / math.prod(shape[1:]))
        elif name.endswith("weight") and len(shape) == 1:
            values = 1 + 0.2 * u
        else:
            values = 0.02 * u
        tensors[name] = values.reshape(shape)
    return tensors


def pattern_image(width: int, height: int) -> Image.Image:
    """A structured test image defined by a formula (no codec or RNG involved)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(3 * x + y) % 256, (x * y // 7) % 256, (255 - y + x // 2) % 256], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="module")
def reference() -> dict:
    with open(REFERENCE, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def apple_weights(reference) -> dict[str, torch.Tensor]:
    """A full-size state dict in the layout of Apple's ``mobileclip_s0.pt``."""
    return deterministic_state_dict(reference["checkpoint_shapes"])


@pytest.fixture(scope="module")
def apple_download(apple_weights, tmp_path_factory) -> Path:
    """A folder holding a ``mobileclip_s0.pt`` in Apple's layout."""
    folder = tmp_path_factory.mktemp("apple-download")
    torch.save(apple_weights, folder / CHECKPOINT_FILE)
    return folder


@pytest.fixture(scope="module")
def tiny_s0_entry(tiny_import) -> Path:
    """A tiny random entry: its import spreads the weights and measures the batch-norm
    statistics, so that every branch (layer scales, batch norms) weighs in the parity checks."""
    entry = tiny_import(MODEL_ID)
    assert read_json(entry / CONFIG_FILE)["image"] == TINY_IMAGE
    return entry


def _served(entry: Path) -> tuple[EmbeddingRunner, ImagePreparer]:
    """The runner and preparer, loaded as the service loads them."""
    adapter = find_model(MODEL_ID).adapter
    return adapter.load_runner(entry), adapter.load_image_preparer(entry)


def test_catalogue_and_adapter_registry():
    model = find_model(MODEL_ID)
    assert (model.dimension, model.image_size, model.context_length) == (512, 256, 77)
    assert model.adapter is MOBILECLIP_S0


def test_full_size_architecture_has_the_published_sizes():
    net = empty_model(entry_config(tiny=False))
    image = sum(p.numel() for p in net.image_encoder.parameters())
    text = sum(p.numel() for p in net.text_encoder.parameters())
    assert (image, text) == (APPLE_IMAGE_PARAMETERS + TIMM_HEAD_BIAS, APPLE_TEXT_PARAMETERS)
    assert (round(image / 1e6, 1), round(text / 1e6, 1)) == (11.4, 42.4)


def test_apple_checkpoint_layout_loads_strictly(apple_weights):
    assert len(apple_weights) == 893
    net = empty_model(entry_config(tiny=False))
    load_apple_state_dict(net, apple_weights)
    assert not any(t.is_meta for t in net.state_dict().values())
    torch.testing.assert_close(net.text_encoder.projection_layer, apple_weights["text_encoder.projection_layer"])
    torch.testing.assert_close(net.image_encoder.head.fc.weight, apple_weights["image_encoder.model.head.proj"].T)


@pytest.mark.parametrize("dropped, added, named", [
    ("image_encoder.model.network.7.1.convffn.fc2.bias", None, "image_encoder.stages.3.blocks.1.mlp.fc2.bias"),
    ("text_encoder.transformer.5.layer_scale", None, "text_encoder.transformer.5.layer_scale"),
    ("logit_scale", None, "logit_scale"),
    (None, "text_encoder.transformer.6.layer_scale", "text_encoder.transformer.6.layer_scale"),
    (None, "visual.proj", "visual.proj"),
])
def test_checkpoint_with_missing_or_unexpected_keys_is_rejected(apple_weights, dropped, added, named):
    weights = dict(apple_weights)
    if dropped:
        del weights[dropped]
    if added:
        weights[added] = torch.zeros(4)
    with pytest.raises(CheckpointMismatch, match=named.replace(".", r"\.")):
        load_apple_state_dict(empty_model(entry_config(tiny=False)), weights)


def test_checkpoint_with_a_wrong_shape_is_rejected(apple_weights):
    weights = dict(apple_weights, **{"text_encoder.projection_layer": torch.zeros(512, 256)})
    with pytest.raises(CheckpointMismatch, match="projection_layer"):
        load_apple_state_dict(empty_model(entry_config(tiny=False)), weights)


def test_from_dir_import_serves_apples_vectors(reference, apple_download, isolated_model_store):
    entry = import_model(find_model(MODEL_ID), WeightSource("dir", path=apple_download))
    assert (entry.info.labels["weights"], entry.info.labels["variant"]) == ("pretrained", "full")
    assert entry.info.metadata["parameters"] == APPLE_IMAGE_PARAMETERS + TIMM_HEAD_BIAS + APPLE_TEXT_PARAMETERS
    runner, preparer = _served(Path(entry.path))
    assert runner.dimension == 512
    texts, apple_texts = runner.encode_text(reference["texts"]), np.array(reference["text_embeddings"])
    assert texts.dtype == np.float32 and texts.shape == (3, 512)
    assert (unit_cosines(texts, apple_texts) > 0.9999).all()
    assert smallest_gap(apple_texts) > DISTINCT
    pixels = np.stack([preparer(pattern_image(*size)) for size in reference["image_sizes"]])
    images, apple_images = runner.encode_images(pixels), np.array(reference["image_embeddings"])
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert (unit_cosines(images, apple_images) > 0.9999).all()
    assert smallest_gap(apple_images) > DISTINCT


def test_upstream_import_downloads_apples_checkpoint(reference, apple_download, isolated_model_store,
                                                    monkeypatch):
    import huggingface_hub

    requested = []

    def download(repo_id: str, filename: str) -> str:
        requested.append((repo_id, filename))
        return str(apple_download / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    entry = import_model(find_model(MODEL_ID), WeightSource("upstream"))
    assert requested == [("apple/MobileCLIP-S0", "mobileclip_s0.pt")]
    runner, _ = _served(Path(entry.path))
    vector = runner.encode_text(reference["texts"][:1])
    assert unit_cosines(vector, np.array(reference["text_embeddings"][:1]))[0] > 0.9999


def test_from_dir_without_the_checkpoint_names_the_file(tmp_path, isolated_model_store):
    with pytest.raises(FileNotFoundError, match="mobileclip_s0.pt.*apple/MobileCLIP-S0"):
        import_model(find_model(MODEL_ID), WeightSource("dir", path=tmp_path))


@pytest.mark.parametrize("size, mode", [((320, 240), "RGB"), ((100, 400), "RGBA"), ((256, 256), "L"),
                                        ((17, 9), "RGB")])
def test_preparer_pixels_are_apples_preprocessing(tiny_s0_entry, size, mode):
    image = random_image(*size, seed=3).convert(mode)
    pixels = find_model(MODEL_ID).adapter.load_image_preparer(tiny_s0_entry)(image)
    assert pixels.dtype == np.uint8 and pixels.shape == (256, 256, 3)
    expected = apple_mobileclip_preprocess()(image.convert("RGB"))
    torch.testing.assert_close(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255, expected,
                               atol=1e-6, rtol=0)


def test_tiny_entry_matches_its_own_forward_and_timms(tiny_s0_entry):
    runner, preparer = _served(tiny_s0_entry)
    assert runner.dimension == 512
    net = load_model_from_entry(tiny_s0_entry)
    config = read_json(tiny_s0_entry / CONFIG_FILE)
    texts = ["A photo of a cat", "", "a much longer caption " * 30, "日本語のテキスト"]
    with torch.inference_mode():
        expected = F.normalize(net.encode_text(open_clip.get_tokenizer("ViT-B-16")(texts)), dim=-1).numpy()
    served = runner.encode_text(texts)
    assert served.shape == (4, 512)
    assert (unit_cosines(served, expected) > 0.9999).all()
    assert smallest_gap(expected) > DISTINCT

    image_cfg = dict(config["image"])
    timm_net = timm.create_model(image_cfg.pop("timm_model"), num_classes=config["embed_dim"], **image_cfg)
    weights = load_file(tiny_s0_entry / WEIGHTS_FILE)
    timm_net.load_state_dict({k.removeprefix("image_encoder."): v for k, v in weights.items()
                              if k.startswith("image_encoder.")})
    images = distinct_images()
    batch = torch.stack([apple_mobileclip_preprocess()(image) for image in images])
    with torch.inference_mode():
        expected = F.normalize(timm_net.eval()(batch), dim=-1).numpy()
        own = F.normalize(net.encode_image(batch), dim=-1).numpy()
    served = runner.encode_images(np.stack([preparer(image) for image in images]))
    assert served.shape == (len(images), 512)
    assert (unit_cosines(served, expected) > 0.9999).all()
    assert (unit_cosines(own, expected) > 0.9999).all()
    assert smallest_gap(expected) > DISTINCT
