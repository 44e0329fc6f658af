"""The per-target calibrated model: NNLS fit, held-out error, model file, prior, lookups."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from dnsrec_edge.cost.analysis import MatMul, analyze
from dnsrec_edge.cost.calibrated import (
    FEATURES,
    MIN_RECORDS,
    CalibratedModel,
    TargetFacts,
    built_columns,
    error_stats,
    features,
    load_cost_model,
)
from dnsrec_edge.cost.check import check_against_budget
from dnsrec_edge.cost.records import append_measurement, load_records
from dnsrec_edge.cost.sampling import SearchSpace, sample_archs
from dnsrec_edge.errors import BudgetError, CalibrationError
from dnsrec_edge.models.archspec import ArchSpec

# A board with no shipped calibration, so the shipped calibration/ never overlays these tests.
FACTS = TargetFacts(
    "lab-board", peak_gflops=100.0, mem_gbps=10.0, idle_watts=5.0, active_watts=30.0
)
# A plausible board (coefficients like those fitted on this project's x86_64 machine).
TRUE = {
    "overhead": 0.01,
    "kernels": 0.001,
    "gemm_gflop": 40.0,
    "gemv_gflop": 80.0,
    "gemm8_gflop": 50.0,
    "gemv8_gflop": 100.0,
    "gemm_scalar_gflop": 190.0,
    "gemv_scalar_gflop": 270.0,
    "gemm_scalar_par_gflop": 520.0,
    "gemv_scalar_par_gflop": 500.0,
    "softmax_par_gflop": 330.0,
    "other_gflop": 40.0,
    "stream_gb": 150.0,
}


def synthetic_records(
    n: int,
    seed: int = 0,
    noise: float = 0.02,
    board: str = "box-a",
    watts: float | None = None,
    space: SearchSpace | None = None,
    coef: dict | None = None,
    cache_mb: float = 8.0,
) -> list[dict]:
    rng = random.Random(seed)
    space = space or SearchSpace(n_items=(500, 4000), max_len=(20, 50))
    coef = coef or TRUE
    out = []
    for i, arch in enumerate(sample_archs(space, n, seed=seed)):
        feats = features(analyze(arch, 1, arch.max_len), cache_mb)
        ms = sum(coef[f] * feats[f] for f in FEATURES) * (1 + noise * rng.gauss(0, 1))
        energy = (
            None if watts is None else {"joules_per_inference": watts * ms / 1e3, "source": "rapl"}
        )
        out.append(
            {
                "schema": 1,
                "target": "lab-board",
                "arch": arch.to_dict(),
                "batch": 1,
                "seq_len": arch.max_len,
                "latency_ms": {"median": ms, "min": ms},
                "energy": energy,
                "device": {"hostname": board},
                "artifact_sha256": f"{seed}-{i}",
                "tuned": False,
                "time": f"2025-01-01T00:{seed % 60:02d}:{i % 60:02d}",
            }
        )
    return out


def arch_of(record: dict) -> ArchSpec:
    return ArchSpec.from_dict(record["arch"])


def test_prior_predicts_from_roofline_and_power():
    arch = sample_archs(SearchSpace(), 3)[2]
    cost = CalibratedModel.prior(FACTS).predict(arch)
    work = analyze(arch)
    assert cost.flops == work.flops
    assert cost.latency_ms > work.flops / (FACTS.peak_gflops * 1e9) * 1e3  # plus bytes, kernels
    assert cost.energy_mj == pytest.approx(FACTS.active_watts * cost.latency_ms)


def test_fit_recovers_a_board_and_reports_heldout_error():
    model = CalibratedModel.prior(FACTS).fit(synthetic_records(40))
    assert model.kind == "measured"
    assert all(c >= 0 for c in model.coefficients.values())
    assert model.meta["heldout"]["n"] == 40
    assert model.meta["heldout"]["within10"] >= 0.95
    assert model.meta["heldout"]["mape"] <= 5.0
    assert model.meta["prior_heldout"]["mape"] > 20.0  # the roofline prior is far off
    # New architectures (another seed) are predicted within 10 %.
    fresh = synthetic_records(20, seed=7, noise=0.0)
    pred = np.array([model.predict(arch_of(r)).latency_ms for r in fresh])
    meas = np.array([r["latency_ms"]["median"] for r in fresh])
    assert error_stats(meas, pred)["within10"] >= 0.95


def test_adding_records_improves_a_poor_prior():
    poor = CalibratedModel.prior(TargetFacts("lab-board", 5000.0, 500.0, 5.0, 30.0))  # far too fast
    heldout = synthetic_records(15, seed=11)
    meas = np.array([r["latency_ms"]["median"] for r in heldout])

    def mape(model):
        pred = np.array([model.predict(arch_of(r)).latency_ms for r in heldout])
        return error_stats(meas, pred)["mape"]

    train = synthetic_records(32, seed=3)
    before = mape(poor)
    after_few = mape(poor.fit(train[: MIN_RECORDS * 2]))
    after_all = mape(poor.fit(train))
    assert before > 30.0
    assert after_few < before / 5
    assert after_all <= after_few + 1.0


LARGE = SearchSpace(n_items=(1000, 1_000_000), max_len=(50, 200))


def test_item_tables_over_the_cache_count_as_streamed_and_the_fit_finds_the_cache():
    small, large = (
        ArchSpec.from_dict(sample_archs(LARGE, 2)[0].to_dict() | {"n_items": n})
        for n in (10_000, 300_000)
    )
    assert features(analyze(small), 8.0)["stream_gb"] == 0.0  # a 2.6 MB table stays in cache
    assert features(analyze(large), 8.0)["stream_gb"] == pytest.approx(4 * 64 * 300_000 / 1e9)
    model = CalibratedModel.prior(FACTS).fit(synthetic_records(40, space=LARGE, cache_mb=16.0))
    assert model.cache_mb == 16.0
    assert model.coefficients["stream_gb"] == pytest.approx(TRUE["stream_gb"], rel=0.1)
    fresh = synthetic_records(20, seed=9, noise=0.0, space=LARGE, cache_mb=16.0)
    pred = np.array([model.predict(arch_of(r)).latency_ms for r in fresh])
    meas = np.array([r["latency_ms"]["min"] for r in fresh])
    assert error_stats(meas, pred)["within10"] >= 0.95


def test_a_new_board_starts_from_an_existing_model_with_a_few_records():
    old = CalibratedModel.prior(FACTS).fit(synthetic_records(40, board="old"))
    # the new board: 1.6x slower overall, its matmuls a further 1.5x (not one plain factor)
    new = {f: 1.6 * c * (1.5 if "gemm" in f or "gemv" in f else 1.0) for f, c in TRUE.items()}
    heldout = synthetic_records(20, seed=21, noise=0.0, board="new", coef=new)
    meas = np.array([r["latency_ms"]["min"] for r in heldout])

    def within10(model):
        pred = np.array([model.predict(arch_of(r)).latency_ms for r in heldout])
        return error_stats(meas, pred)["within10"]

    few = synthetic_records(5, seed=22, board="new", coef=new)
    with pytest.raises(CalibrationError, match="at least 14"):
        CalibratedModel.prior(FACTS).fit(few)  # from the prior, five records are not enough
    moved = CalibratedModel.prior(FACTS).fit(few, start=old)
    assert within10(old) < 0.5  # the old board's model is wrong for the new one
    assert within10(moved) >= 0.9
    assert moved.meta["start"]["board"] == old.meta["board"] != moved.meta["board"]


def test_a_model_fitted_before_stream_gb_existed_still_loads(tmp_path):
    model = CalibratedModel.prior(FACTS).fit(synthetic_records(20))
    d = model.to_dict()
    del d["coefficients"]["stream_gb"], d["cache_mb"]
    loaded = CalibratedModel.from_dict(d, FACTS)
    assert loaded.coefficients["stream_gb"] == 0.0 and loaded.cache_mb == 8.0
    arch = sample_archs(SearchSpace(), 3, seed=2)[2]
    assert loaded.predict(arch).latency_ms > 0


@pytest.mark.parametrize(
    ("op", "n", "lanes", "built"),
    [
        ("scoring", 3416, 16, (3424, True)),  # a constant weight: whole 32-column tiles
        ("ffn", 208, 16, (224, True)),
        ("ffn", 48, 16, (48, False)),  # under two tiles: whole vectors already
        ("ffn", 40, 16, (48, False)),  # the matmul schedule pads it to whole AVX-512 vectors
        ("attn_scores", 200, 16, (208, False)),  # activations: padded in the schedule only
        ("attn_scores", 200, 8, (200, False)),  # whole vectors already
        ("attn_scores", 50, 8, (64, False)),  # two-vector tiles below AVX-512
        ("attn_scores", 50, 4, (56, False)),
        ("attn_v", 16, 16, (16, False)),
        ("scoring", 3416, 0, (3416, False)),  # a model fitted before the builds padded
    ],
)
def test_matmul_columns_are_counted_as_the_build_pads_them(op, n, lanes, built):
    assert built_columns(MatMul(op, 1, 1, n, 64), lanes) == built


def test_a_padded_build_runs_scoring_over_an_odd_catalogue_in_vectors():
    arch = ArchSpec.uniform(1349, 50, 64, depth=1)
    work = analyze(arch, 1, arch.max_len)
    plain, padded = features(work, 8.0), features(work, 8.0, lanes=16)
    assert plain["gemv_scalar_gflop"] > 0 and padded["gemv_scalar_gflop"] == 0
    assert padded["gemv_gflop"] > plain["gemv_gflop"]  # over 1,376 padded columns
    assert padded["kernels"] == plain["kernels"] + 1  # the slice that cuts the padding off


def test_models_count_columns_as_their_builds_did(tmp_path):
    facts = TargetFacts.of("x86_64-avx512")
    assert facts.lanes == 16 and TargetFacts.of("cuda").lanes == 0
    assert CalibratedModel.prior(facts).lanes == 16  # a prior describes today's builds
    fitted = CalibratedModel.prior(FACTS).fit(synthetic_records(20))
    assert fitted.lanes == FACTS.lanes == 0
    lab = TargetFacts("lab-board", 100.0, 10.0, 5.0, 30.0, lanes=8)
    model = CalibratedModel.prior(lab).fit(synthetic_records(20))
    d = model.to_dict()
    assert d["lanes"] == 8 and CalibratedModel.from_dict(d, lab).lanes == 8
    del d["lanes"]  # a model file written before the builds padded
    old = CalibratedModel.from_dict(d, lab)
    assert old.lanes == 0
    arch = ArchSpec.uniform(1349, 50, 64, depth=1)
    assert old.predict(arch).latency_ms != model.predict(arch).latency_ms


def test_too_few_records_says_how_many_are_needed():
    with pytest.raises(
        CalibrationError, match=f"at least {MIN_RECORDS} measured architectures.*found 3"
    ):
        CalibratedModel.prior(FACTS).fit(synthetic_records(3))


def test_other_boards_are_left_out_of_the_fit():
    records = synthetic_records(12, seed=1, board="old") + synthetic_records(
        14, seed=2, board="new"
    )
    model = CalibratedModel.prior(FACTS).fit(records)
    assert len(model.meta["records"]) == 14
    assert "12 record(s) of other boards, builds or older libraries" in model.meta["note"]


def test_an_architecture_measured_again_on_a_new_build_is_fitted_on_the_new_one():
    old = synthetic_records(20, seed=3)  # measured when the builds were slower
    for r in old:
        r["latency_ms"] = {k: 2 * v for k, v in r["latency_ms"].items()}
    new = [
        r | {"artifact_sha256": f"new-{i}", "time": "2025-02-01T00:00:00"}
        for i, r in enumerate(synthetic_records(20, seed=3))
    ]
    model = CalibratedModel.prior(FACTS).fit(old + new)
    assert len(model.meta["records"]) == 20
    assert "20 record(s) of other boards, builds or older libraries" in model.meta["note"]
    assert model.meta["heldout"]["within10"] >= 0.9  # the old, slower figures would not fit
    arch = arch_of(new[0])
    assert model.predict(arch).latency_ms == pytest.approx(new[0]["latency_ms"]["min"])


def test_model_file_round_trip_and_exact_lookup(tmp_path):
    records = synthetic_records(20, watts=25.0)
    model = CalibratedModel.prior(FACTS).fit(records)
    path = model.save(tmp_path)
    saved = json.loads(path.read_text())
    assert saved["kind"] == "measured" and saved["target"] == "lab-board"
    assert set(saved["heldout"]) == {"n", "within10", "mape"}
    assert set(saved["prior_heldout"]) == {"n", "within10", "mape"}
    assert len(saved["records"]) == 20
    assert saved["energy"]["kind"] == "measured"
    loaded = load_cost_model(FACTS, calibration_dir=tmp_path)
    arch = arch_of(records[4])
    assert loaded.predict(arch) == model.predict(arch)
    # Measured exactly: the lookup returns the measurement itself.
    assert loaded.predict(arch).latency_ms == pytest.approx(records[4]["latency_ms"]["median"])
    assert loaded.predict(arch).energy_mj == pytest.approx(
        25.0 * records[4]["latency_ms"]["median"]
    )


def test_model_file_for_another_target_is_refused(tmp_path):
    model = CalibratedModel.prior(TargetFacts("arm64", 20.0, 4.0, 2.0, 6.0))
    model.save(tmp_path)
    (tmp_path / "arm64").rename(tmp_path / "lab-board")
    with pytest.raises(CalibrationError, match="cost model for target 'arm64', not 'lab-board'"):
        load_cost_model(FACTS, calibration_dir=tmp_path)


def test_without_a_model_file_the_prior_is_used(tmp_path):
    assert load_cost_model(FACTS, calibration_dir=tmp_path).kind == "prior"
    (tmp_path / "lab-board").mkdir()
    (tmp_path / "lab-board" / "model.json").write_text("{torn")
    with pytest.raises(CalibrationError, match="cannot read cost model"):
        load_cost_model(FACTS, calibration_dir=tmp_path)


def test_records_from_the_store_refit(tmp_path, monkeypatch):
    monkeypatch.setenv("DNSREC_EDGE_HOME", str(tmp_path))
    for record in synthetic_records(MIN_RECORDS + 2, seed=5):
        append_measurement("lab-board", record, calibration_dir=tmp_path / "store")
    records = load_records("lab-board", calibration_dir=tmp_path / "store")
    model = CalibratedModel.prior(FACTS).fit(records)
    assert sorted(model.meta["records"]) == sorted(r["id"] for r in records[-MIN_RECORDS - 2 :])


def test_check_against_budget(tmp_path):
    model = CalibratedModel.prior(FACTS).fit(synthetic_records(20))
    model.save(tmp_path)
    arch = sample_archs(SearchSpace(), 5, seed=4)[4]
    predicted = model.predict(arch).latency_ms
    check = check_against_budget(
        arch, FACTS, measured=predicted * 1.05, budget=predicted, calibration_dir=tmp_path
    )
    assert not check.meets and check.verdict == "misses by less than 10 %"
    assert check.prediction_error_pct == pytest.approx(100 * (1 / 1.05 - 1))
    assert "budget" in check.summary()
    with pytest.raises(BudgetError):
        check_against_budget(arch, FACTS, measured=1.0, budget=0.0, calibration_dir=tmp_path)


def test_sampling_spreads_over_the_space():
    space = SearchSpace()
    archs = sample_archs(space, 40, seed=0)
    assert len({a.to_json() for a in archs}) == 40
    assert {a.depth for a in archs} == set(range(1, space.max_depth + 1))
    ffns = {b.ffn for a in archs for b in a.blocks}
    assert len(ffns) >= 10  # interior widths, not only the corners
    assert {b.attention for a in archs for b in a.blocks} == {"softmax", "linear"}
    assert min(a.n_items for a in archs) == space.n_items[0]
    assert sample_archs(space, 40, seed=0) == archs  # deterministic per seed


def test_a_recorded_ina3221_measurement_reaches_the_energy_fit(tmp_path):
    """A Jetson's INA3221 figures go through bench's record and are fitted, not dropped."""
    from types import SimpleNamespace

    from dnsrec_edge.bench import energy as energy_mod
    from dnsrec_edge.bench.report import BenchReport, BoardResult
    from dnsrec_edge.bench.run import _record
    from dnsrec_edge.cost.records import MEASURED_SOURCES

    meters = [energy_mod.RaplMeter, energy_mod.HwmonEnergyMeter, energy_mod.HwmonPowerMeter]
    meters += [energy_mod.Ina3221Meter, energy_mod.CommandMeter]
    assert {m.source for m in meters} == set(MEASURED_SOURCES)  # every meter's label counts
    assert energy_mod.ModelMeter.source not in MEASURED_SOURCES
    art = SimpleNamespace(manifest={"tvm_version": "0.27.0.post1"})
    for rec in synthetic_records(MIN_RECORDS + 4, watts=12.0, board="orin-1"):
        report = BenchReport(
            artifact="a", artifact_sha256=rec["artifact_sha256"], target="lab-board",
            arch="aarch64", batch=1, seq_len=rec["seq_len"], archspec=rec["arch"],
        )  # fmt: skip
        ms = rec["latency_ms"]["median"]
        board = BoardResult(label="orin-1:9090", device={"hostname": "orin-1"}, runs=[[ms] * 3])
        board.energy = {
            "joules_per_inference": rec["energy"]["joules_per_inference"],
            "source": energy_mod.Ina3221Meter.source,
        }
        _record(report, board, art, tmp_path)
    records = load_records("lab-board", tmp_path)
    assert {r["energy"]["source"] for r in records} == {"ina3221"}
    model = CalibratedModel.prior(FACTS).fit(records)
    assert model.meta["energy_records"] == len(records)
    assert model.energy_coefficients is not None
    arch = arch_of(records[0])
    assert model.predict(arch).energy_mj == pytest.approx(
        12.0 * model.predict(arch).latency_ms, rel=0.1
    )
