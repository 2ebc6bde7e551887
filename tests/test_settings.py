"""Settings: defaults, parsing, and start-up errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedding_server.settings import Settings, SettingsError, load_settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("EMBEDDING_MODEL_NAME", "EMBEDDING_URL_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults(clean_env):
    settings = load_settings()
    assert settings.model_name == "CLIP/clip-vit-b-16"
    assert (settings.server_port, settings.device, settings.use_ov) == (8000, "CPU", False)
    assert settings.video_root == Path("/tmp/videoQnA")
    assert settings.url_allowed_hosts == ()


def test_values_from_environment(clean_env):
    clean_env.setenv("EMBEDDING_SERVER_PORT", "9123")
    clean_env.setenv("EMBEDDING_DEVICE", "gpu.1")
    clean_env.setenv("EMBEDDING_USE_OV", "true")
    clean_env.setenv("EMBEDDING_URL_ALLOWED_HOSTS", "127.0.0.1, Images.Internal ,10.0.0.0/8")
    settings = load_settings()
    assert (settings.server_port, settings.device, settings.use_ov) == (9123, "GPU.1", True)
    assert settings.url_allowed_hosts == ("127.0.0.1", "images.internal", "10.0.0.0/8")


@pytest.mark.parametrize(
    "name, value",
    [
        ("EMBEDDING_SERVER_PORT", "eighty"),
        ("EMBEDDING_SERVER_PORT", "70000"),
        ("EMBEDDING_DEVICE", "TPU"),
        ("EMBEDDING_USE_OV", "perhaps"),
        ("EMBEDDING_URL_ALLOWED_HOSTS", "10.0.0.0/33"),
        ("EMBEDDING_MAX_IMAGE_BYTES", "-1"),
        ("EMBEDDING_TEXT_MAX_BATCH_SIZE", "1"),
        ("EMBEDDING_URL_CONNECT_TIMEOUT_S", "0"),
        ("EMBEDDING_MODEL_NAME", ""),
        ("EMBEDDING_VIDEO_ROOT", "videos"),
        ("EMBEDDING_VIDEO_ALLOWED_ROOTS", "/data:relative"),
        ("EMBEDDING_VIDEO_TEMP_DIR", "tmp"),
        ("EMBEDDING_MAX_FRAMES_PER_REQUEST", "0"),
        ("EMBEDDING_VIDEO_DEFAULT_NUM_FRAMES", "2000"),
        ("EMBEDDING_MAX_VIDEO_BYTES", "10"),
        ("EMBEDDING_MAX_EXTRACTION_FPS", "0"),
        ("EMBEDDING_TORCH_LANES", "0"),
    ],
)
def test_invalid_value_names_the_variable(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert f"{name}={value!r}" in str(error.value)


def test_settings_are_immutable():
    with pytest.raises(Exception):
        Settings().server_port = 1  # type: ignore[misc]


def test_video_settings_from_the_environment(clean_env):
    clean_env.setenv("EMBEDDING_VIDEO_ALLOWED_ROOTS", "/data/frames:/srv/videos")
    clean_env.setenv("EMBEDDING_VIDEO_DEFAULT_NUM_FRAMES", "16")
    settings = load_settings()
    assert settings.video_allowed_roots == (Path("/data/frames"), Path("/srv/videos"))
    assert (settings.video_default_num_frames, settings.max_frames_per_request) == (16, 1024)
    assert settings.video_temp_dir is None
