"""``dnsrec-edge export``: a SASRec checkpoint to a validated ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from dnsrec_edge.cli.options import check_dataset_option
from dnsrec_edge.export.quantize import SCHEMES


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX file to write.",
)
@click.option(
    "--topk",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Add an in-graph TopK returning the K best item ids and scores (0: scores only).",
)
@click.option(
    "--static-shape",
    is_flag=True,
    help="Fix the batch axis (to --batch) for compilers; default: dynamic batch.",
)
@click.option(
    "--batch",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Batch size of a --static-shape export.",
)
@check_dataset_option
@click.option(
    "--streaming",
    is_flag=True,
    help="Write the one-position step graph of a start_anchored model (inputs: item, "
    "position, key/value cache; outputs: scores and the updated cache), validated by "
    "replaying histories against a full recompute. Static batch (--batch).",
)
@click.option(
    "--quantize",
    type=click.Choice(SCHEMES),
    help="Write an int8 file (ONNX Runtime's static QDQ quantization: weights per channel, "
    "activations calibrated on --dataset's validation histories), published only if it keeps "
    "0.99x the float32 test NDCG@10 and 0.9 of its top-10. Needs --dataset.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def export_cmd(
    checkpoint: Path,
    out: Path,
    topk: int,
    static_shape: bool,
    batch: int,
    dataset: str | None,
    streaming: bool,
    quantize: str | None,
    force: bool,
) -> None:
    """Export a SASRec CHECKPOINT to ONNX and validate it against PyTorch.

    Validation fails hard: onnx.checker, then ONNX Runtime vs PyTorch, max abs diff
    <= 1e-4 and identical top-10 lists; every mismatch is listed.
    """
    if streaming and quantize:
        raise click.UsageError("--quantize applies to whole-sequence exports; drop --streaming")
    if streaming:
        from dnsrec_edge.export.streaming import export_streaming_checkpoint

        path, rep = export_streaming_checkpoint(
            checkpoint, out, topk=topk, batch=batch, dataset=dataset, force=force
        )
        click.echo(
            f"wrote {path} ({path.stat().st_size:,} bytes); step graph under ONNX Runtime vs a "
            f"full recompute over {rep.histories} {rep.inputs} replayed item by item "
            f"({rep.steps} steps): max abs diff {rep.max_abs_diff:.2g}, top-10 identical"
        )
        return
    from dnsrec_edge.export.checkpoint import export_checkpoint

    path, report = export_checkpoint(
        checkpoint,
        out,
        topk=topk,
        batch=batch if static_shape else None,
        dataset=dataset,
        force=force,
        quantize=quantize,
    )
    q = report.quantized
    if q is None:
        click.echo(
            f"wrote {path} ({path.stat().st_size:,} bytes); ONNX Runtime vs PyTorch on "
            f"{report.rows} {report.inputs} histories: max abs diff {report.max_abs_diff:.2g}, "
            f"top-{report.k} identical"
        )
        return
    click.echo(
        f"wrote {path} ({q['bytes']:,} bytes, {q['bytes'] / q['fp32_bytes']:.2f}x the float32 "
        f"file); on {q['users']} test users: NDCG@10 {q['ndcg_int8']:.4f} vs {q['ndcg_fp32']:.4f} "
        f"float32 ({q['ndcg_ratio']:.3f}x), top-10 overlap {q['top10_overlap']:.3f}"
    )


def register(group: click.Group) -> None:
    """Add export to the CLI group."""
    group.add_command(export_cmd)
