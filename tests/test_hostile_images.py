"""Hostile images: memory bounded by the model's input, not by the image's shape or depth.

Peak memory is measured in a subprocess (Pillow's C allocations are invisible to
``tracemalloc``): after a warm-up, the child resets its peak RSS (``/proc/self/clear_refs``)
and reports how far ``VmHWM`` rose above its resident size then. ``ru_maxrss`` would not do:
after ``exec`` it starts from the forking parent's (the test process's) resident size. An
address-space limit makes a runaway allocation fail fast instead of straining the machine.
In-process checks bound the largest resize target of each family's transform.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import torchvision.transforms.v2.functional as tvF
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

from embedding_server.http_api.errors import ApiError
from embedding_server.media.images import decode_image
from models.catalogue import find_model
from runners.preparers import geometry
from helpers import TEST_MODEL_ID, embed
from samples import b64, encoded, random_image

REPO = Path(__file__).resolve().parent.parent
MAX_PIXELS = 64_000_000
MiB = 1024 * 1024
PIL_RESIZE, TENSOR_RESIZE = Image.Image.resize, tvF.resize  # before any test patches them
UINT8_RESIZE = geometry.resize_uint8_antialiased
# What the child may allocate beyond its baseline before an allocation fails.
ADDRESS_SPACE_HEADROOM = 2048 * MiB
# A decoded image held by Pillow (4 bytes a pixel) and as a numpy array (3), plus bounded chunks:
# about 3.3 times its RGB bytes measured; a float64 copy of it would add 8 more.
LARGE_IMAGE_PEAK_FACTOR = 4.5

CHILD = r"""
import json, resource, sys
import numpy as np
from PIL import Image
from embedding_server.media.images import decode_image

mode, data_path, entry, model_id = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5]
data = open(data_path, "rb").read()
if mode == "prepare":
    from models.catalogue import find_model
    prepare = find_model(model_id).adapter.load_image_preparer(__import__("pathlib").Path(entry))
    prepare(Image.fromarray(np.zeros((200, 300, 3), np.uint8)))  # warm-up: lazy allocations
    run = lambda: prepare(decode_image(data, max_pixels=64_000_000)).shape
else:
    run = lambda: decode_image(data, max_pixels=64_000_000).size
def status(key):
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(key))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (status("VmSize:") + int(sys.argv[4]), resource.RLIM_INFINITY))
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # resets VmHWM to the resident size now
baseline = status("VmRSS:")
try:
    result, error = list(run()), None
except Exception as caught:
    result, error = None, f"{type(caught).__name__}: {caught}"[:200]
print(json.dumps({"result": result, "error": error, "peak_bytes": status("VmHWM:") - baseline}))
"""


def child_peak(mode: str, data: bytes, tmp_path: Path, entry: Path | None = None,
               model_id: str = TEST_MODEL_ID) -> dict:
    """Decode (and with ``mode="prepare"`` prepare for ``entry``, a tiny entry of ``model_id``)
    ``data`` in a fresh interpreter; its result and the growth of its peak RSS over the
    warmed-up baseline."""
    source = tmp_path / "image.bin"
    source.write_bytes(data)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(source), str(entry or ""),
                           str(ADDRESS_SPACE_HEADROOM), model_id],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=environment)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


# --- extreme aspect ratios --------------------------------------------------------------


@pytest.mark.parametrize("size", [(60000, 1), (1, 60000)], ids=["60000x1", "1x60000"])
def test_extreme_aspect_ratio_prepares_within_a_few_megabytes(tiny_entry, tmp_path, size):
    # Resizing the shorter side to 224 first would make a 13,440,000x224 RGB intermediate (12 GB
    # in Pillow); what the centre crop keeps is 224x224.
    decoded_rgb = size[0] * size[1] * 3
    measured = child_peak("prepare", png(random_image(*size, seed=1)), tmp_path, tiny_entry)
    assert measured["error"] is None, measured["error"]
    assert measured["result"] == [224, 224, 3]
    assert measured["peak_bytes"] < 10 * decoded_rgb + 16 * MiB, measured


def test_a_large_image_prepares_for_a_hugging_face_family_without_wide_copies(tiny_import, tmp_path):
    """The numpy port of torchvision's resize works through the image in bounded chunks: a
    24-megapixel image costs its decoded pixels and little more, never a float64 copy of it
    (8 bytes a value: 8 times the decoded image)."""
    side_w, side_h = 6000, 4000
    gradient = np.add.outer(np.arange(side_h) // 16, np.arange(side_w) // 24).astype(np.uint8)
    image = Image.fromarray(np.stack([gradient, gradient[::-1], gradient[:, ::-1]], axis=-1))
    decoded_rgb = side_w * side_h * 3
    measured = child_peak("prepare", png(image), tmp_path, tiny_import("CN-CLIP/cn-clip-vit-b-16"),
                          model_id="CN-CLIP/cn-clip-vit-b-16")
    assert measured["error"] is None, measured["error"]
    assert measured["result"] == [224, 224, 3]
    assert measured["peak_bytes"] < LARGE_IMAGE_PEAK_FACTOR * decoded_rgb + 64 * MiB, measured


# Each family's own resize, the largest target it was asked for, and a cap that fails fast.
# A cut image resizes to at most twice INTERMEDIATE_BUDGET (16) outputs; 256 is the largest input here.
RESIZE_BUDGET = 2 * 16 * 256 * 256


@pytest.fixture
def bounded_resizes(monkeypatch) -> Iterator[list[int]]:
    """Records the pixel count of every resize target (Pillow's, torchvision's tensor resize,
    which the Hugging Face processors use, and the preparers' numpy port of it) and refuses any
    beyond :data:`RESIZE_BUDGET`."""
    targets: list[int] = []
    def check(pixels: int) -> None:
        targets.append(pixels)
        if pixels > RESIZE_BUDGET:
            raise AssertionError(f"resize to {pixels} pixels, over the budget of {RESIZE_BUDGET}")

    def resize_image(self, size, *args, **kwargs):
        check(size[0] * size[1])
        return PIL_RESIZE(self, size, *args, **kwargs)

    def resize_tensor(image, size, *args, **kwargs):
        check(size[0] * size[1])
        return TENSOR_RESIZE(image, size, *args, **kwargs)

    def resize_array(pixels, size, *args, **kwargs):
        check(size[0] * size[1])
        return UINT8_RESIZE(pixels, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize_image)
    monkeypatch.setattr(tvF, "resize", resize_tensor)
    monkeypatch.setattr(geometry, "resize_uint8_antialiased", resize_array)
    yield targets


FAMILIES = ["CLIP/clip-vit-b-32", "mobileclip_s1", "mobileclip_s0", "cn-clip-vit-b-16"]


@pytest.fixture(scope="module")
def entries(tiny_entry: Path, tiny_import: Callable[[str], Path]) -> dict[str, Path]:
    """Tiny entries of a family of each preparer that centre-crops, and of SigLIP2 (squash)."""
    return {"CLIP/clip-vit-b-32": tiny_entry,
            **{name: tiny_import(find_model(name).id) for name in FAMILIES[1:] + ["siglip2-vit-b-16"]}}


def family_reference(name: str, entry: Path) -> Callable[[Image.Image], np.ndarray]:
    """The family library's own transform, as uint8 ``(H, W, 3)``."""
    if name == "cn-clip-vit-b-16":
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(entry, local_files_only=True)
        return lambda image: np.asarray(processor(image, do_rescale=False, do_normalize=False,
                                                  return_tensors="np")["pixel_values"][0]
                                        ).transpose(1, 2, 0).round().astype(np.uint8)
    if name == "mobileclip_s0":
        transform = Compose([Resize(256, interpolation=InterpolationMode.BILINEAR), CenterCrop(256)])
        return lambda image: np.asarray(transform(image))
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    config = json.loads((entry / "open_clip_config.json").read_text())["preprocess_cfg"]
    steps = image_transform_v2(PreprocessCfg(**config), is_train=False).transforms
    cut = next(i for i, step in enumerate(steps) if isinstance(step, open_clip.transform.MaybeToTensor))
    return lambda image: np.asarray(Compose(steps[:cut])(image))


# Shapes whose full intermediate is still computable for the reference (up to 50 M pixels).
# Where the scale factor is exact (a short side of 1) the pixels are equal.
EXACT = [(1000, 1), (1, 1000)]
CLOSE = [(2999, 7), (1000, 13), (13, 1000), (3001, 3), (60, 1000), (4000, 37)]


@pytest.mark.parametrize("name", FAMILIES)
def test_extreme_aspect_ratio_stays_within_budget_and_matches_the_family(entries, name, bounded_resizes):
    preparer = find_model(name).adapter.load_image_preparer(entries[name])
    images = {size: random_image(*size, seed=size[0] + size[1]) for size in EXACT + CLOSE}
    prepared = {size: preparer(image) for size, image in images.items()}
    assert bounded_resizes and max(bounded_resizes) <= RESIZE_BUDGET
    bounded_resizes.clear()
    with pytest.MonkeyPatch.context() as unbounded:  # the reference's own huge intermediate
        unbounded.setattr(Image.Image, "resize", PIL_RESIZE)
        unbounded.setattr(tvF, "resize", TENSOR_RESIZE)
        reference = family_reference(name, entries[name])
        for size, image in images.items():
            expected = reference(image)
            difference = np.abs(prepared[size].astype(int) - expected.astype(int))
            if size in EXACT:
                assert difference.max() == 0, (size, difference.max())
            else:  # a sub-pixel drift at most: noise images are the worst case
                assert difference.max() <= 3 and difference.mean() < 0.25, (size, difference.max())


def test_squash_transforms_see_the_whole_image(entries, bounded_resizes):
    """SigLIP2 squashes the whole image into its input: nothing may be cut from it."""
    preparer = find_model("siglip2-vit-b-16").adapter.load_image_preparer(entries["siglip2-vit-b-16"])
    reference = family_reference("siglip2-vit-b-16", entries["siglip2-vit-b-16"])
    image = random_image(20000, 2, seed=4)
    np.testing.assert_array_equal(preparer(image), reference(image))
    assert max(bounded_resizes) == 224 * 224


# --- 16-bit and float images ----------------------------------------------------------------


def test_16bit_image_decodes_without_wide_temporaries(tmp_path):
    side = 4000
    levels = (np.add.outer(np.arange(side, dtype=np.uint32) * 13, np.arange(side, dtype=np.uint32) * 7)
              % 65536).astype(np.uint16)
    measured = child_peak("decode", png(Image.fromarray(levels)), tmp_path)
    assert measured["error"] is None and measured["result"] == [side, side]
    # The 16-bit image itself (2 bytes a pixel), its 8-bit grey and RGB (Pillow keeps RGB in
    # 4 bytes): about 7 bytes a pixel; float64 levels would add 8 bytes a pixel per temporary.
    assert measured["peak_bytes"] < 2.5 * side * side * 3 + 32 * MiB, measured


# --- formats ------------------------------------------------------------------------------


REFUSED = {
    "ico": encoded(Image.new("RGB", (16, 16), (1, 2, 3)), "ICO"),
    "pcx": encoded(Image.new("RGB", (16, 16), (1, 2, 3)), "PCX"),
    "sgi": encoded(Image.new("RGB", (16, 16), (1, 2, 3)), "SGI"),
    "tga": encoded(Image.new("RGB", (16, 16), (1, 2, 3)), "TGA"),
    "xbm": encoded(Image.new("1", (16, 16), 1), "XBM"),
    "ppm": encoded(Image.new("RGB", (16, 16), (1, 2, 3)), "PPM"),
    "eps": encoded(Image.new("RGB", (16, 16), (1, 2, 3)), "EPS"),
    "psd": (b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + (16).to_bytes(4, "big") * 2 + b"\x00\x08\x00\x03"
            + b"\x00" * 12 + b"\x00\x00" + b"\x00" * (16 * 16 * 3)),
}


@pytest.mark.parametrize("data", list(REFUSED.values()), ids=list(REFUSED))
def test_formats_outside_the_allow_list_are_422_naming_the_accepted(api_client, data):
    response = embed(api_client, {"type": "image_base64", "image_base64": b64(data)})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("Invalid input data: data is not a decodable image")
    assert "accepted formats: JPEG, PNG, WEBP, GIF, BMP, TIFF (JPEG includes MPO)" in detail


# --- JPEG draft decoding ---------------------------------------------------------------------


def photo_like(width: int, height: int) -> Image.Image:
    """Smooth shapes with some texture, closer to a photograph than noise is."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    texture = np.random.default_rng(0).normal(0, 6, (height, width)).astype(np.float32)
    channels = [128 + 90 * np.sin(7 * u + 3 * v) + texture,
                128 + 90 * np.cos(11 * u * v + 5 * v) + texture,
                255 * ((u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.1) * 0.8 + 30 + texture]
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def best_of(runs: int, work: Callable[[], object]) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def test_large_jpeg_decodes_at_reduced_scale_faster_and_nearly_equal(tiny_entry):
    from runners.families.open_clip import OPEN_CLIP

    prepare = OPEN_CLIP.load_image_preparer(tiny_entry)
    data = encoded(photo_like(4000, 3000), "JPEG")
    full = decode_image(data, max_pixels=MAX_PIXELS)
    drafted = decode_image(data, max_pixels=MAX_PIXELS, min_side=448)
    assert drafted.size == (1000, 750)  # 1/4: both sides stay >= 448; 1/8 would not
    difference = np.abs(prepare(drafted).astype(int) - prepare(full).astype(int))
    assert difference.mean() < 2.0 and np.percentile(difference, 99) < 12, difference.mean()
    full_time = best_of(3, lambda: prepare(decode_image(data, max_pixels=MAX_PIXELS)))
    draft_time = best_of(3, lambda: prepare(decode_image(data, max_pixels=MAX_PIXELS, min_side=448)))
    assert draft_time < 0.5 * full_time, (draft_time, full_time)


def test_image_inputs_ask_for_a_draft_of_twice_the_model_input(api_client, monkeypatch):
    from PIL import JpegImagePlugin

    requested: list[tuple] = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def recording(self, mode, size):
        requested.append(size)
        return draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording)
    photo = b64(encoded(photo_like(1200, 900), "JPEG"))
    response = embed(api_client, {"type": "image_base64", "image_base64": photo})
    assert response.status_code == 200
    assert requested == [(448, 448)]


def test_draft_keeps_exif_orientation():
    image = photo_like(2000, 1000)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    decoded = decode_image(buffer.getvalue(), max_pixels=MAX_PIXELS, min_side=448)
    assert decoded.size == (500, 1000)


def test_pixel_cap_is_checked_on_the_full_size_not_the_draft():
    data = encoded(photo_like(2000, 1500), "JPEG")
    with pytest.raises(ApiError) as refused:
        decode_image(data, max_pixels=2_000_000, min_side=224)
    assert refused.value.status_code == 422 and "2000x1500 pixels exceeds" in refused.value.detail
