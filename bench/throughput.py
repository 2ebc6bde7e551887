"""Throughput under concurrency: this service against the model's ceiling, a naive server and
a peer.

For image and text requests at each concurrency level (closed loop: N clients, each sends its
next request as soon as the previous one answers) it measures these subjects:

(a) ``service``: this project, ``bentoml serve`` over HTTP, in each service configuration
    (``--service``; by default PyTorch and OpenVINO);
(b) ``ceiling``: each configuration's bare model loop in this process (the runner the Encoder
    loads) at its best batch size, on already-preprocessed inputs; its batch-1 latency is the
    single-item latency;
(c) ``naive``: ``bench/naive_server.py``, one forward pass per request as it arrives;
(d) peers (``--peers``): infinity-emb (``bench/infinity_peer.py``) on a Hugging Face CLIP of
    the same architecture, from PyPI in a virtual environment of its own.

It prints and (unless ``--quick``) writes the "Throughput under concurrency" section of
``bench/RESULTS.md`` and a plot beside it. All traffic goes to 127.0.0.1.

    python bench/throughput.py                  # full run, CLIP/clip-vit-b-32, random weights
    python bench/throughput.py --quick          # smoke run with the tiny variant, no peer, prints only
    python bench/throughput.py --model CLIP/clip-vit-b-16
    python bench/throughput.py --service pytorch=,openvino-int8="EMBEDDING_USE_OV=true;EMBEDDING_PRECISION=int8"

``EMBEDDING_*`` variables in the environment reach every service configuration (tuning
experiments) and are recorded in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping
from unittest import mock

import aiohttp
import numpy as np
import orjson
import psutil
from PIL import Image

# The repository instead of this script's folder (the project's packages, imported where they
# are used): from here ``import openvino`` would find bench/openvino.py, not OpenVINO.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.infinity_peer import InfinityPeer  # noqa: E402
from bench.machine import cpu_description  # noqa: E402
from bench.results_file import (RESULTS, command_line, publish, section_head, service_tuning,  # noqa: E402
                                tuning_text)
from bench.server_process import REPO, free_port, serve_command, start, stop, wait_until_ready  # noqa: E402

if TYPE_CHECKING:
    from embedding_server.composition import StoredEntry
    from embedding_server.settings import Settings
    from models.catalogue import CatalogueModel
    from runners.contract import EmbeddingRunner

BENCH = Path(__file__).resolve().parent

DEFAULT_MODEL = "CLIP/clip-vit-b-32"
SECTION = "## Throughput under concurrency"
REQUEST_TIMEOUT_S = 600
IMAGE_SIZE = (320, 240)
IMAGE_COUNT = 8
WARMUP_REQUESTS = 24
WARMUP_CALLS = 3
IMAGE_BATCHES = (1, 4, 8, 16, 32)
TEXT_BATCHES = (1, 8, 32, 64, 128)
QUERY_SUBJECTS = ("a dog", "two children", "a red car", "an old man with a hat", "a crowded street market",
                  "a cat", "a cyclist", "the kitchen counter")
QUERY_SCENES = ("in the snow", "at night", "next to a river", "on a sunny beach in summer",
                "inside a busy train station during rush hour")
DEFAULT_SERVICES = "pytorch=,openvino=EMBEDDING_USE_OV=true"
PEERS = {"infinity": InfinityPeer}
# Targets at 32 clients for the service configurations whose own settings are a backend's
# defaults: (modality, settings, what they are, the least ratio to the infinity peer).
PYTORCH_DEFAULTS: Mapping[str, str] = {}
OPENVINO_DEFAULTS: Mapping[str, str] = {"EMBEDDING_USE_OV": "true"}
PEER_TARGETS = (("image", OPENVINO_DEFAULTS, "OpenVINO defaults", 2.5),
                ("image", PYTORCH_DEFAULTS, "PyTorch", 1.3),
                ("text", PYTORCH_DEFAULTS, "PyTorch", 2.0))
RATE_TARGETS = (("text", OPENVINO_DEFAULTS, "OpenVINO defaults", 300.0),)  # items per second
SINGLE_ITEM_SLACK_MS = 15  # 1 client: p50 at most the bare single-item latency plus this


@dataclass(frozen=True)
class ServiceConfig:
    """One configuration of the service under test: a name and the settings it adds to the
    environment (``--service name=ENV=VALUE;ENV=VALUE``)."""

    name: str
    env: Mapping[str, str]

    @property
    def label(self) -> str:
        return f"(a) {self.name}"

    def describe(self) -> str:
        return f"{self.name}: " + (", ".join(f"`{key}={value}`" for key, value in self.env.items()) or "defaults")


@dataclass
class Cell:
    """One subject at one concurrency level: steady-state numbers of the measurement window."""

    concurrency: int
    throughput: float  # items per second
    p50_ms: float
    p99_ms: float
    requests: int  # answers in the window
    succeeded: int  # successful answers in the whole run, warm-up and drain included
    failures: dict[int, int] = field(default_factory=dict)  # status (0: connection error) -> count
    other_load: float = 0.0  # cores used meanwhile by processes outside the benchmark
    cpu_ms: float = 0.0  # the server's CPU time per successful item


@dataclass
class Ceiling:
    best_batch: int
    best_variant: str
    throughput: float
    single_ms: float
    sweep: dict[int, float]  # the best variant's rate, per batch size
    variants: dict[int, str]  # which variant that was
    cpu_ms: dict[int, float]  # CPU time per item, per batch size
    other_load: float

    @property
    def cheapest_cpu_ms(self) -> float:
        return min(self.cpu_ms.values())


@dataclass
class ModalityResult:
    modality: str
    ceilings: dict[str, Ceiling]  # by service configuration
    services: dict[str, list[Cell]]  # by service configuration
    naive: list[Cell]
    peers: dict[str, list[Cell]]  # by peer

    def subjects(self) -> dict[str, list[Cell]]:
        """Every server measured, by its label in tables and plot."""
        return {**{f"(a) {name}": cells for name, cells in self.services.items()}, "(c) naive": self.naive,
                **{f"(d) {name}": cells for name, cells in self.peers.items()}}


@dataclass(frozen=True)
class Plan:
    model: str
    tiny: bool
    concurrency: tuple[int, ...]
    window_s: float
    max_requests: int
    ceiling_s: float
    services: tuple[ServiceConfig, ...]
    peers: tuple[str, ...]


# --------------------------------------------------------------------------- inputs


def sample_images(count: int = IMAGE_COUNT) -> list[bytes]:
    """Frame-like JPEGs: smooth colour fields with some texture, as video frames compress."""
    rng = np.random.default_rng(0)
    width, height = IMAGE_SIZE
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
        noise = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def sample_queries() -> list[str]:
    return [f"a photo of {subject} {scene}" for subject in QUERY_SUBJECTS for scene in QUERY_SCENES]


def request_bodies(model: str, items: list[dict]) -> list[bytes]:
    return [orjson.dumps({"model": model, "input": item, "encoding_format": "float"}) for item in items]


# --------------------------------------------------------------------------- machine load


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class CpuMeter:
    """CPU time over an interval: the server's (its whole process tree, when ``server_pid``
    is given) and everyone else's.

    "Other load" is what processes outside the benchmark used, plus the time the hypervisor
    gave to other machines (steal), in cores: on a shared machine it says how much a number
    was disturbed. CPU time per item is much less disturbed than throughput, so it also
    compares the subjects' efficiency when the machine is busy.
    """

    def __init__(self, server_pid: int | None = None) -> None:
        self._server = [] if server_pid is None else [psutil.Process(server_pid)]
        if self._server:
            self._server += self._server[0].children(recursive=True)
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        return time.monotonic(), busy, _cpu_seconds([psutil.Process()]), _cpu_seconds(self._server)

    def read(self) -> tuple[float, float]:
        """(server CPU seconds, other load in cores) since the meter started."""
        (began, busy0, bench0, server0), (now, busy1, bench1, server1) = self._start, self._sample()
        server = server1 - server0
        other = (busy1 - busy0) - (bench1 - bench0) - server
        return server, max(0.0, other) / max(now - began, 1e-9)


# --------------------------------------------------------------------------- (b) the ceiling


def _rate(call: Callable[[], None], items: int, seconds: float) -> tuple[float, list[float], float]:
    """Items per second of repeated ``call`` for about ``seconds`` (at least twice), each
    call's latency, and the CPU milliseconds (all threads) per item."""
    for _ in range(WARMUP_CALLS):  # first calls of a shape pay one-off set-up costs
        call()
    latencies = []
    started, cpu_started = time.perf_counter(), time.process_time()
    while len(latencies) < 2 or time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - begin)
    done = items * len(latencies)
    return done / (time.perf_counter() - started), latencies, 1000 * (time.process_time() - cpu_started) / done


def configured_settings(config: ServiceConfig) -> Settings:
    """The service's settings as ``config`` sets them on top of this process's environment."""
    from embedding_server.settings import load_settings

    with mock.patch.dict(os.environ, config.env):
        return load_settings()


class BareModel:
    """The runner a service configuration's Encoder loads, in this process, with the
    benchmark's inputs preprocessed. A PyTorch runner runs two ways: each batch whole on all
    threads (PyTorch's default), and as the service runs it on the CPU, in concurrent
    single-threaded slices (``runners/backends/cpu_lanes.py``); an OpenVINO one as compiled."""

    def __init__(self, plan: Plan, config: ServiceConfig, images: list[bytes], queries: list[str]) -> None:
        from embedding_server.composition import StoredEntry, load_preparer
        from importer.store import find_entry
        from models.catalogue import TEXT, find_model

        model = find_model(plan.model)
        entry = StoredEntry.of(find_entry(model))
        self.settings = configured_settings(config)
        self.variants = self._variants(model, entry, self.settings)
        self.seconds = plan.ceiling_s
        self.encoders: dict[str, tuple[tuple[int, ...], Callable[[EmbeddingRunner, int], object]]] = {}
        prepare = load_preparer(model, entry.directory)
        if prepare is not None:
            pixels = np.stack([prepare(Image.open(io.BytesIO(data)).convert("RGB")) for data in images])
            pool = np.concatenate([pixels] * (max(IMAGE_BATCHES) // len(pixels) + 1))
            self.encoders["image"] = IMAGE_BATCHES, lambda runner, n: runner.encode_images(pool[:n])
        if TEXT in model.modalities:
            texts = queries * (max(TEXT_BATCHES) // len(queries) + 1)
            self.encoders["text"] = TEXT_BATCHES, lambda runner, n: runner.encode_text(texts[:n])

    @staticmethod
    def _variants(model: CatalogueModel, entry: StoredEntry, settings: Settings) -> dict[str, EmbeddingRunner]:
        import torch

        from embedding_server.composition import load_runner, runner_options
        from runners.backends.cpu_lanes import sliced_on_cpu

        if settings.use_ov:
            return {"OpenVINO": load_runner(model, entry, settings)}
        whole = model.adapter.load_runner(entry.directory, runner_options(settings))
        sliced = sliced_on_cpu(whole, "CPU", settings.torch_lanes, torch.get_num_threads())
        # as the service runs it, EMBEDDING_TORCH_LANES included
        return {"whole": whole} if sliced is whole else {"whole": whole, f"{sliced.lanes} slices": sliced}

    @staticmethod
    def _runs_whole_anyway(runner: EmbeddingRunner, size: int) -> bool:
        from runners.backends.cpu_lanes import MIN_SLICE, SlicedRunner

        return isinstance(runner, SlicedRunner) and size < runner.lanes * MIN_SLICE

    def sweep(self, modality: str, label: str) -> Ceiling:
        import torch

        from runners.backends import torch_precision

        if not self.settings.use_ov:  # the Encoder's math mode for this configuration's precision
            torch_precision.apply(self.settings.precision, torch.device("cpu"))
        batches, encode = self.encoders[modality]
        meter = CpuMeter()
        sweep, variants, cpu_ms, single_ms = {}, {}, {}, 0.0
        for size in batches:
            sweep[size] = 0.0
            for name, runner in self.variants.items():
                if self._runs_whole_anyway(runner, size):
                    continue
                rate, latencies, cpu = _rate(functools.partial(encode, runner, size), size, self.seconds)
                if size == 1:
                    single_ms = 1000 * float(np.median(latencies))
                print(f"  ceiling {label:10} {modality:5} batch {size:4} {name:9}: {rate:8.1f} items/s  "
                      f"CPU {cpu:7.1f} ms/item", flush=True)
                if rate > sweep[size]:
                    sweep[size], variants[size], cpu_ms[size] = rate, name, cpu
        best = max(sweep, key=sweep.__getitem__)
        return Ceiling(best, variants[best], sweep[best], single_ms, sweep, variants, cpu_ms, meter.read()[1])


def best_of(first: Ceiling, second: Ceiling) -> Ceiling:
    """Two sweeps merged: the best rate per batch size (noise only ever slows a sweep down)."""
    sweep, variants, cpu_ms = {}, {}, {}
    for size in first.sweep:
        better = first if first.sweep[size] >= second.sweep[size] else second
        sweep[size], variants[size], cpu_ms[size] = better.sweep[size], better.variants[size], better.cpu_ms[size]
    best = max(sweep, key=sweep.__getitem__)
    return Ceiling(best, variants[best], sweep[best], min(first.single_ms, second.single_ms), sweep, variants,
                   cpu_ms, (first.other_load + second.other_load) / 2)


# --------------------------------------------------------------------------- load generator


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, window_s: float,
                       max_requests: int) -> Cell:
    """``concurrency`` clients in a closed loop. The window opens once ``concurrency`` answers
    have come back (the pipeline is full) and closes after ``window_s`` or ``max_requests``
    answers, on a whole number of rounds (a multiple of ``concurrency`` answers: a server that
    answers a whole batch of clients at once is measured from the end of one batch to the end
    of another); requests still in flight then are awaited but not counted."""
    answered: list[tuple[float, float, int]] = []  # (sent, answered, status) within the window
    failures: dict[int, int] = {}
    completed = succeeded = 0
    window: list[float] = []  # [opened, closed]
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    headers = {"Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal completed, succeeded, sent
        while len(window) < 2:
            body = bodies[sent % len(bodies)]
            sent += 1
            begin = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            end = time.perf_counter()
            completed += 1
            succeeded += status == 200
            if len(window) == 1:
                answered.append((begin, end, status))
                if status != 200:
                    failures[status] = failures.get(status, 0) + 1
                full = end - window[0] >= window_s or len(answered) >= max_requests
                if full and len(answered) % concurrency == 0:
                    window.append(end)
            elif not window and completed >= concurrency:
                window.append(end)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    ok = [1000 * (end - begin) for begin, end, status in answered if status == 200]
    seconds = window[1] - window[0]
    return Cell(concurrency=concurrency, throughput=len(ok) / seconds if seconds > 0 else 0.0,
                p50_ms=float(np.percentile(ok, 50)) if ok else float("nan"),
                p99_ms=float(np.percentile(ok, 99)) if ok else float("nan"),
                requests=len(answered), succeeded=succeeded, failures=failures)


def measure_server(url: str, pid: int, bodies: dict[str, list[bytes]], plan: Plan,
                   label: str) -> dict[str, list[Cell]]:
    results: dict[str, list[Cell]] = {}
    for modality, payloads in bodies.items():
        asyncio.run(closed_loop(url, payloads, 4, float("inf"), WARMUP_REQUESTS))  # warm-up
        results[modality] = []
        for concurrency in plan.concurrency:
            meter = CpuMeter(pid)
            cell = asyncio.run(closed_loop(url, payloads, concurrency, plan.window_s, plan.max_requests))
            server_cpu_s, cell.other_load = meter.read()
            cell.cpu_ms = 1000 * server_cpu_s / max(cell.succeeded, 1)
            print(f"  {label:14} {modality:5} c={concurrency:<4} {cell.throughput:8.1f}/s  "
                  f"p50 {cell.p50_ms:8.1f} ms  p99 {cell.p99_ms:8.1f} ms  failures {cell.failures}  "
                  f"CPU {cell.cpu_ms:.1f} ms/item  other load {cell.other_load:.2f}", flush=True)
            results[modality].append(cell)
    return results


# --------------------------------------------------------------------------- subjects


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path, ready_path: str) -> Iterator[tuple[str, int]]:
    """Start a server subprocess on a free port; yield its embeddings URL and process id; stop
    it afterwards."""
    port = free_port()
    process = start([*command, "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log, ready_path)
        yield f"{url}/embeddings", process.pid
    finally:
        stop(process)


def measure_peer(peer: InfinityPeer, images: list[bytes], queries: list[str], modalities: list[str],
                 plan: Plan, home: Path) -> dict[str, list[Cell]]:
    bodies = peer.request_bodies(images, queries)
    bodies = {modality: bodies[modality] for modality in modalities}
    with peer.serving(home / f"{peer.name}.log") as (url, pid):
        peer.check_answers(url, bodies)
        return measure_server(url, pid, bodies, plan, f"(d) {peer.name}")


def run(plan: Plan, home: Path) -> tuple[dict[str, ModalityResult], dict[str, str], dict[str, str]]:
    """The measurements by modality, the service settings every configuration shares, and each
    peer's description."""
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
           "HF_HUB_OFFLINE": "1", "EMBEDDING_MODEL_NAME": plan.model}
    os.environ.update({key: env[key] for key in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK", "HF_HUB_OFFLINE")})
    peers = [PEERS[name](plan.model, plan.tiny) for name in plan.peers]  # installs first: fails early
    command = [sys.executable, "-m", "models", "import", plan.model, "--random-weights"]
    subprocess.run(command + (["--tiny"] if plan.tiny else []), cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    images, queries = sample_images(), sample_queries()
    bare = {config.name: BareModel(plan, config, images, queries) for config in plan.services}
    modalities = list(next(iter(bare.values())).encoders)
    print("(b) ceiling: bare model loop in this process, first sweep", flush=True)
    first = {name: {modality: model.sweep(modality, name) for modality in modalities} for name, model in bare.items()}
    items = {"image": [{"type": "image_base64", "image_base64": base64.b64encode(data).decode()}
                       for data in images],
             "text": [{"type": "text", "text": query} for query in queries]}
    bodies = {modality: request_bodies(plan.model, items[modality]) for modality in modalities}

    services = {}
    for config in plan.services:
        print(f"(a) service {config.describe()}: bentoml serve", flush=True)
        with running(serve_command(), {**env, **config.env}, home / f"service-{config.name}.log",
                     "/readyz") as (url, pid):
            services[config.name] = measure_server(url, pid, bodies, plan, config.label)
    print("(c) naive server", flush=True)
    naive_command = [sys.executable, str(BENCH / "naive_server.py"), "--model", plan.model]
    with running(naive_command, env, home / "naive.log", "/readyz") as (url, pid):
        naive = measure_server(url, pid, bodies, plan, "(c) naive")
    peer_cells = {}
    for peer in peers:
        print(f"(d) {peer.description()}", flush=True)
        peer_cells[peer.name] = measure_peer(peer, images, queries, modalities, plan, home)
    print("(b) ceiling: second sweep", flush=True)
    results = {modality: ModalityResult(
        modality,
        ceilings={name: best_of(first[name][modality], model.sweep(modality, name)) for name, model in bare.items()},
        services={name: cells[modality] for name, cells in services.items()},
        naive=naive[modality],
        peers={name: cells[modality] for name, cells in peer_cells.items()})
        for modality in modalities}
    return results, service_tuning(), {peer.name: peer.description() for peer in peers}


# --------------------------------------------------------------------------- report


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _failures(cell: Cell) -> str:
    return ", ".join(f"{count}x{status or 'conn'}" for status, count in sorted(cell.failures.items())) or "0"


def _unit(modality: str) -> str:
    return "images/s" if modality == "image" else "texts/s"


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    return [_row(header), "|" + "---:|" * len(header), *map(_row, rows), ""]


def ceiling_line(name: str, ceiling: Ceiling, unit: str) -> str:
    cheapest = min(ceiling.cpu_ms, key=ceiling.cpu_ms.__getitem__)
    return (f"Ceiling (b) {name}: {ceiling.throughput:.1f} {unit} at batch {ceiling.best_batch} "
            f"({ceiling.best_variant}), best of two sweeps (per batch size, the best variant: "
            + ", ".join(f"{size}: {rate:.1f}" for size, rate in ceiling.sweep.items())
            + f"); single-item latency {ceiling.single_ms:.1f} ms; CPU {ceiling.cpu_ms[cheapest]:.1f} ms/item "
            f"at batch {cheapest}; other load {ceiling.other_load:.2f} cores.")


def _ratios(result: ModalityResult, name: str, level: int) -> list[str]:
    """Service configuration ``name`` at the ``level``-th concurrency against (b), (c), the
    peers, and its CPU efficiency against its bare loop's cheapest batch."""
    cell = result.services[name][level]
    ceiling = result.ceilings[name]
    others = [result.naive, *result.peers.values()]
    return [f"{cell.throughput / ceiling.throughput:.2f}",
            *(f"{cell.throughput / other[level].throughput:.2f}" if other[level].throughput else "-"
              for other in others),
            f"{ceiling.cheapest_cpu_ms / cell.cpu_ms:.2f}"]


def modality_table(result: ModalityResult) -> list[str]:
    unit = _unit(result.modality)
    subjects = result.subjects()
    levels = [cell.concurrency for cell in result.naive]
    lines = [f"### {result.modality.capitalize()} requests (one item per request)", ""]
    for name, ceiling in result.ceilings.items():
        lines += [ceiling_line(name, ceiling, unit), ""]
    lines += _table(
        ["concurrency", *(f"{label} {heading}" for label in subjects for heading in (unit, "p50 ms", "p99 ms"))],
        [[level, *(value for cells in subjects.values()
                   for value in (f"{cells[index].throughput:.1f}", _ms(cells[index].p50_ms), _ms(cells[index].p99_ms)))]
         for index, level in enumerate(levels)])
    peers = [f"a/d {name}" for name in result.peers]
    lines += _table(
        ["concurrency", *(f"{name} {heading}" for name in result.services
                          for heading in ("a/b", "a/c", *peers, "(b) CPU / (a) CPU"))],
        [[level, *(value for name in result.services for value in _ratios(result, name, index))]
         for index, level in enumerate(levels)])
    lines += _table(
        ["concurrency", *(f"{label} {heading}" for label in subjects
                          for heading in ("CPU ms/item", "other load", "failed"))],
        [[level, *(value for cells in subjects.values()
                   for value in (f"{cells[index].cpu_ms:.1f}", f"{cells[index].other_load:.2f}",
                                 _failures(cells[index])))]
         for index, level in enumerate(levels)])
    return lines


def _at(cells: list[Cell], concurrency: int) -> Cell | None:
    return next((cell for cell in cells if cell.concurrency == concurrency), None)


def _configured_as(services: tuple[ServiceConfig, ...], settings: Mapping[str, str]) -> ServiceConfig | None:
    """The service configuration whose own settings are ``settings`` (values compared in
    lower case), if one ran."""
    def normal(env: Mapping[str, str]) -> dict[str, str]:
        return {key: value.lower() for key, value in env.items()}

    return next((config for config in services if normal(config.env) == normal(settings)), None)


def target_lines(results: dict[str, ModalityResult], services: tuple[ServiceConfig, ...]) -> list[str]:
    lines = ["### Targets", "", "| target | measured | met |", "|---|---|---|"]

    def row(name: str, measured: str, met: bool) -> None:
        lines.append(f"| {name} | {measured} | {'yes' if met else 'no'} |")

    for modality, result in results.items():
        for config in services:
            cells = result.services[config.name]
            if (busy := _at(cells, 32)) is not None:
                ratio = busy.throughput / result.ceilings[config.name].throughput
                row(f"{modality}, concurrency 32: {config.name} >= 0.85 x its ceiling (b)", f"{ratio:.2f}",
                    ratio >= 0.85)
                if modality == "image":
                    speedup = busy.throughput / _at(result.naive, 32).throughput
                    row(f"image, concurrency 32: {config.name} >= 2 x naive (c)", f"{speedup:.2f}", speedup >= 2)
            if (alone := _at(cells, 1)) is not None:
                bound = result.ceilings[config.name].single_ms + SINGLE_ITEM_SLACK_MS
                row(f"{modality}, concurrency 1: {config.name} p50 <= its bare single-item latency + "
                    f"{SINGLE_ITEM_SLACK_MS} ms ({bound:.1f} ms)", f"{alone.p50_ms:.1f} ms", alone.p50_ms <= bound)
        for target, settings, what, least in PEER_TARGETS:
            config = _configured_as(services, settings)
            if target != modality or config is None or _at(result.services[config.name], 32) is None:
                continue
            for peer, cells in result.peers.items():
                ratio = _at(result.services[config.name], 32).throughput / _at(cells, 32).throughput
                row(f"{modality}, concurrency 32: {config.name} ({what}) >= {least:g} x (d) {peer}", f"{ratio:.2f}",
                    ratio >= least)
        for target, settings, what, least in RATE_TARGETS:
            config = _configured_as(services, settings)
            if target == modality and config is not None and (busy := _at(result.services[config.name], 32)):
                row(f"{modality}, concurrency 32: {config.name} ({what}) >= {least:g} {_unit(modality)}",
                    f"{busy.throughput:.1f}", busy.throughput >= least)
    return lines + [""]


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_description()}, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, torch threads {torch.get_num_threads()}")


def section(plan: Plan, results: dict[str, ModalityResult], tuning: dict[str, str], peers: dict[str, str],
            command: str, plot_name: str | None) -> str:
    lines = [
        *section_head(SECTION, command, machine()),
        "- \"other load\": CPU cores used meanwhile by processes outside the benchmark (and stolen by "
        "the hypervisor). Where it is not near 0 the machine was shared and the throughputs are low. "
        "CPU ms/item (all processes of a server, warm-up and drain included) is much less disturbed: "
        "(b) CPU / (a) CPU is a service configuration's CPU efficiency against its bare loop's cheapest batch.",
        f"- Model: {plan.model}, random weights{' (tiny variant)' if plan.tiny else ' (full size)'}; "
        f"service settings of every configuration: {tuning_text(tuning)}.",
        f"- Closed loop: each of N clients sends its next request when the previous one answers. "
        f"A cell's window opens once N answers are back and lasts {plan.window_s:g} s or "
        f"{plan.max_requests} answers, rounded up to a multiple of N answers (a server that answers "
        "a whole batch of clients at once is measured over whole batches); throughput counts "
        "successful answers in the window.",
        "- (a) this service over HTTP, in each configuration ("
        + "; ".join(config.describe() for config in plan.services) + "); "
        "(b) each configuration's bare runner in one process at its best batch size, "
        "on preprocessed inputs (images: forward pass only; text: tokenizer and forward pass); a PyTorch "
        "batch runs whole on all threads or in single-threaded slices as the service does on the CPU, "
        "whichever is faster, an OpenVINO one on the model as the Encoder compiles it; "
        "(c) `bench/naive_server.py`, one forward pass per request, serialised on one model (PyTorch).",
        *(f"- (d) {name}: {description}; the same requests' images and queries, images as base64 data "
          "URIs (`\"modality\": \"image\"`)." for name, description in peers.items()),
        f"- Image requests carry a {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEG as base64; text requests one short query.",
        "",
    ]
    for result in results.values():
        lines += modality_table(result)
    lines += target_lines(results, plan.services)
    if plot_name:
        lines += [f"![throughput and latency against concurrency]({plot_name})", ""]
    return "\n".join(lines)


def plot(results: dict[str, ModalityResult], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "os^Dvp<>"
    figure, axes = plt.subplots(2, len(results), figsize=(7 * len(results), 9), squeeze=False)
    for column, result in enumerate(results.values()):
        levels = [cell.concurrency for cell in result.naive]
        top, bottom = axes[0][column], axes[1][column]
        for index, (label, cells) in enumerate(result.subjects().items()):
            style = {"color": colours[index % len(colours)], "marker": markers[index % len(markers)]}
            top.plot(levels, [c.throughput for c in cells], "-", label=label, **style)
            bottom.plot(levels, [c.p50_ms for c in cells], "-", label=f"{label} p50", **style)
            bottom.plot(levels, [c.p99_ms for c in cells], ":", label=f"{label} p99", **style)
        for index, (name, ceiling) in enumerate(result.ceilings.items()):  # a service's colour
            colour = colours[index % len(colours)]
            top.axhline(ceiling.throughput, color=colour, linestyle="--",
                        label=f"(b) {name} ceiling (batch {ceiling.best_batch})")
            bottom.axhline(ceiling.single_ms, color=colour, linestyle="--", label=f"(b) {name} single item")
        top.set(title=f"{model}: {result.modality}", ylabel="items/s", xscale="log")
        top.set_ylim(bottom=0)
        bottom.set(xlabel="concurrent clients", ylabel="latency ms", xscale="log", yscale="log")
        for axis in (top, bottom):
            axis.set_xticks(levels, [str(level) for level in levels])
            axis.legend(fontsize="x-small", ncol=2)
            axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --------------------------------------------------------------------------- main


def parse_services(text: str) -> tuple[ServiceConfig, ...]:
    """``name=ENV=VALUE;ENV=VALUE,name=...`` (an empty list of settings: the defaults)."""
    configs = []
    for part in text.split(","):
        name, _, settings = part.partition("=")
        pairs = [setting.split("=", 1) for setting in settings.split(";") if setting]
        if not name or any(len(pair) != 2 or not pair[0] for pair in pairs):
            raise argparse.ArgumentTypeError(f"{part!r} is not name=ENV=VALUE;ENV=VALUE")
        configs.append(ServiceConfig(name, dict(pairs)))
    if len({config.name for config in configs}) != len(configs):
        raise argparse.ArgumentTypeError(f"service configurations need distinct names: {text!r}")
    return tuple(configs)


def parse_peers(text: str) -> tuple[str, ...]:
    names = () if text == "none" else tuple(text.split(","))
    if unknown := [name for name in names if name not in PEERS]:
        raise argparse.ArgumentTypeError(f"unknown peers {unknown}: choose from {', '.join(PEERS)} or none")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalogue id (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny variant, short windows, no peer unless --peers; prints only "
                             "unless --results")
    parser.add_argument("--concurrency", default="1,8,32,128", help="comma-separated client counts")
    parser.add_argument("--window", type=float, help="seconds per measurement window (default 15, quick 2)")
    parser.add_argument("--service", type=parse_services, default=parse_services(DEFAULT_SERVICES),
                        help="service configurations to measure, name=ENV=VALUE;ENV=VALUE, comma-separated "
                             f"(default {DEFAULT_SERVICES})")
    parser.add_argument("--peers", type=parse_peers,
                        help=f"peer servers to measure: {', '.join(PEERS)} or none (default infinity; "
                             "none with --quick)")
    parser.add_argument("--results", type=Path, help="RESULTS.md to update (default bench/RESULTS.md; "
                                                     "none with --quick)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = Plan(model=args.model, tiny=args.quick,
                concurrency=tuple(int(level) for level in args.concurrency.split(",")),
                window_s=args.window or (2.0 if args.quick else 15.0),
                max_requests=300 if args.quick else 3000,
                ceiling_s=0.5 if args.quick else 3.0,
                services=args.service,
                peers=args.peers if args.peers is not None else (() if args.quick else tuple(PEERS)))
    results_path = args.results or (None if args.quick else RESULTS)
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    started = time.monotonic()
    try:
        results, tuning, peers = run(plan, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    command = command_line("throughput.py", argv)
    plot_path = results_path.with_name("throughput.png") if results_path else None
    text = section(plan, results, tuning, peers, command, plot_path.name if plot_path else None)
    publish(text, SECTION, results_path)
    if plot_path:
        plot(results, plot_path, plan.model)
        print(f"wrote {plot_path}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
