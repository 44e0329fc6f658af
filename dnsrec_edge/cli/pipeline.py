"""``dnsrec-edge pipeline``: the whole loop in one resumable command."""

from __future__ import annotations

import click

from dnsrec_edge.flow.presets import PRESETS, STAGE_NAMES


@click.command("pipeline")
@click.option(
    "--dataset",
    metavar="NAME|PATH",
    help="Registered dataset (ml-1m, ml-100k, ml-latest-small) or an interaction file. "
    "Without it the embedded default runs: ml-100k with short settings, benched on this "
    "host, plus an arm64 artifact.",
)
@click.option(
    "--target",
    default=None,
    help="Hardware target to search, compile and bench for (default x86_64; see "
    "'dnsrec-edge targets list').",
)
@click.option(
    "--budget",
    metavar="KIND=VALUE",
    help="Search budget: flops=25%, latency=2ms or energy=2mJ (default flops=25%).",
)
@click.option("--rpc", metavar="HOST:PORT", help="Bench on the board whose RPC server is here.")
@click.option(
    "--rpc-tracker", metavar="HOST:PORT", help="Bench on a board taken from this RPC tracker."
)
@click.option("--rpc-key", metavar="KEY", help="Board key at the tracker (default: the target's).")
@click.option(
    "--emulate",
    is_flag=True,
    help="Bench an arm64 target on the emulated board (qemu-user on this host; timings are "
    "labelled emulated and never become calibration records).",
)
@click.option(
    "--artifact-target",
    "artifact_targets",
    multiple=True,
    metavar="TARGET",
    help="Also compile for this target without benching it (repeatable; the embedded "
    "default adds arm64).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Run folder (default runs/<dataset>-<target>, or runs/default). Rerunning with the "
    "same folder resumes: finished stages are reused.",
)
@click.option(
    "--from",
    "from_stage",
    type=click.Choice(STAGE_NAMES),
    help="Redo this stage and every stage after it, even if finished.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="Training and search budgets: full (the default with --dataset), short (the "
    "embedded default), smoke (a tiny end-to-end check).",
)
@click.option("--quick", is_flag=True, help="Same as --preset smoke: tiny settings, minutes.")
@click.option(
    "--calibration-dir",
    type=click.Path(file_okay=False),
    help="Cost-model store to read and to append measurements to (default the user store).",
)
@click.option(
    "--refit",
    is_flag=True,
    help="After benching, refit the target's cost model from its measurement records (a "
    "later latency- or energy-budget search then redoes the search with it).",
)
@click.option("--threads", type=int, help="Torch threads for training (default all cores).")
@click.pass_context
def pipeline_cmd(
    ctx: click.Context,
    dataset: str | None,
    target: str | None,
    budget: str | None,
    rpc: str | None,
    rpc_tracker: str | None,
    rpc_key: str | None,
    emulate: bool,
    artifact_targets: tuple[str, ...],
    out: str | None,
    from_stage: str | None,
    preset: str | None,
    quick: bool,
    calibration_dir: str | None,
    refit: bool,
    threads: int | None,
) -> None:
    """Data, baseline, search, prune, fine-tune, export, compile, bench, calibrate, report.

    Every stage stores its outputs with a hash of its inputs under OUT/stages/; rerunning
    skips what is finished and redoes only what changed. The report is OUT/report.html
    (self-contained) and OUT/report.md.
    """
    if sum(bool(x) for x in (rpc, rpc_tracker, emulate)) > 1:
        raise click.UsageError("choose at most one of --rpc, --rpc-tracker and --emulate")
    if quick and preset not in (None, "smoke"):
        raise click.UsageError("--quick means --preset smoke; drop one of them")
    from dnsrec_edge.flow.run import pipeline, render_table

    embedded = dataset is None
    result = pipeline(
        dataset or "ml-100k",
        target=target or "x86_64",
        budget=budget,
        rpc=rpc,
        tracker=rpc_tracker,
        key=rpc_key,
        emulate=emulate,
        artifact_targets=artifact_targets or (("arm64",) if embedded else ()),
        out=out or ("runs/default" if embedded else None),
        from_stage=from_stage,
        preset="smoke" if quick else preset or ("short" if embedded else "full"),
        calibration_dir=calibration_dir,
        threads=threads,
        refit=refit,
        quiet=ctx.obj.get("quiet", False),
    )
    click.echo(render_table(result))
    click.echo(f"Report: {result.report_html}  (also {result.report_md.name})")


def register(group: click.Group) -> None:
    group.add_command(pipeline_cmd)
