"""What the machine is: a description stored with benchmark results, and the CPU features that decide
which fast paths are safe."""
from __future__ import annotations

import functools
import os
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


# oneDNN's x86 instruction-set levels, oldest first, with the CPU flags each needs (as Linux names them).
ISA_LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("sse41", frozenset({"sse4_1"})),
    ("avx2", frozenset({"avx2", "fma"})),
    ("avx512_core", frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})),
    ("avx512_core_vnni", frozenset({"avx512_vnni"})),
    ("avx512_core_bf16", frozenset({"avx512_bf16"})),
    ("avx512_core_amx", frozenset({"amx_tile", "amx_int8", "amx_bf16"})),
)
# What ONEDNN_MAX_CPU_ISA may name, mapped to the level it caps at (oneDNN's spellings).
ISA_CAPS = {"SSE41": "sse41", "AVX": "sse41", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2",
            "AVX512_CORE": "avx512_core", "AVX512_CORE_VNNI": "avx512_core_vnni",
            "AVX512_CORE_BF16": "avx512_core_bf16", "AVX10_1_512": "avx512_core_bf16",
            "AVX512_CORE_FP16": "avx512_core_bf16", "AVX512_CORE_AMX": "avx512_core_amx",
            "AVX512_CORE_AMX_FP16": "avx512_core_amx", "AVX10_1_512_AMX": "avx512_core_amx",
            "AVX10_1_512_AMX_FP16": "avx512_core_amx", "AVX10_2_512_AMX_2": "avx512_core_amx", "ALL": None}
_LEVEL_NAMES = [name for name, _ in ISA_LEVELS]


def cpu_isa(flags: frozenset[str] | None = None, cap: str | None = None) -> str | None:
    """The instruction-set level oneDNN's kernels run at here: the highest of ``ISA_LEVELS`` whose flags the
    CPU has (each level needs the ones below it), lowered to ``ONEDNN_MAX_CPU_ISA`` where that is set (so one
    machine can behave like an older one). None off x86 or where the flags cannot be read."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    flags = cpu_flags() if flags is None else flags
    level = None
    for name, needs in ISA_LEVELS:
        if not needs <= flags:
            break
        level = name
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "") if cap is None else cap
    capped = ISA_CAPS.get(cap.strip().upper()) if cap.strip() else None
    if level is not None and capped is not None and _LEVEL_NAMES.index(capped) < _LEVEL_NAMES.index(level):
        return capped
    return level


def isa_at_least(level: str) -> bool:
    """Whether oneDNN runs at ``level`` (a name of ``ISA_LEVELS``) or above here."""
    isa = cpu_isa()
    return isa is not None and _LEVEL_NAMES.index(isa) >= _LEVEL_NAMES.index(level)


def cpu_has_vnni() -> bool:
    """Whether the int8 kernels have an 8-bit dot product that accumulates into 32 bits: AVX512-VNNI (or
    AVX-VNNI where oneDNN is not capped below AVX2_VNNI); False where the flags cannot be read (then int8
    takes the safe 7-bit range)."""
    if isa_at_least("avx512_core_vnni"):
        return True
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return "avx_vnni" in cpu_flags() and cpu_isa() == "avx2" and cap in ("", "ALL", "AVX2_VNNI", "AVX2_VNNI_2")


def int8_saturates() -> bool:
    """Whether this CPU's int8 kernels can saturate: x86 without VNNI adds pairs of uint8 x int8 products in
    16 bits (``vpmaddubsw``), which overflows with full-range 8-bit weights."""
    return platform.machine().lower() in ("x86_64", "amd64") and not cpu_has_vnni()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 convolutions run natively: a CUDA GPU, or a CPU whose oneDNN kernels run at
    AVX512-BF16 or AMX (``cpu_isa``, which respects ``ONEDNN_MAX_CPU_ISA``). Plain AVX-512 converts bfloat16
    in software and AVX2 falls back to a reference loop: float32 is faster there. Off x86, PyTorch's own
    check (Arm's bf16 extension)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if not torch.backends.mkldnn.is_available():
        return False
    if platform.machine().lower() in ("x86_64", "amd64"):
        return isa_at_least("avx512_core_bf16")
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def machine_info() -> dict[str, object]:
    cpu = _cpuinfo("model name") or platform.processor() or platform.machine()
    info: dict[str, object] = {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "python": platform.python_version(),
                               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "isa": cpu_isa(),
                               "vnni": cpu_has_vnni(), "native_bf16": native_bf16()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
