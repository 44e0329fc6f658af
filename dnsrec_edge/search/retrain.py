"""``retrain``: train the architecture a search selected, from scratch or from the supernet.

- ``scratch`` (the paper): a fresh :class:`SASRec` of ``arch.json``, trained like the baseline.
- ``finetune``: the selected subnet's supernet weights (inherited), turned into the dense small
  SASRec by ``dnsrec_edge.prune.materialize`` (torch-pruning), then trained further.
- ``distill``: inherited as ``finetune``, trained on the cross-entropy mixed with the KL to a
  trained teacher's (the baseline's) softened full-catalogue scores (``TrainConfig.distill``,
  default weight 0.5 in this mode).

``search`` and ``prune`` sit on one layer of the toolkit; ``finetune`` and ``distill`` call
``prune.materialize`` because the inherited weights are exactly the pruned subnet, and one
module owns that mapping.

Results go to ``RUN_DIR/retrain-<mode>/`` (the trainer's run files plus ``metrics.json``).

Example::

    result = retrain("runs/s1", mode="scratch")
    result.metrics["test"]["full"]["ndcg@10"]
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnsrec_edge.cost.analysis import analyze, param_count
from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.data.load import load_dataset
from dnsrec_edge.errors import ArchSpecError, CheckpointMismatch, DnsrecError, InputFileError
from dnsrec_edge.evaluate import PROTOCOLS
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.search.loop import SearchConfig
from dnsrec_edge.search.space import Choice, SearchSpace
from dnsrec_edge.train.checkpoint import load_checkpoint, read_checkpoint
from dnsrec_edge.train.config import TrainConfig
from dnsrec_edge.train.trainer import final_metrics, prepare_run_dir, train_model

log = logging.getLogger(__name__)

MODES = ("scratch", "finetune", "distill")
DISTILL_WEIGHT = 0.5  # the distill mode's default TrainConfig.distill


@dataclass
class RetrainResult:
    """A retrained architecture, its metrics and where its run files are."""

    mode: str
    arch: ArchSpec
    model: nn.Module
    metrics: dict[str, dict[str, dict[str, float]]]  # part -> protocol -> metric
    train_seconds: float
    best_epoch: int
    out_dir: Path
    flops: int = 0
    params: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a search folder; ``InputFileError`` with the reason otherwise."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise InputFileError(
            f"'{run_dir}' holds no run.json; pass a folder written by 'dnsrec-edge search'"
        )
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        SearchSpace.from_dict(run["space"])
        run["dataset"]["fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError, ArchSpecError) as err:
        raise InputFileError(f"'{path}' is damaged ({err}); run the search again") from err
    return run


def load_selected_arch(run_dir: str | Path, run: dict[str, Any]) -> tuple[ArchSpec, Choice]:
    """``arch.json`` of a run, checked against the run's search space."""
    path = Path(run_dir) / "arch.json"
    if not path.is_file():
        raise ArchSpecError(
            f"'{run_dir}' holds no arch.json; the search did not finish, run it again"
        )
    space = SearchSpace.from_dict(run["space"])
    try:
        arch = ArchSpec.from_json(path.read_text(encoding="utf-8"))
    except (ArchSpecError, UnicodeDecodeError) as err:
        raise ArchSpecError(
            f"'{path}' is not a valid architecture ({err}); restore it or run the search again"
        ) from err
    try:
        choice = space.choice_of(arch)
    except ArchSpecError as err:
        raise ArchSpecError(
            f"'{path}' does not fit the run's search space ({err}); restore it or run the search again"
        ) from err
    return arch, choice


def run_dataset(run: dict[str, Any], dataset: Dataset | None, quiet: bool) -> Dataset:
    """The dataset a run searched on (reloaded from its source), fingerprint checked."""
    info = run["dataset"]
    if dataset is None:
        source = info.get("source") or {}
        name = source.get("registry") or source.get("path") or info["name"]
        dataset = load_dataset(name, min_count=info.get("min_count") or 5, quiet=quiet)
    if dataset.fingerprint != info["fingerprint"]:
        raise CheckpointMismatch(
            f"dataset '{dataset.name}' differs from the one the search ran on ('{info['name']}'); "
            "retrain with the same data and min_count"
        )
    return dataset


def default_train_config(run: dict[str, Any]) -> TrainConfig:
    """Baseline training settings with the search's loss, batch, lr, length, dropout, seed."""
    cfg = SearchConfig.from_dict(run["config"])
    return TrainConfig(
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        loss=cfg.loss,
        negatives=cfg.negatives,
        max_len=cfg.max_len,
        dropout=cfg.dropout,
        seed=cfg.seed,
        threads=cfg.threads,
        eval_batch_size=cfg.eval_batch_size,
    )


def retrain_config(run_dir: str | Path, teacher: str | Path | None = None) -> TrainConfig:
    """The settings a retrain starts from: the teacher's own training settings (its budget,
    schedule and early stopping, stored in its checkpoint) when a teacher checkpoint is
    given, else :func:`default_train_config` of the run."""
    run = read_run(run_dir)
    if teacher is not None:
        saved = read_checkpoint(teacher).get("extra", {}).get("train_config")
        if saved:
            return TrainConfig.from_dict(saved)
    return default_train_config(run)


def _finetune_model(run_dir: Path, arch: ArchSpec, dataset: Dataset) -> tuple[nn.Module, dict]:
    """The selected subnet's supernet weights as a dense small SASRec, and the pruning plan."""
    from dnsrec_edge.prune.materialize import materialize

    supernet, _ = load_checkpoint(run_dir / "supernet.pt", dataset.fingerprint)
    return materialize(supernet, arch)


def retrain(
    run_dir: str | Path,
    mode: str = "scratch",
    *,
    config: TrainConfig | None = None,
    dataset: Dataset | None = None,
    force: bool = False,
    quiet: bool = False,
    teacher: str | Path | nn.Module | None = None,
) -> RetrainResult:
    """Train the selected architecture of ``run_dir``; evaluate it on valid and test.

    ``distill`` needs ``teacher``: the trained baseline (a module or its checkpoint).
    """
    if mode not in MODES:
        raise DnsrecError(f"unknown retrain mode '{mode}'; use one of {', '.join(MODES)}")
    if mode == "distill" and teacher is None:
        raise DnsrecError(
            "retrain --mode distill needs the trained baseline as teacher; pass --teacher "
            "BASELINE/model.pt"
        )
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    arch, _ = load_selected_arch(run_dir, run)
    dataset = run_dataset(run, dataset, quiet)
    if arch.n_items != dataset.n_items:
        raise ArchSpecError(
            f"'{run_dir / 'arch.json'}' has {arch.n_items} items but the run's dataset has "
            f"{dataset.n_items}; run the search again"
        )
    config = config or default_train_config(run)
    if mode == "distill" and config.distill == 0:
        config = replace(config, distill=DISTILL_WEIGHT)
    if mode != "distill" and config.distill > 0:
        config = replace(config, distill=0.0)
    if isinstance(teacher, (str, Path)):
        teacher, _ = load_checkpoint(teacher, dataset.fingerprint)
    if config.max_len != arch.max_len:
        raise ArchSpecError(
            f"arch.json is for max_len {arch.max_len} but retraining asks for {config.max_len}; "
            "retrain with the search's max_len"
        )
    budget = run["budget"]
    if budget["kind"] == "flops":
        flops = analyze(arch).flops
        if flops > budget["limit"]:
            log.warning("arch.json costs %d FLOPs, over the run's budget %s", flops, budget["text"])
    out = prepare_run_dir(run_dir / f"retrain-{mode}", force, resume=False)
    torch.manual_seed(config.seed)
    if mode == "scratch":
        model = SASRec(arch, dropout=config.dropout)
    else:
        model, plan = _finetune_model(run_dir, arch, dataset)
        atomic_write_json(out / "materialize.json", plan)
    atomic_write_json(
        out / "config.json", {"mode": mode, "train": asdict(config), "arch": arch.to_dict()}
    )
    result = train_model(
        model, dataset, config, out, quiet=quiet, teacher=teacher if mode == "distill" else None
    )
    metrics = final_metrics(result.model, dataset, config, PROTOCOLS, quiet)
    flops, params = analyze(arch).flops, param_count(arch)
    atomic_write_json(
        out / "metrics.json",
        {
            "mode": mode,
            "dataset": dataset.name,
            "fingerprint": dataset.fingerprint,
            "arch": arch.to_dict(),
            "flops": flops,
            "params": params,
            "metrics": metrics,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "stopped": result.stopped,
            "train_seconds": round(result.train_seconds, 2),
            "threads": torch.get_num_threads(),
        },
    )
    return RetrainResult(
        mode,
        arch,
        result.model,
        metrics,
        result.train_seconds,
        result.best_epoch,
        out,
        flops,
        params,
        result.history,
    )
