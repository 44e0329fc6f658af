"""Materialise a hard-selected subnet as a dense, physically small SASRec with torch-pruning.

``Supernet.to_full_sasrec(choice)`` gives the chosen subnet as a full-width SASRec whose
masked channels contribute exactly nothing. :func:`prune_to` removes those channels with
torch-pruning's ``DependencyGraph`` (one group per coupled set: Q/K/V output channels with
the output projection's input channels, whole heads at a time; FFN ``fc1`` outputs with
``fc2`` inputs and the inner gate's outputs; each gate MLP's hidden units), drops the blocks
beyond the chosen depth, checks every removed channel was zero-contributing, and loads the
result into a fresh :class:`SASRec` of the small :class:`ArchSpec`. The steps are recorded
in a JSON-ready plan.

The embedding width (``hidden``) is kept: the search space fixes it, and removing hidden
channels changes every LayerNorm's statistics, so no such pruning can be exact.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from dnsrec_edge.cost.analysis import analyze, param_count
from dnsrec_edge.errors import ArchSpecError, CheckpointMismatch, OutputMismatch
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.gates import DataAwareGate
from dnsrec_edge.models.sasrec import SASRec

log = logging.getLogger(__name__)

PLAN_SCHEMA = 1
EQUIVALENCE_ATOL = 1e-5


def materialize(
    supernet_ckpt_or_model: str | Path | nn.Module,
    arch: ArchSpec | None = None,
    *,
    inputs: np.ndarray | torch.Tensor | None = None,
    atol: float = EQUIVALENCE_ATOL,
) -> tuple[SASRec, dict[str, Any]]:
    """The subnet ``arch`` of a supernet as a dense small SASRec, and the pruning plan.

    ``supernet_ckpt_or_model``: a supernet checkpoint path, a ``Supernet`` (``arch=None``
    takes its current ``select``-ed choice), or a full-width SASRec with zeroed channels
    (``arch`` required). The pruned model's ``predict`` must reproduce the hard-selected
    supernet's on ``inputs`` (default: synthetic histories) within ``atol``, or
    :class:`OutputMismatch` is raised.

    Example::

        model, plan = materialize("runs/search/supernet.pt", ArchSpec.load("arch.json"))
    """
    given = supernet_ckpt_or_model
    was_training = isinstance(given, nn.Module) and given.training
    try:
        full, small, reference, source = _resolve(given, arch)
        model, plan = prune_to(full, small)
        plan["source"] = source
        plan["equivalence"] = check_equivalence(reference, model, inputs, atol)
    finally:
        if isinstance(given, nn.Module):
            given.train(was_training)
    return model, plan


def _resolve(source: Any, arch: ArchSpec | None):
    """``(full-width SASRec, small ArchSpec, reference predict fn, source record)``."""
    path = None
    meta: dict[str, Any] = {}
    if isinstance(source, (str, Path)):
        from dnsrec_edge.train.checkpoint import load_checkpoint

        path = Path(source)
        source, meta = load_checkpoint(path)
        require_supernet(path, meta)
    record = {"path": None if path is None else str(path), "dataset": meta.get("dataset")}
    where = "" if path is None else f" '{path}'"
    if isinstance(source, SASRec):
        if arch is None:
            raise ArchSpecError("pruning a full-width SASRec needs the target ArchSpec; pass arch")
        record |= {"kind": "sasrec", "choice": None}
        return source.eval(), arch, source.predict, record
    if not hasattr(source, "to_full_sasrec"):
        raise CheckpointMismatch(
            f"cannot materialise a {type(source).__name__}; pass a supernet or its checkpoint"
        )
    try:
        choice = source.fixed if arch is None else source.space.choice_of(arch)
    except ArchSpecError as err:
        raise CheckpointMismatch(f"the ArchSpec does not match the supernet{where}: {err}") from err
    if choice is None:
        raise ArchSpecError("no architecture chosen; pass the ArchSpec the search selected")
    source.eval()
    full, small = source.to_full_sasrec(choice)

    def reference(item_seq: torch.Tensor) -> torch.Tensor:
        with source.selected(choice):
            return source.predict(item_seq)

    record |= {"kind": "supernet", "choice": {"depth": choice.depth, "blocks": choice.blocks}}
    return full.eval(), small, reference, record


def require_supernet(path: Path, meta: dict[str, Any]) -> None:
    """Refuse a checkpoint of another kind than a supernet, naming it."""
    if meta.get("kind") != "supernet":
        raise CheckpointMismatch(
            f"'{path}' holds a {meta.get('kind')} checkpoint, not a supernet; prune takes the "
            "supernet checkpoint of a search run (use prune-baseline for a trained SASRec)"
        )


def prune_to(full: SASRec, arch: ArchSpec) -> tuple[SASRec, dict[str, Any]]:
    """Remove the zero-contributing channels of ``full`` down to ``arch`` with torch-pruning.

    Raises :class:`CheckpointMismatch` when ``arch`` does not fit ``full`` or when reaching it
    would remove a channel that carries weight.
    """
    _check_fits(full.arch, arch)
    model = copy.deepcopy(full).eval()
    dropped = list(range(arch.depth, full.arch.depth))
    del model.blocks[arch.depth :]
    with torch.no_grad():
        folds = [
            fold_attention_scale(model.blocks[i].attn, b, i) for i, b in enumerate(arch.blocks)
        ]
    example = torch.arange(1, arch.max_len + 1).remainder(arch.n_items + 1).repeat(2, 1)  # (2, L)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    names = {m: n for n, m in model.named_modules()}
    steps = []
    for i, spec in enumerate(arch.blocks):
        block = model.blocks[i]
        removed = _attention_removed(block.attn, spec, i)
        steps += _prune(graph, names, block.attn.q, removed, i, "attention", block.attn.head_dim)
        steps += _prune(graph, names, block.ffn.fc1, _ffn_removed(block.ffn, spec.ffn, i), i, "ffn")
        for gate in (block.ffn.gate_in, block.ffn.gate_out):
            if gate is not None:
                removed = _gate_removed(gate, spec.gate_hidden, names[gate])
                steps += _prune(graph, names, gate.fc1, removed, i, "gate")
    small = SASRec(arch, dropout=_dropout(full), gate_gamma=_gamma(full))
    small.load_state_dict(model.state_dict())
    small.eval()
    params = sum(p.numel() for p in small.parameters())
    if params != param_count(arch):
        raise OutputMismatch(
            f"the pruned model has {params} parameters but its ArchSpec predicts "
            f"{param_count(arch)}; please report this"
        )
    plan = {
        "schema": PLAN_SCHEMA,
        "torch_pruning": getattr(tp, "__version__", "unknown"),
        "arch_before": full.arch.to_dict(),
        "arch_after": arch.to_dict(),
        "blocks_dropped": dropped,
        "steps": steps,
        "folded": [f for f in folds if f is not None],
        "params_before": sum(p.numel() for p in full.parameters()),
        "params_after": params,
        "flops_before": analyze(full.arch).flops,
        "flops_after": analyze(arch).flops,
    }
    log.debug(
        "pruned %d -> %d parameters, %d -> %d blocks",
        plan["params_before"],
        params,
        full.arch.depth,
        arch.depth,
    )
    return small, plan


def check_equivalence(
    reference, model: SASRec, inputs: np.ndarray | torch.Tensor | None, atol: float
) -> dict[str, Any]:
    """Max abs difference of ``model.predict`` vs ``reference`` on ``inputs``; raise above ``atol``."""
    from dnsrec_edge.export.validate import synthetic_inputs

    arch = model.arch
    given = inputs is not None
    seqs = torch.as_tensor(inputs if given else synthetic_inputs(arch.n_items, arch.max_len))
    diff = 0.0
    with torch.no_grad():
        for chunk in seqs.long().split(256):
            diff = max(diff, (model.predict(chunk) - reference(chunk)).abs().max().item())
    if not diff <= atol:
        raise OutputMismatch(
            f"the pruned model differs from the selected subnet by {diff:.3g} (> {atol:g}) on "
            f"{len(seqs)} histories; the checkpoint's masked channels are not zero, report this"
        )
    return {
        "rows": len(seqs),
        "max_abs_diff": diff,
        "atol": atol,
        "inputs": "given" if given else "synthetic",
    }


def _check_fits(full: ArchSpec, arch: ArchSpec) -> None:
    """Every way ``arch`` cannot be cut out of ``full``, as one CheckpointMismatch."""
    problems = []
    for field in ("n_items", "max_len", "hidden", "positions"):
        if getattr(arch, field) != getattr(full, field):
            problems.append(f"{field} {getattr(arch, field)} != {getattr(full, field)}")
    if arch.depth > full.depth:
        problems.append(f"depth {arch.depth} > {full.depth}")
    for i, (b, f) in enumerate(zip(arch.blocks, full.blocks, strict=False)):
        if b.attention != f.attention:
            problems.append(f"block {i} attention {b.attention} != {f.attention}")
        if b.heads > f.heads or b.head_dim > f.head_dim or b.ffn > f.ffn:
            problems.append(
                f"block {i} ({b.heads}x{b.head_dim} heads, FFN {b.ffn}) exceeds "
                f"({f.heads}x{f.head_dim}, FFN {f.ffn})"
            )
        if bool(b.gate_hidden) != bool(f.gate_hidden) or b.gate_hidden > f.gate_hidden:
            problems.append(f"block {i} gate_hidden {b.gate_hidden} does not fit {f.gate_hidden}")
    if problems:
        raise CheckpointMismatch(
            "the ArchSpec does not match the model's architecture ("
            + "; ".join(problems)
            + "); pass the ArchSpec chosen for this checkpoint"
        )


def _norms(layer: nn.Linear) -> torch.Tensor:
    """Per output channel: norm of its weight row and bias, (out,)."""
    return torch.sqrt(layer.weight.pow(2).sum(1) + layer.bias.pow(2))


def _keep_top(score: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` largest scores (lower index first on ties), sorted."""
    order = sorted(range(len(score)), key=lambda j: (-float(score[j]), j))
    return torch.tensor(sorted(order[:n]), dtype=torch.long)


def _attention_removed(attn: nn.Module, spec: BlockSpec, block: int) -> list[int]:
    """Q/K/V/O channels to remove: whole heads, then head dims, all zero-contributing."""
    heads, hd = attn.heads, attn.head_dim
    with torch.no_grad():
        qk = _norms(attn.q) * _norms(attn.k)  # (H*hd,) zero: no part in q.k
        vo = _norms(attn.v) * attn.o.weight.norm(dim=0)  # (H*hd,) zero: no part in the output
    kept_heads = _keep_top(vo.view(heads, hd).sum(1), spec.heads)
    live_heads = int((vo.view(heads, hd).sum(1) > 0).sum())
    if live_heads > spec.heads:
        raise CheckpointMismatch(
            f"block {block} keeps {spec.heads} head(s) but {live_heads} carry weight; pass the "
            "ArchSpec chosen for this checkpoint"
        )
    kept = []
    for h in kept_heads.tolist():
        dims = slice(h * hd, (h + 1) * hd)
        live = (qk[dims] > 0) | (vo[dims] > 0)
        if int(live.sum()) > spec.head_dim:
            raise CheckpointMismatch(
                f"block {block} head {h} keeps {spec.head_dim} dims but {int(live.sum())} carry "
                "weight; pass the ArchSpec chosen for this checkpoint"
            )
        kept += (h * hd + _keep_top(qk[dims] + vo[dims], spec.head_dim)).tolist()
    return sorted(set(range(heads * hd)) - set(kept))


def fold_attention_scale(attn: nn.Module, spec: BlockSpec, block: int) -> dict | None:
    """Fold the change of ``1/sqrt(head_dim)`` into Q (softmax) or V (linear attention)."""
    if spec.head_dim == attn.head_dim:
        return None
    factor = math.sqrt(spec.head_dim / attn.head_dim)
    layer = attn.q if spec.attention == "softmax" else attn.v
    layer.weight.mul_(factor)
    layer.bias.mul_(factor)
    return {
        "block": block,
        "what": "attention scale",
        "into": "q" if layer is attn.q else "v",
        "factor": factor,
    }


def _ffn_removed(ffn: nn.Module, width: int, block: int) -> list[int]:
    """FFN inner channels to remove; each must be dead (relu of 0) or unread by fc2."""
    with torch.no_grad():
        row = ffn.fc1.weight.norm(dim=1) + ffn.fc1.bias.clamp(min=0)  # relu(b) = 0 for b <= 0
        score = row * ffn.fc2.weight.norm(dim=0)  # (ffn,)
    live = int((score > 0).sum())
    if live > width:
        raise CheckpointMismatch(
            f"block {block} keeps {width} FFN channels but {live} carry weight; pass the "
            "ArchSpec chosen for this checkpoint"
        )
    return sorted(set(range(len(score))) - set(_keep_top(score, width).tolist()))


def _gate_removed(gate: DataAwareGate, width: int, name: str) -> list[int]:
    """Gate MLP hidden units to remove; each must be dead or unread."""
    with torch.no_grad():
        row = gate.fc1.weight.norm(dim=1) + gate.fc1.bias.clamp(min=0)
        score = row * gate.fc2.weight.norm(dim=0)  # (gate_hidden,)
    live = int((score > 0).sum())
    if live > width:
        raise CheckpointMismatch(
            f"{name} keeps {width} hidden units but {live} carry weight; pass the ArchSpec "
            "chosen for this checkpoint"
        )
    return sorted(set(range(len(score))) - set(_keep_top(score, width).tolist()))


def _prune(
    graph,
    names,
    root: nn.Linear,
    idxs: list[int],
    block: int,
    what: str,
    head_dim: int | None = None,
) -> list[dict]:
    """Prune ``idxs`` of ``root``'s output channels with every coupled layer; one plan step."""
    if not idxs:
        return []
    group = graph.get_pruning_group(root, tp.prune_linear_out_channels, idxs=idxs)
    layers = sorted(
        {
            names[dep.target.module]
            for dep, _ in group
            if dep.target.module in names and names[dep.target.module]
        }
    )
    group.prune()
    step = {
        "block": block,
        "group": what,
        "root": names[root],
        "pruning_fn": "prune_linear_out_channels",
        "removed": idxs,
        "layers": layers,
    }
    if head_dim:
        step["removed_heads"] = sorted(
            {
                i // head_dim
                for i in idxs
                if set(range(i // head_dim * head_dim, (i // head_dim + 1) * head_dim)) <= set(idxs)
            }
        )
    return [step]


def _dropout(model: nn.Module) -> float:
    return next((m.p for m in model.modules() if isinstance(m, nn.Dropout)), 0.0)


def _gamma(model: nn.Module) -> float:
    return next((m.gamma for m in model.modules() if isinstance(m, DataAwareGate)), 2.0)
