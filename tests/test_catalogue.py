"""The catalogue of the 19 models and the import command."""

from __future__ import annotations

import pytest

from importer.cli import main
from models.catalogue import CATALOGUE, UnknownModel, families, find_model
from runners.contract import FamilyAdapter


def test_nineteen_unique_models_in_six_families():
    assert len(CATALOGUE) == 19
    assert len({model.id for model in CATALOGUE}) == 19
    assert len({model.store_name for model in CATALOGUE}) == 19
    assert list(families()) == ["MobileCLIP", "CLIP", "CN-CLIP", "SigLIP", "Blip2", "QwenText"]


def test_find_model_by_id_and_bare_name():
    assert find_model("CLIP/clip-vit-b-16").upstream == {"arch": "ViT-B-16", "pretrained": "openai"}
    assert find_model("clip-vit-l-14").id == "CLIP/clip-vit-l-14"
    with pytest.raises(UnknownModel, match="known models"):
        find_model("CLIP/clip-vit-b-99")
    with pytest.raises(UnknownModel):
        find_model("clip")


def test_clip_upstream_weights_are_the_specified_ones():
    expected = {
        "clip-vit-b-32": ("ViT-B-32", "laion2b_s34b_b79k", 512),
        "clip-vit-b-16": ("ViT-B-16", "openai", 512),
        "clip-vit-l-14": ("ViT-L-14", "datacomp_xl_s13b_b90k", 768),
        "clip-vit-h-14": ("ViT-H-14", "laion2b_s32b_b79k", 1024),
    }
    for name, (arch, tag, dimension) in expected.items():
        model = find_model(name)
        assert (model.upstream["arch"], model.upstream["pretrained"], model.dimension) == (arch, tag, dimension)


def test_cli_rejects_unknown_model_and_misused_flags(capsys):
    assert main(["import", "CLIP/nope", "--random-weights"]) == 2
    assert "Unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--tiny only applies"):
        main(["import", "CLIP/clip-vit-b-32", "--tiny"])
    with pytest.raises(SystemExit, match="not a directory"):
        main(["import", "CLIP/clip-vit-b-32", "--from-dir", "/nonexistent/dir"])


def test_cli_if_missing_keeps_the_existing_entry(tiny_entry, capsys):
    assert main(["import", "CLIP/clip-vit-b-32", "--random-weights", "--tiny", "--if-missing"]) == 0
    assert f"already in the model store as clip-vit-b-32:{tiny_entry.name}" in capsys.readouterr().out


def test_every_catalogue_model_names_its_family_adapter():
    for model in CATALOGUE:
        assert isinstance(model.adapter, FamilyAdapter) and callable(model.adapter.load_runner)
