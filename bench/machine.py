"""What every benchmark result says about the machine it ran on: cores, CPU model and the
instruction-set flags that PyTorch and OpenVINO use."""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of ``/proc/cpuinfo``, None where there is none."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == field:
            return value.strip()
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The flags of ``CPU_FLAGS`` this CPU has."""
    present = set((_cpuinfo("flags") or "").split())
    return [flag for flag in CPU_FLAGS if flag in present]


def cpu_description() -> str:
    """``<cores> cores (<model>; flags: <flags that matter>)``, the start of a machine line."""
    flags = ", ".join(cpu_flags()) or "none of " + ", ".join(CPU_FLAGS)
    return f"{os.cpu_count()} cores ({cpu_model()}; flags: {flags})"
