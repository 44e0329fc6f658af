"""A tiny search on a slice of real ml-100k, retraining, and the CLI's error messages."""

import itertools
import json
import shutil
from dataclasses import replace

import pytest
from click.testing import CliRunner

from dnsrec_edge.cli import main
from dnsrec_edge.cost.analysis import analyze
from dnsrec_edge.errors import ArchSpecError, BudgetError, DnsrecError
from dnsrec_edge.fsio import read_jsonl
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.search.loop import SearchConfig
from dnsrec_edge.search.retrain import retrain
from dnsrec_edge.search.run import search
from dnsrec_edge.search.space import SearchSpace
from dnsrec_edge.search.supernet import Supernet
from dnsrec_edge.train.checkpoint import load_checkpoint
from dnsrec_edge.train.trainer import TrainConfig

MAX_LEN = 20
ACCEPTED = (
    "latency=25% (share of the baseline), flops=25%supernet (share of the full supernet), "
    "flops=30M, latency=1.5ms, energy=2mJ or step-latency=0.05ms (one streaming step)"
)


def _space(dataset, **kw):
    return SearchSpace(dataset.n_items, MAX_LEN, max_depth=3, gate_hidden=4, **kw)


def _config(**kw):
    return SearchConfig(epochs=3, warmup_epochs=1, max_len=MAX_LEN, batch_size=64, threads=1, **kw)


def _train_config():
    return TrainConfig(epochs=1, max_len=MAX_LEN, batch_size=64, threads=1)


@pytest.fixture(scope="module")
def run(ml100k_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "run"
    result = search(
        ml100k_small, "flops=30%", out, config=_config(), space=_space(ml100k_small), quiet=True
    )
    return result, out


@pytest.mark.slow
def test_search_writes_a_run_folder_within_budget(run, ml100k_small):
    result, out = run
    arch = ArchSpec.load(out / "arch.json")
    raw = json.loads((out / "arch.json").read_text())
    assert raw["depth"] == arch.depth == len(raw["blocks"]) and arch == result.arch
    assert arch.n_items == ml100k_small.n_items and arch.max_len == MAX_LEN
    flops = analyze(arch).flops
    assert flops == result.cost <= result.limit == pytest.approx(0.30 * result.reference)
    records = [r for _, r, _ in read_jsonl(out / "search_log.jsonl")]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in (
        "alpha_attn",
        "alpha_ffn",
        "beta",
        "temperature",
        "penalty_weight",
        "expected_cost",
        "valid",
        "selected_cost",
    ):
        assert key in records[-1]
    assert records[0]["phase"] == "warmup" and records[0]["temperature"] == 1.0
    temps = [r["temperature"] for r in records]
    assert temps == sorted(temps, reverse=True)  # annealing never heats up
    assert "largest_valid_ndcg@10" in records[0]
    assert all(r["selected_cost"] <= result.limit for r in records)
    model, meta = load_checkpoint(out / "supernet.pt", ml100k_small.fingerprint)
    assert isinstance(model, Supernet) and meta["kind"] == "supernet"
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["selected"]["cost"] == flops and run_json["budget"]["text"] == "flops=30%"
    assert run_json["budget"]["relative_to"] == "baseline"
    assert (
        run_json["baseline"]["cost"]
        == analyze(ArchSpec.from_dict(run_json["baseline"]["arch"])).flops
    )
    front = json.loads((out / "front.json").read_text())
    assert len(front) >= 2 and all(p["cost"] <= result.limit for p in front)
    # picked on the front: the costliest point within one paired standard error of the best
    chosen = next(p for p in front if p["choice"] == run_json["selected"]["choice"])
    tied = [p for p in front if p["gap"] is not None and p["gap"] >= -p["gap_se"]]
    assert chosen in tied and chosen["cost"] == max(p["cost"] for p in tied)
    best = max(p["valid"]["ndcg@10"] for p in front)
    assert any(p["valid"]["ndcg@10"] == best and p["gap"] == 0.0 for p in tied)


@pytest.mark.slow
def test_temperature_holds_while_the_cost_is_far_from_the_budget(ml100k_small, tmp_path):
    # a budget no architecture comes near: the expected cost stays far below it, so the
    # temperature schedule never takes a step
    res = search(
        ml100k_small,
        "flops=5000%",
        tmp_path / "r",
        config=_config(sandwich=False),
        space=_space(ml100k_small),
        quiet=True,
    )
    records = [r for _, r, _ in read_jsonl(res.out_dir / "search_log.jsonl")]
    assert [r["temperature"] for r in records] == [1.0, 1.0, 1.0]


@pytest.mark.slow
def test_retrain_from_scratch_and_finetuned(run, ml100k_small):
    _, out = run
    for mode in ("scratch", "finetune"):
        res = retrain(out, mode, config=_train_config(), dataset=ml100k_small, quiet=True)
        assert res.arch == ArchSpec.load(out / "arch.json")
        assert res.model.arch == res.arch  # the dense small SASRec, not a masked full one
        saved = json.loads((out / f"retrain-{mode}" / "metrics.json").read_text())
        assert 0.0 <= saved["metrics"]["test"]["full"]["ndcg@10"] <= 1.0
        assert saved["flops"] == analyze(res.arch).flops


@pytest.mark.slow
def test_retrain_distilled_from_a_teacher(run, ml100k_small):
    _, out = run
    teacher = SASRec(ArchSpec.uniform(ml100k_small.n_items, MAX_LEN, 32, 1, 1)).eval()
    with pytest.raises(DnsrecError, match="needs the trained baseline as teacher"):
        retrain(out, "distill", config=_train_config(), dataset=ml100k_small, quiet=True)
    res = retrain(
        out, "distill", config=_train_config(), dataset=ml100k_small, quiet=True, teacher=teacher
    )
    saved = json.loads((out / "retrain-distill" / "config.json").read_text())
    assert saved["mode"] == "distill" and saved["train"]["distill"] == 0.5
    assert res.model.arch == ArchSpec.load(out / "arch.json")
    assert 0.0 <= res.metrics["test"]["full"]["ndcg@10"] <= 1.0


def test_budget_below_the_cheapest_architecture_names_it(ml100k_small, tmp_path):
    space = _space(ml100k_small)
    with pytest.raises(BudgetError) as err:
        search(ml100k_small, "flops=100k", tmp_path / "r", config=_config(), space=space)
    message = str(err.value)
    assert message.startswith(
        "no architecture in the search space meets the budget flops=100000 "
        "(0.100 MFLOPs); the cheapest reachable costs "
    )
    assert message.endswith("depth 1, 1 head(s) FFN 64); raise the budget to at least that")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_latency_budget_needs_a_target(ml100k_small, tmp_path):
    with pytest.raises(
        BudgetError, match="^a latency budget needs a hardware target; pass --target"
    ):
        search(
            ml100k_small,
            "latency=1ms",
            tmp_path / "r",
            config=_config(),
            space=_space(ml100k_small),
        )


@pytest.mark.slow
def test_a_step_latency_budget_searches_a_subnet_that_streams(ml100k_small, tmp_path):
    from dnsrec_edge.cost.calibrated import load_cost_model
    from dnsrec_edge.cost.streaming import predict_step
    from dnsrec_edge.export.streaming import export_streaming_checkpoint

    space = _space(ml100k_small, positions="start_anchored")
    res = search(
        ml100k_small, "step-latency=95%", tmp_path / "r", "x86_64",
        config=_config(), space=space, quiet=True,
    )  # fmt: skip
    assert res.arch.positions == "start_anchored"
    step_ms = predict_step(load_cost_model("x86_64"), res.arch).latency_ms
    assert step_ms == pytest.approx(res.cost) and res.cost <= res.limit
    run_json = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run_json["budget"]["kind"] == "step-latency"
    assert run_json["cost_model"] == "StepCostModel"
    tuned = retrain(tmp_path / "r", "finetune", config=_train_config(), dataset=ml100k_small,
                    quiet=True)  # fmt: skip
    assert tuned.model.arch.positions == "start_anchored"
    ckpt = tmp_path / "r" / "retrain-finetune" / "model.pt"
    _, check = export_streaming_checkpoint(ckpt, tmp_path / "step.onnx", rows=8)
    assert check.max_abs_diff <= 1e-4 and check.steps > 0


def test_a_step_latency_budget_refuses_a_left_padded_space(ml100k_small, tmp_path):
    with pytest.raises(BudgetError, match="needs a start-anchored search space, not 'left_padded'"):
        search(
            ml100k_small, "step-latency=1ms", tmp_path / "r", "x86_64",
            config=_config(), space=_space(ml100k_small),
        )  # fmt: skip
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_front_no_measurement_fits_fails_and_keeps_the_trained_supernet(ml100k_small, tmp_path):
    out = tmp_path / "r"
    with pytest.raises(BudgetError) as err:
        search(
            ml100k_small, "latency=40%", out, "x86_64", config=_config(),
            space=_space(ml100k_small), measure=lambda archs: [0.8] * len(archs), quiet=True,
        )  # fmt: skip
    assert "even 10% over it: the cheapest measured 80% of the baseline" in str(err.value)
    assert f"are kept in {out}" in str(err.value)
    front = json.loads((out / "front.json").read_text())
    assert front and all(p["measured_share"] == 0.8 for p in front)
    net, _ = load_checkpoint(out / "supernet.pt", ml100k_small.fingerprint)
    assert isinstance(net, Supernet)
    assert not (out / "arch.json").exists()  # nothing claims a selection


@pytest.mark.slow
@pytest.mark.parametrize("baseline_valid", [None, 1.0])  # 1.0: the warm-up rule's target
def test_a_second_budget_reuses_the_warmup_and_searches_as_without_it(
    ml100k_small, tmp_path, baseline_valid
):
    cache = tmp_path / "cache"
    # every depth in both budgets' supernets: a budget that leaves out depths trains another
    # supernet, whose warm-up has another key
    config = replace(_config(), epochs=5, max_warmup_epochs=3, feasible_depths=False)

    def run(name, budget, cache=cache):
        res = search(ml100k_small, budget, tmp_path / name, config=config, quiet=True,
                     space=_space(ml100k_small), warmup_cache=cache,
                     baseline_valid=baseline_valid)  # fmt: skip
        run_json = json.loads((tmp_path / name / "run.json").read_text())
        log = [r for _, r, _ in read_jsonl(tmp_path / name / "search_log.jsonl")]
        searched = [(r["epoch"], r["valid"], r["selected"]) for r in log if r["phase"] == "search"]
        return res, run_json["warmup"], searched

    plain, plain_warmup, plain_log = run("plain", "flops=30%", cache=None)
    first, first_warmup, first_log = run("first", "flops=30%")
    assert len(list(cache.glob("*.pt"))) == len(list(cache.glob("*.sha256"))) == 1
    again, again_warmup, again_log = run("again", "flops=30%")
    assert not plain_warmup["reused"] and not first_warmup["reused"] and again_warmup["reused"]
    # the search epochs after a reused warm-up run exactly as after a trained one
    assert plain_log == first_log == again_log and plain.arch == first.arch == again.arch
    _, other_warmup, _ = run("other", "flops=60%")  # the warm-up does not depend on the budget
    assert other_warmup["reused"]
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:-1] + b"x")  # a damaged entry is trained anew
    _, damaged_warmup, _ = run("damaged", "flops=30%")
    assert not damaged_warmup["reused"]
    none = tmp_path / "no-warmup"  # a search without warm-up epochs leaves no entry
    search(ml100k_small, "flops=30%", tmp_path / "n", config=replace(_config(), warmup_epochs=0),
           space=_space(ml100k_small), quiet=True, warmup_cache=none)  # fmt: skip
    assert not none.exists() or not any(none.iterdir())


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_refuses_an_unparsable_budget(tmp_path):
    res = _invoke(
        "search", "--dataset", "ml-100k", "--budget", "flops=lots", "--out", tmp_path / "r"
    )
    assert res.exit_code == 1
    assert f"Error: cannot parse budget 'flops=lots'; use {ACCEPTED}" in res.output


@pytest.mark.slow
def test_cli_search_and_retrain_refuse_bad_arch_json(run, ml100k_small, tmp_path):
    _, out = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "arch.json").write_text("{not json")
    res = _invoke("retrain", copy)
    assert res.exit_code == 1
    assert (
        f"Error: '{copy / 'arch.json'}' is not a valid architecture (ArchSpec is not valid "
        "JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))); "
        "restore it or run the search again"
    ) in res.output
    other = ArchSpec(ml100k_small.n_items, MAX_LEN, 64, (BlockSpec(3, 16, 256, 4),))
    (copy / "arch.json").write_text(other.to_json())
    res = _invoke("retrain", copy)
    assert res.exit_code == 1
    assert (
        f"Error: '{copy / 'arch.json'}' does not fit the run's search space (block 0 (softmax "
        "attention, 3 heads, FFN 256) is not a candidate of the search space); restore it or "
        "run the search again"
    ) in res.output
    with pytest.raises(ArchSpecError, match="depth 2 but lists 1 block"):
        (copy / "arch.json").write_text(json.dumps(other.to_dict() | {"depth": 2}))
        retrain(copy, dataset=ml100k_small)


@pytest.mark.slow
def test_cli_search_end_to_end_on_a_file(ml100k_small, tmp_path):
    rows = ["user_id,item_id,timestamp"]
    for u, seq in enumerate(ml100k_small.sequences):
        rows += [f"{u},{item},{t}" for t, item in enumerate(seq.tolist())]
    path = tmp_path / "slice.csv"
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    res = _invoke(
        "--quiet",
        "search",
        "--dataset",
        path,
        "--budget",
        "flops=25%",
        "--epochs",
        2,
        "--max-len",
        MAX_LEN,
        "--blocks",
        2,
        "--gate-hidden",
        4,
        "--threads",
        1,
        "--out",
        out,
    )
    assert res.exit_code == 0, res.output
    arch = json.loads((out / "arch.json").read_text())
    assert arch["depth"] == len(arch["blocks"]) >= 1
    assert "selected depth" in res.output
    res = _invoke("search", "--dataset", path, "--budget", "flops=25%", "--out", out)
    assert res.exit_code == 1
    assert (
        f"Error: output '{out}' already exists; choose another path or pass --force" in res.output
    )


def test_load_baseline_reads_the_arch_and_the_runs_validation_ndcg(run, ml100k_small, tmp_path):
    from dnsrec_edge.errors import InputFileError
    from dnsrec_edge.search.run import load_baseline
    from dnsrec_edge.train.checkpoint import save_checkpoint

    arch = ArchSpec.uniform(ml100k_small.n_items, MAX_LEN, 16, 2, 1)
    path = save_checkpoint(tmp_path / "base" / "model.pt", SASRec(arch), ml100k_small.fingerprint)
    assert load_baseline(path) == (arch, None)
    metrics = {"metrics": {"valid": {"full": {"ndcg@10": 0.0871}}}}
    (tmp_path / "base" / "metrics.json").write_text(json.dumps(metrics))
    assert load_baseline(path) == (arch, 0.0871)
    _, out = run
    with pytest.raises(InputFileError, match="is not a trained SASRec baseline"):
        load_baseline(out / "supernet.pt")


def test_a_search_from_a_baseline_starts_from_it_and_validates_on_its_held_out_users(
    ml100k_small, tmp_path
):
    from dataclasses import asdict

    from dnsrec_edge.search.front import hard_valid
    from dnsrec_edge.train.checkpoint import save_checkpoint
    from dnsrec_edge.train.trainer import validation_holdout, validation_users

    space = _space(ml100k_small)
    trained_with = replace(_train_config(), valid_share=0.5)
    base = SASRec(ArchSpec.uniform(ml100k_small.n_items, MAX_LEN, 64, 2, 4, ffn=64))
    path = save_checkpoint(tmp_path / "base" / "model.pt", base, ml100k_small.fingerprint,
                           {"train_config": asdict(trained_with)})  # fmt: skip
    res = search(ml100k_small, "flops=30%", tmp_path / "run", config=_config(), space=space,
                 quiet=True, baseline_checkpoint=path)  # fmt: skip
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    warmup = run_json["warmup"]
    depth = run_json["space"]["max_depth"]  # flops=30% leaves out the depths it cannot buy
    assert depth < space.max_depth
    assert warmup["inherited"] == ["item_emb", "pos_emb", "ln_f", *(f"blocks.{i}" for i in
                                   range(min(depth, 2)))]  # fmt: skip
    assert run_json["config"]["lr"] == pytest.approx(_config().lr * _config().inherit_lr)
    holdout = validation_holdout(ml100k_small, trained_with)
    held = validation_users(ml100k_small, holdout)
    assert warmup["validation_users"] == held.n_users == holdout.sum() < ml100k_small.n_users
    # the selection was scored on the held-out users only: the others' items were trained on
    assert res.valid == hard_valid(res.model, held, res.choice, MAX_LEN)
    assert res.valid != hard_valid(res.model, ml100k_small, res.choice, MAX_LEN)
    other = save_checkpoint(tmp_path / "other" / "model.pt", base, "another dataset")
    with pytest.raises(DnsrecError, match="was trained on dataset"):
        search(ml100k_small, "flops=30%", tmp_path / "refused", config=_config(), space=space,
               quiet=True, baseline_checkpoint=other)  # fmt: skip
    assert not (tmp_path / "refused").exists()  # nothing written for a refused baseline
    plain = search(ml100k_small, "flops=30%", tmp_path / "plain", quiet=True, space=space,
                   config=replace(_config(), inherit=False), baseline_checkpoint=path)  # fmt: skip
    assert plain.model.item_emb.weight.ne(base.item_emb.weight).any()
    plain_json = json.loads((tmp_path / "plain" / "run.json").read_text())
    assert plain_json["warmup"]["inherited"] == [] and plain_json["config"]["lr"] == _config().lr


@pytest.mark.parametrize("baseline_valid", [1.0, 1e-6])
def test_the_warmup_goes_on_until_the_target_or_an_epoch_that_no_longer_helps(
    ml100k_small, tmp_path, baseline_valid
):
    config = replace(_config(), epochs=7, warmup_epochs=1, max_warmup_epochs=5)
    search(ml100k_small, "flops=30%", tmp_path / "run", config=config, quiet=True,
           space=_space(ml100k_small), baseline_valid=baseline_valid)  # fmt: skip
    log = [r for _, r, _ in read_jsonl(tmp_path / "run" / "search_log.jsonl")]
    warm = [r["largest_valid_ndcg@10"] for r in log if r["phase"] == "warmup"]
    assert [r["phase"] for r in log] == ["warmup"] * len(warm) + ["search"] * 6
    if baseline_valid < 0.01:  # the target is met after the first epoch
        assert len(warm) == 1
        return
    assert all(v < 0.95 for v in warm)  # the target (0.95) is never met
    # every epoch but the last raised the largest path; the last did not, or hit the cap
    assert all(b > a for a, b in itertools.pairwise(warm[:-1]))
    assert len(warm) == 5 or warm[-1] <= warm[-2]
