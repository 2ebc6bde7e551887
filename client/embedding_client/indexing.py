"""Indexing a folder: embed its images and videos into a :class:`~embedding_client.store.FrameStore`.

Work goes in batches of files, each committed on its own, so a run that stops keeps what it
did; the next run skips every file whose path and content hash are already there. A file the
server refuses (4xx: corrupt, too large, ...) is recorded with the server's reason and the run
goes on; anything else (the server down, 5xx after retries) stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from embedding_client.client import Client
from embedding_client.errors import ClientRequestError
from embedding_client.folder import IMAGE, MediaFile, content_hash, media_files
from embedding_client.store import FileFrames, FrameStore

FILES_PER_BATCH = 64
# The server caps a request body at 32 MiB (EMBEDDING_MAX_BODY_BYTES) and base64 grows files
# by 4/3, so a batch's images together stay under 16 MiB: a photo library does not hit 413.
BATCH_BYTES = 16 << 20
REFUSED = (ClientRequestError, OSError)  # OSError: the file went away or cannot be read


@dataclass(frozen=True)
class Failure:
    path: str
    detail: str


@dataclass
class IndexSummary:
    indexed: int = 0
    unchanged: int = 0
    failed: list[Failure] = field(default_factory=list)
    pruned: int = 0


@dataclass(frozen=True)
class _Pending:
    """A new or changed file with the hash it had when read."""

    file: MediaFile
    content_hash: str

    @property
    def path(self) -> str:
        return str(self.file.path)

    def frames(self, vectors: np.ndarray, frames: Sequence[int], timestamps: Sequence[float | None]) -> FileFrames:
        return FileFrames(self.path, self.file.kind, self.content_hash, self.file.size, vectors, frames, timestamps)


def batches(files: Sequence[MediaFile], max_files: int = FILES_PER_BATCH,
            max_bytes: int = BATCH_BYTES) -> Iterator[list[MediaFile]]:
    """``files`` in order, cut into runs of at most ``max_files`` files and ``max_bytes``
    bytes (a larger file alone)."""
    batch: list[MediaFile] = []
    size = 0
    for file in files:
        if batch and (len(batch) == max_files or size + file.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(file)
        size += file.size
    if batch:
        yield batch


def _embedded_images(client: Client, pending: list[_Pending]) -> Iterator[FileFrames | Failure]:
    """The images' rows; when the server refuses the batch, each image is sent alone so
    only the ones it refuses fail."""
    try:
        vectors = client.embed_images([item.file.path for item in pending]).vectors
    except REFUSED as error:
        if len(pending) == 1:
            yield Failure(pending[0].path, str(error))
        else:
            for item in pending:
                yield from _embedded_images(client, [item])
        return
    for item, vector in zip(pending, vectors):
        yield item.frames(vector[None, :], [0], [None])


def _embedded_video(client: Client, item: _Pending, fps: float) -> FileFrames | Failure:
    try:
        found = client.embed_video(item.file.path, extraction_fps=fps)
    except REFUSED as error:
        return Failure(item.path, str(error))
    return item.frames(found.vectors, found.frames, found.timestamps)


def _embedded(client: Client, pending: list[_Pending], fps: float) -> list[FileFrames | Failure]:
    results = list(_embedded_images(client, [item for item in pending if item.file.kind == IMAGE]))
    return results + [_embedded_video(client, item, fps) for item in pending if item.file.kind != IMAGE]


def _index_batch(client: Client, store: FrameStore, batch: list[MediaFile], known: dict[str, str],
                 fps: float, summary: IndexSummary) -> None:
    pending = []
    for file in batch:
        try:
            digest = content_hash(file.path)
        except OSError as error:
            summary.failed.append(Failure(str(file.path), str(error)))
            continue
        if known.get(str(file.path)) == digest:
            summary.unchanged += 1
        else:
            pending.append(_Pending(file, digest))
    results = _embedded(client, pending, fps)
    # A changed file loses its old rows even when its new content fails: they describe what is gone.
    store.delete(item.path for item in pending if item.path in known)
    store.add([result for result in results if isinstance(result, FileFrames)])
    summary.failed += [result for result in results if isinstance(result, Failure)]
    summary.indexed += sum(isinstance(result, FileFrames) for result in results)


def _prune(store: FrameStore, root: Path, known: dict[str, str]) -> int:
    """Deletes the rows of indexed files under ``root`` that no longer exist; files under
    other roots are left alone (their drive may just not be mounted)."""
    gone = [path for path in known if Path(path).is_relative_to(root) and not Path(path).is_file()]
    store.delete(gone)
    return len(gone)


def index_folder(client: Client, root: str | Path, db: str | Path, *, fps: float = 1.0, prune: bool = False,
                 progress: bool = False) -> IndexSummary:
    """Indexes the images and videos under ``root`` into the index at ``db`` (made if missing);
    videos give one row per frame sampled at ``fps``. Paths are stored absolute.

    Raises :class:`~embedding_client.index_errors.ModelMismatchError` when ``db`` was built with
    another model than the client's, and ``NotADirectoryError`` when ``root`` is not a folder."""
    root, db = Path(root).resolve(), Path(db).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    store = FrameStore.open(db, client.model(), create=True)
    known = store.known_files()
    files = media_files(root, skip=db)
    summary = IndexSummary()
    with tqdm(total=len(files), unit="file", disable=not progress) as bar:
        for batch in batches(files):
            _index_batch(client, store, batch, known, fps, summary)
            bar.update(len(batch))
    if prune:
        summary.pruned = _prune(store, root, known)
    if summary.indexed or summary.pruned:
        store.optimize()
    return summary
