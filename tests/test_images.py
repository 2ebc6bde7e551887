"""Untrusted image bytes: every mode to RGB, decompression bombs, corrupt data, base64 forms."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from embedding_server.errors import ApiError
from embedding_server.media.images import decode_base64, decode_image, to_rgb
from samples import encoded, random_image

MAX_PIXELS = 4_000_000


def saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def palette_with_transparency() -> bytes:
    image = Image.new("P", (8, 8))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    return saved(image, "PNG", transparency=0)


@pytest.mark.parametrize(
    "data",
    [
        saved(Image.new("RGBA", (20, 10), (10, 20, 30, 40)), "PNG"),
        saved(Image.new("LA", (20, 10), (100, 50)), "PNG"),
        saved(Image.new("L", (20, 10), 77), "PNG"),
        saved(Image.new("1", (20, 10), 1), "PNG"),
        saved(Image.new("CMYK", (20, 10), (0, 255, 0, 0)), "JPEG"),
        saved(Image.new("CMYK", (20, 10), (0, 255, 0, 0)), "TIFF"),
        saved(Image.new("I;16", (20, 10), 40000), "PNG"),
        saved(Image.new("F", (20, 10), 0.5), "TIFF"),
        saved(Image.new("RGB", (20, 10), (1, 2, 3)), "WEBP"),
        saved(Image.new("RGB", (20, 10), (1, 2, 3)), "GIF"),
        saved(Image.new("RGB", (20, 10), (1, 2, 3)), "BMP"),
        palette_with_transparency(),
    ],
    ids=["rgba", "la", "l", "1bit", "cmyk-jpeg", "cmyk-tiff", "16bit", "float", "webp", "gif", "bmp",
         "palette-transparency"],
)
def test_every_mode_becomes_8bit_rgb(data):
    image = decode_image(data, max_pixels=MAX_PIXELS)
    assert image.mode == "RGB"
    assert image.size == (20, 10) or image.size == (8, 8)
    assert np.asarray(image).dtype == np.uint8


def test_16bit_grey_is_scaled_not_clipped():
    image = decode_image(saved(Image.new("I;16", (4, 4), 65535), "PNG"), max_pixels=MAX_PIXELS)
    assert np.asarray(image)[0, 0].tolist() == [255, 255, 255]
    mid = decode_image(saved(Image.new("I;16", (4, 4), 32896), "PNG"), max_pixels=MAX_PIXELS)
    assert np.asarray(mid)[0, 0, 0] == 128


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (30, 10), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode_image(saved(image, "JPEG", exif=exif), max_pixels=MAX_PIXELS)
    assert decoded.size == (10, 30)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = saved(Image.new("L", (4000, 4000), 0), "PNG")  # tiny file, 16 M pixels
    assert len(bomb) < 100_000
    with pytest.raises(ApiError) as refused:
        decode_image(bomb, max_pixels=MAX_PIXELS)
    assert refused.value.status_code == 422
    assert "4000x4000 pixels exceeds the limit" in refused.value.detail


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (b"GIF89a\x00\x00", "decod"),
        (b"%PDF-1.4 not an image", "not a decodable image"),
        (encoded(random_image(seed=5), "JPEG")[:200], "decod"),
        (encoded(random_image(seed=6), "PNG")[:-40], "decod"),
    ],
    ids=["empty", "bad-gif-header", "pdf", "truncated-jpeg", "truncated-png"],
)
def test_corrupt_data_is_422(data, fragment):
    with pytest.raises(ApiError) as refused:
        decode_image(data, max_pixels=MAX_PIXELS)
    assert refused.value.status_code == 422
    assert fragment in refused.value.detail


def test_base64_forms():
    data = bytes(range(256))
    standard = base64.b64encode(data).decode()
    assert decode_base64(standard, max_bytes=1000) == data
    assert decode_base64(base64.urlsafe_b64encode(data).decode(), max_bytes=1000) == data
    assert decode_base64("data:image/png;base64," + standard, max_bytes=1000) == data
    assert decode_base64(standard.rstrip("="), max_bytes=1000) == data
    assert decode_base64(standard[:40] + "\n" + standard[40:], max_bytes=1000) == data


@pytest.mark.parametrize("text", ["!!!!", "abc$", "   "])
def test_bad_base64_is_422(text):
    with pytest.raises(ApiError) as refused:
        decode_base64(text, max_bytes=1000)
    assert refused.value.status_code == 422


def test_base64_over_cap_is_413_without_decoding():
    with pytest.raises(ApiError) as refused:
        decode_base64("A" * 4000, max_bytes=1000)
    assert (refused.value.status_code, refused.value.detail) == (413, "Image too large: exceeds 1000 bytes")


@pytest.mark.parametrize(
    "levels, fmt, scale",
    [
        (np.arange(600 * 300, dtype=np.uint16).reshape(300, 600) * 3, "PNG", 1 / 257),
        (np.arange(600 * 300, dtype=np.int32).reshape(300, 600) * 9 - 5000, "TIFF", 1 / 257),
        (np.linspace(0, 1, 600 * 300, dtype=np.float32).reshape(300, 600), "TIFF", 255.0),
        (np.linspace(-20, 70000, 600 * 300, dtype=np.float32).reshape(300, 600), "TIFF", 1 / 257),
        (np.arange(600 * 300, dtype=np.uint16).reshape(300, 600) % 256, "PNG", 1.0),
    ],
    ids=["16bit", "32bit-signed", "float-unit", "float-wide", "16bit-holding-8bit"],
)
def test_wide_grey_levels_convert_band_by_band_as_a_whole(levels, fmt, scale):
    image = decode_image(saved(Image.fromarray(levels), fmt), max_pixels=MAX_PIXELS)
    # The rule on the whole image in float64: 0..1 floats times 255, levels above 255 / 257.
    values = levels.astype(np.float64)
    expected = np.clip(np.rint(values * 255.0 if scale == 255.0 else values / 257.0 if scale < 1 else values), 0, 255)
    np.testing.assert_array_equal(np.asarray(image)[..., 0], expected.astype(np.uint8))


def test_big_endian_16bit_tiff_is_scaled():
    image = Image.new("I;16B", (20, 10), 0)
    image.frombytes((65535).to_bytes(2, "big") * 200)
    assert np.asarray(decode_image(saved(image, "TIFF"), max_pixels=MAX_PIXELS)).min() == 255


def test_alpha_grey_and_palette_alpha_become_rgb():
    assert decode_image(saved(Image.new("LA", (20, 10), (3, 0)), "PNG"), max_pixels=MAX_PIXELS).mode == "RGB"
    assert to_rgb(Image.new("PA", (20, 10))).mode == "RGB"  # no format stores PA; Pillow makes it


def test_full_palette_with_transparency_keeps_its_colours():
    image = Image.new("P", (16, 16))
    image.putpalette([value for index in range(256) for value in (index, 255 - index, index // 2)])
    image.putdata(list(range(256)))
    decoded = decode_image(saved(image, "PNG", transparency=bytes(range(256))), max_pixels=MAX_PIXELS)
    assert np.asarray(decoded)[15, 15].tolist() == [255, 0, 127]


def test_mpo_camera_files_are_accepted():
    frames = [Image.new("RGB", (32, 24), (200, 10, 10)), Image.new("RGB", (32, 24), (10, 200, 10))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "MPO", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue(), max_pixels=MAX_PIXELS)
    assert decoded.size == (32, 24) and np.asarray(decoded)[0, 0, 0] > 150


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animations_give_their_first_frame_without_reading_the_others(fmt, monkeypatch):
    frames = [Image.new("RGB", (16, 16), (index % 256, 0, 255 - index % 256)) for index in range(2000)]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=10, lossless=True)
    sought: list[int] = []
    monkeypatch.setattr(Image.Image, "seek", lambda self, frame: sought.append(frame))
    decoded = decode_image(buffer.getvalue(), max_pixels=MAX_PIXELS)
    assert sought == [] and np.asarray(decoded)[0, 0].tolist() == [0, 0, 255]
