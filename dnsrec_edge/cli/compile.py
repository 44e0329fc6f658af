"""``dnsrec-edge compile`` and ``dnsrec-edge targets list|show``: parse, call the API, print."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dnsrec_edge.cli.options import board_options, targets_dir_option


@click.command("compile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-t",
    "--target",
    default=None,
    help="Target name or alias (see `dnsrec-edge targets list`) [default: host, the preset "
    "this machine's CPU matches].",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Artifact folder [default: MODEL-TARGET beside the model].",
)
@click.option(
    "--batch",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Batch size to compile for (static).",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=1),
    default=None,
    help="Sequence length [default: the model's].",
)
@click.option(
    "--tune",
    is_flag=True,
    help="Tune the heaviest kernels with MetaSchedule, timed on this host or on --rpc's board.",
)
@click.option(
    "--trials",
    default=None,
    type=click.IntRange(min=1),
    help="Measured candidates for --tune [default: 256, or no limit with --minutes].",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --tune: a time budget; kernels get it by their share of the model's time.",
)
@click.option(
    "--tuning-db",
    type=click.Path(path_type=Path),
    default=None,
    help="Tuning database folder [default: one per target and model shapes under $DNSREC_EDGE_HOME/tuning].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads the build is scheduled for (TVM num-cores) [default: the target's; for "
    "host and the x86_64/arm64 presets, the board's usable cores].",
)
@board_options(prefix="With --tune, time the candidates on")
@targets_dir_option
@click.option(
    "--force",
    is_flag=True,
    help="Replace an earlier artifact's files in the output folder (nothing else there).",
)
@click.pass_context
def compile_cmd(
    ctx,
    model,
    target,
    out_dir,
    batch,
    seq_len,
    tune,
    trials,
    minutes,
    tuning_db,
    threads,
    rpc,
    tracker,
    key,
    targets_dir,
    force,
):
    """Compile an ONNX SASRec with Apache TVM for a hardware target.

    Writes an artifact folder: lib.so (cross-linked for the target), manifest.json and an ONNX
    Runtime reference input/output for on-device checks.
    """
    from dnsrec_edge.compile.build import compile as compile_model

    quiet = ctx.obj.get("quiet", False)
    result = compile_model(
        model,
        target,
        out_dir,
        batch=batch,
        seq_len=seq_len,
        tune=tune,
        trials=trials,
        tuning_db=tuning_db,
        rpc=rpc,
        tracker=tracker,
        key=key,
        force=force,
        quiet=quiet,
        targets_dir=targets_dir,
        threads=threads,
        minutes=minutes,
    )
    m = result.manifest
    asked = m.get("target_requested", m["target"])
    click.echo(
        f"{result.path}: {asked + ' -> ' if asked != m['target'] else ''}{m['target']} "
        f"({m['arch']}/{m['device']}, {m['threads']} threads), "
        f"{m['kernels']['scheduled']}/{m['kernels']['total']} kernels scheduled, "
        f"{m['tuning']['scheduled_funcs']} from tuning records, {m['compile_seconds']} s"
    )
    if "kept" in m["tuning"]:
        ms = m["tuning"]["whole_model_ms"]
        click.echo(
            f"whole model on this host: tuned {ms['tuned']:.4f} ms, default {ms['default']:.4f} "
            f"ms; the {m['tuning']['kept']} build is kept"
        )


@click.group("targets")
def targets_group():
    """List and show hardware targets (targets/*.toml plus $DNSREC_EDGE_TARGETS_DIR)."""


@targets_group.command("list")
@targets_dir_option
def targets_list(targets_dir):
    """One line per target: name, aliases, arch, device, description; then `host`."""
    from dnsrec_edge.compile.targets import HOST, host_target, list_targets

    targets = list_targets(targets_dir)
    for t in targets:
        aliases = ", ".join(t.aliases)
        click.echo(
            f"{t.name:15s} {t.arch:8s} {t.device:5s} {t.description}"
            + (f"  [{aliases}]" if aliases else "")
        )
    if all(t.name != HOST for t in targets):
        here = host_target(targets_dir)
        click.echo(f"{HOST:15s} {here.arch:8s} {here.device:5s} -> {here.name}: {here.description}")


@targets_group.command("show")
@click.argument("name")
@targets_dir_option
def targets_show(name, targets_dir):
    """Every field of one target as JSON (TVM dicts, compiler, priors and their sources)."""
    from dnsrec_edge.compile.targets import load_target

    click.echo(json.dumps(load_target(name, targets_dir).to_dict(), indent=2))


def register(group: click.Group) -> None:
    """Add ``compile`` and ``targets`` to the top-level command group."""
    group.add_command(compile_cmd)
    group.add_command(targets_group)
