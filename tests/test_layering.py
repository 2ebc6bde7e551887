"""The production tree keeps the layering the README's "Design" section draws: every import
(module level or inside a function) goes to the module's own room or a room below it;
settings are read only at the top; fabrication is reachable only from import paths."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("embedding_server", "runners", "models", "importer", "service")

# Rooms from the ground up: a path prefix per room (the most specific prefix wins), and the
# rooms each may import besides its own.
ROOMS: dict[str, tuple[str, ...]] = {
    "contract": ("runners/contract.py", "runners/entry_files.py", "runners/__init__.py"),
    "preparers": ("runners/preparers/",),
    "backends": ("runners/backends/",),
    "fabrication": ("runners/fabrication/",),
    "families": ("runners/families/",),
    "catalogue": ("models/",),
    "importer": ("importer/",),
    "validation": ("embedding_server/validation_errors.py", "embedding_server/__init__.py"),
    "settings": ("embedding_server/settings.py",),
    "http_api": ("embedding_server/http_api/",),
    "media": ("embedding_server/media/",),
    "encoder": ("embedding_server/encoder/",),
    "pipeline": ("embedding_server/pipeline.py", "embedding_server/scoring.py", "embedding_server/ranking.py",
                 "embedding_server/nested_dimensions.py"),
    "routes": ("embedding_server/routes.py", "embedding_server/openai_routes.py", "embedding_server/jobs.py"),
    "app": ("embedding_server/app.py",),
    "composition": ("embedding_server/composition.py",),
    "top": ("service.py", "models/__main__.py", "importer/__main__.py"),
}
ENTRY_VOCABULARY = {"contract", "validation", "settings"}
MAY_IMPORT: dict[str, set[str]] = {
    "contract": set(),
    "preparers": {"contract"},
    "backends": {"contract"},
    "fabrication": {"contract"},
    "families": {"contract", "preparers", "backends", "fabrication"},
    "catalogue": {"contract", "families"},
    "importer": {"contract", "catalogue", "backends"},
    "validation": set(),
    "settings": {"contract", "validation"},
    "http_api": ENTRY_VOCABULARY,
    "media": ENTRY_VOCABULARY | {"http_api"},
    "encoder": ENTRY_VOCABULARY | {"http_api"},
    "pipeline": ENTRY_VOCABULARY | {"http_api", "media", "encoder", "catalogue"},
    "routes": ENTRY_VOCABULARY | {"http_api", "pipeline", "catalogue"},
    "app": ENTRY_VOCABULARY | {"http_api", "routes"},
    "composition": ENTRY_VOCABULARY | {"http_api", "encoder", "pipeline", "catalogue", "importer", "backends"},
    "top": set(ROOMS) - {"top", "fabrication"},
}
# Fabrication (random and tiny weights, stand-in tokenizers) is imported only on the import
# path: by the engines' functions that write entries, never at a module's top level.
FABRICATION_CALLERS = {"families"}
SETTINGS_READERS = {"service.py"}  # calls of get_settings / load_settings below the top: none


def production_modules() -> list[Path]:
    return sorted([REPO / "service.py", *(path for package in PROJECT_PACKAGES[:-1]
                                         for path in (REPO / package).rglob("*.py"))])


def room_of(path: Path) -> str:
    relative = path.relative_to(REPO).as_posix()
    matches = [(len(prefix), room) for room, prefixes in ROOMS.items() for prefix in prefixes
               if relative == prefix or (prefix.endswith("/") and relative.startswith(prefix))]
    assert matches, f"{relative} is in no room: add it to ROOMS (and the README's design section)"
    return max(matches)[1]


def module_path(name: str) -> Path | None:
    """The file of project module ``name`` (a package's ``__init__.py``), or ``None``."""
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports(path: Path) -> list[tuple[str, bool]]:
    """The project modules ``path`` imports, each with whether at module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PROJECT_PACKAGES and module_path(name) is not None:
                found.append((name, id(node) in top_level))
    return found


@pytest.mark.parametrize("path", production_modules(), ids=lambda path: path.relative_to(REPO).as_posix())
def test_imports_go_to_the_same_room_or_below(path: Path):
    room = room_of(path)
    for name, _ in imports(path):
        target = room_of(module_path(name))
        assert target == room or target in MAY_IMPORT[room], (
            f"{room} ({path.relative_to(REPO)}) imports {name} of room {target}")


@pytest.mark.parametrize("path", production_modules(), ids=lambda path: path.relative_to(REPO).as_posix())
def test_fabrication_is_imported_only_inside_import_path_functions(path: Path):
    for name, module_level in imports(path):
        if room_of(module_path(name)) == "fabrication" and room_of(path) != "fabrication":
            assert room_of(path) in FABRICATION_CALLERS and not module_level, (
                f"{path.relative_to(REPO)} imports {name} at module level")


def test_settings_are_read_only_at_the_top():
    readers = set()
    for path in production_modules():
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in {"get_settings", "load_settings"}:
                readers.add(path.relative_to(REPO).as_posix())
    assert readers == SETTINGS_READERS


def test_every_production_module_is_in_a_room_and_named_in_the_readme():
    """Named by its path, or as `name.py` with its folder's path elsewhere in the README."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for path in production_modules():
        room_of(path)
        relative = path.relative_to(REPO)
        if path.name != "__init__.py":
            by_folder = f"{relative.parent.as_posix()}/" in readme and f"`{path.name}`" in readme
            assert f"`{relative.as_posix()}`" in readme or by_folder, relative


def client_modules() -> list[Path]:
    return sorted((REPO / "client" / "embedding_client").glob("*.py"))


@pytest.mark.parametrize("path", client_modules(), ids=lambda path: path.name)
def test_the_client_stands_alone(path: Path):
    """The client is installed on users' machines without the server: it imports none of the
    server's packages, and is named in the README."""
    assert imports(path) == [], f"client/{path.name} imports the server's {imports(path)}"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert path.name == "__init__.py" or f"`{path.name}`" in readme, path.name
