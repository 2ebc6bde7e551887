"""Start, probe and stop a real ``bentoml serve`` subprocess (benchmarks, end-to-end tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

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


def start(command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen:
    """Run ``command`` in ``cwd`` (by default this repository), in its own process group,
    output to ``log``."""
    with open(log, "wb") as output:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=output,
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


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, path: str = "/readyz",
                     timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``path`` (by default ``/readyz``: entry service and its Encoder) until it answers 200;
    AssertionError with the log's tail if the server exits or ``timeout_s`` passes first."""
    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            return httpx.get(f"{url}{path}", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    if not poll(ready, timeout_s, interval_s=0.5):
        raise AssertionError(f"server not ready after {timeout_s:g}s:\n{log.read_text()[-4000:]}")


def poll(done: Callable[[], bool], timeout_s: float, interval_s: float) -> bool:
    """Bounded polling: True as soon as ``done()`` is, False once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(interval_s)  # polling interval of a bounded wait, not synchronisation
    return False


def service_worker(server_pid: int, service_name: str) -> psutil.Process:
    """The one live worker process of BentoML service ``service_name`` (``encoder``,
    ``embedding_service``) under the server ``server_pid``, found by its command line."""
    workers = [child for child in psutil.Process(server_pid).children(recursive=True)
               if service_of(child) == service_name]
    assert len(workers) == 1, f"expected one {service_name} worker, found {workers}"
    return workers[0]


def service_of(process: psutil.Process) -> str | None:
    """The BentoML service a worker process runs (its ``--service-name``), None for other
    processes and for one that has exited."""
    try:
        command = process.cmdline()
    except psutil.Error:  # exited meanwhile, or a zombie its parent has not reaped yet
        return None
    return command[command.index("--service-name") + 1] if "--service-name" in command[:-1] else None
