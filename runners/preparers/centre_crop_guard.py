"""Keeps a shorter-side resize followed by a centre crop bounded for extreme aspect ratios.

Resizing the shorter side of a 60000x1 image to 224 makes a 13,440,000x224 intermediate
(9 GB of RGB) of which the centre crop keeps 224 columns. :class:`CentreCropGuard` runs
before such a transform and, only when the intermediate would be larger than both the image
and :data:`INTERMEDIATE_BUDGET` times the output, cuts the image down to the centred band
that survives the crop plus a margin for the resampling filter. Ordinary images are not cut,
so they get exactly the family's pixels (:mod:`runners.preparers.geometry`).

That happens only when the shorter side is upscaled (a downscaled intermediate is never
larger than the image), so the filter reaches :data:`FILTER_MARGIN` source pixels at most.
The band is centred on the image's centre and sized so that its resized length is congruent
to the full intermediate's modulo 4, so the crop offset rounds the same way (floor or
round-half-even): pixels equal the uncut transform's where the scale
factor is exact (as for 60000x1) and are within a fraction of a pixel of it otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from runners.preparers.geometry import GeometryPreparer, ImageGeometry, ImageGuard, resized_long_side

# The guard cuts an image only when the full-size intermediate exceeds this many outputs;
# a cut image's intermediate spans about this many outputs, which bounds the sub-pixel
# drift of the crop edges to 1 / (2 x INTERMEDIATE_BUDGET) of an output pixel.
INTERMEDIATE_BUDGET = 16

# Source pixels kept beyond the crop on each side: Lanczos' radius (3) plus one for rounding.
FILTER_MARGIN = 4
# Band lengths tried (in steps of two) for one whose resized length rounds the crop alike.
ALIGNMENT_TRIES = 32


@dataclass(frozen=True)
class CentreCropGuard:
    """Runs before "resize the shorter side to ``shorter_side``, centre-crop ``crop``"."""

    shorter_side: int
    crop: tuple[int, int]  # (height, width), as torchvision's CenterCrop.size

    def __call__(self, image: Image.Image) -> Image.Image:
        """``image``, or its centred band that the transform's crop keeps, with margin."""
        width, height = image.size
        landscape = width >= height
        short, long = (height, width) if landscape else (width, height)
        resized = resized_long_side(short, long, self.shorter_side)
        kept = self.crop[1] if landscape else self.crop[0]
        if resized * self.shorter_side <= max(short * long, INTERMEDIATE_BUDGET * kept * self.shorter_side):
            return image
        band = self._band(short, long, kept, resized)
        start = (long - band) // 2
        box = (start, 0, start + band, height) if landscape else (0, start, width, start + band)
        return image.crop(box)

    def _band(self, short: int, long: int, kept: int, resized: int) -> int:
        """Source length of the band: at least the kept part plus the margins and
        :data:`INTERMEDIATE_BUDGET` outputs once resized (never twice that), of the image's
        parity (so it is centred exactly), and preferably resizing to a length congruent to
        the full intermediate's modulo 4 (so the crop offset rounds the same way)."""
        needed = max(math.ceil(kept * short / self.shorter_side) + 2 * FILTER_MARGIN,
                     math.ceil(INTERMEDIATE_BUDGET * kept * short / self.shorter_side))
        first = needed + (long - needed) % 2
        for band in range(first, min(long, first + 2 * ALIGNMENT_TRIES), 2):
            length = resized_long_side(short, band, self.shorter_side)
            if length > 2 * INTERMEDIATE_BUDGET * kept:
                break
            if length % 4 == resized % 4:
                return band
        return min(first, long)


def unguarded(image: Image.Image) -> Image.Image:
    """The guard of transforms that crop nothing (a squash resize keeps the whole image)."""
    return image


def guard_for(geometry: ImageGeometry) -> ImageGuard:
    """The guard of a geometry that resizes the shorter side and crops the centre;
    :func:`unguarded` for one that squashes or does not crop."""
    shape = geometry.shorter_side_and_crop
    if shape is None:
        return unguarded
    shorter_side, crop = shape
    return CentreCropGuard(shorter_side, crop)


def guarded_preparer(geometry: ImageGeometry) -> GeometryPreparer:
    """The preparer of ``geometry``, its input first cut by :func:`guard_for`."""
    return GeometryPreparer(geometry, guard_for(geometry))
