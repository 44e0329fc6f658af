"""Measured latency on this host: real exports timed under ONNX Runtime and as real TVM builds."""

import os
import subprocess
import sys

import pytest

from dnsrec_edge.bench import host_latency
from dnsrec_edge.bench.host_latency import HostLatencyModel, host_shares
from dnsrec_edge.compile.host import usable_cores
from dnsrec_edge.cost.model import FlopsModel
from dnsrec_edge.errors import UnknownName
from dnsrec_edge.export import ort_timing
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.search.run import host_measurers

SMALL = ArchSpec.uniform(60, 12, 16, 1, 1)
BIG = ArchSpec.uniform(60, 12, 16, 2, 2)


@pytest.mark.parametrize("runtime", ["ort", "tvm"])
def test_shares_time_real_builds_against_the_reference(runtime):
    shares = host_shares([SMALL, BIG], reference=BIG, runtime=runtime, repeat=3, number=3)
    assert len(shares) == 2 and all(s > 0 for s in shares)


def test_the_measuring_cost_model_measures_each_architecture_once(monkeypatch):
    calls = []
    real = host_latency.time_onnx

    def counting(paths, *args, **kwargs):
        calls.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(host_latency, "time_onnx", counting)
    model = HostLatencyModel(repeat=3, number=3)
    model.predict_many([SMALL, BIG, SMALL])
    assert calls == [2]  # both in one interleaved run, the repeat dropped
    cost = model.predict(BIG)
    assert calls == [2] and cost.latency_ms > 0
    assert cost.flops == FlopsModel().predict(BIG).flops
    assert model.fit([]) is model


def test_tvm_costs_come_from_builds_for_the_named_target(monkeypatch):
    built = []
    real = host_latency._tvm_calls

    def recording(files, target, *args, **kwargs):
        built.append((len(files), target))
        return real(files, target, *args, **kwargs)

    monkeypatch.setattr(host_latency, "_tvm_calls", recording)
    model, measure = host_measurers(BIG, runtime="tvm", target="host")
    assert model.predict(SMALL).latency_ms > 0
    assert len(measure([SMALL])) == 1
    assert built == [(1, "host"), (2, "host")]  # the front: the reference beside each arch


def test_an_unknown_runtime_is_refused_in_one_sentence():
    with pytest.raises(UnknownName, match="unknown runtime .*'trt'.*known: ort, tvm"):
        host_measurers(BIG, runtime="trt")


def test_time_onnx_reports_median_and_p99(tmp_path):
    from dnsrec_edge.export.onnx_export import export_onnx
    from dnsrec_edge.models.sasrec import SASRec

    path = export_onnx(SASRec(SMALL).eval(), tmp_path / "m.onnx", batch=1)
    stats = ort_timing.time_onnx([path], repeat=4, number=2, warmup=1)[str(path)]
    assert 0 < stats["median_ms"] <= stats["p99_ms"] and stats["threads"] == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_timing_tvm_builds_leaves_the_process_on_every_core_it_had():
    """TVM pins the thread that sizes its pool; a search that measured TVM builds then
    trains in the same process, which must keep its cores (it once trained on one)."""
    before = os.sched_getaffinity(0)
    host_shares([SMALL], reference=BIG, runtime="tvm", threads=1, repeat=2, number=2)
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(usable_cores() < 2, reason="one usable core")
def test_a_tvm_pool_sized_for_two_threads_runs_two():
    """TVM makes its pool once, with TVM_NUM_THREADS threads (one on a 2-core host when
    unset), so set_threads must size it before first use or 2 threads silently run as 1."""
    code = (
        "import tvm\n"
        "from dnsrec_edge.compile.artifact import set_threads\n"
        "set_threads(2)\n"
        "print(tvm.get_global_func('runtime.NumThreads')())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-1] == "2"


def test_runtime_name_reads_older_search_results_as_onnx_runtime():
    from dnsrec_edge.bench.host_latency import runtime_name

    assert runtime_name({"measured_with": "tvm"}) == "TVM builds"
    assert runtime_name({"measured_with": "ort"}) == "ONNX Runtime"
    assert runtime_name({}) == "ONNX Runtime"  # written before measured_with existed
