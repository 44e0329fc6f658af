"""The ``dnsrec-edge`` command line: parse, call the Python API, print. No logic here.

Each command family lives in its own module (``cli/data.py``, ``cli/compile.py``, ...) and
registers itself on :data:`main` via ``COMMAND_MODULES``. Typed :class:`DnsrecError`s become
one line ``Error: ...`` and exit code 1; under ``--json`` the line is a JSON object on stdout,
``{"error": "...", "type": "..."}``, with the same exit code. ``-q/--quiet`` and
``-v/--verbose`` work before the command and after it (``dnsrec-edge train -q``).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from typing import Any

import click

from dnsrec_edge.errors import DnsrecError

# Modules that define commands; each exposes ``register(group)``.
COMMAND_MODULES = (
    "dnsrec_edge.cli.data",
    "dnsrec_edge.cli.train",
    "dnsrec_edge.cli.search",
    "dnsrec_edge.cli.prune",
    "dnsrec_edge.cli.export",
    "dnsrec_edge.cli.compile",
    "dnsrec_edge.cli.bench",
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
            if (ctx.obj or {}).get("json"):
                click.echo(json.dumps({"error": str(err), "type": type(err).__name__}))
            else:
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
    ctx.ensure_object(dict)
    ctx.obj.update(quiet=quiet, verbose=verbose)
    _configure_logging(ctx.obj)


def _configure_logging(obj: dict[str, Any]) -> None:
    level = (
        logging.DEBUG
        if obj.get("verbose")
        else logging.WARNING
        if obj.get("quiet")
        else logging.INFO
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)


def _late_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """``-q``/``-v`` given after the command: the same as before it."""
    if value:
        obj = ctx.find_root().ensure_object(dict)
        obj[param.name] = True
        _configure_logging(obj)
    return value


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """Note ``--json`` so that a failure is reported as a JSON object too."""
    ctx.find_root().ensure_object(dict)["json"] = bool(value)
    return value


def _share_options(command: click.Command) -> None:
    """Give ``command`` (and every subcommand) the late ``-q``/``-v`` and the ``--json`` hook."""
    names = {n for p in command.params for n in getattr(p, "opts", [])}
    for flags, name, text in (
        (("-q", "--quiet"), "quiet", "Only warnings and errors; no progress bars."),
        (("-v", "--verbose"), "verbose", "Show debug logging."),
    ):
        if not names & set(flags):
            command.params.append(
                click.Option(
                    [*flags, name],
                    is_flag=True,
                    expose_value=False,
                    callback=_late_verbosity,
                    help=text,
                )
            )
    for param in command.params:
        if param.name == "as_json" and param.callback is None:
            param.callback = _remember_json
    for sub in getattr(command, "commands", {}).values():
        _share_options(sub)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(main)
    for command in main.commands.values():
        _share_options(command)


_register_all()
