"""An upstream import says how much it will download, and from where, before it starts: the
files each family fetches, sized from the Hub's listing (simulated here: no network), less
those the local Hub cache holds; a failed listing adds nothing to the download's own error."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub import errors as hub
from huggingface_hub.hf_api import RepoSibling

from importer import cli
from importer.store import download_plans
from models.catalogue import find_model
from runners.backends.downloads import human_size
from test_import_errors import OFFLINE_REASON, response

CLIP_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
CLIP_FILES = {"open_clip_config.json": 1_200, "open_clip_model.safetensors": 605_150_000,
              "open_clip_pytorch_model.bin": 605_240_000, "README.md": 9_000}
CN_CLIP_REPO = "OFA-Sys/chinese-clip-vit-base-patch16"
HF_CONFIGS = {"config.json": 2_000, "preprocessor_config.json": 400, "tokenizer_config.json": 300,
              "special_tokens_map.json": 100, "vocab.txt": 110_000}
CN_CLIP_FILES = {**HF_CONFIGS, "model.safetensors": 753_000_000, "pytorch_model.bin": 753_100_000,
                 "flax_model.msgpack": 753_000_000, "README.md": 4_000}
BLIP2_FILES = {**HF_CONFIGS, "pytorch_model.bin": 4_630_000_000, "README.md": 4_000}
MOBILECLIP_S0_FILES = {"mobileclip_s0.pt": 214_600_000, "README.md": 3_000, ".gitattributes": 1_500}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def listing(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, int]], list[str]]:
    """``listing(files)``: the Hub lists ``files`` (name: bytes) for any repository; returns
    the repositories it is asked about, as they are asked."""

    def answer(files: dict[str, int]) -> list[str]:
        asked: list[str] = []

        def model_info(self: HfApi, repo_id: str, **options: object) -> SimpleNamespace:
            assert options.get("files_metadata") is True  # sizes come only with it
            asked.append(repo_id)
            return SimpleNamespace(siblings=[RepoSibling(name, size=size) for name, size in files.items()])

        monkeypatch.setattr(HfApi, "model_info", model_info)
        return asked

    return answer


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    """An empty local Hub cache; ``hub_cache(repo, name)`` puts a file of ``repo``'s main
    revision in it, as a download leaves it."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def put(repo: str, name: str) -> None:
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(COMMIT)
        file = folder / "snapshots" / COMMIT / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"")

    return put


def announcements(model_id: str) -> list[str]:
    return [plan.announcement() for plan in download_plans(find_model(model_id))]


@pytest.mark.parametrize("model_id, files, repo, details", [
    ("CLIP/clip-vit-b-32", CLIP_FILES, CLIP_REPO,
     "605 MB from huggingface.co/{repo} (open_clip_model.safetensors 605 MB)"),
    ("CN-CLIP/cn-clip-vit-b-16", CN_CLIP_FILES, CN_CLIP_REPO,
     "753 MB from huggingface.co/{repo} (model.safetensors 753 MB, 5 small file(s))"),
    ("Blip2/blip2_transformers", BLIP2_FILES, "Salesforce/blip2-itm-vit-g",
     "4.6 GB from huggingface.co/{repo} (pytorch_model.bin 4.6 GB, 5 small file(s))"),
    ("MobileCLIP/mobileclip_s0", MOBILECLIP_S0_FILES, "apple/MobileCLIP-S0",
     "215 MB from huggingface.co/{repo} (mobileclip_s0.pt 215 MB)"),
], ids=["open_clip", "transformers-safetensors", "transformers-bin-only", "mobileclip_s0"])
def test_each_family_announces_the_files_it_fetches(model_id, files, repo, details, listing, hub_cache):
    asked = listing(files)
    assert announcements(model_id) == [f"downloading about {details.format(repo=repo)}"]
    assert asked == [repo]


def test_a_sharded_checkpoint_counts_every_shard_and_no_pickle(listing, hub_cache):
    listing({**HF_CONFIGS, "model-00001-of-00002.safetensors": 4_990_000_000,
             "model-00002-of-00002.safetensors": 3_050_000_000, "model.safetensors.index.json": 30_000,
             "tokenizer.json": 11_420_000, "pytorch_model.bin": 16_000_000_000})
    [line] = announcements("QwenText/qwen3-embedding-8b")
    assert line == ("downloading about 8.1 GB from huggingface.co/Qwen/Qwen3-Embedding-8B "
                    "(model-00001-of-00002.safetensors 5.0 GB, model-00002-of-00002.safetensors 3.0 GB, "
                    "tokenizer.json 11 MB, 6 small file(s))")


def test_files_in_the_local_cache_are_not_counted(listing, hub_cache):
    listing(CN_CLIP_FILES)
    for name in HF_CONFIGS:
        hub_cache(CN_CLIP_REPO, name)
    assert announcements("CN-CLIP/cn-clip-vit-b-16") == [
        f"downloading about 753 MB from huggingface.co/{CN_CLIP_REPO} (model.safetensors 753 MB, "
        "5 file(s) already cached)"]
    hub_cache(CN_CLIP_REPO, "model.safetensors")
    assert announcements("CN-CLIP/cn-clip-vit-b-16") == [
        f"nothing to download from huggingface.co/{CN_CLIP_REPO}: its 6 file(s) are already cached"]


@pytest.mark.parametrize("size, shown", [(12, "12 B"), (4_400, "4.4 kB"), (605_150_000, "605 MB"),
                                         (1_234_567_890, "1.2 GB"), (16_000_000_000, "16 GB")])
def test_sizes_are_in_decimal_units(size, shown):
    assert human_size(size) == shown


DOWNLOADS = {  # each family's download call, as the import makes it
    "CLIP/clip-vit-b-32": ("open_clip.pretrained", "hf_hub_download", CLIP_FILES),
    "CN-CLIP/cn-clip-vit-b-16": ("huggingface_hub", "snapshot_download", CN_CLIP_FILES),
    "MobileCLIP/mobileclip_s0": ("huggingface_hub", "hf_hub_download", MOBILECLIP_S0_FILES),
}


@pytest.mark.parametrize("model_id", list(DOWNLOADS))
def test_the_announcement_comes_before_the_download(model_id, listing, hub_cache, capsys, monkeypatch):
    module, function, files = DOWNLOADS[model_id]
    listing(files)
    printed_before: list[str] = []

    def download(*args: object, **kwargs: object) -> str:
        printed_before.append(capsys.readouterr().out)
        raise hub.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(f"{module}.{function}", download)
    assert cli.main(["import", model_id]) == 2
    assert printed_before, "the import made no download call"
    assert printed_before[0].startswith("downloading about ") and "(" in printed_before[0]
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: cannot download the files of {model_id}: {OFFLINE_REASON}")


@pytest.mark.parametrize("refusal", [hub.RepositoryNotFoundError("missing", response=response(404)),
                                     hub.OfflineModeIsEnabled("offline")], ids=["missing", "offline"])
def test_a_failed_listing_leaves_only_the_download_s_error(refusal, hub_cache, capsys, monkeypatch):
    def model_info(self: HfApi, repo_id: str, **options: object) -> None:
        raise refusal

    def download(*args: object, **kwargs: object) -> str:
        raise refusal

    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    assert cli.main(["import", "MobileCLIP/mobileclip_s0"]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    [line] = printed.err.strip().splitlines()
    assert line.startswith("error: cannot download the files of MobileCLIP/mobileclip_s0: ")


@pytest.mark.parametrize("origin", [["--random-weights"], ["--from-dir", "."]], ids=["random", "from-dir"])
def test_imports_that_download_nothing_announce_nothing(origin, capsys, monkeypatch):
    def model_info(self: HfApi, repo_id: str, **options: object) -> None:
        raise AssertionError("the Hub was asked for a listing")

    def import_model(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("stopped before writing")

    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr("importer.store.import_model", import_model)
    assert cli.main(["import", "CLIP/clip-vit-b-32", *origin]) == 2
    assert capsys.readouterr().out == ""
