"""OpenVINO against PyTorch: image and text throughput of the bare runners, as ratios.

For each model (full-size architecture, random weights, imported into a temporary BentoML
home) it loads the PyTorch runner and the OpenVINO runner in several compile configurations
(the server's defaults first), sweeps batch sizes, and compares each subject's best rate
with PyTorch's best. Subjects are measured in interleaved rounds, so that other load on the
machine spreads over all of them alike. It prints and (unless ``--quick``) writes the
"OpenVINO vs PyTorch" section of ``bench/RESULTS.md``.

    python bench/openvino.py            # ViT-B-32 and ViT-B-16, writes bench/RESULTS.md
    python bench/openvino.py --quick    # smoke run: tiny variants, short windows, prints only
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

# The repository instead of this script's folder: here ``import openvino`` would find this file.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.machine import cpu_description  # noqa: E402
from bench.results_file import RESULTS, command_line, publish, section_head  # noqa: E402

if TYPE_CHECKING:
    from embedding_server.settings import Settings

SECTION = "## OpenVINO vs PyTorch"
TARGET = 1.3  # OpenVINO at the server's defaults against PyTorch, best batch against best batch
DEFAULT_MODELS = ("CLIP/clip-vit-b-32", "CLIP/clip-vit-b-16")
IMAGE_BATCHES = (1, 8, 16, 32)
TEXT_BATCHES = (8, 32, 128)
ROUNDS = 3
QUERIES = [f"a photo of {subject} {place}" for subject in ("a dog", "two children", "a red car", "an old man")
           for place in ("in the snow", "at night", "next to a river on a sunny day", "in a station")]


@dataclass(frozen=True)
class Variant:
    """An OpenVINO compile configuration (``EMBEDDING_OV_*`` settings)."""

    hint: str
    precision: str
    streams: int | None = None

    @property
    def label(self) -> str:
        streams = f", {self.streams} streams" if self.streams else ""
        precision = f"fast ({device_precision()})" if self.precision == "fast" else "exact (f32)"
        return f"OpenVINO {self.hint}{streams}, {precision}"

    def settings(self, cache: Path) -> Settings:
        from embedding_server.settings import Settings

        return Settings(ov_cache_dir=cache, ov_performance_hint=self.hint, ov_num_streams=self.streams,
                        precision=self.precision)


@dataclass
class Sweep:
    """Items per second of one subject, by batch size."""

    subject: str
    rates: dict[int, float] = field(default_factory=dict)

    @property
    def best(self) -> tuple[int, float]:
        batch = max(self.rates, key=self.rates.__getitem__)
        return batch, self.rates[batch]


def device_precision() -> str:
    """The inference precision OpenVINO picks on this CPU when none is asked for."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()


def variants() -> list[Variant]:
    """The server's defaults first, then the alternatives tried: two streams (one per core
    here), exact (f32), and fast (OpenVINO's own precision for the CPU) where that is not f32."""
    from embedding_server.settings import Settings

    default = Settings()
    alternatives = ["exact", "fast"] if device_precision() != "f32" else ["exact"]
    precisions = list(dict.fromkeys([default.precision, *alternatives]))
    tried = [Variant(hint, precision, streams) for precision in precisions
             for hint, streams in ((default.ov_performance_hint, default.ov_num_streams), ("THROUGHPUT", 2))]
    return list(dict.fromkeys(tried))


def smooth_images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((640, 480), Image.BICUBIC)
            for _ in range(count)]


def interleaved(encoders: dict[str, Callable[[int], object]], batches: tuple[int, ...], seconds: float) -> list[Sweep]:
    """Rates of every encoder at every batch size; each round gives each subject about
    ``seconds / ROUNDS`` (at least one call) before the next subject's turn."""
    sweeps = {name: Sweep(name) for name in encoders}
    for batch in batches:
        spent = dict.fromkeys(encoders, 0.0)
        calls = dict.fromkeys(encoders, 0)
        for encode in encoders.values():
            encode(batch)  # warm-up: first-call allocations, OpenVINO's shape-specific kernels
        for _ in range(ROUNDS):
            for name, encode in encoders.items():
                started = time.perf_counter()
                while calls[name] == 0 or time.perf_counter() - started < seconds / ROUNDS:
                    encode(batch)
                    calls[name] += 1
                spent[name] += time.perf_counter() - started
        for name in encoders:
            sweeps[name].rates[batch] = batch * calls[name] / spent[name]
        print(f"  batch {batch:4}: " + ", ".join(f"{name} {sweeps[name].rates[batch]:.1f}/s" for name in encoders),
              flush=True)
    return list(sweeps.values())


def measure_model(model_id: str, tiny: bool, seconds: float, home: Path) -> dict[str, list[Sweep]]:
    from embedding_server.composition import StoredEntry, openvino_options, runner_options
    from embedding_server.settings import load_settings
    from importer.store import import_model
    from models.catalogue import find_model
    from runners.backends import openvino_backend
    from runners.contract import WeightSource

    model = find_model(model_id)
    adapter = model.adapter
    entry = StoredEntry.of(import_model(model, WeightSource("random", tiny=tiny)))
    runners = {"PyTorch": adapter.load_runner(entry.directory, runner_options(load_settings()))}
    for variant in variants():
        settings = variant.settings(home / "openvino")
        runners[variant.label] = openvino_backend.load_runner(adapter, entry.directory, entry.tag,
                                                              runner_options(settings),
                                                              openvino_options(settings))
    prepare = adapter.load_image_preparer(entry.directory)
    pixels = np.stack([prepare(image) for image in smooth_images(8)])
    pixels = np.concatenate([pixels] * (max(IMAGE_BATCHES) // len(pixels) + 1))
    queries = QUERIES * (max(TEXT_BATCHES) // len(QUERIES) + 1)
    print(f"{model_id}: images", flush=True)
    images = interleaved({name: (lambda n, r=runner: r.encode_images(pixels[:n])) for name, runner in runners.items()},
                         IMAGE_BATCHES, seconds)
    print(f"{model_id}: text", flush=True)
    texts = interleaved({name: (lambda n, r=runner: r.encode_text(queries[:n])) for name, runner in runners.items()},
                        TEXT_BATCHES, seconds)
    return {"image": images, "text": texts}


def machine() -> str:
    import openvino as ov
    import torch

    capabilities = ", ".join(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return (f"{cpu_description()}, OpenVINO CPU capabilities: {capabilities}, "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"OpenVINO {ov.__version__.split('-')[0]}")


def table(model_id: str, modality: str, sweeps: list[Sweep]) -> list[str]:
    unit = "images/s" if modality == "image" else "texts/s"
    baseline = sweeps[0].best[1]
    batches = list(sweeps[0].rates)
    lines = [f"**{model_id}, {modality}** ({unit} by batch size; ratio: best rate over PyTorch's best)", "",
             "| subject | " + " | ".join(f"batch {b}" for b in batches) + " | best | ratio |",
             "|---|" + "---:|" * (len(batches) + 2)]
    for sweep in sweeps:
        batch, rate = sweep.best
        lines.append(f"| {sweep.subject} | " + " | ".join(f"{sweep.rates[b]:.1f}" for b in batches)
                     + f" | {rate:.1f} (batch {batch}) | {rate / baseline:.2f}x |")
    return lines + [""]


def target_lines(results: dict[str, dict[str, list[Sweep]]]) -> list[str]:
    """OpenVINO at the server's defaults (the first OpenVINO row) against PyTorch."""
    lines = [f"Target: OpenVINO at the server's defaults >= {TARGET}x PyTorch.", "",
             "| model | modality | ratio | met |", "|---|---|---:|---|"]
    for model_id, by_modality in results.items():
        for modality, (pytorch, default, *_) in by_modality.items():
            ratio = default.best[1] / pytorch.best[1]
            lines.append(f"| {model_id} | {modality} | {ratio:.2f}x | {'yes' if ratio >= TARGET else 'no'} |")
    return lines + [""]


def section(results: dict[str, dict[str, list[Sweep]]], command: str, seconds: float, tiny: bool,
            load: tuple[float, float]) -> str:
    default = variants()[0].label
    lines = [
        *section_head(SECTION, command, f"{machine()}. One-minute load average {load[0]:.1f} at the start and "
                      f"{load[1]:.1f} at the end of the run (above {os.cpu_count()}, other work was competing "
                      "for the cores)"),
        f"- Models: full-size architectures{' (tiny variants: smoke run)' if tiny else ''}, random weights "
        "(compute does not depend on the values), imported into a temporary BentoML home.",
        "- Bare runners in one process, the Encoder's code path without HTTP: images are prepared "
        "224x224 uint8 pixels (normalisation included in both backends), texts are short queries "
        "(tokenizer included; both backends run CLIP's text tower on the trimmed batch).",
        f"- Every subject runs in each of {ROUNDS} interleaved rounds of ~{seconds / ROUNDS:.1f} s per batch "
        "size (at least one call), after one warm-up call; a rate is items over the time of its calls.",
        f"- The server's OpenVINO defaults are the first OpenVINO row ({default}); the other rows are the "
        "alternatives tried, selectable with `EMBEDDING_OV_PERFORMANCE_HINT`, `EMBEDDING_OV_NUM_STREAMS` and "
        "`EMBEDDING_PRECISION`.",
        "- Other load hurts PyTorch more than OpenVINO: each PyTorch operator waits for its slowest "
        "OpenMP thread, so a thread that loses its core to another process stalls the whole pass "
        "(worst at small batches, where operators are short), while OpenVINO's work-stealing pool "
        "carries on. On a busy machine the ratios therefore come out higher than on a quiet one; "
        "compare runs made on a quiet machine.",
        "",
    ]
    lines += target_lines(results)
    for model_id, by_modality in results.items():
        for modality, sweeps in by_modality.items():
            lines += table(model_id, modality, sweeps)
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated catalogue ids")
    parser.add_argument("--seconds", type=float, help="measuring time per subject and batch size "
                                                      "(default 6, quick 0.6)")
    parser.add_argument("--quick", action="store_true", help="tiny variants, short windows, prints only")
    parser.add_argument("--results", type=Path, help="RESULTS.md to update (default bench/RESULTS.md; "
                                                     "none with --quick)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    seconds = args.seconds or (0.6 if args.quick else 6.0)
    results_path = args.results or (None if args.quick else RESULTS)
    home = Path(tempfile.mkdtemp(prefix="bench-openvino-home-"))
    os.environ.update({"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1"})
    started, load_before = time.monotonic(), os.getloadavg()[0]
    try:
        results = {model: measure_model(model, args.quick, seconds, home) for model in args.models.split(",")}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    command = command_line("openvino.py", argv)
    text = section(results, command, seconds, args.quick, (load_before, os.getloadavg()[0]))
    publish(text, SECTION, results_path)
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
