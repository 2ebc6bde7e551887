"""Untrusted image bytes: every mode to 8-bit RGB pixel by pixel, EXIF orientation,
decompression bombs, corrupt data, base64 forms."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from embedding_server.http_api.errors import ApiError
from embedding_server.media.images import decode_base64, decode_image, to_rgb
from samples import encoded, random_image

MAX_PIXELS = 4_000_000
EXIF_ORIENTATION = 0x0112
# 4:4:4 at quality 95: flat 16-pixel blocks come back within a level or two of their colour.
JPEG = {"quality": 95, "subsampling": 0}
JPEG_TOLERANCE = 4


def saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    """The pixels ``decode_image`` makes of ``data``, asserted 8-bit RGB."""
    image = decode_image(data, max_pixels=MAX_PIXELS)
    assert image.mode == "RGB"
    return np.asarray(image)


def assert_pixels(actual: np.ndarray, expected: np.ndarray, tolerance: int = 0) -> None:
    assert actual.shape == expected.shape
    difference = np.abs(actual.astype(int) - expected.astype(int))
    assert difference.max() <= tolerance, (difference.max(), actual.tolist())


def blocks(grid: list[list[tuple[int, ...]]], side: int = 16) -> np.ndarray:
    """Flat ``side`` x ``side`` blocks of the colours of ``grid`` (rows of colours), as uint8;
    blocks of 16 keep every JPEG block flat."""
    return np.array(grid, np.uint8).repeat(side, axis=0).repeat(side, axis=1)


# --- EXIF orientation -----------------------------------------------------------------------

# Six distinct colours in two rows of three: each of the eight rotations and mirrors of this
# picture is a different array.
UPRIGHT = blocks([[(230, 30, 30), (30, 200, 40), (40, 60, 220)],
                  [(240, 220, 50), (20, 20, 20), (250, 250, 250)]])
# How a camera stores the upright picture under each orientation value, from the TIFF/EXIF
# definition (where the stored 0th row and 0th column lie in the upright picture), written out
# in numpy so that the expectation does not come from the decoder's own table.
STORED_AS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda upright: upright,  # row 0 at the top, column 0 on the left
    2: lambda upright: upright[:, ::-1],  # top, right
    3: lambda upright: upright[::-1, ::-1],  # bottom, right
    4: lambda upright: upright[::-1],  # bottom, left
    5: lambda upright: upright.transpose(1, 0, 2),  # left, top
    6: lambda upright: np.rot90(upright, 1),  # right, top: shown turned 90 degrees clockwise
    7: lambda upright: upright[::-1, ::-1].transpose(1, 0, 2),  # right, bottom
    8: lambda upright: np.rot90(upright, -1),  # left, bottom: shown turned 90 degrees anticlockwise
}


@pytest.mark.parametrize("fmt, options, tolerance", [("PNG", {}, 0), ("JPEG", JPEG, JPEG_TOLERANCE)],
                         ids=["png", "jpeg"])
@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_every_exif_orientation_decodes_upright(orientation, fmt, options, tolerance):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    stored = Image.fromarray(np.ascontiguousarray(STORED_AS[orientation](UPRIGHT)))
    assert_pixels(decoded(saved(stored, fmt, exif=exif, **options)), UPRIGHT, tolerance)


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("GIF", {}),
                                          ("WEBP", {"lossless": True})],
                         ids=["png", "bmp", "tiff", "gif", "webp-lossless"])
def test_lossless_formats_keep_every_pixel(fmt, options):
    assert_pixels(decoded(saved(Image.fromarray(UPRIGHT), fmt, **options)), UPRIGHT)


# --- 8-bit modes: alpha, grey, palette, CMYK ------------------------------------------------

# Colours under opaque, semi-transparent, nearly and fully transparent alpha. Dropping the
# alpha keeps each colour; compositing on white or black would change every pixel whose alpha
# is below 255, in at least one channel.
RGBA = np.array([[(200, 40, 10, 255), (200, 40, 10, 128), (200, 40, 10, 0), (5, 90, 250, 0)],
                 [(0, 0, 0, 128), (255, 255, 255, 0), (0, 0, 0, 0), (90, 90, 90, 1)]], np.uint8)
GREY, ALPHA = RGBA[..., 0], RGBA[..., 3]
PALETTE = np.array([(230, 30, 30), (30, 200, 40), (40, 60, 220), (240, 220, 50)], np.uint8)
INDICES = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
# Process colours (cyan, magenta, yellow, black alone, then mixtures) in JPEG-sized blocks.
CMYK = Image.fromarray(blocks([[(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 128)],
                               [(40, 90, 160, 30), (10, 200, 30, 90), (255, 255, 255, 255), (0, 0, 0, 0)]]),
                       "CMYK")


def palette_image() -> Image.Image:
    image = Image.fromarray(INDICES, "P")
    image.putpalette(PALETTE.tobytes())
    return image


def as_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


# name: (image, format, save options, expected RGB pixels, tolerance)
EIGHT_BIT_MODES = {
    "rgba-png": (Image.fromarray(RGBA, "RGBA"), "PNG", {}, RGBA[..., :3], 0),
    "rgba-tiff": (Image.fromarray(RGBA, "RGBA"), "TIFF", {}, RGBA[..., :3], 0),
    "rgba-webp": (Image.fromarray(RGBA, "RGBA"), "WEBP", {"lossless": True, "exact": True}, RGBA[..., :3], 0),
    "la-png": (Image.fromarray(np.stack([GREY, ALPHA], -1), "LA"), "PNG", {}, as_rgb(GREY), 0),
    "l-png": (Image.fromarray(GREY, "L"), "PNG", {}, as_rgb(GREY), 0),
    "1bit-png": (Image.fromarray(GREY > 100), "PNG", {}, as_rgb(np.where(GREY > 100, 255, 0)), 0),
    "palette-png": (palette_image(), "PNG", {}, PALETTE[INDICES], 0),
    "palette-gif": (palette_image(), "GIF", {}, PALETTE[INDICES], 0),
    "palette-transparent-index-png": (palette_image(), "PNG", {"transparency": 2}, PALETTE[INDICES], 0),
    "palette-transparent-index-gif": (palette_image(), "GIF", {"transparency": 2}, PALETTE[INDICES], 0),
    "palette-alpha-per-index-png": (palette_image(), "PNG", {"transparency": bytes([255, 128, 1, 0])},
                                    PALETTE[INDICES], 0),
    "cmyk-tiff": (CMYK, "TIFF", {}, np.asarray(CMYK.convert("RGB")), 0),
    "cmyk-jpeg": (CMYK, "JPEG", JPEG, np.asarray(CMYK.convert("RGB")), JPEG_TOLERANCE),
}


@pytest.mark.parametrize("image, fmt, options, expected, tolerance", list(EIGHT_BIT_MODES.values()),
                         ids=list(EIGHT_BIT_MODES))
def test_eight_bit_modes_become_these_rgb_pixels(image, fmt, options, expected, tolerance):
    """Alpha is dropped (no compositing), grey is repeated, palette indices give their colours
    whatever their transparency, and CMYK converts as Pillow converts it."""
    assert_pixels(decoded(saved(image, fmt, **options)), expected, tolerance)


def test_palette_with_alpha_made_in_memory_drops_the_alpha():
    image = palette_image().convert("PA")  # no format stores PA; Pillow's own operations make it
    image.putalpha(Image.fromarray(ALPHA))
    assert_pixels(np.asarray(to_rgb(image)), PALETTE[INDICES])


def test_full_palette_with_transparency_keeps_its_colours():
    image = Image.new("P", (16, 16))
    colours = np.array([(index, 255 - index, index // 2) for index in range(256)], np.uint8)
    image.putpalette(colours.tobytes())
    image.putdata(list(range(256)))
    pixels = decoded(saved(image, "PNG", transparency=bytes(range(256))))
    assert_pixels(pixels, colours.reshape(16, 16, 3))


# --- 16/32-bit and float grey ---------------------------------------------------------------


@pytest.mark.parametrize(
    "levels, fmt, expected",
    [
        # Levels over 255: divided by 257 and rounded (v >> 8 would give 0, 0, 0, 3, 128, 253, 255).
        (np.array([0, 128, 200, 1000, 32896, 65000, 65535], np.uint16), "PNG", [0, 0, 1, 4, 128, 253, 255]),
        (np.array([0, 200, 1000, 65535], ">u2"), "TIFF", [0, 1, 4, 255]),
        (np.array([0, 7, 128, 255], np.uint16), "PNG", [0, 7, 128, 255]),  # levels within 0..255 kept
        (np.array([-5, 0, 300, 70000], np.int32), "TIFF", [0, 0, 1, 255]),  # clipped to 0..255
        # 0..1 floats times 255, rounded half to even (127.5 gives 128), negatives clipped.
        (np.array([0.0, 0.25, 0.5, 1.0, -0.5], np.float32), "TIFF", [0, 64, 128, 255, 0]),
        (np.array([-20.0, 0.0, 1.5, 300.0, 65535.0], np.float32), "TIFF", [0, 0, 0, 1, 255]),
        (np.array([0.0, 2.0, 100.4, 255.0], np.float32), "TIFF", [0, 2, 100, 255]),
    ],
    ids=["16bit", "16bit-big-endian", "16bit-holding-8bit", "32bit-signed", "float-unit", "float-wide",
         "float-8bit"],
)
def test_wide_grey_levels_map_to_the_documented_8bit_values(levels, fmt, expected):
    image = Image.fromarray(levels[None, :])
    assert image.mode != "L"  # the source really is wide
    assert_pixels(decoded(saved(image, fmt)), as_rgb(np.array([expected], np.uint8)))


def png_rgb16(levels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of ``levels`` (H, W, 3), which Pillow cannot write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = levels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in levels)  # filter byte 0 a row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_16bit_colour_png_keeps_the_high_byte():
    """Pillow's PNG decoder hands 16-bit colour over as 8-bit RGB already, keeping each level's
    high byte; that is within one level of the grey rule (levels / 257, rounded)."""
    levels = np.array([[(200, 1000, 65000), (65535, 32896, 384), (0, 255, 256)]], np.uint16)
    pixels = decoded(png_rgb16(levels))
    assert_pixels(pixels, (levels >> 8).astype(np.uint8))
    assert_pixels(pixels, np.rint(levels / 257).astype(np.uint8), tolerance=1)


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


def test_mpo_camera_files_are_accepted():
    frames = [Image.new("RGB", (32, 24), (200, 10, 10)), Image.new("RGB", (32, 24), (10, 200, 10))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "MPO", save_all=True, append_images=frames[1:])
    first = decode_image(buffer.getvalue(), max_pixels=MAX_PIXELS)
    assert first.size == (32, 24) and np.asarray(first)[0, 0, 0] > 150


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animations_give_their_first_frame_without_reading_the_others(fmt, monkeypatch):
    frames = [Image.new("RGB", (16, 16), (index % 256, 0, 255 - index % 256)) for index in range(2000)]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=10, lossless=True)
    sought: list[int] = []
    monkeypatch.setattr(Image.Image, "seek", lambda self, frame: sought.append(frame))
    first = decode_image(buffer.getvalue(), max_pixels=MAX_PIXELS)
    assert sought == [] and np.asarray(first)[0, 0].tolist() == [0, 0, 255]
