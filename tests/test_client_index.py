"""The client's folder index (``embedding_client.indexing``), its search and its HTML page,
against the in-process server.

The served CLIP has random weights, so no text query has a known answer; an image identical
to an indexed one (or to an indexed video frame) does: it comes first with cosine ~1.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import httpx
import lancedb
import numpy as np
import pytest
from PIL import Image

from client_transports import Canned, Relay
from embedding_client import Client, RetryPolicy, video_requests
from embedding_client.errors import (AuthenticationError, BadRequestError, EmbeddingServerError, NotFoundError,
                                     RateLimitError, ServerError)
from embedding_client.folder import content_hash, media_files
from embedding_client.html_page import results_page
from embedding_client.index_errors import ModelMismatchError, NoIndexError, StoreError
from embedding_client.indexing import batches, index_folder
from embedding_client.search import Match, search
from embedding_client.thumbnails import thumbnail_uri
from embedding_client.video_requests import Probe
from samples import distinct_images, encoded, random_image, solid_image
from test_frame_times import served_pipeline
from video_samples import audio_only, index_frame, index_video, read_index, write_video

VIDEO_FPS = 10
CLIPS = {"videos/one.mp4": (30, 0), "videos/two/second.mov": (40, 100)}  # path: (frames, first index)
IMAGES = ["a.png", "photos/b.jpg", "photos/nested/deep/c.webp", "photos/nested/d.png"]
ESCAPED_NAME = """photos/<b>&"q'.png"""
CORRUPT = "photos/broken.jpg"
IGNORED = ["notes.txt", ".hidden/e.png", "photos/.f.png"]


def make_library(root: Path) -> Path:
    """A folder of four distinct images in nested directories, two short videos (their frames
    unlike each other's), a corrupt ``.jpg``, and files the index must leave out."""
    for name, image in zip(IMAGES + [ESCAPED_NAME], distinct_images() + [solid_image((0, 160, 0))]):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=95)
    for name, (frames, first) in CLIPS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / name, (index_frame(first + i) for i in range(frames)), VIDEO_FPS, options={"g": "12"})
    (root / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for name in IGNORED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encoded(solid_image((9, 9, 9))) if name.endswith(".png") else b"notes")
    return root


@pytest.fixture(scope="module")
def client(api_client) -> Client:
    return Client("http://testserver", http=api_client)


@pytest.fixture
def library(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(root=make_library(tmp_path / "library"), db=tmp_path / "index")


@pytest.fixture(scope="module")
def indexed(client, tmp_path_factory) -> SimpleNamespace:
    """One library indexed once, for the tests that only read it."""
    base = tmp_path_factory.mktemp("indexed")
    root, db = make_library(base / "library"), base / "index"
    return SimpleNamespace(root=root, db=db, summary=index_folder(client, root, db))


def rows(db: Path) -> dict[str, list[dict]]:
    """The index's rows by path, each path's in frame order."""
    table = lancedb.connect(str(db)).open_table("frames").to_arrow().to_pylist()
    by_path: dict[str, list[dict]] = {}
    for row in sorted(table, key=lambda row: (row["path"], row["frame"])):
        by_path.setdefault(row["path"], []).append(row)
    return by_path


def absolute(root: Path, name: str) -> str:
    return str((root / name).resolve())


def relayed(relay: Relay, **options: Any) -> Client:
    """A client whose requests go through ``relay``, sent once each (no retries)."""
    return Client("http://testserver", http=httpx.Client(transport=relay, base_url="http://testserver"),
                  retry=RetryPolicy(attempts=1), **options)


def posts(relay: Relay, path: str) -> list[dict]:
    """The bodies of the POSTs to ``path`` that ``relay`` saw."""
    return [json.loads(request.content) for request in relay.requests
            if request.method == "POST" and request.url.path == path]


def test_every_media_file_is_indexed_once(client, indexed):
    found = rows(indexed.db)
    assert set(found) == {absolute(indexed.root, name) for name in IMAGES + [ESCAPED_NAME, *CLIPS]}
    for name in IMAGES + [ESCAPED_NAME]:
        [row] = found[absolute(indexed.root, name)]
        data = (indexed.root / name).read_bytes()
        assert (row["kind"], row["frame"], row["timestamp"]) == ("image", 0, None)
        assert (row["content_hash"], row["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
        np.testing.assert_allclose(row["vector"], client.embed_images([data]).vectors[0], atol=1e-5)
    for name, (frames, _) in CLIPS.items():
        video_rows = found[absolute(indexed.root, name)]
        assert [row["kind"] for row in video_rows] == ["video"] * len(video_rows)
        assert [row["frame"] for row in video_rows] == list(range(0, frames, VIDEO_FPS))  # 1 frame a second
        assert [row["timestamp"] for row in video_rows] == pytest.approx(
            [row["frame"] / VIDEO_FPS for row in video_rows])
    assert (indexed.summary.indexed, indexed.summary.unchanged, indexed.summary.pruned) == (7, 0, 0)


def test_a_file_the_server_refuses_is_reported_with_its_detail(client, indexed):
    with pytest.raises(EmbeddingServerError) as refused:
        client.embed_images([indexed.root / CORRUPT])
    [failure] = indexed.summary.failed
    assert failure.path == absolute(indexed.root, CORRUPT)
    assert refused.value.detail in failure.detail
    assert absolute(indexed.root, CORRUPT) not in rows(indexed.db)


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The paths the indexer hashes, in order."""
    from embedding_client import indexing

    seen: list[str] = []

    def counted(path: Path) -> str:
        seen.append(str(path))
        return content_hash(path)

    monkeypatch.setattr(indexing, "content_hash", counted)
    return seen


def test_a_second_run_indexes_nothing_new_and_reads_no_indexed_file(client, library, hashed):
    index_folder(client, library.root, library.db)
    before = rows(library.db)
    hashed.clear()
    again = index_folder(client, library.root, library.db)
    assert (again.indexed, again.unchanged, len(again.failed)) == (0, 7, 1)  # the corrupt file is tried again
    assert hashed == [absolute(library.root, CORRUPT)]  # the others: same size and time as indexed
    assert rows(library.db) == before


def test_a_touched_but_unchanged_file_is_hashed_not_embedded(api_client, tmp_path, hashed):
    root, db = tmp_path / "library", tmp_path / "index"
    root.mkdir()
    image = root / "a.png"
    image.write_bytes(encoded(random_image()))
    relay = Relay(api_client)
    index_folder(relayed(relay), root, db)
    before = rows(db)
    status = image.stat()
    os.utime(image, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    hashed.clear()
    relay.requests.clear()
    summary = index_folder(relayed(relay), root, db)
    assert (summary.indexed, summary.unchanged) == (0, 1)
    assert hashed == [str(image)] and posts(relay, "/v1/embeddings") == []
    assert rows(db) == before  # rows left as they were, old time included: the next run hashes it again


def test_an_index_of_one_file_takes_its_changes_and_a_return_after_a_prune(client, tmp_path):
    """A table whose rows were all deleted is still the table (it once broke every later run)."""
    root, db = tmp_path / "library", tmp_path / "index"
    root.mkdir()
    image = root / "only.png"
    solid_image((10, 20, 30)).save(image)
    index_folder(client, root, db)
    solid_image((200, 0, 0), width=300).save(image)
    assert index_folder(client, root, db).indexed == 1
    [row] = rows(db)[absolute(root, "only.png")]
    assert row["content_hash"] == hashlib.sha256(image.read_bytes()).hexdigest()
    image.unlink()
    assert index_folder(client, root, db, prune=True).pruned == 1
    assert rows(db) == {}
    solid_image((0, 0, 200)).save(image)
    assert index_folder(client, root, db).indexed == 1
    assert set(rows(db)) == {absolute(root, "only.png")}


def test_an_index_without_modification_times_is_refused_clearly(client, tmp_path):
    root, db = tmp_path / "library", tmp_path / "index"
    root.mkdir()
    solid_image((1, 2, 3)).save(root / "a.png")
    index_folder(client, root, db)
    connection = lancedb.connect(str(db))
    older = connection.open_table("frames").to_arrow().drop_columns(["mtime_ns"])
    connection.create_table("frames", older, mode="overwrite")
    with pytest.raises(StoreError, match="older embedding-client .* no mtime_ns"):
        index_folder(client, root, db)


def test_a_changed_image_is_indexed_again(client, library):
    index_folder(client, library.root, library.db)
    changed = library.root / IMAGES[0]
    solid_image((250, 250, 0)).save(changed)
    summary = index_folder(client, library.root, library.db)
    assert (summary.indexed, summary.unchanged) == (1, 6)
    [row] = rows(library.db)[absolute(library.root, IMAGES[0])]
    assert row["content_hash"] == hashlib.sha256(changed.read_bytes()).hexdigest()
    np.testing.assert_allclose(row["vector"], client.embed_images([changed]).vectors[0], atol=1e-5)


def test_a_changed_file_that_now_fails_loses_its_old_rows(client, library):
    index_folder(client, library.root, library.db)
    (library.root / IMAGES[1]).write_bytes(b"truncated")
    summary = index_folder(client, library.root, library.db)
    assert absolute(library.root, IMAGES[1]) in {failure.path for failure in summary.failed}
    assert absolute(library.root, IMAGES[1]) not in rows(library.db)


def test_deleted_files_are_pruned_only_when_asked(client, library):
    index_folder(client, library.root, library.db)
    gone = [IMAGES[3], ESCAPED_NAME, "videos/two/second.mov"]  # ESCAPED_NAME's quote tests the SQL
    for name in gone:
        (library.root / name).unlink()
    kept = {absolute(library.root, name) for name in IMAGES[:3] + ["videos/one.mp4"]}
    assert index_folder(client, library.root, library.db).pruned == 0
    assert set(rows(library.db)) == kept | {absolute(library.root, name) for name in gone}
    summary = index_folder(client, library.root, library.db, prune=True)
    assert (summary.pruned, summary.indexed) == (3, 0)
    assert set(rows(library.db)) == kept


def test_the_index_inside_the_folder_is_not_indexed(client, library):
    inside = library.root / "index"
    index_folder(client, library.root, inside)
    solid_image((1, 2, 3)).save(inside / "stray.png")
    assert index_folder(client, library.root, inside).indexed == 0
    assert not any(path.startswith(str(inside.resolve())) for path in rows(inside))


def test_a_directory_of_other_files_is_not_made_an_index(client, library):
    photos = library.root / "photos"
    before = sorted(photos.iterdir())
    with pytest.raises(StoreError, match="no index"):
        index_folder(client, library.root, photos)
    assert sorted(photos.iterdir()) == before


def test_batches_keep_the_order_and_the_limits(tmp_path):
    for size, name in zip([5, 5, 30, 1, 1, 1], "abcdef"):
        (tmp_path / f"{name}.png").write_bytes(b"x" * size)
    files = media_files(tmp_path, skip=tmp_path / "none")
    cut = [[file.path.name for file in batch] for batch in batches(files, max_files=2, max_bytes=12)]
    assert cut == [["a.png", "b.png"], ["c.png"], ["d.png", "e.png"], ["f.png"]]


def test_an_index_of_another_model_is_refused(api_client, indexed):
    other = Client("http://testserver", http=api_client, model="CLIP/other")
    with pytest.raises(ModelMismatchError, match="CLIP/other"):
        index_folder(other, indexed.root, indexed.db)
    with pytest.raises(ModelMismatchError):
        search(other, indexed.db, text="anything")


def test_searching_without_an_index_is_refused(client, tmp_path):
    with pytest.raises(NoIndexError):
        search(client, tmp_path / "nothing", text="a cat")
    assert not (tmp_path / "nothing").exists()


def test_an_indexed_image_finds_itself_first(client, indexed):
    query = indexed.root / IMAGES[2]
    matches = search(client, indexed.db, image=query, top_k=3)
    assert len(matches) == 3
    assert (matches[0].path, matches[0].kind) == (absolute(indexed.root, IMAGES[2]), "image")
    assert matches[0].score == pytest.approx(1.0, abs=1e-4)
    assert matches[0].score > matches[1].score >= matches[2].score


def decoded_frame(path: Path, number: int) -> Image.Image:
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == number:
                return frame.to_image()
    raise AssertionError(f"{path} has no frame {number}")


def test_a_video_frame_finds_its_video_at_its_time(client, indexed, tmp_path):
    name, frame = "videos/two/second.mov", 20
    query = tmp_path / "frame.png"
    decoded_frame(indexed.root / name, frame).save(query)
    best = search(client, indexed.db, image=query, top_k=1)[0]
    assert (best.path, best.kind, best.frame) == (absolute(indexed.root, name), "video", frame)
    assert best.timestamp == pytest.approx(frame / VIDEO_FPS)
    assert best.score == pytest.approx(1.0, abs=1e-4)


def test_a_text_query_ranks_the_whole_index(client, indexed):
    matches = search(client, indexed.db, text="a red square", top_k=100)
    assert len(matches) == sum(len(found) for found in rows(indexed.db).values())
    assert [match.score for match in matches] == sorted((match.score for match in matches), reverse=True)


def image_of(uri: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):])))
    image.load()
    assert image.format == "JPEG"
    return image


def test_a_video_thumbnail_shows_the_frame_at_its_time(indexed):
    path = absolute(indexed.root, "videos/one.mp4")
    for frame in [0, 10, 17, 29]:
        thumbnail = image_of(thumbnail_uri(Match(1.0, path, "video", frame, frame / VIDEO_FPS)))
        assert read_index(np.asarray(thumbnail.convert("RGB"))) == frame


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.placeholders = 0
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes["src"])
        elif tag == "a":
            self.links.append(attributes["href"])
        elif attributes.get("class") == "missing":
            self.placeholders += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_html_page_is_self_contained(client, indexed):
    matches = search(client, indexed.db, image=indexed.root / IMAGES[0], top_k=100)
    gone = Match(0.5, absolute(indexed.root, "photos/vanished.png"), "image", 0, None)
    page_text = results_page("<query & co>", matches + [gone])
    page = Page()
    page.feed(page_text)
    assert len(page.images) == len(matches) and page.placeholders == 1
    for uri in page.images:
        assert image_of(uri).size[0] <= 256 and image_of(uri).size[1] <= 256
    text = "".join(page.text)
    assert absolute(indexed.root, ESCAPED_NAME) in text and "<query & co>" in text  # unescaped by the parser
    assert "<b>&" not in page_text and "&lt;b&gt;&amp;&quot;q&#x27;" in page_text
    assert [link.startswith("file://") for link in page.links] == [True] * len(matches + [gone])
    assert any(link.endswith("#t=1.000") for link in page.links)


# --- which errors stop a run ----------------------------------------------------------------

TIMEOUT = "time-out"
MISMATCH = "Model mismatch: requested model 'CLIP/other' does not match the currently loaded model"


def refusing(path: str, answer: int | str, *, images: int | None = None, detail: str | None = None) -> Canned:
    """Answers each POST to ``path`` (of ``images`` images, when given) with the status ``answer``
    and ``detail``, or times it out (``TIMEOUT``); lets the others through."""
    def canned(request: httpx.Request) -> httpx.Response | None:
        if request.url.path != path or images not in (None, len(json.loads(request.content)["input"])):
            return None
        if answer == TIMEOUT:
            raise httpx.ReadTimeout("timed out on purpose", request=request)
        return httpx.Response(answer, json={"detail": detail or f"refused with {answer} on purpose"})

    return canned


def either(*canned: Canned) -> Canned:
    """The first answer of ``canned`` that is not ``None``."""
    return lambda request: next((answer for each in canned if (answer := each(request)) is not None), None)


@pytest.fixture
def one_each(tmp_path) -> SimpleNamespace:
    """A folder of one image and one short video."""
    root = tmp_path / "library"
    root.mkdir()
    (root / "a.png").write_bytes(encoded(random_image()))
    index_video(root / "clip.mp4", frames=20, fps=10)
    return SimpleNamespace(root=root, db=tmp_path / "index")


@pytest.fixture
def two_images(tmp_path) -> SimpleNamespace:
    root = tmp_path / "library"
    root.mkdir()
    for seed in range(2):
        (root / f"{seed}.png").write_bytes(encoded(random_image(seed=seed)))
    return SimpleNamespace(root=root, db=tmp_path / "index")


@pytest.mark.parametrize("answer", [400, 413, 422, 500, TIMEOUT])
@pytest.mark.parametrize("path, failing, kept", [("/v1/embeddings", "a.png", "clip.mp4"),
                                                 ("/embeddings/frames", "clip.mp4", "a.png")])
def test_a_file_s_own_error_fails_that_file_and_the_run_goes_on(api_client, one_each, answer, path, failing, kept):
    summary = index_folder(relayed(Relay(api_client, refusing(path, answer))), one_each.root, one_each.db)
    [failure] = summary.failed
    assert failure.path == absolute(one_each.root, failing)
    assert ("timed out" if answer == TIMEOUT else f"{answer}: refused") in failure.detail
    assert summary.indexed == 1 and set(rows(one_each.db)) == {absolute(one_each.root, kept)}


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embeddings/frames"])
@pytest.mark.parametrize("status, detail, error", [
    pytest.param(429, None, RateLimitError, id="rate-limit"),
    pytest.param(401, None, AuthenticationError, id="api-key"),
    pytest.param(404, None, NotFoundError, id="model-not-found"),
    pytest.param(400, MISMATCH, BadRequestError, id="model-mismatch"),
])
def test_a_server_state_error_stops_the_run(api_client, one_each, path, status, detail, error):
    client = relayed(Relay(api_client, refusing(path, status, detail=detail)))
    with pytest.raises(error):
        index_folder(client, one_each.root, one_each.db)
    assert "frames" not in lancedb.connect(str(one_each.db)).list_tables().tables  # nothing committed


@pytest.mark.parametrize("answer, error", [(500, ServerError), (TIMEOUT, httpx.TimeoutException)])
def test_a_500_or_a_time_out_of_a_batch_stops_the_run(api_client, two_images, answer, error):
    client = relayed(Relay(api_client, refusing("/v1/embeddings", answer, images=2)))
    with pytest.raises(error):
        index_folder(client, two_images.root, two_images.db)


def test_a_server_state_error_while_images_are_sent_alone_stops_the_run(api_client, two_images):
    relay = Relay(api_client, either(refusing("/v1/embeddings", 400, images=2),
                                     refusing("/v1/embeddings", 429, images=1)))
    with pytest.raises(RateLimitError):
        index_folder(relayed(relay), two_images.root, two_images.db)
    assert [len(body["input"]) for body in posts(relay, "/v1/embeddings")] == [2, 1]


def test_the_servers_answers_to_another_model_stop_the_run(api_client, one_each):
    other = Client("http://testserver", http=api_client, model="CLIP/other")
    with pytest.raises(NotFoundError, match=MISMATCH):  # /v1/embeddings (images go first) answers 404
        index_folder(other, one_each.root, one_each.db)
    (one_each.root / "a.png").unlink()
    with pytest.raises(BadRequestError, match=MISMATCH):  # /embeddings/frames answers 400
        index_folder(other, one_each.root, one_each.db)


# --- how videos are sent --------------------------------------------------------------------

@pytest.mark.parametrize("fps, frames_per_request, requests", [
    pytest.param(10, 20, 3, id="the-video-s-rate"),
    pytest.param(30, 20, 3, id="above-the-video-s-rate"),
    pytest.param(1, 2, 3, id="below-the-video-s-rate"),
    pytest.param(4, 7, 4, id="segments-between-frames"),
])
def test_a_long_video_is_asked_for_in_segments_that_join_into_one_answer(api_client, client, tmp_path, fps,
                                                                          frames_per_request, requests):
    root, db = tmp_path / "videos", tmp_path / "index"
    root.mkdir()
    video = index_video(root / "long.mp4", frames=60, fps=10)  # 6 s
    relay = Relay(api_client)
    index_folder(relayed(relay), root, db, fps=fps, frames_per_request=frames_per_request)
    configs = [body["input"]["segment_config"] for body in posts(relay, "/embeddings/frames")]
    length = frames_per_request / min(fps, 10)
    assert [config["startOffsetSec"] for config in configs] == pytest.approx([k * length for k in range(requests)])
    assert {config["clip_duration"] for config in configs} == {length}
    whole = client.embed_video(video, extraction_fps=fps)
    found = rows(db)[absolute(root, "long.mp4")]
    assert [row["frame"] for row in found] == whole.frames
    assert [row["timestamp"] for row in found] == pytest.approx(whole.timestamps)
    np.testing.assert_allclose([row["vector"] for row in found], whole.vectors, atol=2e-6)
    if fps >= 10:
        assert whole.frames == list(range(60))


@pytest.mark.parametrize("duration_s", [7.0, None], ids=["declared-too-long", "not-declared"])
def test_segments_stop_where_the_server_says_the_video_ends(api_client, client, tmp_path, monkeypatch, duration_s):
    root, db = tmp_path / "videos", tmp_path / "index"
    root.mkdir()
    video = index_video(root / "long.mp4", frames=60, fps=10)
    monkeypatch.setattr(video_requests, "probe", lambda _: Probe(duration_s, 10.0))
    relay = Relay(api_client)
    summary = index_folder(relayed(relay), root, db, fps=10, frames_per_request=20)
    assert (summary.indexed, summary.failed) == (1, [])
    assert len(posts(relay, "/embeddings/frames")) == 4  # the 4th starts at 6 s: 422, "segment starts at"
    assert [row["frame"] for row in rows(db)[absolute(root, "long.mp4")]] == list(range(60))
    assert client.embed_video(video, extraction_fps=10).frames == list(range(60))


@pytest.fixture
def server_video_root(service_module, use_pipeline, tmp_path) -> Path:
    """A directory the in-process app reads ``video_file`` paths under, until the test ends."""
    from embedding_server.settings import Settings

    root = tmp_path / "server-view"
    root.mkdir()
    preparer = service_module.MODEL.adapter.load_image_preparer(Path(service_module.ENTRY.path))
    use_pipeline(served_pipeline(service_module.MODEL, preparer, Settings(video_root=root)))
    return root


def test_with_server_dir_a_video_is_named_where_the_server_sees_it(api_client, client, server_video_root, tmp_path):
    root, db = tmp_path / "library", tmp_path / "index"
    (root / "sub").mkdir(parents=True)
    video = index_video(root / "sub" / "clip.mp4", frames=30, fps=10)
    shutil.copytree(root, server_video_root, dirs_exist_ok=True)  # the server's view of the same folder
    relay = Relay(api_client)
    summary = index_folder(relayed(relay), root, db, server_dir=str(server_video_root), max_upload_bytes=1)
    [body] = posts(relay, "/embeddings/frames")
    named = (body["input"]["type"], body["input"]["video_path"])
    assert named == ("video_file", str(server_video_root / "sub" / "clip.mp4"))
    assert (summary.indexed, summary.failed) == (1, [])  # no upload, so no upload limit
    found = rows(db)[absolute(root, "sub/clip.mp4")]
    expected = client.embed_video(video, extraction_fps=1)
    assert [row["frame"] for row in found] == expected.frames == [0, 10, 20]
    np.testing.assert_allclose([row["vector"] for row in found], expected.vectors, atol=2e-6)


def test_a_video_too_large_to_upload_fails_unread(api_client, one_each):
    video = one_each.root / "clip.mp4"
    relay = Relay(api_client)
    summary = index_folder(relayed(relay), one_each.root, one_each.db, max_upload_bytes=video.stat().st_size)
    [failure] = summary.failed
    assert failure.path == absolute(one_each.root, "clip.mp4")
    assert "too large to send" in failure.detail and "--server-dir" in failure.detail
    assert posts(relay, "/embeddings/frames") == [] and summary.indexed == 1
    limit = math.ceil(video.stat().st_size * 4 / 3)  # its base64 just fits
    assert index_folder(relayed(relay), one_each.root, one_each.db, max_upload_bytes=limit).indexed == 1


def test_a_video_pyav_cannot_open_fails_without_a_request(api_client, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    (root / "garbage.mp4").write_bytes(b"not a video at all")
    audio_only(root / "sound.mp4")
    relay = Relay(api_client)
    summary = index_folder(relayed(relay), root, tmp_path / "index")
    details = {Path(failure.path).name: failure.detail for failure in summary.failed}
    assert details.keys() == {"garbage.mp4", "sound.mp4"}
    assert details["garbage.mp4"].startswith("not a video PyAV can open")
    assert details["sound.mp4"] == "no video stream"
    assert posts(relay, "/embeddings/frames") == []


def test_a_file_that_no_longer_decodes_gets_the_placeholder(tmp_path):
    sound = audio_only(tmp_path / "sound.mp4")  # a video replaced by one without a video stream
    garbage = tmp_path / "garbage.mov"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing")
    cut = tmp_path / "cut.png"
    cut.write_bytes(encoded(random_image())[:300])
    matches = [Match(0.9, str(sound), "video", 0, 0.0), Match(0.8, str(garbage), "video", 10, 1.0),
               Match(0.7, str(cut), "image", 0, None), Match(0.6, str(tmp_path), "image", 0, None)]
    assert [thumbnail_uri(match) for match in matches] == [None] * len(matches)
    page = Page()
    page.feed(results_page("anything", matches))
    assert page.placeholders == len(matches) and page.images == []
