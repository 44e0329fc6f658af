"""Pruning without search: a trained SASRec cut to a target ratio by a torch-pruning importance.

The comparison point for DNS-Rec: take a trained baseline, remove ``ratio`` of each block's
attention heads (or of its head dims when a block has one head) and of its FFN channels,
ranked by a torch-pruning importance over the dependency graph's coupled groups (Q/K/V/O per
head, FFN ``fc1``/``fc2`` with the inner gate), then fine-tune with the trainer. The
embedding width and the gate MLPs are kept.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from dnsrec_edge.cost.analysis import analyze, param_count
from dnsrec_edge.errors import BudgetError, CheckpointMismatch, InputFileError, OutputMismatch
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.archspec import BlockSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.prune.materialize import fold_attention_scale

log = logging.getLogger(__name__)

IMPORTANCES = {
    "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "lamp": lambda: tp.importance.LAMPImportance(p=2),
    "random": lambda: tp.importance.RandomImportance(),
}


@dataclass
class BaselinePruneResult:
    """The pruned (and, with a dataset, fine-tuned) model, its plan and the training run."""

    model: SASRec
    plan: dict[str, Any]
    train: Any = None  # TrainResult of the fine-tuning, or None
    metrics: dict[str, Any] = field(default_factory=dict)


def prune_baseline(
    checkpoint_or_model: str | Path | SASRec,
    ratio: float,
    *,
    importance: str = "magnitude",
    finetune: bool = True,
    dataset=None,
    config=None,
    out_dir: str | Path | None = None,
    force: bool = False,
    quiet: bool = False,
) -> BaselinePruneResult:
    """Prune a trained SASRec by ``ratio`` with a torch-pruning importance, then fine-tune it.

    Fine-tuning runs ``train_model`` on ``dataset`` (a :class:`Dataset` or a name; default:
    the dataset the checkpoint names) under ``config`` (a ``TrainConfig``; its ``max_len`` is
    the model's) and reports test metrics. With ``out_dir`` the folder gets ``model.pt``,
    ``plan.json`` and, when fine-tuned, the trainer's run files.

    Example::

        result = prune_baseline("runs/base/model.pt", 0.5, dataset="ml-1m")
    """
    if not 0.0 < ratio < 1.0:
        raise BudgetError(f"pruning ratio {ratio} is outside (0, 1); pass e.g. --ratio 0.5")
    if importance not in IMPORTANCES:
        raise BudgetError(
            f"unknown importance '{importance}'; known: {', '.join(sorted(IMPORTANCES))}"
        )
    model, meta, source = _load(checkpoint_or_model)
    fingerprint = meta.get("dataset")
    if finetune:
        dataset = _resolve_dataset(dataset, meta, source, quiet)
        if fingerprint and fingerprint != dataset.fingerprint:
            raise CheckpointMismatch(
                f"checkpoint '{source}' was trained on other data than dataset '{dataset.name}'; "
                "fine-tune on the dataset it was trained on"
            )
    out = None
    if out_dir is not None:
        from dnsrec_edge.train.trainer import prepare_run_dir

        out = prepare_run_dir(out_dir, force, resume=False)
    pruned, plan = prune_by_importance(model, ratio, importance)
    plan["source"] = {"path": source, "dataset": fingerprint}
    result = BaselinePruneResult(pruned, plan)
    if finetune:
        result = _finetune(result, dataset, config, out, quiet)
    if out is not None:
        atomic_write_json(out / "plan.json", result.plan)
        if result.train is None:
            from dnsrec_edge.train.checkpoint import save_checkpoint

            save_checkpoint(
                out / "model.pt", result.model, fingerprint or "", {"prune_plan": result.plan}
            )
    return result


def _resolve_dataset(dataset, meta: dict, source: str | None, quiet: bool):
    """The fine-tuning dataset: given, named, or the one the checkpoint names."""
    if dataset is None:
        dataset = (meta.get("extra") or {}).get("dataset_name")
        if dataset is None:
            where = f"checkpoint '{source}'" if source else "the model"
            raise InputFileError(f"{where} names no dataset to fine-tune on; pass --dataset")
    if isinstance(dataset, (str, Path)):
        from dnsrec_edge.data.load import load_dataset

        dataset = load_dataset(dataset, quiet=quiet)
    return dataset


def _load(source) -> tuple[SASRec, dict, str | None]:
    if isinstance(source, SASRec):
        return source, {}, None
    from dnsrec_edge.train.checkpoint import load_checkpoint

    model, meta = load_checkpoint(source)
    if meta.get("kind") != "sasrec":
        raise CheckpointMismatch(
            f"'{source}' holds a {meta.get('kind')} checkpoint; prune-baseline takes a trained "
            "SASRec (use prune for a search run's supernet)"
        )
    return model, meta, str(source)


def prune_by_importance(model: SASRec, ratio: float, importance: str = "magnitude"):
    """``(pruned SASRec, plan)``: ``ratio`` of heads (or head dims) and FFN channels removed."""
    work = copy.deepcopy(model).eval()
    arch = work.arch
    ignored: list[nn.Module] = [work.item_emb, work.pos_emb]
    for b in work.blocks:
        ignored += [b.attn.o, b.ffn.fc2]  # their outputs are the embedding width: kept
        ignored += [g.fc1 for g in (b.ffn.gate_in, b.ffn.gate_out) if g is not None]
        if b.ffn.gate_out is not None:
            ignored.append(b.ffn.gate_out.fc2)
    num_heads = {getattr(b.attn, n): b.attn.heads for b in work.blocks for n in "qkv"}
    by_heads = all(b.heads > 1 for b in arch.blocks)
    example = torch.arange(1, arch.max_len + 1).remainder(arch.n_items + 1).repeat(2, 1)  # (2, L)
    pruner = tp.pruner.MetaPruner(
        work,
        example,
        importance=IMPORTANCES[importance](),
        pruning_ratio=ratio,
        ignored_layers=ignored,
        num_heads=num_heads,
        prune_num_heads=by_heads,
        prune_head_dims=not by_heads,
        head_pruning_ratio=ratio if by_heads else 0.0,
    )
    pruner.step()
    blocks = []
    for b, spec in zip(work.blocks, arch.blocks, strict=True):
        heads = pruner.num_heads[b.attn.q] if by_heads else spec.heads
        blocks.append(
            BlockSpec(
                heads,
                b.attn.q.out_features // heads,
                b.ffn.fc1.out_features,
                spec.gate_hidden,
                spec.attention,
                spec.norm,
            )
        )
    with torch.no_grad():  # keep q.k at its old scale where head dims were removed
        folds = [
            fold_attention_scale(b.attn, spec, i)
            for i, (b, spec) in enumerate(zip(work.blocks, blocks, strict=True))
        ]
    small_arch = replace(arch, blocks=tuple(blocks))  # keeps the position layout
    dropout = next((m.p for m in model.modules() if isinstance(m, nn.Dropout)), 0.0)
    gamma = next((m.gamma for m in model.modules() if hasattr(m, "gamma")), 2.0)
    small = SASRec(small_arch, dropout=dropout, gate_gamma=gamma)
    small.load_state_dict(work.state_dict())
    small.eval()
    params = sum(p.numel() for p in small.parameters())
    if params != param_count(small_arch):
        raise OutputMismatch(
            f"the pruned model has {params} parameters but its ArchSpec predicts "
            f"{param_count(small_arch)}; please report this"
        )
    plan = {
        "schema": 1,
        "method": "importance",
        "importance": importance,
        "ratio": ratio,
        "unit": "heads" if by_heads else "head dims",
        "torch_pruning": getattr(tp, "__version__", "unknown"),
        "arch_before": arch.to_dict(),
        "arch_after": small_arch.to_dict(),
        "folded": [f for f in folds if f is not None],
        "params_before": sum(p.numel() for p in model.parameters()),
        "params_after": params,
        "flops_before": analyze(arch).flops,
        "flops_after": analyze(small_arch).flops,
    }
    log.info(
        "pruned by %s importance at ratio %.2f: %d -> %d parameters",
        importance,
        ratio,
        plan["params_before"],
        params,
    )
    return small, plan


def _finetune(result: BaselinePruneResult, dataset, config, out: Path | None, quiet: bool):
    from dnsrec_edge.evaluate import evaluate
    from dnsrec_edge.train.trainer import TrainConfig, train_model

    max_len = result.model.arch.max_len
    config = replace(config, max_len=max_len) if config else TrainConfig(max_len=max_len)
    if dataset.n_items != result.model.arch.n_items:
        raise CheckpointMismatch(
            f"the model scores {result.model.arch.n_items} items but dataset '{dataset.name}' has "
            f"{dataset.n_items}; fine-tune on the dataset it was trained on"
        )
    train = train_model(result.model, dataset, config, out, quiet=quiet)
    metrics = evaluate(
        train.model.predict,
        dataset,
        "test",
        config.max_len,
        batch_size=config.eval_batch_size,
        quiet=quiet,
    )
    result.plan["finetune"] = {
        "epochs": train.epochs,
        "best_epoch": train.best_epoch,
        "best_valid": train.best_valid,
        "test": metrics,
    }
    return BaselinePruneResult(train.model, result.plan, train, metrics)
