"""``dnsrec-edge prune`` and ``prune-baseline``: small SASRec models from a search or a ratio."""

from __future__ import annotations

from pathlib import Path

import click

from dnsrec_edge.cli.options import check_dataset_option


@click.command("prune")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--arch",
    type=click.Path(dir_okay=False, path_type=Path),
    help="ArchSpec JSON to materialise, instead of the run folder's arch.json.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    help="Output folder for model.pt, plan.json and arch.json (default: RUN_DIR/pruned).",
)
@check_dataset_option
@click.option("--force", is_flag=True, help="Overwrite an existing output model.")
def prune_cmd(
    run_dir: Path, arch: Path | None, out: Path | None, dataset: str | None, force: bool
) -> None:
    """Materialise the subnet chosen by a search run as a small SASRec (torch-pruning).

    RUN_DIR is a search run folder (supernet.pt + arch.json) or a supernet checkpoint.
    The pruned model must reproduce the selected supernet within 1e-5.
    """
    from dnsrec_edge.prune.run import prune_run

    path, plan = prune_run(run_dir, arch=arch, out_dir=out, dataset=dataset, force=force)
    eq = plan["equivalence"]
    click.echo(
        f"wrote {path}: {plan['params_before']:,} -> {plan['params_after']:,} parameters, "
        f"{plan['flops_before']:,} -> {plan['flops_after']:,} FLOPs per inference; "
        f"max abs diff vs the selected supernet {eq['max_abs_diff']:.2g} on {eq['rows']} "
        f"{eq['inputs']} histories"
    )


@click.command("prune-baseline")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--ratio",
    required=True,
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    help="Share of each block's heads (head dims with one head) and FFN channels to remove.",
)
@click.option(
    "--importance",
    default="magnitude",
    show_default=True,
    type=click.Choice(["magnitude", "lamp", "random"]),
    help="torch-pruning importance that ranks the coupled groups.",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output run folder (model.pt, plan.json, training history).",
)
@click.option("--dataset", help="Dataset to fine-tune on (default: the one the checkpoint names).")
@click.option(
    "--epochs",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Upper bound on fine-tuning epochs (early stopping on valid NDCG@10).",
)
@click.option("--no-finetune", is_flag=True, help="Only prune; skip fine-tuning.")
@click.option("--force", is_flag=True, help="Overwrite an existing output folder.")
@click.pass_context
def prune_baseline_cmd(
    ctx,
    checkpoint: Path,
    ratio: float,
    importance: str,
    out: Path,
    dataset: str | None,
    epochs: int,
    no_finetune: bool,
    force: bool,
) -> None:
    """Prune a trained SASRec CHECKPOINT to a ratio without search, then fine-tune it."""
    from dnsrec_edge.prune.baseline import prune_baseline
    from dnsrec_edge.train.trainer import TrainConfig

    result = prune_baseline(
        checkpoint,
        ratio,
        importance=importance,
        finetune=not no_finetune,
        dataset=dataset,
        config=TrainConfig(epochs=epochs),
        out_dir=out,
        force=force,
        quiet=ctx.obj.get("quiet", False),
    )
    plan = result.plan
    click.echo(
        f"wrote {out}: {plan['params_before']:,} -> {plan['params_after']:,} parameters, "
        f"{plan['flops_before']:,} -> {plan['flops_after']:,} FLOPs per inference"
    )
    if result.metrics:
        full = result.metrics["full"]
        click.echo(f"fine-tuned: test HR@10 {full['hr@10']:.4f}, NDCG@10 {full['ndcg@10']:.4f}")


def register(group: click.Group) -> None:
    """Add prune and prune-baseline to the CLI group."""
    group.add_command(prune_cmd)
    group.add_command(prune_baseline_cmd)
