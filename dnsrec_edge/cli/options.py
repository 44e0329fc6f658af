"""Options several commands share, each declared once as a decorator.

As sqlite-utils' ``output_options``: a command stacks the bundle it needs, and the option's
name, type and help stay the same everywhere it appears. Where the meaning differs by command
(what a thread count sizes, what the store is used for) the decorator takes that one phrase.

Example::

    @click.command("bench")
    @board_options(local="Run on this machine (in-process TVM runtime).")
    @threads_option("tvm")
    @calibration_dir_option("to append the measurement to")
    def bench_cmd(local, rpc, tracker, key, threads, calibration_dir): ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dnsrec_edge.data.formats import FORMATS

THREADS_HELP = {
    "torch": "Torch threads (default: all cores).",
    "tvm": "TVM worker threads on the board (default: the target's, capped at its cores).",
}
CHECK_DATASET_HELP = (
    "Dataset the model was trained on (registry name or file), for checks on real histories; "
    "without it, synthetic histories are used."
)


def _stack(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """One decorator applying ``options`` so that ``--help`` lists them in this order."""

    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _with(prefix: str, text: str) -> str:
    return f"{prefix} {text[0].lower()}{text[1:]}" if prefix else text


def board_options(
    *, local: str | None = None, prefix: str = "", key_default: str = ""
) -> Callable[[Any], Any]:
    """``--rpc``, ``--rpc-tracker`` and ``--rpc-key`` (parameters ``rpc``, ``tracker``, ``key``),
    and ``--local`` when ``local`` gives its help. ``prefix`` says when they apply ("With
    --tune:"); ``key_default`` what an omitted key means."""
    options = []
    if local is not None:
        options.append(click.option("--local", is_flag=True, help=local))
    options += [
        click.option(
            "--rpc",
            "rpc",
            metavar="HOST:PORT",
            help=_with(
                prefix,
                "The board behind this TVM RPC server (started there with "
                "`dnsrec-edge device serve`).",
            ),
        ),
        click.option(
            "--rpc-tracker",
            "tracker",
            metavar="HOST:PORT",
            help=_with(prefix, "A board leased from this TVM RPC tracker (with --rpc-key)."),
        ),
        click.option(
            "--rpc-key",
            "key",
            metavar="KEY",
            help="Key the boards registered under at the tracker"
            + (f" (default: {key_default})." if key_default else "."),
        ),
    ]
    return _stack(options)


def check_board(local: bool, rpc: str | None, tracker: str | None, key: str | None) -> None:
    """Exactly one of ``--local``, ``--rpc`` and ``--rpc-tracker``; a tracker needs its key."""
    if sum(bool(x) for x in (local, rpc, tracker)) != 1:
        raise click.UsageError("choose exactly one of --local, --rpc HOST:PORT, --rpc-tracker")
    if tracker and not key:
        raise click.UsageError("--rpc-tracker needs --rpc-key, the key the boards registered with")


def threads_option(kind: str) -> Callable[[Any], Any]:
    """``--threads N``: ``kind`` "torch" (training, evaluation) or "tvm" (the board's pool)."""
    return click.option("--threads", type=click.IntRange(min=1), help=THREADS_HELP[kind])


def calibration_dir_option(use: str) -> Callable[[Any], Any]:
    """``--calibration-dir``: the cost-model store, ``use`` saying what the command does with it."""
    return click.option(
        "--calibration-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help=f"Calibration store {use}, instead of $DNSREC_EDGE_HOME/calibration (the shipped "
        "calibration/ still underlies it).",
    )


def targets_dir_option(func: Any) -> Any:
    """``--targets-dir``: an extra folder of target TOML files."""
    return click.option(
        "--targets-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Extra folder of target TOML files [default: $DNSREC_EDGE_TARGETS_DIR].",
    )(func)


def check_dataset_option(func: Any) -> Any:
    """``--dataset`` of commands that check a model on real histories (prune, export)."""
    return click.option("--dataset", help=CHECK_DATASET_HELP)(func)


def dataset_options(func: Any) -> Any:
    """Options shared by commands that read a dataset: --min-count, --format, column names."""
    return _stack(
        [
            click.option(
                "--min-count",
                type=click.IntRange(min=0),
                default=5,
                show_default=True,
                help="k-core: drop users and items with fewer interactions (0 keeps all).",
            ),
            click.option(
                "--format",
                "fmt",
                type=click.Choice(FORMATS),
                default=None,
                help="Reader for a file (default: from its suffix).",
            ),
            click.option(
                "--user-col", default=None, help="User id column of a CSV/TSV/Parquet/.inter file."
            ),
            click.option(
                "--item-col", default=None, help="Item id column of a CSV/TSV/Parquet/.inter file."
            ),
            click.option("--time-col", default=None, help="Timestamp column (numeric) of a file."),
        ]
    )(func)


def columns_from(
    user_col: str | None, item_col: str | None, time_col: str | None
) -> dict[str, str]:
    """The ``columns`` mapping for ``load_dataset`` from the column options."""
    given = {"user": user_col, "item": item_col, "time": time_col}
    return {role: name for role, name in given.items() if name}


def measure_with_option() -> Callable[[Any], Any]:
    """``--measure-with`` (parameter ``measure_with``): the runtime a latency budget on this
    host is measured under."""
    from dnsrec_edge.bench.host_latency import RUNTIMES

    return click.option(
        "--measure-with",
        type=click.Choice(sorted(RUNTIMES)),
        default="ort",
        show_default=True,
        help="On this host a latency budget's costs are measured, not predicted: under ONNX "
        "Runtime (ort: the runtime a user would otherwise pick, so the subnet meets the "
        "budget there too) or as this toolkit's default TVM builds for --target (tvm: the "
        "artifact it ships).",
    )
