"""Target presets: shipped TOML files, aliases, user folders, clear errors. No compiling here."""

from __future__ import annotations

import platform
import sys

import pytest
from click.testing import CliRunner

from dnsrec_edge.cli import main
from dnsrec_edge.compile.elf import elf_machine
from dnsrec_edge.compile.targets import TARGETS_ENV, list_targets, load_target
from dnsrec_edge.errors import CrossCompilerMissing, InputFileError, UnknownTarget

REQUIRED = {
    "x86_64", "x86_64-avx2", "x86_64-avx512", "arm64", "rpi4", "rpi5", "graviton",
    "riscv64", "cuda", "jetson-orin",
}  # fmt: skip

USER_TARGET = """
name = "myboard"
aliases = ["mine"]
description = "A board whose linker is not installed"
arch = "aarch64"
device = "cpu"
cross_compiler = "no-such-gcc-for-dnsrec-tests"
deb_package = "gcc-no-such-package"
threads = 2
rpc_key = "myboard"
peak_gflops = 10.0
mem_gbps = 5.0
idle_watts = 1.0
active_watts = 3.0
[tvm]
kind = "llvm"
mtriple = "aarch64-linux-gnu"
[sources]
peak_gflops = "test"
mem_gbps = "test"
idle_watts = "test"
active_watts = "test"
"""


def test_shipped_targets_are_complete():
    targets = {t.name: t for t in list_targets()}
    assert set(targets) >= REQUIRED
    for t in targets.values():
        for prior in ("peak_gflops", "mem_gbps", "idle_watts", "active_watts"):
            assert getattr(t, prior) > 0, (t.name, prior)
            assert t.sources.get(prior), f"{t.name} gives no source for {prior}"
        assert t.tvm["kind"] in ("llvm", "cuda")
        assert t.rpc_key and t.threads >= 1
        assert t.deb_package if t.cross_compiler else True
    assert (
        targets["rpi5"].tvm["mcpu"] == "cortex-a76" and "+dotprod" in targets["rpi5"].tvm["mattr"]
    )
    assert targets["jetson-orin"].tvm["arch"] == "sm_87" and targets["jetson-orin"].host[
        "mtriple"
    ].startswith("aarch64")
    assert targets["cuda"].device == "cuda" and targets["cuda"].host["mtriple"].startswith("x86_64")


def test_aliases_resolve_to_one_target():
    assert load_target("aarch64").name == "arm64"
    assert load_target("arm64").tvm["mtriple"] == "aarch64-linux-gnu"
    assert load_target("rv64gc").name == "riscv64"


def test_tvm_accepts_every_target_dict():
    pytest.importorskip("tvm")
    for t in list_targets():
        built = t.tvm_target()
        assert built.kind.name == t.tvm["kind"]
        if t.host:
            assert built.host is not None


def test_each_target_knows_its_vector_lanes_without_tvm():
    lanes = {t.name: t.vector_lanes for t in list_targets()}
    assert lanes["x86_64"] == 4 and lanes["x86_64-avx2"] == 8 and lanes["x86_64-avx512"] == 16
    assert lanes["arm64"] == lanes["rpi4"] == 4 and lanes["cuda"] == 0


def test_the_schedules_tile_for_the_lanes_the_target_file_names():
    pytest.importorskip("tvm")
    from dnsrec_edge.compile.schedules import vector_lanes

    for t in list_targets():
        if t.device == "cpu":
            assert vector_lanes(t.tvm_target()) == t.vector_lanes, t.name


def test_unknown_target_lists_known_and_suggests():
    with pytest.raises(UnknownTarget) as err:
        load_target("arm46")
    msg = str(err.value)
    assert "unknown target 'arm46'" in msg and "rpi4" in msg and "(did you mean arm64?)" in msg


def test_unknown_target_cli_exit_code():
    result = CliRunner().invoke(main, ["targets", "show", "raspbery-pi-4"])
    assert result.exit_code == 1
    assert "Error: unknown target 'raspbery-pi-4'" in result.output
    assert "did you mean rpi4?" in result.output


def test_targets_list_and_show_cli():
    runner = CliRunner()
    listed = runner.invoke(main, ["targets", "list"])
    assert listed.exit_code == 0
    assert all(name in listed.output for name in REQUIRED)
    shown = runner.invoke(main, ["targets", "show", "aarch64"])
    assert (
        shown.exit_code == 0
        and '"name": "arm64"' in shown.output
        and "gcc-aarch64-linux-gnu" in shown.output
    )


def test_user_target_folder_and_missing_cross_compiler(tmp_path, monkeypatch):
    (tmp_path / "myboard.toml").write_text(USER_TARGET)
    monkeypatch.setenv(TARGETS_ENV, str(tmp_path))
    target = load_target("mine")
    assert target.name == "myboard" and target.path == tmp_path / "myboard.toml"
    assert "myboard" in {t.name for t in list_targets()}
    with pytest.raises(CrossCompilerMissing) as err:
        target.check_cross_compiler()
    assert "sudo apt-get install gcc-no-such-package" in str(err.value)
    # through the CLI, before any model is read (the model path need not exist)
    result = CliRunner().invoke(
        main, ["compile", str(tmp_path / "model.onnx"), "--target", "myboard"]
    )
    assert result.exit_code == 1
    assert (
        "no-such-gcc-for-dnsrec-tests" in result.output and "gcc-no-such-package" in result.output
    )


def test_malformed_user_target_is_named(tmp_path):
    (tmp_path / "bad.toml").write_text('name = "bad"\narch = "mips"\n')
    with pytest.raises(InputFileError) as err:
        list_targets(tmp_path)
    assert "bad.toml" in str(err.value) and "lacks" in str(err.value)


def test_elf_machine_reads_this_interpreter():
    assert elf_machine(sys.executable) == platform.machine()


def test_elf_machine_rejects_non_elf(tmp_path):
    path = tmp_path / "x.so"
    path.write_bytes(b"not an elf file at all")
    with pytest.raises(InputFileError):
        elf_machine(path)
