"""MobileCLIP (S1, S2, B, B-LT) and SigLIP2 (B/16, L/16, SO400M/16), run by open_clip.

Each model gets a tiny random-weight entry in a BentoML home of its own. The service path
(the adapter's ``load_runner`` and ``load_image_preparer``, what the Encoder and the entry
service call) must give the vectors of open_clip's own ``create_model_and_transforms`` on that
entry, with open_clip's own preprocessing and tokenizer, on inputs whose vectors differ by more
than :data:`samples.DISTINCT`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Callable

import bentoml
import huggingface_hub
import numpy as np
import open_clip
import pytest
import torch
from bentoml._internal.models.model import ModelStore
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer
from safetensors.torch import load_file
from transformers import GemmaTokenizer

from helpers import in_process_pipeline, pipeline_embed
from importer.cli import main as models_cli
from models.catalogue import CatalogueModel, find_model
from importer.store import import_model
from runners.contract import EmbeddingRunner, ImagePreparer, WeightSource
from runners.fabrication.stand_in_tokenizers import GEMMA_STAND_IN_VOCAB_SIZE as STAND_IN_VOCAB_SIZE
from runners.families.hf_tokenizers import TOKENIZER_FILES, save_tokenizer
from runners.families.open_clip import CONFIG_FILE, WEIGHTS_FILE
from runners.families import open_clip_torch
from runners.families.open_clip_torch import build_model
from samples import (
    DISTINCT,
    b64,
    distinct_images,
    encoded,
    random_image,
    reference_images,
    reference_text,
    smallest_gap,
    solid_image,
    unit_cosines,
)

OPEN_CLIP_FAMILY_MODELS = [
    "MobileCLIP/mobileclip_s1",
    "MobileCLIP/mobileclip_s2",
    "MobileCLIP/mobileclip_b",
    "MobileCLIP/mobileclip_blt",
    "SigLIP/siglip2-vit-b-16",
    "SigLIP/siglip2-vit-l-16",
    "SigLIP/siglip2-so400m-patch16-384",
]
# A batch of short texts only (trimming the padding that the towers attend to would show
# here) and a batch of mixed lengths, over the context length (truncation).
SHORT_TEXTS = ["a photo of a cat", "", "ünïcødé café 猫"]
MIXED_TEXTS = ["a dog", "A much longer caption, with punctuation! " * 12]
TOKENIZER_KIND = {"MobileCLIP": SimpleTokenizer, "SigLIP": HFTokenizer}
GEMMA_PAD, GEMMA_EOS = 0, 1

# Published sizes: Apple's MobileCLIP-S1 (MCi1 image 21.5M + text 63.4M parameters) and
# SigLIP 2 B/16 at 224 (375M parameters, most of them its 256k-token embedding table).
PUBLISHED_PARAMETERS = {"MobileCLIP/mobileclip_s1": 84.9e6, "SigLIP/siglip2-vit-b-16": 375e6}


@dataclass
class Served:
    """A store entry loaded the way the service loads it, beside open_clip's own view of it."""

    model: CatalogueModel
    entry: bentoml.Model
    runner: EmbeddingRunner
    preparer: ImagePreparer

    @property
    def directory(self) -> Path:
        return Path(self.entry.path)

    @cached_property
    def reference(self) -> tuple:
        """open_clip's own ``(model, preprocess, tokenizer)`` for the entry."""
        local_dir = f"local-dir:{self.directory}"
        model, _, preprocess = open_clip.create_model_and_transforms(local_dir)
        return model.eval(), preprocess, open_clip.get_tokenizer(local_dir)


def stored_entry(directory: Path) -> bentoml.Model:
    """The store entry at ``directory`` (``<store>/<name>/<version>``)."""
    return ModelStore(str(directory.parents[1])).get(f"{directory.parent.name}:{directory.name}")


def serve(model: CatalogueModel, directory: Path) -> Served:
    adapter = model.adapter
    return Served(model, stored_entry(directory), adapter.load_runner(directory),
                  adapter.load_image_preparer(directory))


@pytest.fixture(scope="module", params=OPEN_CLIP_FAMILY_MODELS)
def served(request: pytest.FixtureRequest, tiny_import: Callable[[str], Path]) -> Served:
    return serve(find_model(request.param), tiny_import(request.param))


def entry_config(directory: Path) -> dict[str, Any]:
    return json.loads((directory / CONFIG_FILE).read_text())


def meta_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@cache
def full_size_reference(arch: str) -> torch.nn.Module:
    """open_clip's own full-size architecture, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return open_clip.create_model(arch, device="meta")


@pytest.mark.parametrize("texts", [SHORT_TEXTS, MIXED_TEXTS], ids=["short", "mixed"])
def test_text_vectors_equal_open_clip(served: Served, texts: list[str]) -> None:
    vectors, expected = served.runner.encode_text(texts), reference_text(served.reference, texts)
    assert vectors.shape == (len(texts), served.model.dimension) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (unit_cosines(vectors, expected) > 0.9999).all()
    assert smallest_gap(expected) > DISTINCT


def test_image_vectors_equal_open_clip(served: Served) -> None:
    images = distinct_images()
    pixels = np.stack([served.preparer(image) for image in images])
    size = served.model.image_size
    assert pixels.shape == (len(images), size, size, 3) and pixels.dtype == np.uint8
    vectors, expected = served.runner.encode_images(pixels), reference_images(served.reference, images)
    assert vectors.shape == expected.shape == (len(images), served.model.dimension)
    assert (unit_cosines(vectors, expected) > 0.9999).all()
    assert smallest_gap(expected) > DISTINCT


def test_reported_dimension_is_the_catalogue_dimension(served: Served) -> None:
    assert served.runner.dimension == served.model.dimension
    assert served.entry.info.metadata["dimension"] == served.model.dimension


def test_tiny_entry_keeps_the_real_preprocessing(served: Served) -> None:
    arch, tag = served.model.upstream["arch"], served.model.upstream["pretrained"]
    upstream = open_clip.get_pretrained_cfg(arch, tag)
    preprocess = entry_config(served.directory)["preprocess_cfg"]
    size = served.model.image_size
    assert tuple(preprocess["size"]) == (size, size)
    for key in ("mean", "std", "interpolation", "resize_mode"):
        assert tuple(np.atleast_1d(preprocess[key])) == tuple(np.atleast_1d(upstream[key])), key


def test_tiny_entry_keeps_the_real_module_classes(served: Served) -> None:
    tiny_classes = {type(module) for module in served.reference[0].modules()}
    full_classes = {type(module) for module in full_size_reference(served.model.upstream["arch"]).modules()}
    assert tiny_classes == full_classes


def test_tokenizer_is_the_families_own_and_lives_in_the_entry(served: Served) -> None:
    tokenizer = served.reference[2]
    assert isinstance(tokenizer, TOKENIZER_KIND[served.model.family])
    assert tokenizer.context_length == served.model.context_length
    stored = {name for name in TOKENIZER_FILES if (served.directory / name).is_file()}
    if isinstance(tokenizer, HFTokenizer):  # SigLIP2: Gemma's kind, read from the entry
        assert isinstance(tokenizer.tokenizer, GemmaTokenizer)
        assert Path(tokenizer.tokenizer.name_or_path) == served.directory
        assert len(tokenizer.tokenizer) == STAND_IN_VOCAB_SIZE and stored
        assert served.entry.info.metadata["tokenizer"] == "stand-in"
        assert served.entry.info.metadata["tokenizer_stands_in_for"].startswith("timm/")
    else:  # MobileCLIP: open_clip's CLIP BPE, shipped with open_clip
        assert not stored and "tokenizer" not in served.entry.info.metadata


@pytest.fixture(scope="module")
def siglip_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> HFTokenizer:
    """open_clip's tokenizer for the config and tokenizer files of a tiny SigLIP2 entry."""
    model, source = find_model("SigLIP/siglip2-vit-b-16"), WeightSource("random", tiny=True)
    directory = tmp_path_factory.mktemp("siglip_tokenizer")
    save_tokenizer(open_clip_torch.entry_config(model, source)[0]["text_cfg"]["hf_tokenizer_name"], directory, source)
    (directory / CONFIG_FILE).write_text(json.dumps({"model_cfg": open_clip_torch.entry_config(model, source)[0]}))
    return open_clip.get_tokenizer(f"local-dir:{directory}")


def test_siglip_tokens_keep_padding_to_the_context_length(siglip_tokenizer: HFTokenizer) -> None:
    short, long = siglip_tokenizer(["A photo of a Cat!", "word " * 200]).tolist()
    assert len(short) == len(long) == 64
    end = short.index(GEMMA_EOS)
    assert end > 0 and set(short[end + 1:]) == {GEMMA_PAD}  # EOS, then padding to 64
    assert long[-1] == GEMMA_EOS and GEMMA_PAD not in long  # truncated, EOS kept


def test_stand_in_tokenizer_falls_back_to_bytes_like_gemma(siglip_tokenizer: HFTokenizer) -> None:
    gemma = siglip_tokenizer.tokenizer
    assert [gemma.pad_token_id, gemma.eos_token_id, gemma.bos_token_id, gemma.unk_token_id] == [0, 1, 2, 3]
    ids = gemma("猫", add_special_tokens=False).input_ids
    assert gemma.convert_ids_to_tokens(ids) == ["<0xE7>", "<0x8C>", "<0xAB>"]
    assert gemma.decode(ids) == "猫"


def test_embeddings_api_pipeline_equals_open_clip(served: Served) -> None:
    pipeline = in_process_pipeline(served.model, served.runner, served.preparer,
                                   store_tag=str(served.entry.tag))
    texts = ["a photo of a cat", "a diagram"]
    vectors = pipeline_embed(pipeline, {"type": "text", "text": texts})
    expected = reference_text(served.reference, texts)
    assert vectors.shape == (2, served.model.dimension)
    assert (unit_cosines(vectors, expected) > 0.9999).all()
    assert smallest_gap(expected) > DISTINCT
    images = [random_image(300, 200, seed=4), solid_image((0, 160, 0))]
    vectors = np.stack([pipeline_embed(pipeline, {"type": "image_base64", "image_base64": b64(encoded(image))})
                        for image in images])
    expected = reference_images(served.reference, images)
    assert vectors.shape == (2, served.model.dimension)
    assert (unit_cosines(vectors, expected) > 0.9999).all()
    assert smallest_gap(expected) > DISTINCT


@pytest.mark.parametrize("model_id", ["MobileCLIP/mobileclip_b", "SigLIP/siglip2-vit-b-16"])
def test_from_dir_imports_an_open_clip_snapshot(model_id: str, tmp_path: Path, tiny_import: Callable[[str], Path],
                                                isolated_model_store: Path) -> None:
    """An hf-hub snapshot / open_clip local-dir (config, weights, tokenizer files) imports
    offline into an entry with the same config, weights and tokens (so, by the parity tests
    above, the same vectors)."""
    model = find_model(model_id)
    original = tiny_import(model_id)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    snapshot_files = {CONFIG_FILE, WEIGHTS_FILE, *TOKENIZER_FILES}
    files = [path.name for path in original.iterdir() if path.name in snapshot_files]
    tokenizer_files = set(files) & set(TOKENIZER_FILES)
    assert bool(tokenizer_files) == (model.family == "SigLIP")  # MobileCLIP's ships with open_clip
    for name in files:
        shutil.copy(original / name, snapshot / name)
    entry = import_model(model, WeightSource("dir", path=snapshot))
    copy = Path(entry.path)
    assert entry.info.labels["weights"] == "pretrained"
    assert entry_config(copy) == entry_config(original)
    expected, weights = load_file(original / WEIGHTS_FILE), load_file(copy / WEIGHTS_FILE)
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[key], expected[key]) for key in expected)
    texts = SHORT_TEXTS + MIXED_TEXTS
    tokens = [open_clip.get_tokenizer(f"local-dir:{directory}")(texts) for directory in (copy, original)]
    assert torch.equal(*tokens)
    assert {name for name in TOKENIZER_FILES if (copy / name).is_file()} == tokenizer_files


def test_a_tiny_entry_naming_an_unrecorded_timm_tower_fails_naming_the_fix(
        tmp_path: Path, tiny_import: Callable[[str], Path]) -> None:
    """A tiny entry whose config names a timm tower it does not record (as entries of earlier
    versions did) is refused when loaded, telling how to re-import it."""
    original = tiny_import("MobileCLIP/mobileclip_s1")
    copy = tmp_path / "entry"
    shutil.copytree(original, copy)
    config = json.loads((copy / CONFIG_FILE).read_text())
    assert config.pop(open_clip_torch.TIMM_VARIANTS)  # this version records them
    config["model_cfg"]["vision_cfg"]["timm_model_name"] = "tiny_fastvit_mci1_unrecorded"
    (copy / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="import it again with --random-weights --tiny"):
        find_model("mobileclip_s1").adapter.load_runner(copy)


def test_from_dir_without_the_tokenizer_fails_clearly_before_the_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        isolated_model_store: Path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    model = find_model("SigLIP/siglip2-vit-b-16")
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"not read: the tokenizer check comes first")
    assert models_cli(["import", model.id, "--from-dir", str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert "no tokenizer files" in message and "timm/ViT-B-16-SigLIP2" in message
    assert bentoml.models.list() == []  # nothing written to the (empty) store


@pytest.mark.parametrize("model_id", list(PUBLISHED_PARAMETERS))
def test_random_weights_build_the_full_size_architecture(model_id: str) -> None:
    """``--random-weights`` without ``--tiny`` builds open_clip's full architecture (counted
    on the meta device, so nothing is allocated)."""
    model = find_model(model_id)
    with torch.device("meta"):
        net, config = build_model(model, WeightSource("random"), device="meta")
    expected = meta_parameters(full_size_reference(model.upstream["arch"]))
    assert meta_parameters(net) == expected
    assert abs(expected - PUBLISHED_PARAMETERS[model_id]) / PUBLISHED_PARAMETERS[model_id] < 0.005
    assert config == open_clip.get_model_config(model.upstream["arch"])
