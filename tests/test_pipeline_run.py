"""The pipeline on real data: end to end on a slice of ml-100k, reruns, and its bad inputs."""

import json
import re

import pytest
from click.testing import CliRunner

from dnsrec_edge.cli import main
from dnsrec_edge.pipeline.presets import STAGE_NAMES, preset_settings
from dnsrec_edge.pipeline.run import build_stages
from dnsrec_edge.pipeline.stages import canonical
from dnsrec_edge.pipeline.steps import Plan


def _plan(budget: str) -> Plan:
    return Plan("ml-100k", "x86_64", ("arm64",), budget, None, None, None, preset_settings("short"))


def test_budget_only_enters_the_search_stage():
    """A new budget changes the search stage's settings alone; the runner then redoes the
    search and what reads it (content hashes), while data and baseline stay reused."""
    before = {s.name: canonical(s.settings) for s in build_stages(_plan("flops=25%"))}
    after = {s.name: canonical(s.settings) for s in build_stages(_plan("flops=50%"))}
    assert [n for n in STAGE_NAMES if before[n] != after[n]] == ["search"]
    deps = {s.name: s.deps for s in build_stages(_plan("flops=25%"))}
    assert "search" not in deps["baseline"] and deps["baseline"] == ("data",)


def test_quantize_enters_only_the_export_stage_and_onward():
    plain = {s.name: canonical(s.settings) for s in build_stages(_plan("flops=25%"))}
    int8_plan = _plan("flops=25%")
    int8_plan.quantize = "int8"
    int8 = {s.name: s.settings for s in build_stages(int8_plan)}
    assert int8["export"]["quantize"] == "int8"
    assert [n for n in STAGE_NAMES if canonical(int8[n]) != plain[n]] == ["export"]


def test_the_measuring_runtime_enters_only_the_search_stage():
    """On this host a latency budget is measured; ``measure_with`` picks the runtime, and the
    default keeps the settings (so the hashes) earlier run folders recorded."""
    ort = {s.name: s.settings for s in build_stages(_plan("latency=25%"))}
    assert ort["search"]["measure"] == "ort"
    assert ort["search"]["cost_model"] == "measured on this host (ONNX Runtime)"
    tvm_plan = _plan("latency=25%")
    tvm_plan.measure_with = "tvm"
    tvm = {s.name: s.settings for s in build_stages(tvm_plan)}
    assert tvm["search"]["measure"] == "tvm"
    assert tvm["search"]["cost_model"] == "measured on this host (TVM builds)"
    assert [n for n in STAGE_NAMES if canonical(tvm[n]) != canonical(ort[n])] == ["search"]


def test_bench_uses_the_threads_of_the_measured_cost_model():
    from dnsrec_edge.cost.calibrated import load_cost_model
    from dnsrec_edge.pipeline.steps import bench_options

    model = load_cost_model("x86_64")  # the shipped, measured model
    assert model.kind == "measured"
    assert bench_options(_plan("flops=25%"))["threads"] == model.meta["threads"]
    arm = Plan("ml-100k", "arm64", (), "flops=25%", None, None, None, preset_settings("short"))
    assert "threads" not in bench_options(arm)  # a prior model: the target's own count


def test_the_benched_target_is_built_for_the_threads_it_is_benched_at():
    from dnsrec_edge.cost.calibrated import load_cost_model
    from dnsrec_edge.pipeline.steps import compile_settings

    threads = load_cost_model("x86_64").meta["threads"]
    assert compile_settings(_plan("flops=25%")) == {
        "targets": ["x86_64", "arm64"],
        "threads": {"x86_64": threads},
    }
    arm = Plan("ml-100k", "arm64", (), "flops=25%", None, None, None, preset_settings("short"))
    assert compile_settings(arm) == {"targets": ["arm64"]}  # the target's own count


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--rpc", "h:1", "--emulate"], 2, "choose at most one of --rpc, --rpc-tracker"),
        (["--emulate", "--target", "x86_64"], 1, "Error: --emulate runs arm64 targets only"),
        (["--budget", "latency=fast"], 1, "Error: cannot parse budget 'latency=fast'"),
        (["--budget", "step-latency=1ms"], 1, "Error: the pipeline ships whole-sequence models"),
        (["--quantize", "int4"], 2, "Invalid value for '--quantize'"),
        (["--measure-with", "trt"], 2, "Invalid value for '--measure-with'"),
        (["--dataset", "ml-2m"], 1, "Error: unknown dataset 'ml-2m'"),
        (["--target", "arm46"], 1, "Error: unknown target 'arm46'"),
        (["--dataset", "nope/missing.csv"], 1, "Error: dataset file 'nope/missing.csv' does not"),
        (["--from", "serach"], 2, "Invalid value for '--from'"),
    ],
)
def test_bad_inputs_fail_before_any_stage(tmp_path, args, code, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["pipeline", "--quick", "--out", str(out), *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (out / "stages").exists()


def test_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["pipeline", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "already exists; choose another path or pass --force" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow
@pytest.mark.tvm
def test_end_to_end_on_a_slice_then_rerun(tmp_path, ml100k_raw):
    from dnsrec_edge import pipeline
    from dnsrec_edge.compile.targets import load_target

    frame = ml100k_raw[ml100k_raw["user"] <= 150]
    csv = tmp_path / "slice.csv"
    frame.to_csv(csv, index=False)
    run, calib = tmp_path / "run", tmp_path / "calib"
    opts = ["--out", str(run), "--calibration-dir", str(calib), "--threads", "1"]
    result = CliRunner().invoke(main, ["pipeline", "--quick", "--dataset", str(csv), *opts])
    assert result.exit_code == 0, result.output
    assert re.search(r"NDCG@10 \(full ranking\)\s+\d\.\d{4}\s+\d\.\d{4}", result.output)
    assert f"Report: {run / 'report.html'}" in result.output
    finetune = json.loads((run / "stages" / "finetune" / "done.json").read_text())["result"]
    assert finetune["budget_seconds"] > 0 and finetune["budget_spent"] > 0  # a CPU-time cap

    for name in STAGE_NAMES:
        assert (run / "stages" / name / "done.json").is_file()
    bench = json.loads((run / "stages" / "bench" / "done.json").read_text())["result"]
    assert bench["mode"] == "local"
    for model in ("baseline", "dnsrec"):
        assert bench[model]["latency_ms"]["median"] > 0
        assert bench[model]["max_abs_diff"] <= 1e-4 and bench[model]["top10_match"]
    host = load_target("host").name  # the pipeline's default target: this host's preset
    records = (calib / host / "records.jsonl").read_text().splitlines()
    assert len(records) == 2  # one measurement per model went back to the cost-model store

    md = (run / "report.md").read_text()
    assert "| NDCG@10 (full ranking) |" in md and f"## Target {host} (measured on this host)" in md
    html = (run / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == 3

    again = pipeline(csv, quick=True, out=run, calibration_dir=calib, threads=1, quiet=True)
    assert again.reused() == list(STAGE_NAMES)
    assert len((calib / host / "records.jsonl").read_text().splitlines()) == 2

    redo = pipeline(
        csv, quick=True, out=run, calibration_dir=calib, threads=1, quiet=True, from_stage="report"
    )
    assert redo.reused() == list(STAGE_NAMES[:-1])

    # a new budget: data and baseline are reused; the baseline's artifacts come from the
    # run's compile cache (same ONNX bytes), the subnet's are compiled afresh
    budget = pipeline(
        csv,
        quick=True,
        budget="flops=40%",
        out=run,
        calibration_dir=calib,
        threads=1,
        quiet=True,
    )
    assert budget.reused() == ["data", "baseline"]
    compiled = json.loads((run / "stages" / "compile" / "done.json").read_text())["result"]
    for target in compiled.values():
        assert target["baseline"]["reused"] is True


def test_finetune_budget_is_what_the_time_share_leaves_after_the_search(tmp_path):
    from dnsrec_edge.pipeline.stages import StageContext, StageOutput
    from dnsrec_edge.pipeline.steps import finetune_budget

    def out(name, cpu, **result):
        return StageOutput(name, tmp_path, result, {}, "", "", 0.0, cpu_seconds=cpu)

    def ctx(search_cpu, **search):
        upstream = {
            "baseline": out("baseline", 1000.0),
            "search": out("search", search_cpu, **search),
            "prune": out("prune", 2.0),
        }
        return StageContext("finetune", tmp_path, {}, upstream)

    assert finetune_budget(2.0, ctx(600.0)) == pytest.approx(1398.0)
    # a warm-up reused from another budget's search counts at what it cost then
    reused = ctx(300.0, warmup_reused=True, warmup_cpu_seconds=300.0)
    assert finetune_budget(2.0, reused) == pytest.approx(1398.0)
    assert finetune_budget(2.0, ctx(2500.0)) == pytest.approx(1e-3)  # one epoch, then stop
    assert finetune_budget(None, ctx(600.0)) is None
    assert finetune_budget(2.0, ctx(None)) is None  # a stage of a version that kept no time
