"""The entry service never loads an engine: in a fresh interpreter, importing ``service.py``
(which every worker process does) and building the entry's image preparer and pipeline, as
``EmbeddingService.__init__`` does, then preparing an image, leaves torch, open_clip,
transformers, timm and OpenVINO unimported. test_e2e.py checks the served entry worker's
memory maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from helpers import TEST_MODEL_ID
from models.catalogue import find_model
from serving import REPO

ENGINES = ("torch", "torchvision", "open_clip", "transformers", "timm", "openvino", "safetensors")
_ENTRY_SIDE = """
import json, sys
from PIL import Image
import service
from embedding_server import composition
from embedding_server.encoder.client import EncoderConnection

preparer = composition.load_preparer(service.MODEL, composition.StoredEntry.of(service.ENTRY).directory)
pipeline = composition.build_pipeline(service.MODEL, preparer, EncoderConnection(None), service.settings)
shape = None if preparer is None else list(preparer(Image.new("RGB", (333, 211), (200, 30, 90))).shape)
engines = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[1])))
print("RESULT " + json.dumps({"shape": shape, "engines": engines}))
"""


@pytest.mark.parametrize("model_id", [TEST_MODEL_ID, "MobileCLIP/mobileclip_s0", "CN-CLIP/cn-clip-vit-b-16",
                                      "QwenText/qwen3-embedding-0.6b"])
def test_the_entry_side_imports_no_engine(model_id: str, tiny_entry: Path, tiny_import: Callable[[str], Path]):
    entry = tiny_entry if model_id == TEST_MODEL_ID else tiny_import(model_id)
    env = {**os.environ, "BENTOML_HOME": str(entry.parents[2]), "EMBEDDING_MODEL_NAME": model_id}
    completed = subprocess.run([sys.executable, "-c", _ENTRY_SIDE, json.dumps(ENGINES)], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.split("RESULT ", 1)[1])
    assert result["engines"] == []
    size = find_model(model_id).image_size
    assert result["shape"] == (None if size is None else [size, size, 3])
