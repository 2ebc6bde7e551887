"""``embedding-client`` (``embedding_client.cli.main``) against the in-process server: what
each command prints or writes, and its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from embedding_client import Client, cli
from samples import encoded, random_image
from test_client_index import CLIPS, IMAGES, VIDEO_FPS, absolute, make_library
from video_samples import index_video


class SessionClient(Client):
    """Leaves the session's test client open when a command closes its client."""

    def close(self) -> None:
        pass


@pytest.fixture
def connections(api_client, monkeypatch) -> list[tuple[str, str | None]]:
    """Points the commands at the in-process server; records the ``(server, api_key)`` each was given."""
    made: list[tuple[str, str | None]] = []

    def make_client(server: str, api_key: str | None) -> Client:
        made.append((server, api_key))
        return SessionClient("http://testserver", http=api_client)

    monkeypatch.setattr(cli, "make_client", make_client)
    return made


@pytest.fixture(scope="module")
def client(api_client) -> Client:
    return Client("http://testserver", http=api_client)


def test_embed_texts_to_npy_gives_the_client_s_vectors(connections, client, tmp_path):
    out = tmp_path / "texts.npy"
    assert cli.main(["embed", "--text", "a cat", "--text", "a dog", "--out", str(out)]) == 0
    saved = np.load(out)
    assert saved.dtype == np.float32
    np.testing.assert_allclose(saved, client.embed_texts(["a cat", "a dog"]).vectors, atol=1e-6)


def test_embed_images_to_json(connections, client, tmp_path):
    paths = []
    for seed in range(2):
        paths.append(tmp_path / f"{seed}.png")
        paths[-1].write_bytes(encoded(random_image(seed=seed)))
    out = tmp_path / "images.json"
    assert cli.main(["embed", "--image", str(paths[0]), "--image", str(paths[1]), "--out", str(out)]) == 0
    body = json.loads(out.read_text())
    expected = client.embed_images(paths)
    assert (body["model"], body["dimension"]) == (expected.model, expected.dimension)
    np.testing.assert_allclose(body["vectors"], expected.vectors, atol=1e-6)


def test_embed_a_video_prints_json_with_frame_times(connections, capsys, tmp_path):
    video = index_video(tmp_path / "clip.mp4", frames=20, fps=10)
    assert cli.main(["embed", "--video", str(video), "--num-frames", "4"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert len(body["vectors"]) == len(body["frames"]) == len(body["timestamps"]) == 4
    assert len(body["vectors"][0]) == body["dimension"]
    assert body["timestamps"] == pytest.approx([frame / 10 for frame in body["frames"]])


@pytest.mark.parametrize("arguments", [
    pytest.param(["embed"], id="no-input"),
    pytest.param(["embed", "--text", "a", "--image", "b.png"], id="text-and-image"),
    pytest.param(["embed", "--text", "a", "--out", "x.txt"], id="unknown-output"),
    pytest.param(["embed", "--text", "a", "--num-frames", "3"], id="frames-without-video"),
    pytest.param(["search", "a cat", "--image", "b.png"], id="text-and-image-query"),
    pytest.param(["search"], id="no-query"),
    pytest.param(["search", "a cat", "--top-k", "0"], id="top-k-zero"),
    pytest.param(["index", "folder", "--fps", "0"], id="index-fps-zero"),
    pytest.param(["index", "folder", "--max-upload-mib", "lots"], id="upload-limit-not-a-number"),
    pytest.param(["frobnicate"], id="unknown-command"),
])
def test_bad_arguments_exit_2_without_a_request(connections, arguments, capsys):
    assert cli.main(arguments) == 2
    assert "error:" in capsys.readouterr().err
    assert connections == []


def test_the_server_and_key_come_from_the_environment_or_the_options(connections, monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDDING_SERVER_URL", "http://embeddings.example:9000")
    monkeypatch.setenv("EMBEDDING_API_KEY", "from-env")
    out = str(tmp_path / "x.npy")
    assert cli.main(["embed", "--text", "a", "--out", out]) == 0
    assert cli.main(["--server", "http://first:1", "embed", "--text", "a", "--out", out]) == 0
    assert cli.main(["embed", "--text", "a", "--out", out, "--server", "http://after:2", "--api-key", "k"]) == 0
    assert connections == [("http://embeddings.example:9000", "from-env"), ("http://first:1", "from-env"),
                           ("http://after:2", "k")]


def test_index_then_search(connections, capsys, tmp_path):
    root, db = make_library(tmp_path / "library"), tmp_path / "index"
    assert cli.main(["index", str(root), "--db", str(db), "--quiet"]) == 3  # done, but a file failed
    captured = capsys.readouterr()
    assert captured.out.strip() == "indexed 7, skipped 0 (unchanged), failed 1"
    assert "failed: " + absolute(root, "photos/broken.jpg") + ": 400: " in captured.err

    assert cli.main(["index", str(root), "--db", str(db), "--quiet", "--prune"]) == 3
    assert capsys.readouterr().out.strip() == "indexed 0, skipped 7 (unchanged), failed 1, pruned 0"

    assert cli.main(["search", "--image", str(root / IMAGES[1]), "--db", str(db), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["1.0000", absolute(root, IMAGES[1])]

    video = next(iter(CLIPS))
    html = tmp_path / "results.html"
    assert cli.main(["search", "a cat", "--db", str(db), "--top-k", "50", "--json", "--html", str(html)]) == 0
    matches = json.loads(capsys.readouterr().out)
    assert len(matches) == 5 + sum(frames // VIDEO_FPS for frames, _ in CLIPS.values())
    assert {"score", "path", "kind", "frame", "timestamp"} <= set(matches[0])
    assert html.read_text().count("data:image/jpeg;base64,") == len(matches)
    assert any(match["path"] == absolute(root, video) and match["timestamp"] == 1.0 for match in matches)


def test_search_prints_a_video_frame_s_time(connections, capsys, tmp_path):
    root, db = tmp_path / "videos", tmp_path / "index"
    root.mkdir()
    index_video(root / "clip.mp4", frames=30, fps=10)
    assert cli.main(["index", str(root), "--db", str(db), "--quiet"]) == 0
    assert cli.main(["search", "anything", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert sorted(line.split()[-2] for line in lines) == ["0.0", "1.0", "2.0"]
    assert all(line.endswith(" s") for line in lines)


def stored_model(db: Path, model: str) -> None:
    """Rewrites the model id the index at ``db`` records."""
    connection = lancedb.connect(str(db))
    connection.create_table("meta", pa.table({"model": [model]}), mode="overwrite")


def test_an_index_of_another_model_exits_2(connections, capsys, tmp_path):
    root, db = tmp_path / "library", tmp_path / "index"
    root.mkdir()
    (root / "one.png").write_bytes(encoded(random_image()))
    assert cli.main(["index", str(root), "--db", str(db), "--quiet"]) == 0
    stored_model(db, "CLIP/other")
    capsys.readouterr()
    assert cli.main(["index", str(root), "--db", str(db), "--quiet"]) == 2
    assert cli.main(["search", "a cat", "--db", str(db)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all("built with CLIP/other" in line for line in errors)


def test_a_missing_index_or_folder_exits_2(connections, capsys, tmp_path):
    assert cli.main(["search", "a cat", "--db", str(tmp_path / "none")]) == 2
    assert cli.main(["index", str(tmp_path / "none"), "--db", str(tmp_path / "index")]) == 2
    assert "no index at" in capsys.readouterr().err


def test_a_path_that_cannot_be_read_exits_2(connections, capsys, tmp_path):
    assert cli.main(["embed", "--image", str(tmp_path)]) == 2  # a directory
    assert cli.main(["embed", "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "x.npy")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in errors] == ["error", "error"]
    assert "Is a directory" in errors[0] and "No such file" in errors[1]


@pytest.mark.parametrize("command, message", [("embed", "interrupted"),
                                              ("index", "interrupted; files indexed so far are kept")])
def test_ctrl_c_exits_130_with_a_line_not_a_traceback(connections, capsys, monkeypatch, tmp_path, command, message):
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SessionClient, "embed_texts", interrupted)
    monkeypatch.setattr(SessionClient, "embed_images", interrupted)
    root = tmp_path / "library"
    root.mkdir()
    (root / "one.png").write_bytes(encoded(random_image()))
    arguments = {"embed": ["embed", "--text", "a"],
                 "index": ["index", str(root), "--db", str(tmp_path / "index"), "--quiet"]}[command]
    assert cli.main(arguments) == 130
    assert capsys.readouterr().err.strip() == message


def test_index_passes_the_video_options(connections, monkeypatch, tmp_path):
    from embedding_client import indexing, video_requests

    given: list[dict] = []

    def index_folder(client: Client, root: str, db: str, **options: object) -> indexing.IndexSummary:
        given.append(options)
        return indexing.IndexSummary()

    monkeypatch.setattr(indexing, "index_folder", index_folder)
    assert cli.main(["index", str(tmp_path), "--quiet"]) == 0
    assert cli.main(["index", str(tmp_path), "--quiet", "--server-dir", "/srv/media", "--max-upload-mib", "1.5"]) == 0
    assert [(options["server_dir"], options["max_upload_bytes"]) for options in given] == [
        (None, video_requests.MAX_UPLOAD_BYTES), ("/srv/media", 3 << 19)]


def test_a_video_too_large_to_upload_is_reported_and_exits_3(connections, capsys, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    index_video(root / "clip.mp4", frames=20, fps=10)
    assert cli.main(["index", str(root), "--db", str(tmp_path / "index"), "--quiet", "--max-upload-mib", "0.001"]) == 3
    captured = capsys.readouterr()
    assert captured.out.strip() == "indexed 0, skipped 0 (unchanged), failed 1"
    assert "too large to send" in captured.err and "--server-dir" in captured.err
