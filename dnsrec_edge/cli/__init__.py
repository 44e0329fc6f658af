"""The ``dnsrec-edge`` command line: parse, call the Python API, print. No logic here.

Each command family lives in its own module (``cli/data.py``, ``cli/compile.py``, ...) and
registers itself on :data:`main` via ``COMMAND_MODULES``. Typed :class:`DnsrecError`s become
one line ``Error: ...`` and exit code 1.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from dnsrec_edge.errors import DnsrecError

# Modules that define commands; each exposes ``register(group)``.
COMMAND_MODULES = (
    "dnsrec_edge.cli.data",
    "dnsrec_edge.cli.train",
    "dnsrec_edge.cli.search",
    "dnsrec_edge.cli.export",
    "dnsrec_edge.cli.compile",
    "dnsrec_edge.cli.device",
    "dnsrec_edge.cli.calibrate",
    "dnsrec_edge.cli.pipeline",
)


class _Group(click.Group):
    """Turns toolkit errors into one clear sentence and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DnsrecError as err:
            click.secho(f"Error: {err}", err=True, fg="red")
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.secho("Interrupted; finished outputs were kept.", err=True, fg="yellow")
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.version_option(package_name="dnsrec-edge")
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """dnsrec-edge: search, prune, compile and measure SASRec recommenders for edge devices."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that command family is not built yet
                continue
            raise
        module.register(main)


_register_all()
