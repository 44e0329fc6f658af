"""ONNX Runtime timing: interleaved runs of real exported files, and the measuring cost model."""

import pytest

from dnsrec_edge.cost.model import FlopsModel
from dnsrec_edge.export import ort_timing
from dnsrec_edge.export.ort_timing import OrtLatencyModel, ort_shares
from dnsrec_edge.models.archspec import ArchSpec

SMALL = ArchSpec.uniform(60, 12, 16, 1, 1)
BIG = ArchSpec.uniform(60, 12, 16, 2, 2)


def test_ort_shares_time_real_exports_against_the_reference():
    shares = ort_shares([SMALL, BIG], reference=BIG, repeat=3, number=3)
    assert len(shares) == 2 and all(s > 0 for s in shares)


def test_the_measuring_cost_model_measures_each_architecture_once(monkeypatch):
    calls = []
    real = ort_timing.time_onnx

    def counting(paths, *args, **kwargs):
        calls.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(ort_timing, "time_onnx", counting)
    model = OrtLatencyModel(repeat=3, number=3)
    model.predict_many([SMALL, BIG, SMALL])
    assert calls == [2]  # both in one interleaved run, the repeat dropped
    cost = model.predict(BIG)
    assert calls == [2] and cost.latency_ms > 0
    assert cost.flops == FlopsModel().predict(BIG).flops
    assert model.fit([]) is model


@pytest.mark.parametrize("arch", [SMALL])
def test_time_onnx_reports_median_and_p99(tmp_path, arch):
    from dnsrec_edge.export.onnx_export import export_onnx
    from dnsrec_edge.models.sasrec import SASRec

    path = export_onnx(SASRec(arch).eval(), tmp_path / "m.onnx", batch=1)
    stats = ort_timing.time_onnx([path], repeat=4, number=2, warmup=1)[str(path)]
    assert 0 < stats["median_ms"] <= stats["p99_ms"] and stats["threads"] == 1
