"""CPU per short-text request outside the model, per served process.

Serves a model (by default the tiny random-weight CLIP, whose forward pass is a fraction of a
millisecond, so what is measured is the cost around it) from a checkout (``--repo``, by
default this one: another commit's worktree gives a before/after), runs a closed loop of
``--clients`` text clients for ``--window`` seconds after a warm-up, and prints throughput
and the CPU time (user + system) each ``bentoml serve`` process spent per answer. Prints only;
bench/RESULTS.md ("Short texts: CPU per request outside the model") records runs.

    python bench/text_cost.py                          # this checkout, tiny CLIP, 32 clients
    python bench/text_cost.py --repo /tmp/before-tree  # a worktree of an earlier commit
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/ (see openvino.py)

from bench.machine import cpu_description  # noqa: E402
from bench.server_process import REPO, free_port, serve_command, service_worker, start, stop, wait_until_ready  # noqa: E402
from bench.throughput import closed_loop, request_bodies, sample_queries  # noqa: E402

WARMUP_S = 3.0


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    return {name: sum(process.cpu_times()[:2]) for name, process in processes.items()}


def measure(repo: Path, model: str, tiny: bool, clients: int, window_s: float) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-text-cost-"))
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1",
           "EMBEDDING_MODEL_NAME": model}
    command = [sys.executable, "-m", "models", "import", model, "--random-weights"] + (["--tiny"] if tiny else [])
    subprocess.run(command, cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)
    port, log = free_port(), home / "serve.log"
    server = start([*serve_command(), "--port", str(port)], env, log, cwd=repo)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, server, log, "/readyz")
        bodies = request_bodies(model, [{"type": "text", "text": query} for query in sample_queries()])
        asyncio.run(closed_loop(f"{url}/embeddings", bodies, clients, WARMUP_S, 100_000))
        processes = {"entry": service_worker(server.pid, "embedding_service"),
                     "encoder": service_worker(server.pid, "encoder"), "arbiter": psutil.Process(server.pid)}
        before = cpu_seconds(processes)
        cell = asyncio.run(closed_loop(f"{url}/embeddings", bodies, clients, window_s, 100_000))
        after = cpu_seconds(processes)
    finally:
        stop(server)
    print(f"{cpu_description()}; {repo}; {model}{' (tiny)' if tiny else ''}; {clients} clients")
    print(f"  {cell.throughput:.1f} texts/s, {cell.succeeded} answers, failures {cell.failures or 0}")
    for name in processes:
        print(f"  {name}: {1000 * (after[name] - before[name]) / cell.succeeded:.2f} ms CPU/request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to serve (default this one)")
    parser.add_argument("--model", default="CLIP/clip-vit-b-32")
    parser.add_argument("--full-size", action="store_true", help="the full-size random model, not the tiny one")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--window", type=float, default=12.0, help="seconds measured (default %(default)s)")
    args = parser.parse_args(argv)
    measure(args.repo.resolve(), args.model, not args.full_size, args.clients, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
