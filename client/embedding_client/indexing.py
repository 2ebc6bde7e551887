"""Indexing a folder: embed its images and videos into a :class:`~embedding_client.store.FrameStore`.

Work goes in batches of files, each committed on its own, so a run that stops keeps what it
did. The next run skips, unread, each file whose size and modification time are the indexed
ones; a file whose size or time changed is hashed, and embedded again only when its content
hash changed too (a file touched but not changed keeps its rows, and is hashed again by the
next run, since its stored time is not updated). Videos are sent as
:mod:`embedding_client.video_requests` says. Which errors stop the run and which are one
file's failure: :func:`is_per_file`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import httpx
import numpy as np
from tqdm.auto import tqdm

from embedding_client.client import Client
from embedding_client.errors import (AuthenticationError, BadRequestError, ClientRequestError, NotFoundError,
                                     RateLimitError, ServerError)
from embedding_client.folder import IMAGE, MediaFile, content_hash, media_files
from embedding_client.store import FileFrames, FrameStore, Indexed
from embedding_client.video_requests import FRAMES_PER_REQUEST, MAX_UPLOAD_BYTES, VideoRequests

FILES_PER_BATCH = 64
# The server caps a request body at 32 MiB (EMBEDDING_MAX_BODY_BYTES) and base64 grows files
# by 4/3, so a batch's images together stay under 16 MiB: a photo library does not hit 413.
BATCH_BYTES = 16 << 20
MODEL_MISMATCH = "Model mismatch"  # the start of the server's 400 for a request naming another model


def is_per_file(error: Exception, *, alone: bool) -> bool:
    """Whether ``error`` is the fault of the file(s) sent, so the run records it and goes on.

    The other errors are the server's state, which every later file would meet too, so they
    stop the run: its rate limit still hit after the client's retries (429), the API key
    (401), the model (404 ``model_not_found`` on ``/v1/embeddings``, 400 "Model mismatch"),
    5xx and transport errors. A file's own are the other 4xx (corrupt, too large, ...) and
    local ``OSError`` (the file went away or cannot be read); and, when ``alone`` (the request
    was about one file: a video, or an image sent alone), a 500 or a time-out, which one
    file's decoding can cause."""
    if isinstance(error, OSError):
        return True
    if isinstance(error, (RateLimitError, AuthenticationError, NotFoundError)):
        return False
    if isinstance(error, ClientRequestError):
        return not (isinstance(error, BadRequestError) and error.detail.startswith(MODEL_MISMATCH))
    return alone and (isinstance(error, httpx.TimeoutException)
                      or isinstance(error, ServerError) and error.status_code == 500)


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
        file = self.file
        return FileFrames(self.path, file.kind, self.content_hash, file.size, file.mtime_ns, vectors, frames,
                          timestamps)


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
    """The images' rows; when the server refuses the batch for a file's fault, each image is
    sent alone so only the ones it refuses fail."""
    try:
        vectors = client.embed_images([item.file.path for item in pending]).vectors
    except Exception as error:
        if not is_per_file(error, alone=len(pending) == 1):
            raise
        if len(pending) == 1:
            yield Failure(pending[0].path, str(error))
        else:
            for item in pending:
                yield from _embedded_images(client, [item])
        return
    for item, vector in zip(pending, vectors):
        yield item.frames(vector[None, :], [0], [None])


def _embedded_video(client: Client, item: _Pending, videos: VideoRequests) -> FileFrames | Failure:
    try:
        found = videos.embedded(client, item.file.path)
    except Exception as error:
        if not is_per_file(error, alone=True):
            raise
        return Failure(item.path, str(error))
    return item.frames(found.vectors, found.frames, found.timestamps)


def _embedded(client: Client, pending: list[_Pending], videos: VideoRequests) -> list[FileFrames | Failure]:
    results = list(_embedded_images(client, [item for item in pending if item.file.kind == IMAGE]))
    return results + [_embedded_video(client, item, videos) for item in pending if item.file.kind != IMAGE]


def _checked(file: MediaFile, indexed: Indexed | None, videos: VideoRequests) -> _Pending | Failure | None:
    """``file`` to embed with its hash; ``None`` when it is unchanged (the indexed size and time,
    or the indexed content); a failure when it cannot be sent or read (an indexed video that
    is now too large to send keeps its rows: it is not read, so whether it changed is unknown)."""
    if indexed is not None and (indexed.size, indexed.mtime_ns) == (file.size, file.mtime_ns):
        return None
    refusal = videos.refusal(file)
    if refusal is not None:
        return Failure(str(file.path), refusal)
    try:
        digest = content_hash(file.path)
    except OSError as error:
        return Failure(str(file.path), str(error))
    if indexed is not None and indexed.content_hash == digest:
        return None
    return _Pending(file, digest)


def _index_batch(client: Client, store: FrameStore, batch: list[MediaFile], known: dict[str, Indexed],
                 videos: VideoRequests, summary: IndexSummary) -> None:
    checked = [_checked(file, known.get(str(file.path)), videos) for file in batch]
    pending = [item for item in checked if isinstance(item, _Pending)]
    results = [item for item in checked if isinstance(item, Failure)] + _embedded(client, pending, videos)
    # A changed file loses its old rows even when its new content fails: they describe what is gone.
    store.delete(item.path for item in pending if item.path in known)
    store.add([result for result in results if isinstance(result, FileFrames)])
    summary.unchanged += checked.count(None)
    summary.failed += [result for result in results if isinstance(result, Failure)]
    summary.indexed += sum(isinstance(result, FileFrames) for result in results)


def _prune(store: FrameStore, root: Path, known: dict[str, Indexed]) -> int:
    """Deletes the rows of indexed files under ``root`` that no longer exist; files under
    other roots are left alone (their drive may just not be mounted)."""
    gone = [path for path in known if Path(path).is_relative_to(root) and not Path(path).is_file()]
    store.delete(gone)
    return len(gone)


def index_folder(client: Client, root: str | Path, db: str | Path, *, fps: float = 1.0, prune: bool = False,
                 progress: bool = False, server_dir: str | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 frames_per_request: int = FRAMES_PER_REQUEST) -> IndexSummary:
    """Indexes the images and videos under ``root`` into the index at ``db`` (made if missing);
    videos give one row per frame sampled at ``fps``. Paths are stored absolute.

    Videos are uploaded, unless ``server_dir`` says where the server sees ``root``; one whose
    base64 is over ``max_upload_bytes`` fails unread. Each request asks for at most
    ``frames_per_request`` frames (the server's cap is 1024).

    Raises :class:`~embedding_client.index_errors.ModelMismatchError` when ``db`` was built with
    another model than the client's, and ``NotADirectoryError`` when ``root`` is not a folder."""
    root, db = Path(root).resolve(), Path(db).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    videos = VideoRequests(root, fps, frames_per_request, max_upload_bytes, server_dir)
    store = FrameStore.open(db, client.model(), create=True)
    known = store.known_files()
    files = media_files(root, skip=db)
    summary = IndexSummary()
    with tqdm(total=len(files), unit="file", disable=not progress) as bar:
        for batch in batches(files):
            _index_batch(client, store, batch, known, videos, summary)
            bar.update(len(batch))
    if prune:
        summary.pruned = _prune(store, root, known)
    if summary.indexed or summary.pruned:
        store.optimize()
    return summary
