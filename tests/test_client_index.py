"""The client's folder index (``embedding_client.indexing``), its search and its HTML page,
against the in-process server.

The served CLIP has random weights, so no text query has a known answer; an image identical
to an indexed one (or to an indexed video frame) does: it comes first with cosine ~1.
"""

from __future__ import annotations

import base64
import hashlib
import io
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import av
import lancedb
import numpy as np
import pytest
from PIL import Image

from embedding_client import Client
from embedding_client.errors import EmbeddingServerError
from embedding_client.folder import media_files
from embedding_client.html_page import results_page
from embedding_client.index_errors import ModelMismatchError, NoIndexError, StoreError
from embedding_client.indexing import batches, index_folder
from embedding_client.search import Match, search
from embedding_client.thumbnails import thumbnail_uri
from samples import distinct_images, encoded, solid_image
from video_samples import index_frame, read_index, write_video

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


def test_a_second_run_indexes_nothing_new(client, library):
    index_folder(client, library.root, library.db)
    before = rows(library.db)
    again = index_folder(client, library.root, library.db)
    assert (again.indexed, again.unchanged, len(again.failed)) == (0, 7, 1)  # the corrupt file is tried again
    assert rows(library.db) == before


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
