"""What the machine is: a description stored with benchmark results, and the CPU features that decide
which fast paths are safe."""
from __future__ import annotations

import functools
import platform

import torch


@functools.cache
def _cpuinfo(key: str) -> str | None:
    """The first ``key`` entry of Linux's /proc/cpuinfo (``model name``, ``flags``, ...); None elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith(key))
    except (OSError, StopIteration):
        return None


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (``avx2``, ``avx512_vnni``, ...); empty elsewhere."""
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_has_vnni() -> bool:
    """Whether the CPU has an 8-bit dot product that accumulates into 32 bits (AVX512-VNNI or AVX-VNNI); False
    where the flags cannot be read (then int8 takes the safe 7-bit weights)."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni"})


def int8_saturates() -> bool:
    """Whether this CPU's int8 kernels can saturate: x86 without VNNI adds pairs of uint8 x int8 products in
    16 bits (``vpmaddubsw``), which overflows with full-range 8-bit weights."""
    return platform.machine().lower() in ("x86_64", "amd64") and not cpu_has_vnni()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 convolutions run natively (AVX512-BF16/AMX on the CPU, or a CUDA GPU)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def machine_info() -> dict[str, object]:
    cpu = _cpuinfo("model name") or platform.processor() or platform.machine()
    info: dict[str, object] = {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "python": platform.python_version(),
                               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "vnni": cpu_has_vnni()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
