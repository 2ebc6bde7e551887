"""Resident memory of the server's entry worker(s) and Encoder worker after some requests.

For each repository given (``--repo``, repeatable; default: the one holding this script) it
imports the model with random weights into a temporary BentoML home, serves it with
``bentoml serve`` on a free port, sends text and image requests, and reads each worker's
RSS, USS and PSS (psutil ``memory_full_info``) once the server is ready and again after the
requests. It also sums, by package, the resident memory of the native libraries mapped in
the entry worker (pure-Python packages such as open_clip or transformers do not show there).
It prints the "Entry worker memory" section of ``bench/RESULTS.md`` and, with ``--write``,
writes it; given several repositories, the section also shows the change from the first.

    python bench/entry_memory.py                                  # tiny CLIP/clip-vit-b-32
    python bench/entry_memory.py --full --requests 50             # full-size architecture
    python bench/entry_memory.py --repo /tmp/before --repo . --write

``EMBEDDING_*`` variables in the environment reach the served service and are recorded.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from machine import cpu_description
from results_file import RESULTS, command_line, publish, section_head, service_tuning, tuning_text
from server_process import REPO, free_port, serve_command, service_of, start, stop, wait_until_ready

DEFAULT_MODEL = "CLIP/clip-vit-b-32"
SECTION = "## Entry worker memory"
ENTRY_SERVICE = "embedding_service"
ENCODER_SERVICE = "encoder"
ARBITER = "arbiter (bentoml serve)"
ROLE_ORDER = {ENTRY_SERVICE: 0, ENCODER_SERVICE: 1, ARBITER: 2}
TEXTS_PER_REQUEST = 4
IMAGE_SIZE = (640, 480)
REQUEST_TIMEOUT_S = 300
STOP_TIMEOUT_S = 30
MIB = 1024 * 1024
NATIVE_MIN_BYTES = MIB


@dataclass(frozen=True)
class Usage:
    """One process's memory, in bytes (USS and PSS are None where psutil cannot read them)."""

    role: str
    pid: int
    rss: int
    uss: int | None
    pss: int | None


@dataclass(frozen=True)
class Measurement:
    """One repository served once: its processes' memory at readiness and after the requests."""

    commit: str
    model_info: dict[str, object]
    ready: dict[int, Usage]
    after: dict[int, Usage]
    native: dict[str, int]  # RSS of the first entry worker's mapped native libraries, by package


# --------------------------------------------------------------------------- machine


def machine() -> str:
    return f"{cpu_description()}, Python {platform.python_version()}, psutil {psutil.__version__}"


def git_commit(repo: Path) -> str:
    """Short commit of ``repo``'s HEAD, marked when tracked files differ from it."""
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    changes = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), "status", "--porcelain",
                              "--untracked-files=no"], check=True, capture_output=True, text=True).stdout
    return f"{commit} (uncommitted changes)" if changes.strip() else commit


# --------------------------------------------------------------------------- requests


def request_bodies(model: str, count: int) -> list[bytes]:
    """``count`` text requests of distinct texts and ``count`` requests of distinct PNG images."""
    rng = np.random.default_rng(0)
    width, height = IMAGE_SIZE
    bodies = []
    for index in range(count):
        texts = [f"a photo of a cat number {index} seen from side {side}" for side in range(TEXTS_PER_REQUEST)]
        bodies.append({"type": "text", "text": texts})
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(buffer, "PNG")
        bodies.append({"type": "image_base64", "image_base64": base64.b64encode(buffer.getvalue()).decode()})
    return [json.dumps({"model": model, "input": item, "encoding_format": "float"}).encode() for item in bodies]


def post(url: str, body: bytes) -> tuple[int, str]:
    """Status and (for failures) the start of the body of one POST."""
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            response.read()
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, error.read()[:300].decode(errors="replace")


def send_all(url: str, bodies: list[bytes], concurrency: int) -> None:
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(lambda body: post(f"{url}/embeddings", body), bodies))
    failed = [(status, detail) for status, detail in answers if status != 200]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(bodies)} requests failed; first: {failed[0]}")


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


# --------------------------------------------------------------------------- server


def stop_all(server: subprocess.Popen, workers: list[psutil.Process]) -> None:
    """Stop the server's process group, then any of its ``workers`` still alive."""
    stop(server)
    _, alive = psutil.wait_procs(workers, timeout=STOP_TIMEOUT_S)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S)


def role(process: psutil.Process, server_pid: int) -> str:
    """The BentoML service a worker runs (its ``--service-name``), else what the process is."""
    if process.pid == server_pid:
        return ARBITER
    service = service_of(process)
    if service is not None:
        return service
    try:
        return f"other: {' '.join(process.cmdline())[:60]}"
    except psutil.Error:
        return "exited"


def tree(server_pid: int) -> list[psutil.Process]:
    root = psutil.Process(server_pid)
    return [root, *root.children(recursive=True)]


def usage(server_pid: int) -> dict[int, Usage]:
    usages = {}
    for process in tree(server_pid):
        try:
            info = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        usages[process.pid] = Usage(role(process, server_pid), process.pid, info.rss,
                                    getattr(info, "uss", None), getattr(info, "pss", None))
    return usages


def native_by_package(pid: int) -> dict[str, int]:
    """Resident bytes of the files mapped from ``site-packages`` in process ``pid``, by package."""
    totals: dict[str, int] = {}
    for mapping in psutil.Process(pid).memory_maps(grouped=True):
        if "/site-packages/" not in mapping.path:
            continue
        top = mapping.path.split("/site-packages/", 1)[1].split("/", 1)[0]
        package = top.removesuffix(".libs").split(".", 1)[0].lower()
        totals[package] = totals.get(package, 0) + mapping.rss
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def check_served_from(repo: Path, usages: dict[int, Usage]) -> None:
    """The workers run in ``repo``, so that its code, not another checkout's, is measured."""
    for item in usages.values():
        if item.role in (ENTRY_SERVICE, ENCODER_SERVICE):
            cwd = Path(psutil.Process(item.pid).cwd()).resolve()
            if cwd != repo:
                raise SystemExit(f"{item.role} worker {item.pid} runs in {cwd}, not {repo}")


def measure(repo: Path, args: argparse.Namespace, home: Path, log: Path) -> Measurement:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1",
           "EMBEDDING_MODEL_NAME": args.model}
    env.pop("PYTHONPATH", None)
    if args.entry_workers:
        env["EMBEDDING_ENTRY_WORKERS"] = str(args.entry_workers)
    importer = [sys.executable, "-m", "models", "import", args.model, "--random-weights", "--if-missing"]
    print(f"importing {args.model} ({'tiny' if args.tiny else 'full size'}) into {home}", flush=True)
    subprocess.run(importer + (["--tiny"] if args.tiny else []), cwd=repo, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"serving {repo} on {url}", flush=True)
    server = start([*serve_command(), "--port", str(port)], env, log, cwd=repo)
    workers: list[psutil.Process] = []
    try:
        wait_until_ready(url, server, log, timeout_s=args.start_timeout)
        workers = tree(server.pid)[1:]
        ready = usage(server.pid)
        check_served_from(repo, ready)
        model_info = get_json(f"{url}/model/current")
        started = time.monotonic()
        send_all(url, request_bodies(args.model, args.requests), args.concurrency)
        print(f"  {2 * args.requests} requests answered 200 in {time.monotonic() - started:.1f} s", flush=True)
        after = usage(server.pid)
        entries = sorted(item.pid for item in after.values() if item.role == ENTRY_SERVICE)
        if not entries or ENCODER_SERVICE not in {item.role for item in after.values()}:
            raise SystemExit(f"no {ENTRY_SERVICE} or {ENCODER_SERVICE} worker found: {list(after.values())}")
        native = native_by_package(entries[0])
    finally:
        stop_all(server, workers)
    return Measurement(git_commit(repo), model_info, ready, after, native)


# --------------------------------------------------------------------------- report


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f}"


def _signed_mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:+,.0f}"


def _rows(measurement: Measurement) -> list[Usage]:
    return sorted(measurement.after.values(), key=lambda item: (ROLE_ORDER.get(item.role, 3), item.pid))


def _total(values: list[int | None]) -> int | None:
    """The sum, or None when a value is missing."""
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def memory_table(measurement: Measurement) -> list[str]:
    lines = ["| process | pid | RSS at ready | RSS after | USS after | PSS after |",
             "|---|---:|---:|---:|---:|---:|"]
    for item in _rows(measurement):
        before = measurement.ready.get(item.pid)
        lines.append(f"| {item.role} | {item.pid} | {_mib(before.rss if before else None)} | {_mib(item.rss)} "
                     f"| {_mib(item.uss)} | {_mib(item.pss)} |")
    rows = _rows(measurement)
    lines.append(f"| all | | {_mib(sum(item.rss for item in measurement.ready.values()))} "
                 f"| {_mib(sum(item.rss for item in rows))} | {_mib(_total([item.uss for item in rows]))} "
                 f"| {_mib(_total([item.pss for item in rows]))} |")
    return lines


def per_role(measurement: Measurement, name: str) -> tuple[float, float | None, float | None]:
    """Mean RSS, USS and PSS after the requests of the workers of service ``name``."""
    items = [item for item in measurement.after.values() if item.role == name]
    uss, pss = _total([item.uss for item in items]), _total([item.pss for item in items])
    count = len(items)
    return (sum(item.rss for item in items) / count, None if uss is None else uss / count,
            None if pss is None else pss / count)


def change_table(first: Measurement, others: list[Measurement]) -> list[str]:
    lines = ["Change from the first commit, per worker (mean over a service's workers), after the requests:", "",
             "| commit | service | RSS | USS | PSS |", "|---|---|---:|---:|---:|"]
    for other in others:
        for name in (ENTRY_SERVICE, ENCODER_SERVICE):
            old, new = per_role(first, name), per_role(other, name)
            deltas = [None if a is None or b is None else round(b - a) for a, b in zip(old, new, strict=True)]
            lines.append(f"| {other.commit} | {name} | " + " | ".join(_signed_mib(d) for d in deltas) + " |")
    return lines + [""]


def native_line(measurement: Measurement) -> str:
    shown = [f"{package} {_mib(rss)}" for package, rss in measurement.native.items() if rss >= NATIVE_MIN_BYTES]
    return ("Native libraries mapped in the first entry worker (resident MiB by package): "
            + (", ".join(shown) or "none over 1 MiB") + ".")


def section(args: argparse.Namespace, measurements: list[Measurement], command: str) -> str:
    tuning = service_tuning()
    if args.entry_workers:
        tuning["EMBEDDING_ENTRY_WORKERS"] = str(args.entry_workers)
    info = measurements[0].model_info
    served = ", ".join(f"{key} {info[key]}" for key in ("backend", "device", "weights", "variant") if key in info)
    lines = [
        *section_head(SECTION, command, machine()),
        f"- Model: {args.model}, random weights ({'tiny variant' if args.tiny else 'full size'}); "
        f"`/model/current`: {served or 'n/a'}; service settings: {tuning_text(tuning)}.",
        f"- Requests: {args.requests} text requests ({TEXTS_PER_REQUEST} texts each) and {args.requests} image "
        f"requests (a {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} PNG as base64), {args.concurrency} at a time, all "
        "answered 200; \"after\" is read once the last one has answered.",
        "- MiB. RSS: resident memory; USS: memory only this process holds (what its exit frees); PSS: RSS with "
        "each shared page divided among the processes that map it (sums to the machine's use).",
        "",
    ]
    for measurement in measurements:
        lines += [f"### Commit {measurement.commit}", "", *memory_table(measurement), "",
                  native_line(measurement), ""]
    if len(measurements) > 1:
        lines += change_table(measurements[0], measurements[1:])
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalogue id (default %(default)s)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", dest="tiny", action="store_true", help="tiny random weights (default)")
    size.add_argument("--full", dest="tiny", action="store_false", help="full-size random weights")
    parser.set_defaults(tiny=True)
    parser.add_argument("--requests", type=int, default=20, help="text requests, and as many image requests")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    parser.add_argument("--entry-workers", type=int, help="EMBEDDING_ENTRY_WORKERS for the server")
    parser.add_argument("--repo", type=Path, action="append",
                        help="repository to serve from (repeatable; default: this script's repository)")
    parser.add_argument("--bentoml-home", type=Path,
                        help="model store to use (default: a temporary one per repository)")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for /readyz")
    parser.add_argument("--write", action="store_true", help="write the section into bench/RESULTS.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        raise SystemExit("--requests and --concurrency must be at least 1")
    repos = [repo.resolve() for repo in (args.repo or [REPO])]
    started = time.monotonic()
    measurements = []
    for repo in repos:
        scratch = Path(tempfile.mkdtemp(prefix="entry-memory-"))
        try:
            home = args.bentoml_home.resolve() if args.bentoml_home else scratch / "home"
            measurement = measure(repo, args, home, scratch / "server.log")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        measurements.append(measurement)
    text = section(args, measurements, command_line("entry_memory.py", argv))
    publish(text, SECTION, RESULTS if args.write else None)
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
