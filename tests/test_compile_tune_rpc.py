"""Tuning on a board over TVM RPC: candidates are linked, uploaded through a real tracker to a
real `device serve` process on loopback, and timed there; bad combinations say what to add."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dnsrec_edge.compile.build import compile as compile_model
from dnsrec_edge.compile.tuning import database_exists
from dnsrec_edge.errors import CompileError
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec

pytest.importorskip("tvm")
pytestmark = [pytest.mark.tvm, pytest.mark.slow]

ARCH = ArchSpec(60, 8, 16, (BlockSpec(2, 8, 32),))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(SASRec(ARCH).eval(), path)
    return path


def test_tuning_times_candidates_on_a_tracker_board(tiny_onnx, tmp_path, monkeypatch):
    from test_device_servers import start_server, start_tvm

    monkeypatch.setenv("DNSREC_EDGE_HOME", str(tmp_path / "home"))
    tracker, tport = start_tvm("rpc_tracker")
    server = None
    try:
        server, _ = start_server(tracker=f"127.0.0.1:{tport}", key="tune-board")
        db = tmp_path / "db"
        art = compile_model(
            tiny_onnx,
            "x86_64",
            tmp_path / "art",
            tune=True,
            trials=8,
            tuning_db=db,
            tracker=f"127.0.0.1:{tport}",
            key="tune-board",
            quiet=True,
        )
    finally:
        if server is not None:
            server.kill()
        tracker.kill()
    info = art.manifest["tuning"]
    assert info["measured_on"].startswith("the board at tune-board")
    assert info["trials"] == 8 and database_exists(db) and info["scheduled_funcs"] >= 1
    # the default schedules and most of the 8 tuned candidates ran on the board (a candidate
    # that fails to build or run is stored with a run time of 1e10 s)
    records = [json.loads(line) for line in (db / "database_tuning_record.json").open()]
    workloads = len((db / "database_workload.json").read_text().splitlines())
    ran = [r for r in records if max(r[1][1]) < 1.0]
    assert len(ran) >= workloads + 4, [r[1][1] for r in records]
    assert info["measured"] == len(records)  # the database was new: every record is this tuning's
    ref_in, ref_out = art.reference()
    assert np.max(np.abs(art.run_local(ref_in) - ref_out)) <= 1e-4


def test_cross_target_tuning_needs_a_board(tiny_onnx, tmp_path):
    with pytest.raises(CompileError, match="--rpc HOST:PORT"):
        compile_model(tiny_onnx, "arm64", tmp_path / "a", tune=True, trials=8, quiet=True)
    with pytest.raises(CompileError, match="add --tune"):
        compile_model(tiny_onnx, "arm64", tmp_path / "b", rpc="127.0.0.1:9", quiet=True)
    with pytest.raises(CompileError, match="compile it without --tune"):
        compile_model(tiny_onnx, "cuda", tmp_path / "c", tune=True, quiet=True)
