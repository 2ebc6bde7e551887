"""Test helpers around a real ``bentoml serve`` subprocess (end-to-end tests); the process
plumbing itself is :mod:`bench.server_process`, shared with the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil

from bench.server_process import (REPO, START_TIMEOUT_S, free_port, poll, serve_command, service_worker, start,
                                  stop, wait_until_ready)

__all__ = ["REPO", "START_TIMEOUT_S", "arbiter_paused", "free_port", "poll", "serve_command", "served",
           "service_worker", "start", "stop", "tree_rss_bytes", "wait_for_status", "wait_until_ready"]


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
