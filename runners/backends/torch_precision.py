"""What ``EMBEDDING_PRECISION`` means for PyTorch: the math mode of float32 matmuls and
convolutions on the device in use.

``fast`` keeps every weight and activation float32 and lets the math library compute the
matmuls and convolutions in the device's native reduced precision: bf16 through oneDNN on
CPUs with AVX512-BF16 (which AMX CPUs have too), TF32 on CUDA GPUs from Ampere on. Inputs
are rounded, sums accumulate in float32, and normalisations, softmax and the output stay
float32. On a CPU without native bf16 it stays float32: emulated bf16 would be slower.

``torch.autocast`` with bf16 was measured slower than float32 on CPU for ViT-B-32
(bench/RESULTS.md, "Precision"), and casting the model to bf16 would need every family to
cast its inputs; the math mode needs neither and is as fast.

The mode is process-wide (the Encoder serves one model), so :func:`apply` is called once,
where the Encoder loads its runner.
"""

from __future__ import annotations

import torch

EXACT = "f32"
# The first CUDA compute capability with TF32 tensor cores (Ampere).
TF32_CAPABILITY = (8, 0)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16), as PyTorch's own check says."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check())


def fast_precision(device: torch.device) -> str:
    """The precision ``fast`` computes in on ``device``: ``bf16``, ``tf32`` or ``f32``."""
    if device.type == "cuda":
        return "tf32" if torch.cuda.get_device_capability(device) >= TF32_CAPABILITY else EXACT
    return "bf16" if device.type == "cpu" and native_bf16() else EXACT


def apply(precision: str, device: torch.device) -> str:
    """Set the process's float32 math mode for ``precision`` (``exact`` or ``fast``) on
    ``device``; returns the precision matmuls now compute in."""
    computed = fast_precision(device) if precision == "fast" else EXACT
    if device.type == "cuda":
        mode = "tf32" if computed == "tf32" else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        mode = "bf16" if computed == "bf16" else "ieee"
        torch.backends.mkldnn.matmul.fp32_precision = mode
        torch.backends.mkldnn.conv.fp32_precision = mode
    return computed
