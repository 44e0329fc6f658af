"""``dnsrec-edge train`` and ``dnsrec-edge evaluate``: the SASRec baseline and its metrics."""

from __future__ import annotations

from pathlib import Path

import click

from dnsrec_edge.cli.options import columns_from, dataset_options, threads_option
from dnsrec_edge.train.config import (
    LOSSES,
    NORMS,
    POSITION_LAYOUTS,
    PRECISIONS,
    SAMPLERS,
    SCHEDULES,
    TrainConfig,
)

DEFAULTS = TrainConfig()
PART_CHOICES = ("valid", "test")


def print_metrics(metrics: dict, title: str) -> None:
    """Rich table: rows protocol x part, columns HR@10, NDCG@10, MRR@10."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("protocol")
    table.add_column("part")
    keys = ("hr@10", "ndcg@10", "mrr@10")
    for key in keys:
        table.add_column(key.upper(), justify="right")
    protocols = next(iter(metrics.values())).keys()
    for protocol in protocols:
        for part, by_protocol in metrics.items():
            row = by_protocol[protocol]
            table.add_row(protocol, part, *(f"{row[k]:.4f}" for k in keys))
    Console().print(table)


@click.command("train")
@click.option(
    "--dataset",
    "dataset_name",
    default="ml-100k",
    show_default=True,
    help="Registered dataset name (ml-1m, ml-100k, ml-latest-small) or interaction file.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder for config, checkpoints, history and metrics.",
)
@dataset_options
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=DEFAULTS.epochs,
    show_default=True,
    help="Maximum epochs (the cosine schedule decays over them).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULTS.batch_size,
    show_default=True,
    help="Users per batch.",
)
@click.option(
    "--lr", type=float, default=DEFAULTS.lr, show_default=True, help="Peak Adam learning rate."
)
@click.option(
    "--warmup-epochs",
    type=float,
    default=DEFAULTS.warmup_epochs,
    show_default=True,
    help="Linear warm-up length.",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default=DEFAULTS.schedule,
    show_default=True,
    help="Learning-rate schedule after warm-up.",
)
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default=DEFAULTS.loss,
    show_default=True,
    help="ce: full softmax; sampled: shared negatives with logQ; bce: SASRec's original.",
)
@click.option(
    "--negatives",
    type=click.IntRange(min=1),
    default=DEFAULTS.negatives,
    show_default=True,
    help="Negatives per batch (sampled) or per position (bce).",
)
@click.option(
    "--sampler",
    type=click.Choice(SAMPLERS),
    default=DEFAULTS.sampler,
    show_default=True,
    help="Proposal of the sampled loss.",
)
@click.option(
    "--max-len",
    type=click.IntRange(min=1),
    default=DEFAULTS.max_len,
    show_default=True,
    help="Sequence length.",
)
@click.option(
    "--valid-share",
    type=click.FloatRange(0, 1, min_open=True),
    default=DEFAULTS.valid_share,
    show_default=True,
    help="Share of users whose validation item is held out for early stopping; the others "
    "also train on it (test items are never trained on).",
)
@click.option(
    "--crop",
    type=click.FloatRange(0, 1),
    default=DEFAULTS.crop,
    show_default=True,
    help="Chance that a history longer than --max-len trains on an earlier window.",
)
@click.option(
    "--hidden",
    type=click.IntRange(min=1),
    default=DEFAULTS.hidden,
    show_default=True,
    help="Embedding width.",
)
@click.option(
    "--blocks",
    type=click.IntRange(min=1),
    default=DEFAULTS.blocks,
    show_default=True,
    help="Transformer blocks.",
)
@click.option(
    "--heads",
    type=click.IntRange(min=1),
    default=DEFAULTS.heads,
    show_default=True,
    help="Attention heads.",
)
@click.option(
    "--ffn",
    type=click.IntRange(min=1),
    default=DEFAULTS.ffn,
    help="FFN width (default: --hidden, as in the SASRec paper).",
)
@click.option(
    "--norm",
    type=click.Choice(NORMS),
    default=DEFAULTS.norm,
    show_default=True,
    help="Block kind: pre (pre-LayerNorm) or query (the SASRec paper's block: only the "
    "queries are normalised).",
)
@click.option(
    "--positions",
    type=click.Choice(POSITION_LAYOUTS),
    default=DEFAULTS.positions,
    show_default=True,
    help="Position layout: left_padded (the newest item at max_len - 1) or start_anchored "
    "(the oldest at 0: positions never move, so the model can stream; see export --streaming).",
)
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=DEFAULTS.dropout,
    show_default=True,
    help="Dropout rate.",
)
@click.option(
    "--ema",
    type=click.FloatRange(0, 1, max_open=True),
    default=DEFAULTS.ema,
    show_default=True,
    help="Per-step decay of a weight average that is validated and kept (0: off).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=DEFAULTS.patience,
    show_default=True,
    help="Stop after this many epochs without a better valid NDCG@10.",
)
@click.option(
    "--max-minutes",
    type=float,
    default=None,
    help="Stop after the epoch that passes this wall time.",
)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True, help="Random seed.")
@threads_option("torch")
@click.option(
    "--device",
    default=DEFAULTS.device,
    show_default=True,
    help="Torch device that trains: cpu, cuda or cuda:N (checkpoints are saved for the CPU).",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=DEFAULTS.precision,
    show_default=True,
    help="bf16: the training matmuls run in bfloat16 (about 1.5x faster on CPUs with "
    "AVX512-BF16 or AMX); validation and the saved weights stay float32.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--force", is_flag=True, help="Start over in an existing --out folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def train_cmd(
    ctx,
    dataset_name,
    out_dir,
    min_count,
    fmt,
    user_col,
    item_col,
    time_col,
    resume,
    force,
    as_json,
    **settings,
) -> None:
    """Train the SASRec baseline on a dataset and print HR/NDCG/MRR@10 for valid and test."""
    from dnsrec_edge.data.load import load_dataset
    from dnsrec_edge.fsio import ensure_new
    from dnsrec_edge.train.trainer import train_baseline

    quiet = ctx.obj.get("quiet", False)
    if not resume:
        ensure_new(out_dir, force)  # refuse early, before loading data
    elif not quiet:
        click.echo("resuming: the run folder's saved training settings are used", err=True)
    config = TrainConfig(**settings)
    dataset = load_dataset(
        dataset_name,
        min_count=min_count,
        fmt=fmt,
        columns=columns_from(user_col, item_col, time_col),
        quiet=quiet,
    )
    if not quiet:
        click.echo(
            f"dataset {dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
            f"{dataset.n_interactions:,} interactions ({min_count}-core)",
            err=True,
        )
        shown = ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None)
        click.echo(f"settings: {shown}; run folder {out_dir}", err=True)
    result = train_baseline(dataset, out_dir, config, quiet=quiet, resume=resume, force=force)
    if as_json:
        import json

        summary = {
            "dataset": dataset.name,
            "checkpoint": str(Path(out_dir) / "model.pt"),
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "train_seconds": round(result.train_seconds, 2),
            "metrics": result.metrics,
        }
        click.echo(json.dumps(summary, indent=2))
        return
    print_metrics(
        result.metrics,
        f"{dataset.name}: SASRec, best epoch {result.best_epoch} of "
        f"{result.epochs}, {result.train_seconds / 60:.1f} min",
    )
    click.echo(f"checkpoint: {Path(out_dir) / 'model.pt'}")


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--dataset",
    "dataset_name",
    default=None,
    help="Dataset name or file (default: the one the checkpoint was trained on).",
)
@dataset_options
@click.option(
    "--part",
    type=click.Choice(PART_CHOICES),
    multiple=True,
    help="valid and/or test (default both).",
)
@click.option(
    "--include-seen", is_flag=True, help="Rank items the user already saw too (full and sampled)."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the sampled negatives."
)
@threads_option("torch")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.pass_context
def evaluate_cmd(
    ctx,
    checkpoint,
    dataset_name,
    min_count,
    fmt,
    user_col,
    item_col,
    time_col,
    part,
    include_seen,
    seed,
    threads,
    as_json,
) -> None:
    """Evaluate CHECKPOINT (a model.pt or a run folder) under full, uni100 and pop100."""
    import json

    from dnsrec_edge.train.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(
        checkpoint,
        dataset_name,
        min_count=min_count,
        fmt=fmt,
        columns=columns_from(user_col, item_col, time_col),
        parts=part or PART_CHOICES,
        exclude_seen=not include_seen,
        seed=seed,
        threads=threads,
        quiet=ctx.obj.get("quiet", False),
    )
    metrics = result.metrics
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        print_metrics(metrics, f"{result.dataset.name}: {result.path}")


def register(group: click.Group) -> None:
    group.add_command(train_cmd)
    group.add_command(evaluate_cmd)
