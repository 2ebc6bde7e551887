"""The geometry of the families' image preprocessing (resize, centre crop), without torch.

The entry process prepares uint8 pixels and must not import torch, torchvision, open_clip or
transformers, so :class:`GeometryPreparer` re-does what their transforms do to an image's
geometry with Pillow and numpy, pixel for pixel:

* ``"pil"``: open_clip's and MobileCLIP's torchvision v1 ``Resize`` / ``CenterCrop`` on PIL
  images: PIL's own resize, then a centre crop whose offsets round half to even, after
  zero padding where the crop is larger than the image.
* ``"torchvision_uint8"``: the Hugging Face fast (torchvision) image processors: ATen's
  native uint8 antialiased resize (:func:`~.resizing.resize_uint8_antialiased`), then the
  processors' centre crop, whose offsets round down, after the same zero padding.

:func:`geometry_from_open_clip` and :func:`geometry_from_hf_processor` read the geometry from
an entry's configuration and refuse what these two do not reproduce.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from runners.preparers.resizing import FILTERS, resize_pil, resize_uint8_antialiased

# Processors whose resize and crop are TorchvisionBackend's own (no overrides), with their
# class's default_to_square (how a legacy int size reads).
CLIP_LIKE_PROCESSORS: dict[str, bool] = {
    "CLIPImageProcessor": False,
    "ChineseCLIPImageProcessor": False,
    "BlipImageProcessor": True,
}

ResizeMode = Literal["shortest", "squash"]
Resizer = Literal["pil", "torchvision_uint8"]
ImageGuard = Callable[[Image.Image], Image.Image]

RESIZE_MODES: tuple[ResizeMode, ...] = ("shortest", "squash")


def resized_long_side(short: int, long: int, shorter_side: int) -> int:
    """The long side after resizing the short side to ``shorter_side``, rounded as torchvision's
    ``Resize(int)`` and the Hugging Face processors' ``shortest_edge`` resize round it."""
    return int(shorter_side * long / short)
RESIZERS: tuple[Resizer, ...] = ("pil", "torchvision_uint8")


@dataclass(frozen=True)
class ImageGeometry:
    """How a preprocessing resizes and crops: ``"shortest"`` resizes the shorter side to
    ``shorter_side`` and the other to ``int(shorter_side * long / short)``, then centre-crops
    ``crop``; ``"squash"`` resizes to ``squash_size``, then centre-crops ``crop`` if given.
    Sizes are (height, width)."""

    resize_mode: ResizeMode
    resample: Image.Resampling
    resizer: Resizer
    shorter_side: int | None = None
    squash_size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.resizer not in RESIZERS:
            raise ValueError(f"unknown resizer {self.resizer!r}; expected one of {RESIZERS}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize_mode!r}; expected one of {RESIZE_MODES}")
        if self.resizer == "torchvision_uint8" and self.resample not in FILTERS:
            raise ValueError(f"the torchvision uint8 resize is reproduced for bilinear and bicubic only, "
                             f"not {self.resample!r}")
        if self.resize_mode == "shortest":
            if self.shorter_side is None or self.shorter_side < 1 or self.squash_size is not None:
                raise ValueError("a shortest-side resize needs a positive shorter_side and no squash_size")
            if self.crop is None:
                raise ValueError("a shortest-side resize without a crop has no fixed output size")
        elif self.squash_size is None or min(self.squash_size) < 1 or self.shorter_side is not None:
            raise ValueError("a squash resize needs a positive squash_size and no shorter_side")
        if self.crop is not None and min(self.crop) < 1:
            raise ValueError(f"crop must be positive, got {self.crop}")

    @property
    def shorter_side_and_crop(self) -> tuple[int, tuple[int, int]] | None:
        """What a centre-crop guard needs, for a shortest-side resize followed by a crop;
        None for a squash, which keeps the whole image."""
        if self.resize_mode != "shortest" or self.shorter_side is None or self.crop is None:
            return None
        return self.shorter_side, self.crop

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) an image of this size is resized to."""
        if self.squash_size is not None:
            return self.squash_size
        assert self.shorter_side is not None
        short, long = (width, height) if width <= height else (height, width)
        new_long = resized_long_side(short, long, self.shorter_side)
        return (new_long, self.shorter_side) if width <= height else (self.shorter_side, new_long)


def _round_half_even_offset(excess: int) -> int:
    return int(round(excess / 2.0))


def _floor_offset(excess: int) -> int:
    return int(excess / 2.0)


def _crop_origin(
    height: int, width: int, crop: tuple[int, int], offset: Callable[[int], int]
) -> tuple[int, int]:
    """(top, left) in the image of torchvision's and the processors' ``center_crop``: where
    the crop is larger, the image is first zero-padded by half the excess (the odd pixel
    going after), so the crop starts that far before it; ``offset`` rounds the margin."""
    crop_height, crop_width = crop
    top = -((crop_height - height) // 2) if crop_height > height else offset(height - crop_height)
    left = -((crop_width - width) // 2) if crop_width > width else offset(width - crop_width)
    return top, left


def _crop_array(pixels: np.ndarray, top: int, left: int, crop: tuple[int, int]) -> np.ndarray:
    """The ``crop`` (height, width) of (H, W, C) ``pixels`` from (top, left), zeros outside."""
    crop_height, crop_width = crop
    height, width = pixels.shape[:2]
    out = np.zeros((crop_height, crop_width, pixels.shape[2]), pixels.dtype)
    rows = slice(max(top, 0), min(top + crop_height, height))
    columns = slice(max(left, 0), min(left + crop_width, width))
    out[rows.start - top : rows.stop - top, columns.start - left : columns.stop - left] = pixels[rows, columns]
    return out


def _processor_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) pixels as the Hugging Face processors convert a PIL image to RGB: any
    transparency composited onto white, other modes converted."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


class GeometryPreparer:
    """Prepares a PIL image as :class:`ImageGeometry` says: (H, W, 3) uint8 pixels.

    The image becomes RGB first, where the processors and MobileCLIP convert. open_clip
    converts after its resize and crop instead: the same pixels for RGB and greyscale images
    (PIL resizes channel by channel), and the decoder's images are RGB, but not for images
    with alpha or a palette, which PIL resizes differently."""

    def __init__(self, geometry: ImageGeometry, guard: ImageGuard | None = None) -> None:
        self.geometry = geometry
        self._guard = guard

    def __call__(self, image: Image.Image) -> np.ndarray:
        if self._guard is not None:
            image = self._guard(image)
        geometry, crop = self.geometry, self.geometry.crop
        if geometry.resizer == "pil":
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            height, width = geometry.resized_size(rgb.height, rgb.width)
            resized = resize_pil(rgb, (width, height), geometry.resample)
            if crop is not None:
                top, left = _crop_origin(height, width, crop, _round_half_even_offset)
                resized = resized.crop((left, top, left + crop[1], top + crop[0]))  # zeros outside
            return np.array(resized, dtype=np.uint8)
        pixels = resize_uint8_antialiased(
            _processor_rgb(image), geometry.resized_size(image.height, image.width), geometry.resample
        )
        if crop is None:
            return pixels
        top, left = _crop_origin(pixels.shape[0], pixels.shape[1], crop, _floor_offset)
        return _crop_array(pixels, top, left, crop)


def _height_width(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")


def geometry_from_open_clip(preprocess_cfg: Mapping[str, Any]) -> ImageGeometry:
    """The geometry of open_clip's inference transform (``image_transform(..., is_train=False)``)
    for an entry's ``preprocess_cfg``: a square "shortest" size is ``Resize(int)`` then
    ``CenterCrop``, "squash" is ``Resize((h, w))``. "longest" (``ResizeKeepRatio`` and
    ``CenterCropOrPad``) and non-square "shortest" (``ResizeKeepRatio``) are not reproduced."""
    mode = preprocess_cfg.get("mode") or "RGB"
    if mode != "RGB":
        raise ValueError(f"open_clip preprocess mode {mode!r} is not supported; only 'RGB' is")
    interpolation = preprocess_cfg.get("interpolation") or "bicubic"
    if interpolation not in ("bicubic", "bilinear", "random"):
        raise ValueError(f"unknown open_clip interpolation {interpolation!r}")
    resample = Image.Resampling.BILINEAR if interpolation == "bilinear" else Image.Resampling.BICUBIC
    size = _height_width(preprocess_cfg.get("size", 224), "open_clip preprocess size")
    resize_mode = preprocess_cfg.get("resize_mode") or "shortest"
    if resize_mode == "squash":
        return ImageGeometry("squash", resample, "pil", squash_size=size)
    if resize_mode == "shortest" and size[0] == size[1]:
        return ImageGeometry("shortest", resample, "pil", shorter_side=size[0], crop=size)
    if resize_mode == "shortest":
        raise ValueError(f"open_clip resize_mode 'shortest' with the non-square size {size} "
                         f"(ResizeKeepRatio) is not supported")
    raise ValueError(f"open_clip resize_mode {resize_mode!r} is not supported; only 'shortest' "
                     f"(square) and 'squash' are")


def _processor_type(config: Mapping[str, Any]) -> str | None:
    """The processor class a config names, as ``AutoImageProcessor`` reads it: a legacy
    feature extractor's name maps to its image processor, and "Fast" names the same class."""
    name = config.get("image_processor_type")
    if name is None and config.get("feature_extractor_type") is not None:
        name = str(config["feature_extractor_type"]).replace("FeatureExtractor", "ImageProcessor")
    return name.removesuffix("Fast") if name is not None else None


def _processor_size(config: Mapping[str, Any], processor_type: str | None) -> dict[str, int]:
    """``size`` as a size dict, as ``get_size_dict`` reads it: a legacy int is a square if
    ``default_to_square`` (the config's, else the class's), else the shortest edge (as for
    the CLIP processors and a config that names no class); a pair is (height, width)."""
    size = config.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        square = config.get("default_to_square")
        if square is None:
            square = CLIP_LIKE_PROCESSORS.get(processor_type or "", False)
        return {"height": size, "width": size} if square else {"shortest_edge": size}
    if isinstance(size, Sequence) and not isinstance(size, str):
        height, width = _height_width(size, "processor size")
        return {"height": height, "width": width}
    if isinstance(size, Mapping):
        return {key: value for key, value in size.items() if value is not None}
    raise ValueError(f"processor size {size!r} is not a size dict")


def geometry_from_hf_processor(config: Mapping[str, Any]) -> ImageGeometry:
    """The geometry of a CLIP-like Hugging Face fast image processor from its
    ``preprocessor_config.json``: resize (``shortest_edge``, or ``height`` and ``width``), then
    the centre crop if ``do_center_crop``. Keys are read as ``save_pretrained`` writes them
    (every setting that is not None), so an absent ``do_center_crop`` crops nothing and an
    absent ``do_resize`` or ``resample`` is refused. The result is always RGB, which is what
    ``do_convert_rgb`` gives and what the decoder's RGB images are anyway."""
    processor_type = _processor_type(config)
    if processor_type is not None and processor_type not in CLIP_LIKE_PROCESSORS:
        raise ValueError(f"{processor_type} is not one of the CLIP-like processors reproduced: "
                         f"{', '.join(CLIP_LIKE_PROCESSORS)}")
    if not config.get("do_resize"):
        raise ValueError("processors that do not resize (do_resize false or unset) are not supported")
    if config.get("do_pad"):
        raise ValueError("processors that pad (do_pad) are not supported")
    if config.get("resample") is None:
        raise ValueError("the processor config does not say its resample filter")
    resample = Image.Resampling(config["resample"])
    if resample not in FILTERS:
        raise ValueError(f"processor resample {resample!r} is not supported; only bilinear and bicubic are")
    size = _processor_size(config, processor_type)
    for unsupported in ("longest_edge", "max_height", "max_width", "min_pixels", "max_pixels"):
        if unsupported in size:
            raise ValueError(f"processor size {size} uses {unsupported!r}, which is not supported")
    crop = None
    if config.get("do_center_crop"):
        crop = _height_width(_crop_pair(config.get("crop_size")), "crop_size")
    if "shortest_edge" in size:
        if crop is None:
            raise ValueError("a shortest_edge resize without do_center_crop has no fixed output size")
        shorter_side = int(size["shortest_edge"])
        return ImageGeometry("shortest", resample, "torchvision_uint8", shorter_side=shorter_side, crop=crop)
    if "height" in size and "width" in size:
        squash = (int(size["height"]), int(size["width"]))
        return ImageGeometry("squash", resample, "torchvision_uint8", squash_size=squash, crop=crop)
    raise ValueError(f"processor size {size} has neither shortest_edge nor height and width")


def _crop_pair(crop_size: Any) -> Any:
    """``crop_size`` as (height, width) or an int: a dict's height and width, else as given."""
    if isinstance(crop_size, Mapping):
        return crop_size.get("height"), crop_size.get("width")
    return crop_size
