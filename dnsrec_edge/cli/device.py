"""``dnsrec-edge device serve|info|list|emulate``: the boards themselves."""

from __future__ import annotations

import json

import click

from dnsrec_edge.cli.options import board_options, check_board


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
@board_options(local="This machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def info_cmd(
    local: bool, rpc: str | None, tracker: str | None, key: str | None, as_json: bool
) -> None:
    """Show a board's facts: architecture, CPU, cores, frequency, TVM version, energy sensors."""
    from dnsrec_edge.board.rpc import describe

    check_board(local, rpc, tracker, key)
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
@click.option(
    "--rpc-tracker",
    "tracker",
    required=True,
    metavar="HOST:PORT",
    help="The TVM RPC tracker whose boards to list.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def list_cmd(tracker: str, as_json: bool) -> None:
    """List the boards an RPC tracker has, by key, with free and pending counts."""
    from dnsrec_edge.board.rpc import tracker_boards

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
    """Add the ``device`` group to the CLI."""
    group.add_command(device_group)
