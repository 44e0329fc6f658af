"""``dnsrec-edge search`` and ``dnsrec-edge retrain``: parse, call the API, print."""

from __future__ import annotations

from pathlib import Path

import click

from dnsrec_edge.cli.options import calibration_dir_option, measure_with_option, threads_option


@click.command("search")
@click.option(
    "--dataset", "-d", required=True, help="Registered dataset (ml-1m, ml-100k, ...) or a file."
)
@click.option(
    "--budget",
    "-b",
    required=True,
    help="Resource budget KIND=VALUE: latency=40% (share of the baseline's latency on "
    "--target; on this host measured, see --measure-with), flops=25% (of the baseline's FLOPs), "
    "flops=25%supernet (of the full supernet), flops=30M, latency=1.5ms, energy=2mJ, or "
    "step-latency=0.05ms / step-latency=10% (one streaming step: a new interaction with the "
    "key/value cache kept; the supernet is then start-anchored).",
)
@click.option("--target", "-t", help="Hardware target whose cost model prices latency/energy.")
@measure_with_option()
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The trained baseline's model.pt: what a % budget is a share of, the supernet's "
    "starting weights (unless --no-inherit) and (with its run folder's metrics.json) the "
    "warm-up's goal. Default: the SASRec of 'train's defaults.",
)
@click.option(
    "--inherit/--no-inherit",
    default=True,
    show_default=True,
    help="Start the supernet from --baseline's weights (validating on the users whose "
    "validation item the baseline held out).",
)
@click.option(
    "--epochs", default=10, show_default=True, type=click.IntRange(min=2), help="Search epochs."
)
@click.option(
    "--max-len", default=200, show_default=True, type=click.IntRange(min=2), help="Sequence length."
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    help="Epochs that train only the weights before the controllers move (default: 30% of --epochs).",
)
@click.option(
    "--blocks",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Maximum depth of the supernet.",
)
@click.option(
    "--all-depths",
    is_flag=True,
    help="Search every depth up to --blocks, also those whose cheapest architecture is over "
    "the budget (by default they are left out before training).",
)
@click.option(
    "--heads",
    default="4,2,1",
    show_default=True,
    help="Head-count candidates (comma separated; 16 channels per head).",
)
@click.option(
    "--ffn",
    default="256,128,64",
    show_default=True,
    help="FFN inner-width candidates (comma separated).",
)
@click.option("--linear-attention", is_flag=True, help="Add causal linear-attention candidates.")
@click.option(
    "--gate-hidden",
    default=16,
    show_default=True,
    type=click.IntRange(min=0),
    help="Hidden width of each data-aware gate (0: no gates).",
)
@click.option(
    "--positions",
    type=click.Choice(["left_padded", "start_anchored"]),
    help="Position layout of the supernet and its subnets (default: start_anchored for a "
    "step-latency budget, so the subnet can stream; else left_padded).",
)
@click.option("--shared-alpha", is_flag=True, help="One alpha for all blocks (the authors' code).")
@click.option("--gumbel", is_flag=True, help="Gumbel-softmax mixing weights while training.")
@click.option(
    "--penalty",
    type=click.Choice(["dynamic", "fixed"]),
    default="dynamic",
    show_default=True,
    help="Penalty weight: dual ascent on the budget, or constant.",
)
@click.option(
    "--lam",
    default=0.01,
    show_default=True,
    type=float,
    help="Initial (dynamic) or constant (fixed) penalty weight.",
)
@click.option(
    "--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Batch size."
)
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@threads_option("torch")
@calibration_dir_option("whose cost model prices latency/energy budgets")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder to write (arch.json, supernet.pt, search_log.jsonl, run.json).",
)
@click.option("--force", is_flag=True, help="Replace the run files of an existing folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def search_cmd(
    ctx: click.Context,
    dataset: str,
    budget: str,
    target: str | None,
    measure_with: str,
    baseline: Path | None,
    inherit: bool,
    epochs: int,
    max_len: int,
    warmup: int | None,
    blocks: int,
    all_depths: bool,
    heads: str,
    ffn: str,
    linear_attention: bool,
    gate_hidden: int,
    positions: str | None,
    shared_alpha: bool,
    gumbel: bool,
    penalty: str,
    lam: float,
    batch_size: int,
    seed: int,
    threads: int | None,
    calibration_dir: Path | None,
    out: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Search the SASRec architecture that fits a budget (DNS-Rec) and write its run folder."""
    from dnsrec_edge.data.load import load_dataset
    from dnsrec_edge.search.budget import parse_budget
    from dnsrec_edge.search.loop import SearchConfig
    from dnsrec_edge.search.run import (
        default_baseline_arch,
        host_measurers,
        load_baseline,
        runs_on_this_host,
        search,
    )
    from dnsrec_edge.search.space import SearchSpace

    quiet = ctx.obj.get("quiet", False)
    parsed = parse_budget(budget)  # fail on a bad budget before loading any data
    warmup = epochs * 3 // 10 if warmup is None else warmup  # SearchConfig checks it
    config = SearchConfig(
        epochs=epochs,
        max_len=max_len,
        warmup_epochs=warmup,
        shared_alpha=shared_alpha,
        gumbel=gumbel,
        penalty=penalty,
        lam=lam,
        batch_size=batch_size,
        seed=seed,
        threads=threads,
        inherit=inherit,
        feasible_depths=not all_depths,
    )
    data = load_dataset(dataset, quiet=quiet)
    space = SearchSpace(
        data.n_items,
        max_len,
        max_depth=blocks,
        heads=_ints(heads, "--heads"),
        ffn=_ints(ffn, "--ffn"),
        attention=("softmax", "linear") if linear_attention else ("softmax",),
        gate_hidden=gate_hidden,
        positions=positions or ("start_anchored" if parsed.streaming else "left_padded"),
    )
    base_arch, base_valid = load_baseline(baseline) if baseline else (None, None)
    cost_model = measure = None
    if parsed.kind == "latency" and runs_on_this_host(target):
        cost_model, measure = host_measurers(
            base_arch or default_baseline_arch(space), runtime=measure_with, target=target
        )
    result = search(
        data,
        parsed,
        out,
        target,
        config=config,
        space=space,
        calibration_dir=calibration_dir,
        force=force,
        quiet=quiet,
        baseline=base_arch,
        baseline_valid=base_valid,
        measure=measure,
        cost_model=cost_model,
        baseline_checkpoint=baseline,
    )
    if as_json:
        import json

        summary = {
            "arch": result.arch.to_dict(),
            "budget": str(result.budget),
            "kind": parsed.kind,
            "unit": parsed.unit,
            "cost": result.cost,
            "limit": result.limit,
            "share": result.share,
            "valid": result.valid,
            "best_epoch": result.best_epoch,
            "argmax_in_budget": result.argmax_in_budget,
            "run": str(result.out_dir),
            "seconds": round(result.seconds, 2),
        }
        click.echo(json.dumps(summary, indent=2))
        return
    unit = "MFLOPs" if parsed.kind == "flops" else parsed.unit
    scale = 1e6 if parsed.kind == "flops" else 1.0
    blocks_text = "; ".join(
        f"{b.heads}x{b.head_dim} {b.attention} heads, FFN {b.ffn}" for b in result.arch.blocks
    )
    click.echo(f"selected depth {result.arch.depth}: {blocks_text}")
    click.echo(
        f"cost {result.cost / scale:.4g} {unit} ({100 * result.share:.1f}% of "
        f"{'the baseline' if parsed.relative_to == 'baseline' else 'the full supernet'}), "
        f"budget {result.limit / scale:.4g} {unit}; valid NDCG@10 {result.valid['ndcg@10']:.4f} "
        f"(epoch {result.best_epoch})"
    )
    if not result.argmax_in_budget:
        click.echo(
            "note: the argmax architecture was over budget; the most probable in-budget one was taken"
        )
    click.echo(f"wrote {result.out_dir / 'arch.json'} ({result.seconds:.0f} s)")


def _ints(text: str, option: str) -> tuple[int, ...]:
    from dnsrec_edge.errors import ArchSpecError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ArchSpecError(
            f"{option} '{text}' must be comma-separated integers, e.g. 4,2,1"
        ) from None


@click.command("retrain")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(["scratch", "finetune", "distill"]),
    default="scratch",
    show_default=True,
    help="scratch: a fresh SASRec (the paper); finetune: start from the supernet's weights; "
    "distill: start from them and learn from --teacher's scores too.",
)
@click.option(
    "--teacher",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The trained baseline's model.pt: the teacher of --mode distill, whose training "
    "settings (epochs, schedule, early stopping) the subnet then gets too.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), help="Maximum epochs (default: the trainer's)."
)
@click.option("--patience", type=click.IntRange(min=1), help="Early-stopping patience in epochs.")
@threads_option("torch")
@click.option("--force", is_flag=True, help="Replace an earlier retrain of the same mode.")
@click.pass_context
def retrain_cmd(
    ctx: click.Context,
    run_dir: Path,
    mode: str,
    teacher: Path | None,
    epochs: int | None,
    patience: int | None,
    threads: int | None,
    force: bool,
) -> None:
    """Retrain the architecture a search selected (RUN_DIR/arch.json) and evaluate it."""
    from dataclasses import replace

    from dnsrec_edge.search.retrain import retrain, retrain_config

    quiet = ctx.obj.get("quiet", False)
    config = retrain_config(run_dir, teacher)
    overrides = {
        k: v
        for k, v in (("epochs", epochs), ("patience", patience), ("threads", threads))
        if v is not None
    }
    result = retrain(
        run_dir,
        mode,
        config=replace(config, **overrides),
        force=force,
        quiet=quiet,
        teacher=teacher,
    )
    test = result.metrics["test"]
    click.echo(
        f"{mode}: test full HR@10 {test['full']['hr@10']:.4f} NDCG@10 {test['full']['ndcg@10']:.4f}; "
        f"pop100 NDCG@10 {test['pop100']['ndcg@10']:.4f} (best epoch {result.best_epoch}, "
        f"{result.train_seconds:.0f} s)"
    )
    click.echo(f"wrote {result.out_dir}")


def register(group: click.Group) -> None:
    group.add_command(search_cmd)
    group.add_command(retrain_cmd)
