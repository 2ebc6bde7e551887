"""The benchmark's naive baseline: a threaded ``http.server`` that embeds every request on its
own, as it arrives, with one model shared under a lock (no batching).

It speaks the same ``POST /embeddings`` body as the service (text and ``image_base64``
inputs, ``encoding_format: float``), uses the same adapter code, and answers ``GET /readyz``.

    python bench/naive_server.py --port 8123 --model CLIP/clip-vit-b-32
"""

from __future__ import annotations

import argparse
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedding_server.composition import StoredEntry, load_preparer, runner_options  # noqa: E402
from embedding_server.settings import load_settings  # noqa: E402
from embedding_server.media.images import decode_base64, decode_image  # noqa: E402
from importer.store import find_entry  # noqa: E402
from models.catalogue import find_model  # noqa: E402

MAX_BYTES = 32 * 1024 * 1024
MAX_PIXELS = 64_000_000


class NaiveEmbedder:
    """One model; each call is a batch of one, serialised by a lock."""

    def __init__(self, model_id: str) -> None:
        model = find_model(model_id)
        directory = StoredEntry.of(find_entry(model)).directory
        self._runner = model.adapter.load_runner(directory, runner_options(load_settings()))
        self._prepare = load_preparer(model, directory)
        self._lock = threading.Lock()

    def embed(self, item: dict) -> np.ndarray:
        if item["type"] == "text":
            with self._lock:
                return self._runner.encode_text([item["text"]])[0]
        data = decode_base64(item["image_base64"], max_bytes=MAX_BYTES)
        pixels = self._prepare(decode_image(data, max_pixels=MAX_PIXELS))[np.newaxis]
        with self._lock:
            return self._runner.encode_images(pixels)[0]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: up to the benchmark's highest concurrency


def handler_for(embedder: NaiveEmbedder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the service's clients use it
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(200 if self.path == "/readyz" else 404, b'{"status": "ready"}')

        def do_POST(self) -> None:  # noqa: N802
            body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
            vector = embedder.embed(body["input"])
            self._answer(200, orjson.dumps({"embedding": vector}, option=orjson.OPT_SERIALIZE_NUMPY))

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Quiet."""

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    Server(("127.0.0.1", args.port), handler_for(NaiveEmbedder(args.model))).serve_forever()


if __name__ == "__main__":
    main()
