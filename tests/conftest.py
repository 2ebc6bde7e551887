"""Test session set-up: an isolated BentoML home holding a tiny random-weight CLIP entry.

The environment is set here, before any test module imports bentoml or the settings, so no
test touches the user's own model store or configuration.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import pytest
from starlette.testclient import TestClient

from helpers import QWEN_MODEL_ID, SERVED_API_KEY, SERVED_ORIGIN, TEST_MODEL_ID, pipeline_overridden

SESSION_HOME = Path(tempfile.mkdtemp(prefix="embedding-tests-home-"))

for name in [name for name in os.environ if name.startswith("EMBEDDING_")]:
    del os.environ[name]
os.environ.update({
    "BENTOML_HOME": str(SESSION_HOME),
    "BENTOML_DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "EMBEDDING_MODEL_NAME": TEST_MODEL_ID,
    "EMBEDDING_URL_ALLOWED_HOSTS": "127.0.0.1",
    # Vectors compared with references hold to float32 (PyTorch's fast precision is a
    # process-wide math mode); the default, fast, is loaded by tests/test_precision.py and
    # served by tests/test_openvino.py.
    "EMBEDDING_PRECISION": "exact",
})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_entry() -> Path:
    """Directory of the tiny random-weight CLIP entry in the session's model store."""
    from models.catalogue import find_model
    from importer.store import ModelNotImported, find_entry, import_model
    from runners.contract import WeightSource

    model = find_model(TEST_MODEL_ID)
    try:
        return Path(find_entry(model).path)
    except ModelNotImported:
        return Path(import_model(model, WeightSource("random", tiny=True)).path)


@pytest.fixture(scope="session")
def service_module(tiny_entry: Path) -> ModuleType:
    """``service.py``, imported once the model it selects is in the store."""
    return importlib.import_module("service")


@pytest.fixture(scope="session")
def api_client(service_module: ModuleType) -> Iterator[TestClient]:
    """In-process HTTP client of the entry service (the Encoder runs in-process, unbatched)."""
    with TestClient(service_module.EmbeddingService.to_asgi()) as client:
        yield client


@pytest.fixture(scope="session")
def reference_clip(tiny_entry: Path) -> tuple:
    """open_clip's own model, preprocessing and tokenizer for the tiny entry."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_entry}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{tiny_entry}")


@pytest.fixture
def use_pipeline(service_module: ModuleType) -> Iterator[Callable[[Any], None]]:
    """``use_pipeline(pipeline)``, or ``use_pipeline(dependency)`` for a FastAPI dependency that
    returns one: the public app (``service.app``) serves that pipeline until this test ends,
    then what it served before. Every test that points the app elsewhere goes through here, so none can leave it
    pointed for the next test, whatever the order."""
    with ExitStack() as stack:
        def use(pipeline_or_dependency: Any) -> None:
            dependency = (pipeline_or_dependency if callable(pipeline_or_dependency)
                          else lambda: pipeline_or_dependency)
            stack.enter_context(pipeline_overridden(dependency))

        yield use


@contextmanager
def model_store_at(store_dir: Path) -> Iterator[Path]:
    """BentoML's model store is ``store_dir`` (created if missing) inside the block."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    store_dir.mkdir(parents=True, exist_ok=True)
    with BentoMLContainer.model_store.patch(ModelStore(str(store_dir))):
        yield store_dir


@pytest.fixture
def isolated_model_store(tmp_path: Path) -> Iterator[Path]:
    """A private, empty model store for tests that import entries, so they never change which
    entry is ``latest`` in the session store that the served model resolves."""
    with model_store_at(tmp_path / "model-store") as store_dir:
        yield store_dir


@pytest.fixture(scope="session")
def tiny_import() -> Callable[[str], Path]:
    """``tiny_import(model_id)``: the directory of a tiny random-weight entry of that model,
    imported once per session into a BentoML home of its own (``entry.parents[2]``, usable
    as ``BENTOML_HOME`` by a served subprocess), never into the session store."""
    from models.catalogue import find_model
    from importer.store import import_model
    from runners.contract import WeightSource

    imported: dict[str, Path] = {}

    def tiny(model_id: str) -> Path:
        if model_id not in imported:
            home = SESSION_HOME / "tiny-homes" / model_id.replace("/", "--")
            with model_store_at(home / "models"):
                entry = import_model(find_model(model_id), WeightSource("random", tiny=True))
            imported[model_id] = Path(entry.path)
        return imported[model_id]

    return tiny


@dataclass(frozen=True)
class KeyedServer:
    """A served tiny CLIP: its URL, its log, the video root its ``video_file`` inputs name, and
    its background jobs' result store."""

    url: str
    log: Path
    video_root: Path
    result_store: Path


def private_home(model_id: str, directory: Path) -> Path:
    """A BentoML home of its own under ``directory`` holding a tiny entry of ``model_id``.

    A server that lives the whole session needs one: every ``bentoml serve`` empties its
    home's Prometheus directory and deletes its job store at start, so servers sharing a home
    would wipe each other's metrics and jobs."""
    from importer.store import import_model
    from models.catalogue import find_model
    from runners.contract import WeightSource

    home = directory / "home"
    with model_store_at(home / "models"):
        import_model(find_model(model_id), WeightSource("random", tiny=True))
    return home


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    """``bentoml serve`` of the tiny CLIP with API keys (``SERVED_API_KEY``) and CORS
    (``SERVED_ORIGIN``) on, started once for the end-to-end tests of the clients."""
    from serving import served

    directory = tmp_path_factory.mktemp("serve-keyed")
    home = private_home(TEST_MODEL_ID, directory)
    video_root = directory / "videos"
    video_root.mkdir()
    env = {**os.environ, "BENTOML_HOME": str(home), "EMBEDDING_MODEL_NAME": TEST_MODEL_ID,
           "EMBEDDING_API_KEYS": SERVED_API_KEY, "EMBEDDING_CORS_ALLOW_ORIGINS": SERVED_ORIGIN,
           "EMBEDDING_VIDEO_ROOT": str(video_root)}
    with served(env, directory / "server.log") as (url, _):
        yield KeyedServer(url, directory / "server.log", video_root, home / "task_result.db")


@pytest.fixture(scope="session")
def qwen_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``bentoml serve`` of a tiny Qwen3-Embedding entry (text only, Matryoshka dimensions)."""
    from serving import served

    directory = tmp_path_factory.mktemp("serve-qwen")
    env = {**os.environ, "BENTOML_HOME": str(private_home(QWEN_MODEL_ID, directory)),
           "EMBEDDING_MODEL_NAME": QWEN_MODEL_ID}
    with served(env, directory / "server.log") as (url, _):
        yield url
