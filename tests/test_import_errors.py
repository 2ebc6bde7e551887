"""A failed download is one clear line naming the alternatives, never a traceback, and leaves
no entry behind: offline for real (a subprocess with the Hub unreachable), and the Hub's other
refusals (gated, missing repository, HTTP errors) as its client raises them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import errors as hub

from runners.backends.downloads import download_failure, fetching_upstream
from runners.contract import WeightsUnavailable
from serving import REPO

OFFLINE_REASON = "the Hugging Face Hub cannot be reached"


@pytest.mark.parametrize("model_id", ["CLIP/clip-vit-b-32", "CN-CLIP/cn-clip-vit-b-16",
                                      "MobileCLIP/mobileclip_s0", "SigLIP/siglip2-vit-b-16"])
def test_an_offline_import_is_one_line_naming_the_alternatives(model_id: str, tmp_path: Path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "models", "import", model_id], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot download the files of {model_id}: {OFFLINE_REASON}")
    assert "--from-dir DIR" in last and "--random-weights" in last
    store = tmp_path / "bentoml" / "models"
    assert not store.exists() or not any(store.rglob("model.yaml"))  # no half-written entry


def response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/some/repo"))


@pytest.mark.parametrize("error, reason", [
    (hub.GatedRepoError("gated", response=response(403)), "accept its licence"),
    (hub.RepositoryNotFoundError("missing", response=response(404)), "does not exist on the Hugging Face Hub"),
    (hub.RemoteEntryNotFoundError("no file", response=response(404)), "no such revision or file"),
    (hub.LocalEntryNotFoundError("offline"), OFFLINE_REASON),
    (hub.HfHubHTTPError("boom", response=response(502)), "answered HTTP 502"),
], ids=["gated", "missing-repository", "missing-file", "offline", "http-error"])
def test_the_hub_s_refusals_are_described(error, reason):
    assert reason in download_failure(error)


def test_a_library_s_wrapper_is_seen_through_and_other_errors_pass():
    def open_clip_like() -> None:
        try:
            raise hub.GatedRepoError("gated", response=response(403))
        except Exception as inner:
            raise RuntimeError(f"Failed to download weights for tag 'x': {inner}")

    with pytest.raises(WeightsUnavailable, match="cannot download the weights: the repository is gated"):
        with fetching_upstream("the weights"):
            open_clip_like()
    with pytest.raises(ValueError, match="a bug"):
        with fetching_upstream("the weights"):
            raise ValueError("a bug")
