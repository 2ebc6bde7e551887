"""What the OpenAI-compatible route costs beside the documented one, on the same server.

``POST /v1/embeddings`` embeds through the same pipeline as ``POST /embeddings`` and also asks
the Encoder for the texts' token counts (``usage``), a second, coalesced Encoder call beside
the forward pass. This serves one model once and measures both routes with the same texts
(one per request) in alternating windows (documented, OpenAI, documented, OpenAI), closed loop
at each concurrency level, so that the shared machine's noise falls on both alike; the result
is the ratio of the OpenAI route's throughput to the documented one's.

    python bench/openai_route.py                 # full-size random CLIP/clip-vit-b-32
    python bench/openai_route.py --quick         # tiny variant, short windows, prints only
    python bench/openai_route.py --write         # also writes bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

from machine import cpu_description
from results_file import RESULTS, command_line, publish, section_head
from server_process import REPO, serve_command
from throughput import Cell, closed_loop, request_bodies, running, sample_queries

SECTION = "## OpenAI-compatible route"
DEFAULT_MODEL = "CLIP/clip-vit-b-32"
WARMUP_REQUESTS = 48
ROUNDS = 2  # alternations of the two routes per concurrency level


def openai_bodies(model: str, texts: list[str]) -> list[bytes]:
    return [orjson.dumps({"model": model, "input": text}) for text in texts]


def measure(url: str, model: str, concurrency: tuple[int, ...], window_s: float) -> dict[int, dict[str, list[Cell]]]:
    """Cells per concurrency level and route, ``ROUNDS`` windows each, alternating."""
    texts = sample_queries()
    routes = {"/embeddings": request_bodies(model, [{"type": "text", "text": text} for text in texts]),
              "/v1/embeddings": openai_bodies(model, texts)}
    for path, bodies in routes.items():
        asyncio.run(closed_loop(url + path, bodies, 4, float("inf"), WARMUP_REQUESTS))
    cells: dict[int, dict[str, list[Cell]]] = {}
    for level in concurrency:
        cells[level] = {path: [] for path in routes}
        for _ in range(ROUNDS):
            for path, bodies in routes.items():
                cell = asyncio.run(closed_loop(url + path, bodies, level, window_s, 100_000))
                assert cell.failures == {}, (path, cell.failures)
                cells[level][path].append(cell)
                print(f"  {path:15} c={level:<3} {cell.throughput:7.1f}/s  p50 {cell.p50_ms:7.1f} ms", flush=True)
    return cells


def section(model: str, cells: dict[int, dict[str, list[Cell]]], command: str) -> str:
    lines = section_head(SECTION, command, f"{cpu_description()}; model {model} (random weights)")
    lines += ["- One text per request; each route measured in "
              f"{ROUNDS} alternating windows per level, the table shows their means.", "",
              "| clients | `/embeddings` req/s | `/v1/embeddings` req/s | ratio | p50 ms (documented / OpenAI) |",
              "|---|---|---|---|---|"]
    for level, routes in cells.items():
        documented, openai = (routes[path] for path in ("/embeddings", "/v1/embeddings"))
        rate = [float(np.mean([cell.throughput for cell in route])) for route in (documented, openai)]
        p50 = [float(np.mean([cell.p50_ms for cell in route])) for route in (documented, openai)]
        lines.append(f"| {level} | {rate[0]:.1f} | {rate[1]:.1f} | {rate[1] / rate[0]:.2f} | "
                     f"{p50[0]:.1f} / {p50[1]:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--quick", action="store_true", help="tiny variant, 2 s windows, nothing written")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--window", type=float, help="seconds per window (default 10, quick 2)")
    parser.add_argument("--write", action="store_true", help="write the section into bench/RESULTS.md")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1",
           "EMBEDDING_MODEL_NAME": args.model}
    try:
        subprocess.run([sys.executable, "-m", "models", "import", args.model, "--random-weights",
                        *(["--tiny"] if args.quick else [])], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        with running(serve_command(), env, home / "server.log", "/health") as (url, _):
            cells = measure(url, args.model, tuple(int(level) for level in args.concurrency.split(",")),
                            args.window or (2.0 if args.quick else 10.0))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    publish(section(args.model, cells, command_line("openai_route.py", argv)), SECTION,
            RESULTS if args.write and not args.quick else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
