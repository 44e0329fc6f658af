"""``dnsrec-edge calibrate``: measure sampled architectures on a target and fit its cost model."""

from __future__ import annotations

from pathlib import Path

import click

from dnsrec_edge.cli.options import board_options, calibration_dir_option, threads_option


@click.command("calibrate")
@click.option("--target", "-t", required=True, help="Target name or alias (e.g. x86_64, arm64).")
@board_options(
    local="Measure on this machine (the target must be this machine's kind).",
    prefix="Measure on",
)
@click.option(
    "--samples",
    "-n",
    default=40,
    show_default=True,
    type=click.IntRange(min=1),
    help="Architectures to sample (Latin hypercube over the search space), compile and measure.",
)
@click.option(
    "--items",
    default="1000:10000",
    show_default=True,
    metavar="LOW:HIGH",
    help="Item counts to sample, log-uniform between LOW and HIGH: cover the catalogue "
    "sizes the model will be asked about (e.g. 1000:300000 for large catalogues).",
)
@click.option(
    "--lens",
    default="50,100,200",
    show_default=True,
    metavar="L1,L2,...",
    help="Sequence lengths to sample from.",
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Times each architecture is measured, interleaved; the fit takes the median over rounds.",
)
@click.option(
    "--show",
    is_flag=True,
    help="Measure and fit nothing: print the target's current cost model and its held-out error.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result (with --show: the cost model) as JSON.",
)
@threads_option("tvm")
@click.option(
    "--statistic",
    type=click.Choice(["min", "median"]),
    default="min",
    show_default=True,
    help="Latency figure the model predicts: the fastest of the timed calls (steady on a "
    "shared machine) or their median.",
)
@click.option(
    "--refit",
    is_flag=True,
    help="Measure nothing: refit the model from the records already stored.",
)
@calibration_dir_option("to read records from and write the model to")
@click.option(
    "--seed",
    default=0,
    show_default=True,
    help="Seed of the architecture sample and the random weights.",
)
@click.pass_context
def calibrate_cmd(
    ctx: click.Context,
    target: str,
    local: bool,
    rpc: str | None,
    tracker: str | None,
    key: str | None,
    samples: int,
    refit: bool,
    calibration_dir: Path | None,
    seed: int,
    rounds: int,
    show: bool,
    threads: int | None,
    statistic: str,
    as_json: bool,
    items: str,
    lens: str,
) -> None:
    """Calibrate a target's latency/energy model from measurements, or refit it from records.

    Prints the model's held-out accuracy (share within ±10 %, MAPE) beside the roofline
    prior's and the best FLOPs-only fit's, and writes model.json and a predicted-vs-measured
    plot into the store.
    """
    from dnsrec_edge.bench.calibrate import calibrate
    from dnsrec_edge.cost.sampling import parse_space

    if show:
        from dnsrec_edge.cost.calibrated import load_cost_model

        model = load_cost_model(target, calibration_dir)
        if as_json:
            import json

            click.echo(json.dumps(model.to_dict(), indent=2))
        else:
            click.echo(model.describe())
        return

    result = calibrate(
        target,
        local=local,
        rpc=rpc,
        tracker=tracker,
        key=key,
        samples=samples,
        refit=refit,
        calibration_dir=calibration_dir,
        seed=seed,
        rounds=rounds,
        threads=threads,
        statistic=statistic,
        quiet=ctx.obj.get("quiet", False),
        space=parse_space(items, lens),
    )
    if as_json:
        import json

        summary = {
            "target": result.target,
            "measured": result.measured,
            "skipped": result.skipped,
            "failed": result.failed,
            "model_path": str(result.model_path),
            "plot_path": str(result.plot_path) if result.plot_path else None,
            "model": result.model.to_dict(),
        }
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(result.summary())


def register(group: click.Group) -> None:
    """Add ``calibrate`` to the ``dnsrec-edge`` group."""
    group.add_command(calibrate_cmd)
