"""Map the configured device name (OpenVINO style: CPU, GPU, GPU.<n>, AUTO) to PyTorch."""

from __future__ import annotations

import torch


def torch_device(device: str) -> torch.device:
    """``CPU`` -> cpu, ``GPU`` -> cuda:0, ``GPU.<n>`` -> cuda:<n>, ``AUTO`` -> cuda when present.

    A GPU that is not there is a start-up error rather than a silent fall-back to the CPU.
    """
    if device == "CPU":
        return torch.device("cpu")
    if device == "AUTO":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    index = int(device.split(".", 1)[1]) if "." in device else 0
    available = torch.cuda.device_count()
    if index >= available:
        raise RuntimeError(
            f"EMBEDDING_DEVICE={device} is not available: PyTorch sees {available} CUDA device(s)"
        )
    return torch.device(f"cuda:{index}")
