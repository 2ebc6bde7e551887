"""Start, probe and stop a real ``bentoml serve`` subprocess (end-to-end tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command() -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", "service:EmbeddingService", "--host", "127.0.0.1"]


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Run ``command`` in the repository, in its own process group, output to ``log``."""
    with open(log, "wb") as output:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group (arbiter and workers)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, path: str = "/readyz") -> None:
    """Poll ``path`` (by default ``/readyz``: entry service and its Encoder) until it answers 200."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)  # polling interval of a bounded wait, not synchronisation
    raise AssertionError(f"server not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


@contextmanager
def served(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``bentoml serve`` with ``env`` on a free port: its base URL and process once ready;
    stopped when the block ends."""
    port = free_port()
    process = start(serve_command(), {**env, "EMBEDDING_SERVER_PORT": str(port)}, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process, log)
        yield url, process
    finally:
        stop(process)


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` and all its descendants (the server's workers)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total
