"""Compile tiny SASRecs with TVM: host builds match ONNX Runtime, cross builds have the right
ELF machine, artifacts verify their checksums, and each bad input gives one clear sentence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dnsrec_edge.cli import main
from dnsrec_edge.compile.artifact import MANIFEST, load_artifact
from dnsrec_edge.compile.build import compile as compile_model
from dnsrec_edge.compile.elf import elf_machine
from dnsrec_edge.compile.onnx_io import load_onnx, run_onnxruntime
from dnsrec_edge.errors import ChecksumMismatch, OutputExists
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec

pytest.importorskip("tvm")
pytestmark = [pytest.mark.tvm, pytest.mark.slow]

N_ITEMS, MAX_LEN = 60, 8
ARCH = ArchSpec(N_ITEMS, MAX_LEN, 16, (BlockSpec(2, 8, 32, gate_hidden=4), BlockSpec(1, 8, 16)))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = SASRec(ARCH).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(model, path)
    return path


@pytest.fixture(scope="module")
def host_artifact(tiny_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "x86"
    return compile_model(tiny_onnx, "x86_64", out, batch=3, quiet=True)


def test_host_build_matches_onnxruntime(host_artifact, tiny_onnx):
    m = host_artifact.manifest
    for key in (
        "schema",
        "tool_version",
        "tvm_version",
        "onnx_version",
        "onnxruntime_version",
        "target",
        "target_dict",
        "host_dict",
        "arch",
        "device",
        "inputs",
        "outputs",
        "files",
        "onnx_sha256",
        "archspec",
        "tuning",
        "created",
        "entry",
    ):
        assert key in m, key
    assert m["inputs"] == [{"name": "item_seq", "shape": [3, MAX_LEN], "dtype": "int64"}]
    assert m["outputs"][0]["shape"] == [3, N_ITEMS]
    assert m["archspec"]["n_items"] == N_ITEMS
    assert m["kernels"]["scheduled"] > m["kernels"]["total"] // 2  # default schedules applied
    rng = np.random.default_rng(7)
    seq = rng.integers(0, N_ITEMS + 1, (3, MAX_LEN)).astype(np.int64)
    seq[0, :5] = 0  # left padding
    seq[2, :] = 0  # all padding
    got = host_artifact.run_local(seq)
    ref = run_onnxruntime(load_onnx(tiny_onnx), seq)[0]
    assert np.max(np.abs(got - ref)) <= 1e-4
    np.testing.assert_array_equal(np.argsort(-got, 1)[:, :10], np.argsort(-ref, 1)[:, :10])
    ref_in, ref_out = host_artifact.reference()
    assert np.max(np.abs(host_artifact.run_local(ref_in) - ref_out)) <= 1e-4


def test_artifact_checksums_are_verified(host_artifact, tmp_path):

    copy = tmp_path / "copy"
    shutil.copytree(host_artifact.path, copy)
    assert load_artifact(copy).sha256 == host_artifact.sha256
    with open(copy / "reference_output.npy", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ChecksumMismatch, match="reference_output.npy"):
        load_artifact(copy)


@pytest.mark.parametrize(
    ("target", "machine"), [("arm64", "aarch64"), ("rpi4", "aarch64"), ("riscv64", "riscv64")]
)
def test_cross_builds_have_the_target_elf_machine(tiny_onnx, tmp_path, target, machine):
    art = compile_model(tiny_onnx, target, tmp_path / "new" / target, quiet=True)  # parent made
    assert elf_machine(art.library) == machine
    manifest = json.loads((art.path / MANIFEST).read_text())
    assert manifest["arch"] == machine and manifest["target"] == target
    assert not art.runs_here()


def test_existing_output_needs_force(tiny_onnx, host_artifact):
    with pytest.raises(OutputExists):
        compile_model(tiny_onnx, "x86_64", host_artifact.path, batch=3, quiet=True)
    result = CliRunner().invoke(
        main, ["compile", str(tiny_onnx), "-t", "x86_64", "-o", str(host_artifact.path)]
    )
    assert (
        result.exit_code == 1 and "already exists" in result.output and "--force" in result.output
    )


def test_force_replaces_an_earlier_artifacts_files_and_nothing_else(
    tiny_onnx, host_artifact, tmp_path
):
    out = tmp_path / "art"
    shutil.copytree(host_artifact.path, out)
    model = out / "tiny.onnx"  # the input lies in the output folder
    shutil.copy(tiny_onnx, model)
    (out / "notes.txt").write_text("mine")
    result = CliRunner().invoke(
        main, ["compile", str(model), "-t", "x86_64", "-o", str(out), "--batch", "3", "--force"]
    )
    assert result.exit_code == 0, result.output
    assert (
        model.read_bytes() == tiny_onnx.read_bytes() and (out / "notes.txt").read_text() == "mine"
    )
    assert load_artifact(out).manifest["onnx_sha256"] == host_artifact.manifest["onnx_sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    user = tmp_path / "user"
    user.mkdir()
    (user / "lib.so").write_bytes(b"not an artifact's")
    result = CliRunner().invoke(
        main, ["compile", str(tiny_onnx), "-t", "x86_64", "-o", str(user), "--force"]
    )
    assert result.exit_code == 1 and "is not part of an earlier artifact" in result.output
    assert (user / "lib.so").read_bytes() == b"not an artifact's"


def test_the_default_target_is_this_hosts_architecture(tiny_onnx, tmp_path):
    from dnsrec_edge.compile.targets import host_target
    from dnsrec_edge.hostinfo import host_arch

    result = CliRunner().invoke(main, ["-q", "compile", str(tiny_onnx), "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    manifest = load_artifact(tmp_path / "a").manifest
    assert manifest["target"] == host_target().name and manifest["arch"] == host_arch()


def test_an_output_folder_that_cannot_be_made_is_one_sentence(tiny_onnx, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = CliRunner().invoke(
        main, ["compile", str(tiny_onnx), "-t", "x86_64", "-o", str(tmp_path / "file" / "art")]
    )
    assert result.exit_code == 1 and "cannot write to folder" in result.output
    assert "writable folder" in result.output and "Traceback" not in result.output


def test_corrupt_onnx_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model" * 3)
    result = CliRunner().invoke(
        main, ["compile", str(bad), "-t", "x86_64", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "Error:" in result.output and "broken.onnx" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_unsupported_operator_names_op_and_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["item_seq"], ["x"], to=TensorProto.FLOAT, name="to_float"),
            helper.make_node("Celu", ["x"], ["scores"], name="odd_activation"),
        ],
        "g",
        [helper.make_tensor_value_info("item_seq", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "celu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    result = CliRunner().invoke(
        main, ["compile", str(path), "-t", "x86_64", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "'Celu'" in result.output and "'odd_activation'" in result.output


@pytest.mark.skipif(
    shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit) to build GPU kernels"
)
def test_jetson_orin_builds_without_a_gpu(tiny_onnx, tmp_path):
    art = compile_model(tiny_onnx, "jetson-orin", tmp_path / "orin", quiet=True)
    assert art.manifest["device"] == "cuda" and art.manifest["target_dict"]["arch"] == "sm_87"
    assert elf_machine(art.library) == "aarch64"  # host code for the board's Cortex-A78AE
    assert art.manifest["kernels"]["scheduled"] == art.manifest["kernels"]["total"]


def test_tuning_database_is_applied_and_reused(tiny_onnx, tmp_path, monkeypatch):
    from dnsrec_edge.compile import artifact, tuning

    monkeypatch.setenv("DNSREC_EDGE_HOME", str(tmp_path / "home"))
    events, set_threads, measure = [], artifact.set_threads, tuning.measure
    monkeypatch.setattr(artifact, "set_threads", lambda n: events.append(n) or set_threads(n))
    monkeypatch.setattr(
        tuning, "measure", lambda *a, **k: events.append("measure") or measure(*a, **k)
    )
    tuned = compile_model(
        tiny_onnx, "x86_64", tmp_path / "tuned", tune=True, trials=8, quiet=True, threads=2
    )
    # candidates are timed on the thread count the build is made for
    assert "measure" in events and events[0] == 2
    info = tuned.manifest["tuning"]
    assert info["trials"] == 8 and info["seconds"] > 0
    db = tuned.manifest["tuning"]["database"]
    assert db and db.startswith(str(tmp_path / "home" / "tuning" / "x86_64"))
    assert info["scheduled_funcs"] >= 1  # records really applied, not silently dropped
    lines = (Path(db) / "database_tuning_record.json").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sum(max(r[1][1]) < 1.0 for r in records) > len(records) // 2  # candidates really ran
    # the tuned build was timed against the default one as a whole model; the faster is kept
    timings = info["whole_model_ms"]
    assert set(timings) == {"tuned", "default"} and min(timings.values()) > 0
    assert info["kept"] == min(timings, key=lambda k: (timings[k], k != "tuned"))
    ref_in, ref_out = tuned.reference()
    assert np.max(np.abs(tuned.run_local(ref_in) - ref_out)) <= 1e-4
    # a later compile of the same shapes picks the database up without --tune
    again = compile_model(tiny_onnx, "x86_64", tmp_path / "again", quiet=True)
    assert again.manifest["tuning"]["database"] == db
    assert again.manifest["tuning"]["scheduled_funcs"] == info["scheduled_funcs"]
    assert again.manifest["tuning"]["kept"] in ("tuned", "default")


RUNTIME_ONLY_TOPK = r"""
import json, sys
sys.modules["torch"] = None  # a board has no torch
import numpy as np, tvm
from tvm.runtime.vm import VirtualMachine
vm = VirtualMachine(tvm.runtime.load_module(sys.argv[1] + "/lib.so"), tvm.cpu())
x = np.load(sys.argv[1] + "/reference_input.npy")
scores, items, values = (o.numpy() for o in vm["main"](tvm.runtime.tensor(x)))
print(json.dumps({"items": items.tolist(), "values": values.tolist()}))
"""


def test_in_graph_topk_runs_on_the_tvm_runtime_alone(tmp_path):
    import os
    import subprocess
    import sys

    torch.manual_seed(1)
    path = export_onnx(SASRec(ARCH).eval(), tmp_path / "topk.onnx", batch=2, topk=5)
    art = compile_model(path, "x86_64", tmp_path / "art", batch=2, quiet=True)
    assert b"tvm.contrib.sort" not in art.library.read_bytes()  # a full-TVM-only function
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    done = subprocess.run(
        [sys.executable, "-c", RUNTIME_ONLY_TOPK, str(art.path)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    x = np.load(art.path / "reference_input.npy")
    _, items, values = run_onnxruntime(load_onnx(path), x)
    assert got["items"] == items.tolist()
    np.testing.assert_allclose(got["values"], values, atol=1e-5)


def test_the_item_table_is_stored_once_in_a_build(tmp_path):
    torch.manual_seed(2)
    arch = ArchSpec(20000, 8, 32, (BlockSpec(1, 32, 32),))  # the table is most of the model
    path = export_onnx(SASRec(arch).eval(), tmp_path / "wide.onnx", batch=1)
    art = compile_model(path, "x86_64", tmp_path / "art", quiet=True)  # checked against ORT
    table_bytes = (arch.n_items + 1) * arch.hidden * 4
    assert art.library.stat().st_size < 1.5 * table_bytes  # lookup and scoring share it


def test_a_table_under_a_mebibyte_keeps_its_own_copy_for_the_lookup(tmp_path):
    from dnsrec_edge.compile.rewrites import SHARE_MIN_BYTES

    torch.manual_seed(2)
    arch = ArchSpec(5000, 8, 32, (BlockSpec(1, 32, 32),))
    table_bytes = (arch.n_items + 1) * arch.hidden * 4
    assert table_bytes < SHARE_MIN_BYTES
    path = export_onnx(SASRec(arch).eval(), tmp_path / "small.onnx", batch=1)
    art = compile_model(path, "x86_64", tmp_path / "art", quiet=True)  # checked against ORT
    assert art.library.stat().st_size > 1.9 * table_bytes  # a row-major copy and the scoring's


def test_the_faster_whole_model_build_is_kept():
    from dnsrec_edge.compile.tuned_or_default import faster

    assert faster({"tuned": 0.30, "default": 0.25}) == "default"
    assert faster({"tuned": 0.20, "default": 0.25}) == "tuned"
    assert faster({"tuned": 0.25, "default": 0.25}) == "tuned"  # a tie keeps what was asked for
