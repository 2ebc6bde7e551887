"""Throughput under concurrency: this service against the model's ceiling and a naive server.

For image and text requests at each concurrency level (closed loop: N clients, each sends its
next request as soon as the previous one answers) it measures three subjects:

(a) ``service``: this project, ``bentoml serve`` over HTTP;
(b) ``ceiling``: the bare model loop in this process (the adapter's own runner) at its best
    batch size, on already-preprocessed inputs; its batch-1 latency is the single-item
    latency;
(c) ``naive``: ``bench/naive_server.py``, one forward pass per request as it arrives.

It prints and (unless ``--quick``) writes the "Throughput under concurrency" section of
``bench/RESULTS.md`` and a plot beside it. All traffic goes to 127.0.0.1.

    python bench/throughput.py                  # full run, CLIP/clip-vit-b-32, random weights
    python bench/throughput.py --quick          # smoke run with the tiny variant, prints only
    python bench/throughput.py --model CLIP/clip-vit-b-16

``EMBEDDING_*`` variables in the environment reach the served service (tuning experiments)
and are recorded in the results.
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
from typing import Callable, Iterator

import aiohttp
import numpy as np
import orjson
import psutil
from PIL import Image

from machine import cpu_description
from results_file import RESULTS, command_line, publish, section_head, service_tuning, tuning_text
from server_process import REPO, free_port, serve_command, start, stop, wait_until_ready

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))  # the project's packages, imported where they are used

DEFAULT_MODEL = "CLIP/clip-vit-b-32"
SECTION = "## Throughput under concurrency"
REQUEST_TIMEOUT_S = 600
IMAGE_SIZE = (640, 480)
IMAGE_COUNT = 8
WARMUP_REQUESTS = 24
WARMUP_CALLS = 3
IMAGE_BATCHES = (1, 4, 8, 16, 32)
TEXT_BATCHES = (1, 8, 32, 64, 128)
QUERY_SUBJECTS = ("a dog", "two children", "a red car", "an old man with a hat", "a crowded street market",
                  "a cat", "a cyclist", "the kitchen counter")
QUERY_SCENES = ("in the snow", "at night", "next to a river", "on a sunny beach in summer",
                "inside a busy train station during rush hour")


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
    sweep: dict[int, float]  # the better variant's rate, per batch size
    variants: dict[int, str]  # which variant that was
    cpu_ms: dict[int, float]  # CPU time per item, per batch size
    other_load: float


@dataclass
class ModalityResult:
    modality: str
    ceiling: Ceiling
    service: list[Cell]
    naive: list[Cell]


@dataclass(frozen=True)
class Plan:
    model: str
    tiny: bool
    concurrency: tuple[int, ...]
    window_s: float
    max_requests: int
    ceiling_s: float


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


class BareModel:
    """The adapter's own runner in this process, with the benchmark's inputs preprocessed, run
    two ways: each batch whole on all threads (PyTorch's default), and as the service runs it on
    the CPU, in concurrent single-threaded slices (``runners/backends/cpu_lanes.py``)."""

    def __init__(self, plan: Plan, images: list[bytes], queries: list[str]) -> None:
        import torch

        from embedding_server.composition import StoredEntry, load_preparer, runner_options
        from embedding_server.settings import load_settings
        from importer.store import find_entry
        from models.catalogue import TEXT, find_model
        from runners.backends.cpu_lanes import MIN_SLICE, SlicedRunner, sliced_on_cpu

        model = find_model(plan.model)
        directory = StoredEntry.of(find_entry(model)).directory
        settings = load_settings()
        whole = model.adapter.load_runner(directory, runner_options(settings))
        self.variants = {"whole": whole}
        self.smallest_sliced = 0
        sliced = sliced_on_cpu(whole, "CPU", settings.torch_lanes, torch.get_num_threads())
        if isinstance(sliced, SlicedRunner):  # as the service runs it, EMBEDDING_TORCH_LANES included
            self.variants[f"{sliced.lanes} slices"] = sliced
            self.smallest_sliced = sliced.lanes * MIN_SLICE
        self.seconds = plan.ceiling_s
        self.encoders: dict[str, tuple[tuple[int, ...], Callable[[object, int], object]]] = {}
        prepare = load_preparer(model, directory)
        if prepare is not None:
            pixels = np.stack([prepare(Image.open(io.BytesIO(data)).convert("RGB")) for data in images])
            pool = np.concatenate([pixels] * (max(IMAGE_BATCHES) // len(pixels) + 1))
            self.encoders["image"] = IMAGE_BATCHES, lambda runner, n: runner.encode_images(pool[:n])
        if TEXT in model.modalities:
            texts = queries * (max(TEXT_BATCHES) // len(queries) + 1)
            self.encoders["text"] = TEXT_BATCHES, lambda runner, n: runner.encode_text(texts[:n])

    def sweep(self, modality: str) -> Ceiling:
        batches, encode = self.encoders[modality]
        meter = CpuMeter()
        sweep, variants, cpu_ms, single_ms = {}, {}, {}, 0.0
        for size in batches:
            sweep[size] = 0.0
            for name, runner in self.variants.items():
                if name != "whole" and size < self.smallest_sliced:
                    continue  # runs whole anyway
                rate, latencies, cpu = _rate(functools.partial(encode, runner, size), size, self.seconds)
                if size == 1:
                    single_ms = 1000 * float(np.median(latencies))
                print(f"  ceiling {modality:5} batch {size:4} {name:9}: {rate:8.1f} items/s  "
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
    answers; requests still in flight then are awaited but not counted."""
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
                if end - window[0] >= window_s or len(answered) >= max_requests:
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
            print(f"  {label:8} {modality:5} c={concurrency:<4} {cell.throughput:8.1f}/s  "
                  f"p50 {cell.p50_ms:8.1f} ms  p99 {cell.p99_ms:8.1f} ms  failures {cell.failures}  "
                  f"CPU {cell.cpu_ms:.1f} ms/item  other load {cell.other_load:.2f}", flush=True)
            results[modality].append(cell)
    return results


# --------------------------------------------------------------------------- subjects


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path, ready_path: str) -> Iterator[tuple[str, int]]:
    """Start a server subprocess on a free port; yield its base URL and process id; stop it
    afterwards."""
    port = free_port()
    process = start([*command, "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log, ready_path)
        yield url, process.pid
    finally:
        stop(process)


def run(plan: Plan, home: Path) -> tuple[dict[str, ModalityResult], dict[str, str]]:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
           "HF_HUB_OFFLINE": "1", "EMBEDDING_MODEL_NAME": plan.model}
    os.environ.update({key: env[key] for key in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK", "HF_HUB_OFFLINE")})
    command = [sys.executable, "-m", "models", "import", plan.model, "--random-weights"]
    subprocess.run(command + (["--tiny"] if plan.tiny else []), cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    images, queries = sample_images(), sample_queries()
    bare = BareModel(plan, images, queries)
    print("(b) ceiling: bare model loop in this process, first sweep", flush=True)
    first = {modality: bare.sweep(modality) for modality in bare.encoders}
    items = {"image": [{"type": "image_base64", "image_base64": base64.b64encode(data).decode()}
                       for data in images],
             "text": [{"type": "text", "text": query} for query in queries]}
    bodies = {modality: request_bodies(plan.model, items[modality]) for modality in bare.encoders}

    print("(a) service: bentoml serve", flush=True)
    with running(serve_command(), env, home / "service.log", "/readyz") as (url, pid):
        service = measure_server(f"{url}/embeddings", pid, bodies, plan, "service")
    print("(c) naive server", flush=True)
    naive_command = [sys.executable, str(BENCH / "naive_server.py"), "--model", plan.model]
    with running(naive_command, env, home / "naive.log", "/readyz") as (url, pid):
        naive = measure_server(f"{url}/embeddings", pid, bodies, plan, "naive")
    print("(b) ceiling: second sweep", flush=True)
    results = {modality: ModalityResult(modality, best_of(first[modality], bare.sweep(modality)),
                                        service[modality], naive[modality])
               for modality in bare.encoders}
    return results, service_tuning()


# --------------------------------------------------------------------------- report


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _failures(cell: Cell) -> str:
    return ", ".join(f"{count}x{status or 'conn'}" for status, count in sorted(cell.failures.items())) or "0"


def modality_table(result: ModalityResult) -> list[str]:
    unit = "images/s" if result.modality == "image" else "texts/s"
    ceiling = result.ceiling
    cheapest = min(ceiling.cpu_ms, key=ceiling.cpu_ms.__getitem__)
    lines = [
        f"### {result.modality.capitalize()} requests (one item per request)",
        "",
        f"Ceiling (b): {ceiling.throughput:.1f} {unit} at batch {ceiling.best_batch} "
        f"({ceiling.best_variant}), best of two sweeps (per batch size, the better of whole and sliced: "
        + ", ".join(f"{size}: {rate:.1f}" for size, rate in ceiling.sweep.items())
        + f"); single-item latency {ceiling.single_ms:.1f} ms; CPU {ceiling.cpu_ms[cheapest]:.1f} ms/item "
        f"at batch {cheapest}; other load {ceiling.other_load:.2f} cores.",
        "",
        f"| concurrency | (a) service {unit} | p50 ms | p99 ms | failed | (c) naive {unit} | p50 ms | p99 ms "
        "| a/b | a/c |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for service, naive in zip(result.service, result.naive, strict=True):
        lines.append(
            f"| {service.concurrency} | {service.throughput:.1f} | {_ms(service.p50_ms)} | {_ms(service.p99_ms)} "
            f"| {_failures(service)} | {naive.throughput:.1f} | {_ms(naive.p50_ms)} | {_ms(naive.p99_ms)} "
            f"| {service.throughput / ceiling.throughput:.2f} | {service.throughput / naive.throughput:.2f} |"
        )
    lines += [
        "",
        "| concurrency | (a) service CPU ms/item | other load | (c) naive CPU ms/item | other load "
        "| (b) CPU / (a) CPU |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for service, naive in zip(result.service, result.naive, strict=True):
        lines.append(
            f"| {service.concurrency} | {service.cpu_ms:.1f} | {service.other_load:.2f} | {naive.cpu_ms:.1f} "
            f"| {naive.other_load:.2f} | {ceiling.cpu_ms[cheapest] / service.cpu_ms:.2f} |"
        )
    return lines + [""]


def target_lines(results: dict[str, ModalityResult]) -> list[str]:
    lines = ["### Targets", "", "| target | measured | met |", "|---|---|---|"]

    def row(name: str, measured: str, met: bool) -> None:
        lines.append(f"| {name} | {measured} | {'yes' if met else 'no'} |")

    for modality, result in results.items():
        cells = {cell.concurrency: cell for cell in result.service}
        naive = {cell.concurrency: cell for cell in result.naive}
        if 32 in cells:
            ratio = cells[32].throughput / result.ceiling.throughput
            row(f"{modality}, concurrency 32: service >= 0.85 x ceiling", f"{ratio:.2f}", ratio >= 0.85)
            if modality == "image":
                speedup = cells[32].throughput / naive[32].throughput
                row("image, concurrency 32: service >= 2 x naive", f"{speedup:.2f}", speedup >= 2)
        if 1 in cells:
            bound = 1.2 * result.ceiling.single_ms + 15
            row(f"{modality}, concurrency 1: p50 <= 1.2 x single-item + 15 ms ({bound:.1f} ms)",
                f"{cells[1].p50_ms:.1f} ms", cells[1].p50_ms <= bound)
    return lines + [""]


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_description()}, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, torch threads {torch.get_num_threads()}")


def section(plan: Plan, results: dict[str, ModalityResult], tuning: dict[str, str], command: str,
            plot_name: str | None) -> str:
    lines = [
        *section_head(SECTION, command, machine()),
        "- \"other load\": CPU cores used meanwhile by processes outside the benchmark (and stolen by "
        "the hypervisor). Where it is not near 0 the machine was shared and the throughputs are low. "
        "CPU ms/item (all processes of a server, warm-up and drain included) is much less disturbed: "
        "(b) CPU / (a) CPU is the service's CPU efficiency against the bare loop's cheapest batch.",
        f"- Model: {plan.model}, random weights{' (tiny variant)' if plan.tiny else ' (full size)'}; "
        f"service settings: {tuning_text(tuning)}.",
        f"- Closed loop: each of N clients sends its next request when the previous one answers. "
        f"A cell's window opens once N answers are back and lasts {plan.window_s:g} s or "
        f"{plan.max_requests} answers; throughput counts successful answers in the window.",
        "- (a) this service over HTTP; (b) the bare runner in one process at its best batch size, "
        "on preprocessed inputs (images: forward pass only; text: tokenizer and forward pass), each "
        "batch run whole on all threads or in single-threaded slices as the service does on the CPU, "
        "whichever is faster; "
        "(c) `bench/naive_server.py`, one forward pass per request, serialised on one model.",
        "- Image requests carry a 640x480 JPEG as base64; text requests one short query.",
        "",
    ]
    for result in results.values():
        lines += modality_table(result)
    lines += target_lines(results)
    if plot_name:
        lines += [f"![throughput and latency against concurrency]({plot_name})", ""]
    return "\n".join(lines)


def plot(results: dict[str, ModalityResult], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 8), squeeze=False)
    for column, result in enumerate(results.values()):
        levels = [cell.concurrency for cell in result.service]
        top, bottom = axes[0][column], axes[1][column]
        top.plot(levels, [c.throughput for c in result.service], "o-", label="(a) service")
        top.plot(levels, [c.throughput for c in result.naive], "s-", label="(c) naive")
        top.axhline(result.ceiling.throughput, color="grey", linestyle="--",
                    label=f"(b) ceiling (batch {result.ceiling.best_batch})")
        top.set(title=f"{model}: {result.modality}", ylabel="items/s", xscale="log")
        top.set_ylim(bottom=0)
        for subject, cells, marker in (("service", result.service, "o"), ("naive", result.naive, "s")):
            bottom.plot(levels, [c.p50_ms for c in cells], marker + "-", label=f"{subject} p50")
            bottom.plot(levels, [c.p99_ms for c in cells], marker + ":", label=f"{subject} p99")
        bottom.axhline(result.ceiling.single_ms, color="grey", linestyle="--", label="single-item latency")
        bottom.set(xlabel="concurrent clients", ylabel="latency ms", xscale="log", yscale="log")
        for axis in (top, bottom):
            axis.set_xticks(levels, [str(level) for level in levels])
            axis.legend(fontsize="small")
            axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalogue id (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny variant, short windows; prints only unless --results")
    parser.add_argument("--concurrency", default="1,8,32,128", help="comma-separated client counts")
    parser.add_argument("--window", type=float, help="seconds per measurement window (default 15, quick 2)")
    parser.add_argument("--results", type=Path, help="RESULTS.md to update (default bench/RESULTS.md; "
                                                     "none with --quick)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = Plan(model=args.model, tiny=args.quick,
                concurrency=tuple(int(level) for level in args.concurrency.split(",")),
                window_s=args.window or (2.0 if args.quick else 15.0),
                max_requests=300 if args.quick else 3000,
                ceiling_s=0.5 if args.quick else 3.0)
    results_path = args.results or (None if args.quick else RESULTS)
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    started = time.monotonic()
    try:
        results, tuning = run(plan, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    command = command_line("throughput.py", argv)
    plot_path = results_path.with_name("throughput.png") if results_path else None
    text = section(plan, results, tuning, command, plot_path.name if plot_path else None)
    publish(text, SECTION, results_path)
    if plot_path:
        plot(results, plot_path, plan.model)
        print(f"wrote {plot_path}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
