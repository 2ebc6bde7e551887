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
from typing import Callable, Iterator

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
    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            return httpx.get(f"{url}{path}", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    if not poll(ready, START_TIMEOUT_S, interval_s=0.5):
        raise AssertionError(f"server not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def poll(done: Callable[[], bool], timeout_s: float, interval_s: float) -> bool:
    """Bounded polling: True as soon as ``done()`` is, False once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(interval_s)  # polling interval of a bounded wait, not synchronisation
    return False


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


def service_worker(server_pid: int, service_name: str) -> psutil.Process:
    """The one live worker process of BentoML service ``service_name`` (``encoder``,
    ``embedding_service``) under the server ``server_pid``, found by its command line."""
    workers = [child for child in psutil.Process(server_pid).children(recursive=True)
               if _service_name(child) == service_name]
    assert len(workers) == 1, f"expected one {service_name} worker, found {workers}"
    return workers[0]


def _service_name(process: psutil.Process) -> str | None:
    try:
        command = process.cmdline()
    except psutil.Error:  # exited meanwhile, or a zombie its parent has not reaped yet
        return None
    return command[command.index("--service-name") + 1] if "--service-name" in command[:-1] else None


def wait_for_status(process: psutil.Process, statuses: set[str], timeout_s: float = 30) -> None:
    """Bounded polling until ``process`` is in one of ``statuses`` (psutil's names) or gone."""
    def reached() -> bool:
        try:
            return process.status() in statuses
        except psutil.NoSuchProcess:
            return True

    if not poll(reached, timeout_s, interval_s=0.05):
        raise AssertionError(f"{process} not {statuses} after {timeout_s}s")


@contextmanager
def arbiter_paused(process: subprocess.Popen) -> Iterator[None]:
    """The server's arbiter (the ``bentoml serve`` process itself) stopped with SIGSTOP inside
    the block: its workers go on serving, but a worker that dies is neither reaped nor replaced
    until the block ends and the arbiter resumes."""
    arbiter = psutil.Process(process.pid)
    os.kill(process.pid, signal.SIGSTOP)
    try:
        wait_for_status(arbiter, {psutil.STATUS_STOPPED})
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)
