"""``dnsrec-edge bench`` and ``dnsrec-edge device serve|info|list|emulate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

_RPC_HELP = "RPC server of one board, HOST:PORT (started there with `dnsrec-edge device serve`)."
_TRACKER_HELP = "RPC tracker HOST:PORT that pools boards (needs --rpc-key)."
_KEY_HELP = "Device key the boards registered with on the tracker."


def _board_mode(local: bool, rpc: str | None, tracker: str | None, key: str | None) -> None:
    chosen = sum(bool(x) for x in (local, rpc, tracker))
    if chosen != 1:
        raise click.UsageError("choose exactly one of --local, --rpc HOST:PORT, --rpc-tracker")
    if tracker and not key:
        raise click.UsageError("--rpc-tracker needs --rpc-key, the key the boards registered with")


@click.command("bench")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--local", is_flag=True, help="Run on this machine (in-process TVM runtime).")
@click.option("--rpc", "rpc", metavar="HOST:PORT", help=_RPC_HELP)
@click.option("--rpc-tracker", "tracker", metavar="HOST:PORT", help=_TRACKER_HELP)
@click.option("--rpc-key", "key", help=_KEY_HELP)
@click.option(
    "--devices",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Boards to run on, side by side, under the tracker key.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="TVM worker threads on the board (default: the target's, capped at its cores).",
)
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
@click.option(
    "--calibration-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Calibration store to append to (default: $DNSREC_EDGE_HOME/calibration).",
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
    as_json: bool,
) -> None:
    """Check a compiled ARTIFACT on its board, then time it and meter its energy.

    The artifact's sha256s and architecture are checked before upload; the board's output
    on the reference input must match ONNX Runtime (max abs diff <= 1e-4, same top-10)
    before anything is timed. Non-emulated results are appended to the calibration records.
    """
    from dnsrec_edge.bench.run import benchmark
    from dnsrec_edge.errors import DnsrecError

    _board_mode(local, rpc, tracker, key)
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


@click.group("device")
def device_group() -> None:
    """Boards: serve TVM RPC on one, ask its facts, list a tracker's, emulate arm64."""


@device_group.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; 0.0.0.0 exposes it to the network (trusted networks only).",
)
@click.option(
    "--port", default=9090, show_default=True, type=click.IntRange(1, 65535), help="Port to bind."
)
@click.option("--tracker", metavar="HOST:PORT", help="Register with this RPC tracker.")
@click.option("--key", default="", help="Device key to register under on the tracker.")
@click.pass_context
def serve_cmd(ctx: click.Context, host: str, port: int, tracker: str | None, key: str) -> None:
    """Serve TVM RPC with the dnsrec-edge agent until Ctrl-C (run this on the board).

    The board needs only the TVM runtime: pip install apache-tvm==0.27.0.post1
    apache-tvm-ffi==0.1.14.post0 psutil cloudpickle tornado, then pip install --no-deps
    dnsrec-edge (or run python -m dnsrec_edge.bench.server with the same options).
    """
    from dnsrec_edge.bench.server import run_forever

    run_forever(host, port, tracker, key, quiet=ctx.obj.get("quiet", False))


@device_group.command("info")
@click.option("--local", is_flag=True, help="This machine.")
@click.option("--rpc", "rpc", metavar="HOST:PORT", help=_RPC_HELP)
@click.option("--rpc-tracker", "tracker", metavar="HOST:PORT", help=_TRACKER_HELP)
@click.option("--rpc-key", "key", help=_KEY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def info_cmd(
    local: bool, rpc: str | None, tracker: str | None, key: str | None, as_json: bool
) -> None:
    """Show a board's facts: architecture, CPU, cores, frequency, TVM version, energy sensors."""
    from dnsrec_edge.bench.rpc import describe

    _board_mode(local, rpc, tracker, key)
    facts = describe(rpc, tracker, key)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    if not facts["agent"]:
        click.echo(
            f"{facts['address']}: a plain TVM RPC server without the dnsrec-edge agent, so "
            "its facts cannot be read; serve it with `dnsrec-edge device serve`."
        )
        return
    sensors = facts.pop("energy_sensors")
    for name, value in facts.items():
        click.echo(f"{name:>16}: {value}")
    readable = [f"{s['source']}:{s['name']}" for s in sensors if s["readable"]]
    unreadable = [f"{s['source']}:{s['name']}" for s in sensors if not s["readable"]]
    click.echo(
        f"{'energy sensors':>16}: {', '.join(readable) or 'none readable'}"
        + (f" (unreadable: {', '.join(unreadable)})" if unreadable else "")
    )


@device_group.command("list")
@click.option("--rpc-tracker", "tracker", required=True, metavar="HOST:PORT", help=_TRACKER_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def list_cmd(tracker: str, as_json: bool) -> None:
    """List the boards an RPC tracker has, by key, with free and pending counts."""
    from dnsrec_edge.bench.rpc import tracker_boards

    rows = tracker_boards(tracker)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"The tracker at {tracker} has no boards.")
        return
    click.echo(f"{'key':<16} {'address':<22} {'free':>4} {'pending':>7}")
    for r in rows:
        click.echo(f"{r['key']:<16} {r['address']:<22} {r['free']!s:>4} {r['pending']!s:>7}")


@device_group.command("emulate")
@click.argument("arch", type=click.Choice(["arm64", "aarch64"]))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=9090, show_default=True, type=click.IntRange(1, 65535), help="Port to bind."
)
@click.option("--tracker", metavar="HOST:PORT", help="Register with this RPC tracker.")
@click.option("--key", default="", help="Device key to register under on the tracker.")
@click.pass_context
def emulate_cmd(
    ctx: click.Context, arch: str, host: str, port: int, tracker: str | None, key: str
) -> None:
    """Serve an emulated ARCH board (qemu-user) until Ctrl-C or SIGTERM, then stop it all.

    The first start downloads Debian's arm64 CPython and the aarch64 TVM wheels (~450 MB)
    into $DNSREC_EDGE_HOME/emulate. Its timings are emulated: reports say so and they are
    never recorded.
    """
    from dnsrec_edge.bench.emulate import serve_foreground

    serve_foreground(arch, host, port, tracker, key, quiet=ctx.obj.get("quiet", False))


def register(group: click.Group) -> None:
    """Add ``bench`` and the ``device`` group to the CLI."""
    group.add_command(bench_cmd)
    group.add_command(device_group)
