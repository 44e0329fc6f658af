"""A saved model's metrics on the data it was trained on (``dnsrec-edge evaluate``).

The checkpoint names its dataset (file or registry name, reader, columns, k-core); without an
explicit dataset that one is read and preprocessed as it was. ``valid`` is scored on the users
whose validation item the model was not trained on (the run's own hold-out).

Example::

    result = evaluate_checkpoint("runs/base", parts=("test",))
    result.metrics["test"]["full"]["ndcg@10"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.data.load import load_dataset
from dnsrec_edge.errors import InputFileError
from dnsrec_edge.evaluate import evaluate
from dnsrec_edge.train.checkpoint import load_checkpoint, read_checkpoint
from dnsrec_edge.train.config import TrainConfig
from dnsrec_edge.train.trainer import set_threads, validation_holdout, validation_users

PARTS = ("valid", "test")


@dataclass
class CheckpointMetrics:
    """What :func:`evaluate_checkpoint` measured: ``{part: {protocol: {metric: value}}}``."""

    path: Path
    dataset: Dataset
    metrics: dict[str, dict[str, dict[str, float]]]


def _dataset(path, extra, dataset, min_count, fmt, columns, quiet) -> Dataset:
    """``dataset`` as given, or (``None``) the one the checkpoint was trained on, read and
    preprocessed with the checkpoint's own reader, columns and k-core (from its ``extra``)."""
    name: Any = dataset
    if name is None:
        source = extra.get("dataset_source", {})
        name = source.get("path") or extra.get("dataset_name")
        fmt, columns = source.get("format", fmt), source.get("columns", columns)
        min_count = extra.get("min_count", min_count)
    if name is None:
        raise InputFileError(f"checkpoint '{path}' does not name its dataset; pass --dataset")
    return load_dataset(name, min_count=min_count, fmt=fmt, columns=columns, quiet=quiet)


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str | Path | None = None,
    *,
    min_count: int = 5,
    fmt: str | None = None,
    columns: dict[str, str] | None = None,
    parts: Sequence[str] = PARTS,
    exclude_seen: bool = True,
    seed: int = 0,
    threads: int | None = None,
    quiet: bool = False,
) -> CheckpointMetrics:
    """Full, uni100 and pop100 metrics of ``checkpoint`` (a ``model.pt`` or its run folder)
    on each of ``parts``: of ``dataset``, or without it of the dataset the checkpoint names,
    read and preprocessed as it was then."""
    set_threads(threads)
    checkpoint = Path(checkpoint)
    path = checkpoint / "model.pt" if checkpoint.is_dir() else checkpoint
    extra = read_checkpoint(path).get("extra", {})
    data = _dataset(path, extra, dataset, min_count, fmt, columns, quiet)
    model, _ = load_checkpoint(path, dataset_fingerprint=data.fingerprint, dataset_name=data.name)
    max_len = model.arch.max_len if hasattr(model, "arch") else extra.get("max_len", 200)
    # valid: only the users whose validation item the model was not trained on
    trained_with = TrainConfig.from_dict(extra.get("train_config", {}))
    valid_set = validation_users(data, validation_holdout(data, trained_with))
    metrics = {
        part: evaluate(
            model.predict,
            valid_set if part == "valid" else data,
            part,
            max_len,
            exclude_seen=exclude_seen,
            seed=seed,
            quiet=quiet,
            trim=True,  # SASRec and the supernet accept any length up to max_len
        )
        for part in parts
    }
    return CheckpointMetrics(path, data, metrics)
