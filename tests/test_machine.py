"""The machine description and the CPU features that choose the fast paths."""
import pytest

import resnets.machine as machine


@pytest.mark.parametrize("arch,flags,saturates", [
    ("x86_64", {"avx2", "fma"}, True),  # Zen 3: vpmaddubsw's 16-bit pair sums
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),  # Zen 4/5, Cascade Lake and later
    ("x86_64", {"avx2", "avx_vnni"}, False),  # Alder Lake
    ("x86_64", set(), True),  # flags unknown: the safe choice
    ("aarch64", {"asimd"}, False),
])
def test_int8_saturates_on_x86_without_vnni(monkeypatch, arch, flags, saturates):
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(machine.platform, "machine", lambda: arch)
    assert machine.int8_saturates() is saturates


def test_machine_info_describes_this_machine():
    info = machine.machine_info()
    assert info["threads"] >= 1 and isinstance(info["vnni"], bool) and info["cpu_capability"]
    assert isinstance(machine.cpu_flags(), frozenset)
