"""The ISA tier: the precision-sensitive tests (marked ``precision``: int8 in PyTorch and ONNX Runtime, bf16
training and inference, ``fastest_mode``, the compiled modes, distillation) run again in a subprocess under
each older kind of x86 CPU this one can behave as, by capping oneDNN (``ONEDNN_MAX_CPU_ISA``) and ATen
(``ATEN_CPU_CAPABILITY``): a developer on an AMX machine sees what an AVX-512-BF16 or an AVX2 user sees."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resnets.machine import cpu_isa, ISA_CAPS, ISA_LEVELS

# The kinds of CPU the project runs on, below the newest: (oneDNN cap, ATen capability).
KINDS = {"AVX2": "avx2", "AVX512_CORE_VNNI": "avx512", "AVX512_CORE_BF16": "avx512"}
LEVELS = [name for name, _ in ISA_LEVELS]
TESTS = Path(__file__).resolve().parent


def emulated_kinds(isa: str | None) -> list[str]:
    """The caps of ``KINDS`` strictly below ``isa`` (the host's level): the host's own kind runs in the suite."""
    if isa is None:
        return []
    return [cap for cap in KINDS if LEVELS.index(ISA_CAPS[cap]) < LEVELS.index(isa)]


def test_the_tier_emulates_every_older_kind():
    assert emulated_kinds("avx512_core_amx") == ["AVX2", "AVX512_CORE_VNNI", "AVX512_CORE_BF16"]
    assert emulated_kinds("avx512_core_bf16") == ["AVX2", "AVX512_CORE_VNNI"]
    assert emulated_kinds("avx2") == [] and emulated_kinds(None) == []


@pytest.mark.slow
@pytest.mark.parametrize("cap", list(KINDS))
def test_precision_tests_pass_under_the_cap(cap, tmp_path):
    if cap not in emulated_kinds(cpu_isa()):
        pytest.skip(f"this CPU runs at {cpu_isa()}: {cap} is not an older kind it can emulate")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": cap, "ATEN_CPU_CAPABILITY": KINDS[cap]}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "precision", "-p", "no:cacheprovider", "-q",
                           "--basetemp", str(tmp_path / "t"), str(TESTS)], env=env, cwd=TESTS.parent,
                          capture_output=True, text=True, timeout=1800)
    tail = "\n".join(done.stdout.splitlines()[-25:])
    print(f"under ONEDNN_MAX_CPU_ISA={cap}:\n{tail}")
    assert done.returncode == 0, tail
