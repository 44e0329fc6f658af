"""``--target host``: CPU features from /proc/cpuinfo text pick the preset, usable cores set the
threads; "auto" presets claim no cores the machine lacks; the manifest keeps both names."""

from __future__ import annotations

import pytest

from dnsrec_edge.compile.host import HostCpu, detect_host, parse_cpuinfo, usable_cores
from dnsrec_edge.compile.targets import host_target, load_target

SAPPHIRE_RAPIDS = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt avx f16c bmi1 avx2 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512_vnni amx_bf16

processor	: 1
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse sse2
"""
HASWELL = """model name	: Intel(R) Core(TM) i7-4770 CPU @ 3.40GHz
flags		: fpu sse sse2 ssse3 fma sse4_1 sse4_2 movbe popcnt avx f16c bmi1 avx2 bmi2
"""
NEHALEM = """model name	: Intel(R) Core(TM) i7 CPU 920 @ 2.67GHz
flags		: fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt
"""
AVX512F_ONLY = """model name	: Intel(R) Xeon Phi(TM) CPU 7210
flags		: fpu sse4_2 avx avx2 fma bmi1 bmi2 f16c movbe avx512f avx512cd
"""
GRAVITON3 = """processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer	: 0x41
"""


def test_cpuinfo_flags_of_the_first_cpu():
    model, flags = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx512f", "avx512_bf16", "avx512_vnni"} <= flags


@pytest.mark.parametrize(
    ("text", "arch", "preset"),
    [
        (SAPPHIRE_RAPIDS, "x86_64", "x86_64-avx512"),
        (HASWELL, "x86_64", "x86_64-avx2"),
        (NEHALEM, "x86_64", "x86_64"),
        (AVX512F_ONLY, "x86_64", "x86_64-avx2"),  # no BW/DQ/VL: not x86-64-v4
        (GRAVITON3, "aarch64", "arm64"),
        ("", "x86_64", "x86_64"),  # no /proc/cpuinfo: the baseline preset
    ],
)
def test_features_pick_the_widest_preset_the_cpu_runs(text, arch, preset):
    assert detect_host(text, arch=arch, cores=2).preset == preset


def test_notable_features_are_named():
    assert {"avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"} <= set(
        detect_host(SAPPHIRE_RAPIDS, "x86_64", 2).features
    )
    arm = detect_host(GRAVITON3, "arm64", 4)  # the alias is normalised
    assert arm.arch == "aarch64"
    assert {"neon", "sve", "asimddp", "i8mm", "bf16"} <= set(arm.features)


def test_host_target_takes_the_preset_with_usable_cores():
    cpu = detect_host(SAPPHIRE_RAPIDS, "x86_64", cores=3)
    tgt = host_target(cpu=cpu)
    assert tgt.name == "x86_64-avx512"
    assert tgt.requested == "host"
    assert tgt.threads == 3 and tgt.tvm["num-cores"] == 3
    assert tgt.tvm["mcpu"] == "x86-64-v4"
    assert set(tgt.tvm["mattr"]) == {"+avx512bf16", "+avx512vnni"}
    assert "3 usable cores" in tgt.description
    assert tgt.to_dict()["requested"] == "host"
    avx2 = host_target(cpu=detect_host(HASWELL, "x86_64", cores=1))
    assert avx2.name == "x86_64-avx2" and "mattr" not in avx2.tvm and avx2.threads == 1


def test_host_by_name_and_the_machines_own_cores():
    tgt = load_target("host")
    assert tgt.requested == "host"
    assert tgt.threads == usable_cores()
    assert tgt.name == detect_host().preset


def test_auto_presets_claim_only_usable_cores():
    for name in ("x86_64", "x86_64-avx2", "x86_64-avx512"):
        tgt = load_target(name)
        assert tgt.threads_auto
        assert tgt.threads == usable_cores() == tgt.tvm["num-cores"]
    assert load_target("rpi4").threads == 4  # a board with a known core count keeps it
    assert load_target("x86_64").with_threads(7).tvm["num-cores"] == 7


def test_a_user_host_file_replaces_detection(tmp_path):
    text = (load_target("x86_64").path).read_text().replace('name = "x86_64"', 'name = "host"')
    text = text.replace('aliases = ["x86-64", "x64", "amd64"]', "aliases = []")
    (tmp_path / "host.toml").write_text(text)
    tgt = load_target("host", tmp_path)
    assert tgt.name == "host" and tgt.requested is None


def test_host_cpu_to_dict():
    cpu = HostCpu("x86_64", "x", frozenset({"avx2"}), 2)
    assert cpu.to_dict()["preset"] == "x86_64"


def test_bench_uses_the_boards_cores_for_auto_presets():
    from dnsrec_edge.bench.run import _target_priors

    assert _target_priors("x86_64-avx512")[1] is None  # "auto": the board's available cores
    assert _target_priors("rpi4")[1] == 4
