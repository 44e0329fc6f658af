"""``dnsrec-edge pipeline``: the whole loop in one resumable command."""

from __future__ import annotations

from pathlib import Path

import click

from dnsrec_edge.cli.options import (
    board_options,
    calibration_dir_option,
    measure_with_option,
    threads_option,
)
from dnsrec_edge.export.quantize import SCHEMES
from dnsrec_edge.pipeline.presets import PRESETS, STAGE_NAMES


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
    help="Hardware target to search, compile and bench for (default host: the preset this "
    "machine's CPU matches, with its usable cores; see 'dnsrec-edge targets list').",
)
@click.option(
    "--budget",
    metavar="KIND=VALUE",
    help="Search budget: latency=40% (a share of the trained baseline's latency on the "
    "target, the default), flops=25% (of the baseline's FLOPs), flops=25%supernet, "
    "latency=2ms or energy=2mJ.",
)
@board_options(prefix="Bench on", key_default="the target's")
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
@calibration_dir_option("to read the cost model from and append measurements to")
@click.option(
    "--refit",
    is_flag=True,
    help="After benching, refit the target's cost model from its measurement records (a "
    "later latency- or energy-budget search then redoes the search with it).",
)
@threads_option("torch")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the baseline, the search and the subnet's training (runs with other seeds "
    "measure the spread).",
)
@click.option(
    "--quantize",
    type=click.Choice(SCHEMES),
    help="Ship int8 models: export both as ONNX Runtime's static QDQ int8 files (checked to "
    "keep 0.99x the float32 test NDCG@10), then compile and bench those.",
)
@measure_with_option()
@click.pass_context
def pipeline_cmd(
    ctx: click.Context,
    dataset: str | None,
    target: str | None,
    budget: str | None,
    rpc: str | None,
    tracker: str | None,
    key: str | None,
    emulate: bool,
    artifact_targets: tuple[str, ...],
    out: str | None,
    from_stage: str | None,
    preset: str | None,
    quick: bool,
    calibration_dir: Path | None,
    refit: bool,
    threads: int | None,
    seed: int,
    quantize: str | None,
    measure_with: str,
) -> None:
    """Data, baseline, search, prune, fine-tune, export, compile, bench, calibrate, report.

    Every stage stores its outputs with a hash of its inputs under OUT/stages/; rerunning
    skips what is finished and redoes only what changed. The report is OUT/report.html
    (self-contained) and OUT/report.md.
    """
    if sum(bool(x) for x in (rpc, tracker, emulate)) > 1:
        raise click.UsageError("choose at most one of --rpc, --rpc-tracker and --emulate")
    if quick and preset not in (None, "smoke"):
        raise click.UsageError("--quick means --preset smoke; drop one of them")
    from dnsrec_edge.pipeline.run import pipeline
    from dnsrec_edge.pipeline.summaries import render_table

    embedded = dataset is None
    result = pipeline(
        dataset or "ml-100k",
        target=target or "host",
        budget=budget,
        rpc=rpc,
        tracker=tracker,
        key=key,
        emulate=emulate,
        artifact_targets=artifact_targets or (("arm64",) if embedded else ()),
        out=out or ("runs/default" if embedded else None),
        from_stage=from_stage,
        preset="smoke" if quick else preset or ("short" if embedded else "full"),
        calibration_dir=calibration_dir,
        threads=threads,
        refit=refit,
        seed=seed,
        quantize=quantize,
        measure_with=measure_with,
        quiet=ctx.obj.get("quiet", False),
    )
    click.echo(render_table(result))
    click.echo(f"Report: {result.report_html}  (also {result.report_md.name})")


def register(group: click.Group) -> None:
    group.add_command(pipeline_cmd)
