"""Image resizers that reproduce the families' own resizing with Pillow and numpy only.

The open_clip and MobileCLIP transforms resize PIL images with PIL itself, so
:func:`resize_pil` just calls it. The Hugging Face fast image processors resize uint8
tensors with ``torchvision.transforms.v2.functional.resize(..., antialias=True)``, which for
bilinear and bicubic filters on the CPU is ATen's native uint8 antialiased kernel
(``upsample_avx_bilinear_bicubic_uint8``, a port of Pillow-SIMD with its own fixed-point
weights): its pixels differ from PIL's by a level or two, so :func:`resize_uint8_antialiased`
re-implements that kernel bit for bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Elements of a pass's float64 chunk of source pixels, at most (16 MB): it bounds the working
# memory of a pass.
CHUNK_ELEMENTS = 1 << 21
# Multiply-adds of one matrix product, at most. OpenBLAS runs products this small on the
# calling thread; larger ones hand work to its thread pool, and on a busy machine each
# hand-off can cost milliseconds (a 12-megapixel resize took seconds instead of 70 ms).
PRODUCT_LIMIT = 1 << 18
# Source pixels that one block of outputs of a pass spans, about: larger blocks make fewer
# matrix products (each bounded by PRODUCT_LIMIT), but with more zeros in their band of weights.
BLOCK_SPAN = 32
# Outputs per block, at least (for strong downscales) and at most (for strong upscales).
BLOCK_OUTPUTS = (8, 512)
# Passes whose weights are kept (a video's frames all resize alike; a few MB each at most).
PASS_CACHE_SIZE = 16


def resize_pil(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    """``image`` resized to ``size`` (width, height) as torchvision's ``Resize`` resizes a PIL
    image: ``Image.resize`` with the filter, and the image itself when the size is unchanged."""
    if image.size == size:
        return image
    return image.resize(size, resample)


def _triangle(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _keys_cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic with ``a = -0.5`` (ATen's antialiased bicubic, as PIL's), term for term as
    ATen's ``cubic_convolution1`` / ``cubic_convolution2`` evaluate it in double."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


# PIL filter -> (ATen's interp_size, its antialiasing filter).
FILTERS: dict[Image.Resampling, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    Image.Resampling.BILINEAR: (2, _triangle),
    Image.Resampling.BICUBIC: (4, _keys_cubic),
}


@dataclass(frozen=True)
class AxisWeights:
    """One axis of the resize: output ``i`` is the fixed-point sum of ``counts[i]`` source
    pixels from ``starts[i]`` with ``weights[i]`` (int16 values), scaled by ``2**precision``;
    ``scale`` is source pixels per output pixel."""

    scale: float
    starts: np.ndarray  # (out,) int64
    counts: np.ndarray  # (out,) int64
    weights: np.ndarray  # (out, taps) int64, zero beyond counts
    precision: int


def axis_weights(in_size: int, out_size: int, resample: Image.Resampling) -> AxisWeights:
    """ATen's ``_compute_index_ranges_int16_weights`` for antialiasing, align_corners=False and
    no explicit scale: PIL's support and centring in double, weights normalised by their
    sequential sum, the precision the largest that keeps the largest weight below 2**15
    (at most 22 bits), and weights rounded half away from zero."""
    interp_size, filter_fn = FILTERS[resample]
    scale = in_size / out_size
    support = interp_size * 0.5 * scale if scale >= 1.0 else interp_size * 0.5
    taps = math.ceil(support) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    center = scale * (np.arange(out_size, dtype=np.float64) + 0.5)
    starts = np.maximum((center - support + 0.5).astype(np.int64), 0)
    ends = np.minimum((center + support + 0.5).astype(np.int64), in_size)
    counts = np.clip(ends - starts, 0, taps)
    tap = np.arange(taps)
    inside = tap < counts[:, None]
    weights = filter_fn(((starts[:, None] + tap).astype(np.float64) - center[:, None] + 0.5) * invscale)
    weights[~inside] = 0.0
    total = np.zeros(out_size)
    for k in range(taps):
        total = total + weights[:, k]
    normalised = total != 0.0
    np.divide(weights, total[:, None], out=weights, where=normalised[:, None])
    wt_max = float(weights[normalised].max(initial=0.0))
    precision = 0
    while precision < 22 and int(0.5 + wt_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weights * (1 << precision)
    fixed = np.where(scaled < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled)).astype(np.int64)
    return AxisWeights(scale, starts, counts, fixed, precision)


def _block_outputs(axis: AxisWeights) -> int:
    return int(min(BLOCK_OUTPUTS[1], max(BLOCK_OUTPUTS[0], BLOCK_SPAN / axis.scale)))


Block = tuple[int, int, int, np.ndarray]


@dataclass(frozen=True)
class ResamplingPass:
    """One axis's weights as the products apply them: ``blocks`` of outputs (first output,
    first source pixel, end source pixel, read-only dense (source, output) float64 weights)."""

    outputs: int
    precision: int
    blocks: tuple[Block, ...]
    largest: int  # elements of the largest block's weights


@functools.lru_cache(maxsize=PASS_CACHE_SIZE)
def resampling_pass(in_size: int, out_size: int, resample: Image.Resampling) -> ResamplingPass:
    """The pass resizing an axis of ``in_size`` to ``out_size``, computed once per size pair."""
    axis = axis_weights(in_size, out_size, resample)
    blocks = tuple(_blocks(axis))
    for *_, dense in blocks:
        dense.flags.writeable = False  # shared by the threads that prepare images
    return ResamplingPass(axis.weights.shape[0], axis.precision, blocks, max(dense.size for *_, dense in blocks))


def _blocks(axis: AxisWeights) -> list[Block]:
    """Outputs in blocks of about :data:`BLOCK_SPAN` source pixels, each as (first output,
    first source pixel, end source pixel, dense (source, output) weights in float64)."""
    n_out, taps = axis.weights.shape
    block = _block_outputs(axis)
    ends = axis.starts + axis.counts
    blocks = []
    for j0 in range(0, n_out, block):
        j1 = min(j0 + block, n_out)
        lo, hi = int(axis.starts[j0:j1].min()), int(ends[j0:j1].max())
        inside = np.arange(taps) < axis.counts[j0:j1, None]
        dense = np.zeros((hi - lo, j1 - j0))
        rows = (axis.starts[j0:j1, None] - lo + np.arange(taps))[inside]
        cols = np.broadcast_to(np.arange(j1 - j0)[:, None], inside.shape)[inside]
        dense[rows, cols] = axis.weights[j0:j1][inside]
        blocks.append((j0, lo, hi, dense))
    return blocks


def _to_uint8(sums: np.ndarray, precision: int) -> np.ndarray:
    """The kernel's fixed-point finish: add half a unit, shift right arithmetically, clamp."""
    sums += float(1 << (precision - 1))
    sums *= 1.0 / (1 << precision)
    np.floor(sums, out=sums)
    np.clip(sums, 0, 255, out=sums)
    return sums


def _horizontal(planar: np.ndarray, axis: ResamplingPass) -> np.ndarray:
    """Resamples the last axis of (H, C, W) pixels (any strides) into contiguous (H, C, W')
    uint8; rows go through in chunks."""
    height, channels, width = planar.shape
    out = np.empty((height, channels, axis.outputs), np.uint8)
    rows = max(1, min(PRODUCT_LIMIT // (channels * axis.largest), CHUNK_ELEMENTS // (channels * width)))
    buffer = np.empty((min(rows, height), channels, width))
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        chunk = buffer[: r1 - r0]
        chunk[...] = planar[r0:r1]
        for j0, lo, hi, dense in axis.blocks:
            sums = chunk[:, :, lo:hi].reshape(-1, hi - lo) @ dense
            values = _to_uint8(sums, axis.precision).reshape(r1 - r0, channels, -1)
            out[r0:r1, :, j0 : j0 + dense.shape[1]] = values
    return out


def _vertical(flat: np.ndarray, axis: ResamplingPass) -> np.ndarray:
    """Resamples the first axis of (H, M) pixels into (H', M) uint8; columns go through in
    chunks."""
    height, width = flat.shape
    out = np.empty((axis.outputs, width), np.uint8)
    columns = max(1, min(PRODUCT_LIMIT // axis.largest, CHUNK_ELEMENTS // height))
    for c0 in range(0, width, columns):
        c1 = min(c0 + columns, width)
        chunk = flat[:, c0:c1].astype(np.float64)
        for j0, lo, hi, dense in axis.blocks:
            out[j0 : j0 + dense.shape[1], c0:c1] = _to_uint8(dense.T @ chunk[lo:hi], axis.precision)
    return out


def resize_uint8_antialiased(
    pixels: np.ndarray, size: tuple[int, int], resample: Image.Resampling
) -> np.ndarray:
    """(H, W, C) uint8 ``pixels`` resized to ``size`` (height, width) exactly as
    ``torchvision.transforms.v2.functional.resize(chw, size, BILINEAR or BICUBIC,
    antialias=True)`` resizes the CHW uint8 tensor on the CPU through ATen's native uint8
    kernel: a horizontal pass, then a vertical one, each skipped when its side is unchanged,
    each rounding and clamping to uint8. (torchvision takes that kernel for bicubic on any
    CPU, for bilinear on AVX2, AVX-512 and ARM ones; elsewhere its bilinear goes through
    float32 and differs.) Checked bit for bit against torch 2.14.1 / torchvision 0.29.1 on
    an AVX-512 CPU: 2,000 random cases from 1 to 700 pixels a side (1-pixel sides, up- and
    downscaling, one or both sides unchanged, both filters) and 12 and 48 megapixel images.

    Each pass is a product of the pixels with banded fixed-point weights, run in float64
    blocks: every partial sum is an integer far below 2**53, so it is exact in any order.
    """
    if resample not in FILTERS:
        raise ValueError(f"resize_uint8_antialiased reproduces bilinear and bicubic only, not {resample!r}")
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise ValueError(f"expected (H, W, C) uint8 pixels, got {pixels.dtype} of shape {pixels.shape}")
    out_height, out_width = size
    if out_height < 1 or out_width < 1:
        raise ValueError(f"output size must be positive, got {size}")
    height, width, channels = pixels.shape
    if (out_height, out_width) == (height, width):
        return pixels.copy()
    planar = pixels.transpose(0, 2, 1)
    if out_width != width:
        planar = _horizontal(planar, resampling_pass(width, out_width, resample))
    if out_height != height:
        flat = _vertical(planar.reshape(height, -1), resampling_pass(height, out_height, resample))
        planar = flat.reshape(out_height, channels, out_width)
    return np.ascontiguousarray(planar.transpose(0, 2, 1))
