"""The machine description and the CPU features that choose the fast paths: read from the CPU's flags and
lowered by ``ONEDNN_MAX_CPU_ISA``, each branch on constructed flag sets."""
import pytest

import resnets.machine as machine

pytestmark = pytest.mark.precision  # in the ISA tier (tests/test_isa_tier.py)

ZEN3 = frozenset({"sse4_1", "avx2", "fma"})
SKYLAKE_X = ZEN3 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}
CASCADE_LAKE = SKYLAKE_X | {"avx512_vnni"}
ZEN5 = CASCADE_LAKE | {"avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN5 | {"amx_tile", "amx_int8", "amx_bf16"}


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be an x86 CPU with the given flags and oneDNN cap."""
    def pretend(flags, cap="", arch="x86_64"):
        monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(machine.platform, "machine", lambda: arch)
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    return pretend


@pytest.mark.parametrize("flags, cap, isa", [
    (ZEN3, "", "avx2"), (SKYLAKE_X, "", "avx512_core"), (CASCADE_LAKE, "", "avx512_core_vnni"),
    (ZEN5, "", "avx512_core_bf16"), (SAPPHIRE_RAPIDS, "", "avx512_core_amx"),
    (SAPPHIRE_RAPIDS, "AVX512_CORE_BF16", "avx512_core_bf16"), (ZEN5, "avx2", "avx2"),
    (ZEN5, "AVX512_CORE_AMX", "avx512_core_bf16"),  # a cap above the CPU changes nothing
    (ZEN3, "ALL", "avx2"), (ZEN5, "NOT_AN_ISA", "avx512_core_bf16"), (set(), "", None),
    (ZEN3 | {"avx512_bf16"}, "", "avx2"),  # a level counts only with every level below it
])
def test_the_isa_is_the_flags_lowered_by_the_cap(cpu, flags, cap, isa):
    cpu(flags, cap)
    assert machine.cpu_isa() == isa


@pytest.mark.parametrize("flags, cap, vnni, bf16", [
    (ZEN3, "", False, False), (ZEN3 | {"avx_vnni"}, "", True, False), (ZEN3 | {"avx_vnni"}, "AVX2", False, False),
    (SKYLAKE_X, "", False, False), (CASCADE_LAKE, "", True, False), (ZEN5, "", True, True),
    (SAPPHIRE_RAPIDS, "", True, True), (ZEN5, "AVX512_CORE_VNNI", True, False), (ZEN5, "AVX512_CORE", False, False),
    (SAPPHIRE_RAPIDS, "AVX2", False, False),
])
def test_vnni_and_native_bf16_follow_the_isa(cpu, monkeypatch, flags, cap, vnni, bf16):
    cpu(flags, cap)
    monkeypatch.setattr(machine.torch.backends.mkldnn, "is_available", lambda: True)
    assert machine.cpu_has_vnni() is vnni and machine.int8_saturates() is not vnni
    assert machine.native_bf16() is bf16


def test_off_x86_nothing_saturates_and_bf16_is_pytorchs_answer(cpu, monkeypatch):
    cpu({"asimd", "bf16"}, arch="aarch64")
    monkeypatch.setattr(machine.torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(machine.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert machine.cpu_isa() is None and not machine.int8_saturates() and machine.native_bf16()


def test_this_machine_agrees_with_onednn():
    """On the real CPU (and cap), the level read from the flags is the one oneDNN reports it runs at."""
    import subprocess
    import sys

    isa = machine.cpu_isa()
    if isa is None:
        pytest.skip("not an x86 CPU")
    probe = ("import torch; x = torch.randn(1, 8, 8, 8); "
             "torch.nn.functional.conv2d(x.to_mkldnn(), torch.randn(8, 8, 3, 3).to_mkldnn())")
    out = subprocess.run([sys.executable, "-c", probe], env={**machine.os.environ, "ONEDNN_VERBOSE": "1"},
                         capture_output=True, text=True, timeout=120).stdout
    line = next((line for line in out.splitlines() if ",isa:" in line), None)
    if line is None:
        pytest.skip("this oneDNN build prints no ISA line")
    said = line.split("isa:", 1)[1]
    # oneDNN's words for each level (e.g. "Intel AVX-512 with Intel DL Boost and bfloat16 support")
    levels = {"avx2": "AVX2" in said and "AVX-512" not in said, "avx512_core": "AVX512BW" in said,
              "avx512_core_vnni": "DL Boost" in said and "bfloat16" not in said,
              "avx512_core_bf16": "bfloat16" in said and "AMX" not in said, "avx512_core_amx": "AMX" in said}
    assert levels[isa], said


def test_machine_info_describes_this_machine():
    info = machine.machine_info()
    assert info["threads"] >= 1 and isinstance(info["vnni"], bool) and info["cpu_capability"]
    assert isinstance(machine.cpu_flags(), frozenset) and "isa" in info and isinstance(info["native_bf16"], bool)
