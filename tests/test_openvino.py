"""OpenVINO backend: parity with PyTorch for every family, conversion once per entry (cache
and ``--openvino`` import), compile settings, device errors, and a served model over HTTP."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx
import numpy as np
import openvino as ov
import pytest
from PIL import Image

from embedding_server.composition import openvino_options, runner_options
from embedding_server.settings import Settings, SettingsError, load_settings
from models.catalogue import CatalogueModel, find_model
from importer.store import import_model
from runners.backends import openvino_backend, openvino_export, openvino_int8
from runners.contract import EmbeddingRunner, WeightSource
from helpers import embedding_body
from samples import DISTINCT, b64, encoded, random_image, smallest_gap, unit_cosines
from serving import served

PARITY = 0.999  # the bar; at the exact precision (f32) the conversion holds 1e-5
# int8 against float32 on the tiny random towers, smallest and mean cosine (a broken
# quantisation is near 0); bench/RESULTS.md ("Precision") measures full-size and real weights.
INT8_PARITY = (0.9, 0.98)
F32_PARITY = 0.99999
CLIP = "CLIP/clip-vit-b-32"  # imported with --openvino; the other families convert on first load
FAMILIES = [CLIP, "MobileCLIP/mobileclip_b", "MobileCLIP/mobileclip_s0", "SigLIP/siglip2-vit-b-16",
            "CN-CLIP/cn-clip-vit-b-16", "Blip2/blip2_transformers", "QwenText/qwen3-embedding-0.6b"]
# Seven texts of different lengths; the last one runs past every context (CLIP's trimmed
# batch is then the full 77 tokens).
TEXTS = ["a photo of a cat", "", "一只猫的照片", "two dogs playing in the snow next to a frozen river",
         "x", "the kitchen counter at night", "a long caption that no context holds " * 30]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's IR cache: the first load of each entry here converts it."""
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def ov_settings(cache_root: Path) -> Settings:
    return Settings(ov_cache_dir=cache_root, precision="exact")


@dataclass
class Pair:
    """One entry, loaded by both backends."""

    model: CatalogueModel
    directory: Path
    tag: str
    torch: EmbeddingRunner
    openvino: EmbeddingRunner
    conversions: int  # how many conversions loading the OpenVINO runner took


@contextmanager
def counted_conversions() -> Iterator[list[Path]]:
    """The targets that :func:`openvino_export.convert_entry` converts into, inside the block."""
    calls: list[Path] = []
    convert = openvino_export.convert_entry

    def counting(adapter, entry_dir: Path, target: Path) -> None:
        calls.append(target)
        convert(adapter, entry_dir, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openvino_export, "convert_entry", counting)
        yield calls


def openvino_runner(model: CatalogueModel, directory: Path, tag: str, settings: Settings) -> EmbeddingRunner:
    """The OpenVINO runner of an entry, as the Encoder loads it under ``settings``."""
    return openvino_backend.load_runner(model.adapter, directory, tag, runner_options(settings),
                                        openvino_options(settings))


def load_pair(model: CatalogueModel, directory: Path, tag: str, settings: Settings) -> Pair:
    with counted_conversions() as conversions:
        openvino = openvino_runner(model, directory, tag, settings)
    return Pair(model, directory, tag, model.adapter.load_runner(directory), openvino, len(conversions))


@pytest.fixture(scope="module")
def imported_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Directory and tag of a tiny CLIP entry imported with ``--openvino`` into a BentoML home
    of its own (``<home>/models/<name>/<version>``), so the served model of the session's
    store stays as it is."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    home = tmp_path_factory.mktemp("openvino-home")
    (home / "models").mkdir()
    with BentoMLContainer.model_store.patch(ModelStore(str(home / "models"))):
        entry = import_model(find_model(CLIP), WeightSource("random", tiny=True), openvino=True)
    assert entry.info.metadata["openvino_ir"] == openvino_export.IR_DIR
    return Path(entry.path), str(entry.tag)


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request: pytest.FixtureRequest, ov_settings: Settings, tiny_import: Callable[[str], Path]) -> Pair:
    model = find_model(request.param)
    if request.param == CLIP:
        directory, tag = request.getfixturevalue("imported_clip")
        return load_pair(model, directory, tag, ov_settings)
    directory = tiny_import(request.param)  # <home>/models/<name>/<version>
    return load_pair(model, directory, f"{directory.parent.name}:{directory.name}", ov_settings)


def smooth_image(seed: int) -> Image.Image:
    """A smooth colour field (random at 4x3, resized), another for every seed."""
    coarse = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((320 + 8 * seed, 240), Image.BICUBIC)


def prepared_pixels(pair: Pair, count: int) -> np.ndarray:
    prepare = pair.model.adapter.load_image_preparer(pair.directory)
    return np.stack([prepare(smooth_image(seed)) for seed in range(count)])


@pytest.mark.parametrize("batch", [1, 7])
def test_text_vectors_equal_pytorch(pair: Pair, batch: int):
    texts = TEXTS[-batch:]
    vectors, expected = pair.openvino.encode_text(texts), pair.torch.encode_text(texts)
    assert vectors.shape == expected.shape == (batch, pair.model.dimension) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (unit_cosines(vectors, expected) > F32_PARITY).all()
    if batch > 1:
        assert smallest_gap(expected) > DISTINCT


@pytest.mark.parametrize("batch", [1, 7])
def test_image_vectors_equal_pytorch(pair: Pair, batch: int):
    if not pair.model.supports_images:
        with pytest.raises(NotImplementedError):
            pair.openvino.encode_images(np.zeros((1, 8, 8, 3), np.uint8))
        return
    pixels = prepared_pixels(pair, batch)
    vectors, expected = pair.openvino.encode_images(pixels), pair.torch.encode_images(pixels)
    assert vectors.shape == expected.shape == (batch, pair.model.dimension) and vectors.dtype == np.float32
    assert (unit_cosines(vectors, expected) > F32_PARITY).all()
    # Different images are far apart, so parity is not met by a near-constant output.
    if batch > 1:
        assert smallest_gap(expected) > DISTINCT


def test_runner_reports_backend_and_device(pair: Pair):
    assert (pair.openvino.backend, pair.openvino.device, pair.openvino.dimension) == (
        "openvino", "CPU", pair.model.dimension)


def test_conversion_happens_once(pair: Pair, ov_settings: Settings):
    """An entry imported with --openvino carries its IR; any other converts on its first load
    into the cache, under its tag. Later loads convert nothing and leave the files alone."""
    name, version = pair.tag.split(":")
    in_entry, cached = pair.directory / openvino_export.IR_DIR, ov_settings.ov_cache_dir / name / version
    ir = in_entry if pair.model.id == CLIP else cached
    assert openvino_export.has_ir(ir) and pair.conversions == (0 if ir == in_entry else 1)
    assert not (cached if ir == in_entry else in_entry).exists()
    written = {path: path.stat().st_mtime_ns for path in ir.iterdir()}
    with counted_conversions() as conversions:
        again = openvino_runner(pair.model, pair.directory, pair.tag, ov_settings)
    assert conversions == []
    assert {path: path.stat().st_mtime_ns for path in ir.iterdir()} == written
    assert (unit_cosines(again.encode_text(TEXTS[:2]), pair.openvino.encode_text(TEXTS[:2])) > 0.99999).all()


def test_throughput_hint_and_the_devices_own_precision(imported_clip: tuple[Path, str], cache_root: Path):
    """Under THROUGHPUT with two streams a batch runs as two parallel requests; at the fast
    precision, OpenVINO's own for the device (bf16 on CPUs that have it), the vectors stay
    within the bar."""
    settings = Settings(ov_cache_dir=cache_root, ov_performance_hint="THROUGHPUT", ov_num_streams=2,
                        ov_inference_threads=2, precision="fast")
    pair = load_pair(find_model(CLIP), *imported_clip, settings)
    compiled = pair.openvino._image.compiled
    assert compiled.get_property("NUM_STREAMS") == 2
    assert compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == 2
    device_default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == device_default
    assert pair.openvino.precision == device_default.to_string()
    pixels = prepared_pixels(pair, 7)
    assert (unit_cosines(pair.openvino.encode_images(pixels), pair.torch.encode_images(pixels)) > PARITY).all()
    assert (unit_cosines(pair.openvino.encode_text(TEXTS), pair.torch.encode_text(TEXTS)) > PARITY).all()


@pytest.mark.parametrize("family", [CLIP, "MobileCLIP/mobileclip_s0"])
def test_int8_is_quantised_once_and_stays_near_float32(family: str, imported_clip: tuple[Path, str],
                                                       tiny_import: Callable[[str], Path], tmp_path: Path):
    """EMBEDDING_PRECISION=int8 compiles an int8 IR (NNCF's FakeQuantize before the matmuls),
    quantised into the cache once, whose vectors stay near PyTorch's float32 ones. A tower
    whose quantisation breaks (MobileCLIP-S0's convolutional image tower, at these random
    weights) is kept in float, and the runner says so."""
    model = find_model(family)
    if family == CLIP:
        directory, tag = imported_clip
    else:
        directory = tiny_import(family)
        tag = f"{directory.parent.name}:{directory.name}"
    cache_root = tmp_path / "openvino"  # its own: the module cache counts the conversions of the other tests
    settings = Settings(ov_cache_dir=cache_root, use_ov=True, precision="int8")
    pair = load_pair(model, directory, tag, settings)
    int8_dir = openvino_int8.int8_ir(model.adapter, directory, tag, cache_root)
    quantised = openvino_int8.quantised_towers(int8_dir)
    broken = {openvino_export.IMAGE_IR} if family == "MobileCLIP/mobileclip_s0" else set()
    assert {tower for tower, int8 in quantised.items() if not int8} == broken
    device = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert pair.openvino.precision == (f"int8 text, {device} image" if broken else "int8")
    assert int8_dir.parent == openvino_export.cache_dir_for(tag, cache_root).parent
    towers = sorted(path.name for path in int8_dir.glob("*.xml"))
    assert towers == sorted([openvino_export.TEXT_IR] + ([openvino_export.IMAGE_IR] if model.supports_images else []))
    for tower in towers:
        operations = {node.get_type_name() for node in ov.Core().read_model(int8_dir / tower).get_ops()}
        assert ("FakeQuantize" in operations) == (tower not in broken), tower
    written = {path: path.stat().st_mtime_ns for path in int8_dir.iterdir()}
    again = openvino_runner(model, directory, tag, settings)
    assert {path: path.stat().st_mtime_ns for path in int8_dir.iterdir()} == written
    cosines = [unit_cosines(again.encode_text(TEXTS), pair.torch.encode_text(TEXTS))]
    if model.supports_images:
        pixels = prepared_pixels(pair, 5)
        cosines.append(unit_cosines(again.encode_images(pixels), pair.torch.encode_images(pixels)))
    for tower in cosines:
        assert tower.min() > INT8_PARITY[0] and tower.mean() > INT8_PARITY[1], tower


def test_int8_needs_openvino(monkeypatch):
    monkeypatch.setenv("EMBEDDING_PRECISION", "int8")
    with pytest.raises(SettingsError, match="EMBEDDING_PRECISION='int8'.*EMBEDDING_USE_OV=true"):
        load_settings()


def test_an_unavailable_device_names_the_devices_openvino_sees():
    with pytest.raises(openvino_backend.DeviceUnavailable, match=r"EMBEDDING_DEVICE=GPU\.7 .*sees: .*CPU"):
        openvino_backend.check_device("GPU.7")
    openvino_backend.check_device("CPU")
    openvino_backend.check_device("AUTO")


@pytest.mark.parametrize("name, value", [("EMBEDDING_OV_PERFORMANCE_HINT", "fastest"),
                                         ("EMBEDDING_OV_NUM_STREAMS", "0"),
                                         ("EMBEDDING_OV_INFERENCE_THREADS", "many"),
                                         ("EMBEDDING_PRECISION", "f8"),
                                         ("EMBEDDING_OV_CACHE_DIR", "relative/dir")])
def test_invalid_openvino_settings_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_openvino_settings_become_compile_options(monkeypatch):
    monkeypatch.setenv("EMBEDDING_OV_PERFORMANCE_HINT", "cumulative_throughput")
    monkeypatch.setenv("EMBEDDING_OV_NUM_STREAMS", "3")
    monkeypatch.setenv("EMBEDDING_PRECISION", "Exact")
    assert openvino_options(load_settings()).compile_options == {
        "PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT", "NUM_STREAMS": 3, "INFERENCE_PRECISION_HINT": "f32"}
    monkeypatch.setenv("EMBEDDING_USE_OV", "true")
    for precision in ("fast", "int8"):
        monkeypatch.setenv("EMBEDDING_PRECISION", precision)
        options = openvino_options(load_settings())
        assert "INFERENCE_PRECISION_HINT" not in options.compile_options
        assert options.int8 == (precision == "int8")


# --------------------------------------------------------------------------- served over HTTP


@pytest.fixture(scope="module")
def ov_server(imported_clip: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``bentoml serve`` with EMBEDDING_USE_OV=true on the home of the --openvino import."""
    home = imported_clip[0].parents[2]
    log = tmp_path_factory.mktemp("serve-openvino") / "server.log"
    env = {name: value for name, value in os.environ.items() if name != "EMBEDDING_PRECISION"}  # the default
    env.update({"BENTOML_HOME": str(home), "EMBEDDING_MODEL_NAME": CLIP, "EMBEDDING_USE_OV": "true"})
    with served(env, log) as (url, _):
        yield url


@pytest.mark.e2e
def test_served_with_openvino_equals_pytorch(ov_server: str, imported_clip: tuple[Path, str]):
    imported_entry = imported_clip[0]
    current = httpx.get(f"{ov_server}/model/current").json()
    assert (current["model"], current["device"], current["use_openvino"], current["backend"]) == (
        CLIP, "CPU", True, "openvino")
    # The default precision, fast: OpenVINO's own for the CPU.
    assert current["precision"] == ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    # The IR came with the entry: the server converted nothing into its cache.
    assert openvino_export.has_ir(imported_entry / openvino_export.IR_DIR)
    assert not (imported_entry.parents[2] / openvino_export.IR_DIR).exists()

    adapter = find_model(CLIP).adapter
    reference = adapter.load_runner(imported_entry)
    image = random_image(seed=5)
    expected_image = reference.encode_images(adapter.load_image_preparer(imported_entry)(image)[np.newaxis])
    texts = ["a photo of a cat", "a diagram"]

    def embed(item: dict) -> np.ndarray:
        response = httpx.post(f"{ov_server}/embeddings", json=embedding_body(item, CLIP), timeout=60)
        assert response.status_code == 200, response.text
        return np.array(response.json()["embedding"])

    text_vectors = embed({"type": "text", "text": texts})
    image_vector = embed({"type": "image_base64", "image_base64": b64(encoded(image))})
    assert (unit_cosines(text_vectors, reference.encode_text(texts)) > PARITY).all()
    assert unit_cosines(image_vector, expected_image)[0] > PARITY
