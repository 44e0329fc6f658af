"""``dnsrec-edge bench``: check a compiled artifact on its board, time it, meter its energy."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dnsrec_edge.cli.options import (
    board_options,
    calibration_dir_option,
    check_board,
    threads_option,
)


@click.command("bench")
@click.argument("artifact", type=click.Path(path_type=Path))
@board_options(local="Run on this machine (in-process TVM runtime).")
@click.option(
    "--devices",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Boards to run on, side by side, under the tracker key.",
)
@threads_option("tvm")
@click.option(
    "--warmup",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Untimed calls before timing.",
)
@click.option(
    "--repeat",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed samples; percentiles are over these.",
)
@click.option(
    "--number",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Back-to-back calls averaged into each sample.",
)
@click.option(
    "--energy",
    default="auto",
    show_default=True,
    metavar="SOURCE",
    help="auto, rapl, hwmon[:NAME], ina3221[:RAIL], command:CMD or model (target "
    "power prior x latency, labelled as modelled).",
)
@click.option(
    "--idle-baseline",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Measure idle power this long first and subtract it.",
)
@click.option(
    "--sysfs-root",
    default="/",
    show_default=True,
    help="Where the board's /sys is mounted, for its energy sensors (e.g. /host in a container).",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON report here.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@click.option(
    "--no-record",
    is_flag=True,
    help="Do not append the measurement to the target's calibration records.",
)
@calibration_dir_option("to append the measurement to")
@click.option(
    "--session-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Streaming artifacts: pushes in the replayed session [default: the model's max_len].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of a summary.")
@click.pass_context
def bench_cmd(
    ctx: click.Context,
    artifact: Path,
    local: bool,
    rpc: str | None,
    tracker: str | None,
    key: str | None,
    devices: int,
    threads: int | None,
    warmup: int,
    repeat: int,
    number: int,
    energy: str,
    idle_baseline: float,
    sysfs_root: str,
    out: Path | None,
    force: bool,
    no_record: bool,
    calibration_dir: Path | None,
    session_steps: int | None,
    as_json: bool,
) -> None:
    """Check a compiled ARTIFACT on its board, then time it and meter its energy.

    The artifact's sha256s and architecture are checked before upload; the board's output
    on the reference input must match ONNX Runtime (max abs diff <= 1e-4, same top-10)
    before anything is timed. Non-emulated results are appended to the calibration records.
    """
    from dnsrec_edge.bench.run import benchmark
    from dnsrec_edge.errors import DnsrecError

    check_board(local, rpc, tracker, key)
    try:
        report = benchmark(
            artifact,
            rpc=rpc,
            tracker=tracker,
            key=key,
            devices=devices,
            threads=threads,
            warmup=warmup,
            repeat=repeat,
            number=number,
            energy=energy,
            out=out,
            record=not no_record,
            calibration_dir=calibration_dir,
            force=force,
            idle_baseline_s=idle_baseline,
            sysfs_root=sysfs_root,
            session_steps=session_steps,
        )
    except DnsrecError as err:
        if out is not None and getattr(err, "report", None) is not None:
            click.echo(f"The partial report was written to {out}.", err=True)
        raise
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif not ctx.obj.get("quiet"):
        report.summary()
    if out is not None and not as_json:
        click.echo(f"Report written to {out}.")
    if report.record_error:
        kept = f"the report is in {out}" if out is not None else "the report above is kept"
        click.secho(
            f"Warning: the measurement was not recorded ({report.record_error}); {kept}.",
            err=True,
            fg="yellow",
        )


def register(group: click.Group) -> None:
    """Add ``bench`` to the CLI."""
    group.add_command(bench_cmd)
