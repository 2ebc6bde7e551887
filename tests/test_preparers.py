"""Every family's image preparer (the entry side: resize and crop to uint8 pixels) against the
family's own transform, pixel for pixel, on asymmetric images (landscape, portrait, and one
small enough to be upscaled); the family's own transform against its documented geometry;
and the whole path (preparer, then the Encoder's normalisation) against the input tensor the
family's own transform gives its image tower.

Pixels are compared exactly: a preparer runs its family's own resize (open_clip and Apple's
transform: torchvision on PIL images, i.e. PIL's; the transformers processors: torchvision on
uint8 tensors), and each reference's normalised tensor maps back to whole levels. The images
tell every documented geometry apart from one with another filter, without its crop (or with
one it does not have) or resizing the longer side, so a preparer changed in any of those ways
fails here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, Normalize
from torchvision.transforms.v2 import functional as tvF
from transformers import AutoImageProcessor

from models.catalogue import CatalogueModel, find_model
from samples import apple_mobileclip_preprocess, asymmetric_image

BICUBIC, BILINEAR = Image.Resampling.BICUBIC, Image.Resampling.BILINEAR
# Landscape and portrait images to be downscaled, whose resized longer side leaves an odd
# margin (so floor and round-half-even centre the crop differently: 335x211 at 224, 180x320
# at 256), and one to be upscaled.
IMAGES = {"landscape": (335, 211), "portrait": (180, 320), "small": (45, 30)}
# A preparer that differs from the reference anywhere fails (exact comparison); a wrong
# geometry must move some pixel at least this many levels on the images above (another filter
# moves the edges' pixels by 11 to 24, a wrong crop or side most pixels by 150 or more).
WRONG_GEOMETRY_LEVELS = 8


@dataclass(frozen=True)
class Geometry:
    """A family's documented preprocessing: a ``size`` x ``size`` square, by resizing the
    shorter side and cropping the centre (``crop``), or by squashing the whole image.

    ``hugging_face``: resized as the transformers processors resize (torchvision on uint8
    tensors, whose antialiasing kernels differ from PIL's by a level or two), the crop offset
    rounded down; else as PIL resizes and torchvision's ``CenterCrop`` centres (rounding).
    """

    size: int
    resample: Image.Resampling
    crop: bool
    hugging_face: bool = False
    longer_side: bool = False  # resize the longer side instead (a mistake the tests must catch)

    def __call__(self, image: Image.Image) -> np.ndarray:
        if not self.crop:
            return np.asarray(self._resized(image, (self.size, self.size)))
        short, long = sorted(image.size)
        # The other side rounds down, as torchvision's Resize(int) and the processors'
        # shortest_edge resize round it.
        sides = ((int(self.size * short / long), self.size) if self.longer_side
                 else (self.size, int(self.size * long / short)))
        resized = self._resized(image, sides if image.width <= image.height else sides[::-1])
        offset = math.floor if self.hugging_face else round
        left, top = (offset((length - self.size) / 2) for length in resized.size)
        return np.asarray(resized.crop((left, top, left + self.size, top + self.size)))  # pads where smaller

    def __str__(self) -> str:
        kind = "crop" if self.crop else "squash"
        return f"{self.size}-{self.resample.name.lower()}-{kind}{'-hugging-face' if self.hugging_face else ''}"

    def _resized(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        if not self.hugging_face:
            return image.resize(size, self.resample)
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        resized = tvF.resize(pixels, [size[1], size[0]], InterpolationMode[self.resample.name], antialias=True)
        return Image.fromarray(resized.permute(1, 2, 0).numpy())


CENTRE_CROP_224 = Geometry(224, BICUBIC, crop=True)
FAMILIES: dict[str, Geometry] = {
    "CLIP/clip-vit-b-32": CENTRE_CROP_224,
    "MobileCLIP/mobileclip_s0": Geometry(256, BILINEAR, crop=True),
    "MobileCLIP/mobileclip_s1": Geometry(256, BILINEAR, crop=True),
    "MobileCLIP/mobileclip_s2": Geometry(256, BILINEAR, crop=True),
    "MobileCLIP/mobileclip_b": Geometry(224, BILINEAR, crop=True),
    "MobileCLIP/mobileclip_blt": Geometry(224, BILINEAR, crop=True),
    "SigLIP/siglip2-vit-b-16": Geometry(224, BICUBIC, crop=False),
    "SigLIP/siglip2-vit-l-16": Geometry(256, BICUBIC, crop=False),
    "SigLIP/siglip2-so400m-patch16-384": Geometry(384, BICUBIC, crop=False),
    "CN-CLIP/cn-clip-vit-b-16": replace(CENTRE_CROP_224, hugging_face=True),
    "CN-CLIP/cn-clip-vit-l-14": replace(CENTRE_CROP_224, hugging_face=True),
    "CN-CLIP/cn-clip-vit-h-14": replace(CENTRE_CROP_224, hugging_face=True),
    "Blip2/blip2_transformers": Geometry(224, BICUBIC, crop=False, hugging_face=True),
}
# The module of each adapter's model that takes the normalised pixels.
IMAGE_TOWERS = {"open_clip": "visual", "mobileclip_s0": "image_encoder", "chinese_clip": "vision_model",
                "blip2": "vision_model"}
# The runners normalise as their references do, operation for operation (exactly), except the
# transformers ones: they fuse rescaling into mean and std themselves, one float32 rounding
# away from the processors' own fusion (3.6e-7 at most here).
NORMALISATION_ATOL = {"chinese_clip": 1e-6, "blip2": 1e-6}


def column(values: object) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32).view(-1, 1, 1)


@dataclass
class OwnTransform:
    """A family's own preprocessing, image to normalised ``(3, H, W)`` tensor, and the affine
    map back to pixel levels (``level = tensor * scale + shift``)."""

    transform: Callable[[Image.Image], torch.Tensor]
    scale: torch.Tensor
    shift: torch.Tensor

    def levels(self, image: Image.Image) -> np.ndarray:
        """The transform's pixels as uint8 ``(H, W, 3)``; they must be whole levels."""
        values = (self.transform(image) * self.scale + self.shift).permute(1, 2, 0).numpy()
        assert np.abs(values - np.rint(values)).max() < 1e-3  # nothing finer than a level
        return np.rint(values).astype(np.uint8)


def own_transform(model: CatalogueModel, entry: Path) -> OwnTransform:
    """open_clip's ``preprocess`` for the entry, Apple's MobileCLIP transform, or the entry's
    Hugging Face image processor."""
    if model.adapter.name == "open_clip":
        _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{entry}")
        normalise = next(step for step in preprocess.transforms if isinstance(step, Normalize))
        return OwnTransform(preprocess, 255 * column(normalise.std), 255 * column(normalise.mean))
    if model.adapter.name == "mobileclip_s0":
        return OwnTransform(apple_mobileclip_preprocess(model.image_size), column(255), column(0))
    processor = AutoImageProcessor.from_pretrained(entry)
    factor = processor.rescale_factor
    return OwnTransform(lambda image: processor(images=image, return_tensors="pt")["pixel_values"][0],
                        column(processor.image_std) / factor, column(processor.image_mean) / factor)


@dataclass
class Family:
    model: CatalogueModel
    entry: Path
    own: OwnTransform


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest, tiny_import: Callable[[str], Path]) -> Family:
    model, entry = find_model(request.param), tiny_import(request.param)
    return Family(model, entry, own_transform(model, entry))


@pytest.mark.parametrize("shape", list(IMAGES))
def test_preparer_pixels_are_the_families_own(family: Family, shape: str):
    image = asymmetric_image(*IMAGES[shape])
    pixels = family.model.adapter.load_image_preparer(family.entry)(image)
    size = family.model.image_size
    assert pixels.dtype == np.uint8 and pixels.shape == (size, size, 3)
    np.testing.assert_array_equal(pixels, family.own.levels(image))


@pytest.mark.parametrize("shape", list(IMAGES))
def test_families_own_transform_is_the_documented_geometry(family: Family, shape: str):
    image = asymmetric_image(*IMAGES[shape])
    np.testing.assert_array_equal(family.own.levels(image), FAMILIES[family.model.id](image))


def wrong_geometries(geometry: Geometry) -> dict[str, Geometry]:
    """The mistakes a preparer could make with ``geometry``."""
    other_filter = BILINEAR if geometry.resample == BICUBIC else BICUBIC
    mistakes = {"other filter": replace(geometry, resample=other_filter),
                "crop toggled": replace(geometry, crop=not geometry.crop)}
    if geometry.crop:
        mistakes["longer side resized"] = replace(geometry, longer_side=True)
    return mistakes


@pytest.mark.parametrize("geometry", sorted(set(FAMILIES.values()), key=str), ids=str)
def test_the_images_tell_a_wrong_geometry_apart(geometry: Geometry):
    images = [asymmetric_image(*size) for size in IMAGES.values()]
    for mistake, wrong in wrong_geometries(geometry).items():
        moved = max(np.abs(wrong(image).astype(int) - geometry(image)).max() for image in images)
        assert moved >= WRONG_GEOMETRY_LEVELS, mistake


def test_full_path_gives_the_families_own_input_tensor(family: Family):
    """Preparer, then the runner's normalisation: the tensor that reaches the image tower."""
    adapter = family.model.adapter
    runner, preparer = adapter.load_runner(family.entry), adapter.load_image_preparer(family.entry)
    images = [asymmetric_image(*size) for size in IMAGES.values()]
    tower = getattr(runner.towers().image.owner, IMAGE_TOWERS[family.model.adapter.name])
    seen: list[torch.Tensor] = []
    hook = tower.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(args[0] if args else kwargs["pixel_values"]), with_kwargs=True)
    try:
        runner.encode_images(np.stack([preparer(image) for image in images]))
    finally:
        hook.remove()
    expected = torch.stack([family.own.transform(image) for image in images])
    atol = NORMALISATION_ATOL.get(family.model.adapter.name, 0.0)
    torch.testing.assert_close(seen[0], expected, atol=atol, rtol=0)
