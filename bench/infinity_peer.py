"""infinity-emb, a widely used embedding server, as a peer for ``bench/throughput.py``.

It runs from PyPI in a virtual environment of its own (``bench/out/infinity-venv``: it needs
numpy<2 and transformers<5, which this project's environment has not), on a random-weight
Hugging Face ``CLIPModel`` of the ViT-B/32 architecture (``CLIPConfig``'s defaults) built
offline: the tokenizer's vocabulary comes from the BPE file that ships with open_clip. Both are
made once and kept in ``bench/out/``.

The harness uses :class:`InfinityPeer` (``bench.infinity_peer``); the peer's environment runs
this file to build the model (``python infinity_peer.py build DIRECTORY BPE VISION [--tiny]``),
so the module's top level imports the standard library only.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import importlib.util
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
VENV = OUT / "infinity-venv"
VERSION = "0.0.78"
ENGINE = "torch"
BATCH_SIZE = 32
DIMENSION = 512  # CLIPConfig's projection_dim
# The catalogue's models that have a Hugging Face twin here (CLIPConfig() is ViT-B/32): what
# the twin is, and its CLIPConfig vision settings.
VISION_TOWERS = {"CLIP/clip-vit-b-32": ("ViT-B/32 (`CLIPConfig()`)", {}),
                 "CLIP/clip-vit-b-16": ("ViT-B/16 (`CLIPConfig()` with vision patch size 16)", {"patch_size": 16})}
# Only the CLIP path of infinity's vision extra: the extra's colpali-engine is for ColPali models.
REQUIREMENTS = (f"infinity-emb[server,torch]=={VERSION}", "torch==2.14.1", "torchvision==0.29.1", "pillow",
                "aiohttp")
# infinity needs numpy<2 and transformers<5; torch stays the one this machine has, so that pip
# never fetches another build.
CONSTRAINTS = ("numpy<2", "transformers<5", "torch==2.14.1", "torchvision==0.29.1")
VERSIONS_OF = ("infinity-emb", "torch", "transformers")
TINY_TOWER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY = ("a tiny CLIP (two 64-wide layers per tower)", TINY_TOWER)
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "DO_NOT_TRACK": "1"}


# --------------------------------------------------------------------------- environment and model


def python() -> Path:
    """The peer environment's interpreter, created and installed on first use."""
    interpreter = VENV / "bin" / "python"
    record = VENV / "bench-requirements.txt"
    wanted = "\n".join(REQUIREMENTS + CONSTRAINTS) + "\n"
    if record.exists() and record.read_text() == wanted:
        return interpreter
    print(f"installing infinity-emb {VERSION} into {VENV}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    constraints = VENV / "constraints.txt"
    constraints.write_text("\n".join(CONSTRAINTS) + "\n")
    subprocess.run([str(interpreter), "-m", "pip", "install", "--quiet", "-c", str(constraints), *REQUIREMENTS],
                   check=True)
    record.write_text(wanted)
    return interpreter


def installed_versions(interpreter: Path) -> dict[str, str]:
    script = ("import importlib.metadata as m, json; "
              f"print(json.dumps({{name: m.version(name) for name in {VERSIONS_OF!r}}}))")
    return json.loads(subprocess.run([str(interpreter), "-c", script], check=True, capture_output=True,
                                     text=True).stdout)


def open_clip_vocabulary() -> Path:
    """open_clip's BPE file (49,152 lines of merges), from this project's environment."""
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.origin, "open_clip is not installed"
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


def twin(model: str, tiny: bool) -> tuple[str, dict[str, int]]:
    """What the Hugging Face twin of catalogue model ``model`` is, and its ``CLIPConfig``
    vision settings."""
    if model not in VISION_TOWERS:
        raise ValueError(f"infinity peer: no Hugging Face twin of {model} here (only {', '.join(VISION_TOWERS)}); "
                         "run with --peers none")
    return TINY if tiny else VISION_TOWERS[model]


def model_directory(interpreter: Path, model: str, tiny: bool) -> Path:
    """The random-weight twin of ``model``, built on first use with the peer environment's
    transformers."""
    vision = twin(model, tiny)[1]
    directory = OUT / f"infinity-{'tiny' if tiny else model.rsplit('/', 1)[-1]}"
    if not (directory / "model.safetensors").exists():
        print(f"building {directory}", flush=True)
        command = [str(interpreter), __file__, "build", str(directory), str(open_clip_vocabulary()),
                   json.dumps(vision)] + (["--tiny"] if tiny else [])
        subprocess.run(command, check=True, env={**os.environ, **OFFLINE})
    return directory


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte-to-character map, which CLIP's BPE vocabulary is written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters)))


def write_tokenizer_files(directory: Path, bpe: Path) -> tuple[Path, Path]:
    """``vocab.json`` and ``merges.txt`` as Hugging Face's CLIP tokenizer reads them, from
    open_clip's BPE file: 256 byte tokens, the same with ``</w>``, 48,894 merges and the two
    special tokens, 49,408 in all (the order open_clip's ``SimpleTokenizer`` gives them)."""
    with gzip.open(bpe, "rt", encoding="utf-8") as lines:
        merges = lines.read().split("\n")[1:49152 - 256 - 2 + 1]
    tokens = list(_bytes_to_unicode().values())
    tokens += [token + "</w>" for token in tokens]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408, len(tokens)
    vocab, merges_file = directory / "vocab.json", directory / "merges.txt"
    vocab.write_text(json.dumps({token: index for index, token in enumerate(tokens)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab, merges_file


def build_model(directory: Path, bpe: Path, vision: dict[str, int], tiny: bool) -> None:
    """A random-weight ``CLIPModel`` (``CLIPConfig()``, ViT-B/32, with ``vision`` settings;
    tiny: also the text tower as narrow as ``TINY_TOWER``) with OpenAI CLIP's preprocessing
    (resize to 224, centre crop, CLIP mean and std) and tokenizer, saved with
    ``save_pretrained``. Runs in the peer's environment."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = write_tokenizer_files(directory, bpe)
    tokenizer = CLIPTokenizerFast(vocab_file=str(vocab), merges_file=str(merges), model_max_length=77)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(directory)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=TINY_TOWER if tiny else None, vision_config=vision)
    CLIPModel(config).save_pretrained(directory)


# --------------------------------------------------------------------------- the server


class InfinityPeer:
    """(d) in the harness: infinity-emb's ``v2`` server, torch engine, batch 32, on the CPU."""

    name = "infinity"

    def __init__(self, model: str, tiny: bool) -> None:
        self.served_name = model
        self.architecture = twin(model, tiny)[0]
        self.python = python()
        self.versions = installed_versions(self.python)
        self.model = model_directory(self.python, model, tiny)

    def description(self) -> str:
        return (f"infinity-emb {self.versions['infinity-emb']} (`infinity_emb v2 --engine {ENGINE} "
                f"--batch-size {BATCH_SIZE} --device cpu`; torch {self.versions['torch']}, transformers "
                f"{self.versions['transformers']}), serving a random-weight Hugging Face `CLIPModel` of "
                f"{self.architecture} with OpenAI CLIP's preprocessing and tokenizer")

    def command(self, port: int) -> list[str]:
        return [str(self.python.parent / "infinity_emb"), "v2", "--model-id", str(self.model),
                "--served-model-name", self.served_name, "--engine", ENGINE, "--batch-size", str(BATCH_SIZE),
                "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]

    @contextmanager
    def serving(self, log: Path) -> Iterator[tuple[str, int]]:
        """The running server's embeddings URL and process id; stopped (its process group)
        afterwards."""
        from bench.server_process import free_port, start, stop, wait_until_ready  # needs httpx: not in the peer's venv

        port = free_port()
        process = start(self.command(port), {**os.environ, **OFFLINE}, log, cwd=OUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url, process, log, "/health", timeout_s=600)
            yield f"{url}/embeddings", process.pid
        finally:
            stop(process)


    def request_bodies(self, images: list[bytes], queries: list[str]) -> dict[str, list[bytes]]:
        """One item per request, the harness's images and queries: infinity's ``/embeddings``
        takes images as base64 data URIs with ``"modality": "image"``."""
        import orjson

        def body(item: str, modality: str) -> bytes:
            return orjson.dumps({"model": self.served_name, "input": [item], "modality": modality,
                                 "encoding_format": "float"})

        return {"image": [body(f"data:image/jpeg;base64,{base64.b64encode(data).decode()}", "image")
                          for data in images],
                "text": [body(query, "text") for query in queries]}

    @staticmethod
    def check_answers(url: str, bodies: dict[str, list[bytes]]) -> None:
        """AssertionError unless one request per modality answers 200 with one 512-d vector."""
        import httpx

        for modality, payloads in bodies.items():
            response = httpx.post(url, content=payloads[0], headers={"Content-Type": "application/json"},
                                  timeout=120)
            assert response.status_code == 200, f"infinity {modality}: {response.status_code} {response.text[:500]}"
            data = response.json()["data"]
            assert len(data) == 1 and len(data[0]["embedding"]) == DIMENSION, f"infinity {modality}: {data!r:.200}"


def _main() -> None:
    parser = argparse.ArgumentParser(description="build the peer's random-weight CLIP")
    parser.add_argument("action", choices=["build"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("bpe", type=Path)
    parser.add_argument("vision", type=json.loads, help="CLIPConfig's vision_config, as JSON")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    build_model(args.directory, args.bpe, args.vision, args.tiny)


if __name__ == "__main__":
    _main()
