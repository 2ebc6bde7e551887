"""The on-disk index: a LanceDB database with one row per embedded frame.

Table ``frames`` holds the vectors (an image is one frame; a video one row per sampled frame,
with its frame number and time; each row also has its file's content hash, size and modification
time, which tell a later run whether the file changed). Table ``meta`` holds the id of the model that made them,
written when the database is created and checked on every open, so a database answers only
to its own model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import lancedb
import numpy as np
import pyarrow as pa

from embedding_client.index_errors import ModelMismatchError, NoIndexError, StoreError

FRAMES, META = "frames", "meta"
DELETE_CHUNK = 500  # paths per ``DELETE ... IN (...)`` statement


@dataclass(frozen=True)
class FileFrames:
    """One file's rows: ``vectors`` is ``(n, D)``, with ``frames`` and ``timestamps`` of length n
    (an image: frame 0, no time)."""

    path: str
    kind: str
    content_hash: str
    size: int
    mtime_ns: int
    vectors: np.ndarray
    frames: Sequence[int]
    timestamps: Sequence[float | None]


@dataclass(frozen=True)
class Indexed:
    """What the index holds of a file, apart from its rows."""

    content_hash: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Match:
    """A search hit: ``score`` is the cosine similarity to the query."""

    score: float
    path: str
    kind: str
    frame: int
    timestamp: float | None


def frames_schema(dimension: int) -> pa.Schema:
    return pa.schema([
        pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("timestamp", pa.float64()),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64(), nullable=False),
    ])


FILE_COLUMNS = ["path", "content_hash", "size", "mtime_ns"]


def _quoted(value: str) -> str:
    """A SQL string literal (LanceDB filters are SQL)."""
    return "'" + value.replace("'", "''") + "'"


def _rows(files: Sequence[FileFrames], schema: pa.Schema) -> pa.Table:
    def repeated(attribute: str) -> list:
        return [getattr(file, attribute) for file in files for _ in range(len(file.vectors))]

    vectors = np.concatenate([file.vectors for file in files]).astype(np.float32)
    return pa.table({
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
        "path": repeated("path"), "kind": repeated("kind"),
        "frame": [int(frame) for file in files for frame in file.frames],
        "timestamp": [stamp for file in files for stamp in file.timestamps],
        "content_hash": repeated("content_hash"), "size": repeated("size"), "mtime_ns": repeated("mtime_ns"),
    }, schema=schema)


class FrameStore:
    """The index at one location, opened for one model."""

    def __init__(self, connection: lancedb.DBConnection, model: str) -> None:
        self._db = connection
        self.model = model

    @classmethod
    def open(cls, location: str | Path, model: str, *, create: bool = False) -> FrameStore:
        """The index at ``location``, made there first if ``create``.

        Raises :class:`NoIndexError` when there is none (and not ``create``),
        :class:`ModelMismatchError` when it was built with another model than ``model``, and
        :class:`StoreError` when an older version of this client made it (its rows lack columns)."""
        missing = NoIndexError(f"no index at {location} (build one with `index`)")
        if not create and not Path(location).is_dir():
            raise missing  # before connecting, which would make the directory
        store = cls(lancedb.connect(str(location)), model)
        stored = store._stored_model()
        if stored is None:
            if not create:
                raise missing
            if any(Path(location).iterdir()):
                raise StoreError(f"{location} holds other files and no index: give --db a new or empty directory")
            store._db.create_table(META, pa.table({"model": [model]}))
        elif stored != model:
            raise ModelMismatchError(f"the index at {location} was built with {stored}, the server serves {model}; "
                                     f"index into another --db, or serve {stored}")
        store._check_columns(location)
        return store

    def _tables(self) -> list[str]:
        return self._db.list_tables().tables

    def _stored_model(self) -> str | None:
        if META not in self._tables():
            return None
        return self._db.open_table(META).to_arrow()["model"][0].as_py()

    def _frames(self) -> lancedb.table.Table | None:
        return self._db.open_table(FRAMES) if FRAMES in self._tables() else None

    def _check_columns(self, location: str | Path) -> None:
        table = self._frames()
        missing = [] if table is None else sorted(set(FILE_COLUMNS) - set(table.schema.names))
        if missing:
            raise StoreError(f"the index at {location} was made by an older embedding-client (it has no "
                             f"{', '.join(missing)}): index into a new --db")

    def known_files(self) -> dict[str, Indexed]:
        """What the index holds of each indexed path."""
        table = self._frames()
        if table is None:
            return {}
        rows = table.search().select(FILE_COLUMNS).limit(None).to_arrow().to_pylist()
        return {row["path"]: Indexed(row["content_hash"], row["size"], row["mtime_ns"]) for row in rows}

    def add(self, files: Sequence[FileFrames]) -> None:
        """One commit: an interrupted run keeps every batch added before it stopped."""
        if not files:
            return
        table = self._frames()
        if table is None:  # not ``or``: a table with no rows left is falsy (it has a length)
            table = self._db.create_table(FRAMES, schema=frames_schema(files[0].vectors.shape[1]))
        table.add(_rows(files, table.schema))

    def delete(self, paths: Iterable[str]) -> None:
        table, paths = self._frames(), list(paths)
        if table is None:
            return
        for start in range(0, len(paths), DELETE_CHUNK):
            chunk = paths[start:start + DELETE_CHUNK]
            table.delete(f"path IN ({', '.join(map(_quoted, chunk))})")

    def optimize(self) -> None:
        """Merges the small fragments that per-batch commits leave."""
        table = self._frames()
        if table is not None:
            table.optimize()

    def nearest(self, vector: np.ndarray, top_k: int) -> list[Match]:
        table = self._frames()
        if table is None:
            return []
        rows = (table.search(np.asarray(vector, np.float32)).metric("cosine")
                .select(["path", "kind", "frame", "timestamp", "_distance"]).limit(top_k).to_list())
        return [Match(1.0 - row["_distance"], row["path"], row["kind"], row["frame"], row["timestamp"])
                for row in rows]
