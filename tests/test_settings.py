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
