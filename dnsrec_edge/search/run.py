"""``search``: a DNS-Rec search run, from a dataset and a budget to ``arch.json``.

A run folder holds:

- ``arch.json``: the selected architecture (an :class:`ArchSpec`: ``depth`` and ``blocks``);
- ``supernet.pt``: the supernet checkpoint (weights and controllers) at the selected epoch;
- ``search_log.jsonl``: one record per epoch (alpha, beta, temperature, penalty weight,
  expected cost, the argmax and selected architectures and their costs, validation metrics);
- ``run.json``: dataset, budget, cost model, search space, settings and the outcome.

Example::

    result = search("ml-1m", "flops=25%", "runs/s1")
    result.arch.depth, result.cost, result.limit
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dnsrec_edge import __version__
from dnsrec_edge.cost.model import CostModel, FlopsModel
from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.data.load import load_dataset
from dnsrec_edge.errors import BudgetError, OutputExists
from dnsrec_edge.fsio import append_jsonl, atomic_write_json, atomic_write_text
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.supernet import Supernet
from dnsrec_edge.search.budget import Budget, parse_budget
from dnsrec_edge.search.constraint import CostTable
from dnsrec_edge.search.loop import SearchConfig, run_search
from dnsrec_edge.search.space import Choice, SearchSpace
from dnsrec_edge.train.checkpoint import save_checkpoint
from dnsrec_edge.train.trainer import set_threads

log = logging.getLogger(__name__)

RUN_SCHEMA = 1
RUN_FILES = ("arch.json", "supernet.pt", "search_log.jsonl", "run.json")


@dataclass
class SearchResult:
    """Outcome of a search: the selected architecture, its cost and where it was written."""

    out_dir: Path
    arch: ArchSpec
    choice: Choice
    budget: Budget
    limit: float  # absolute budget in the cost model's unit
    cost: float  # cost of the selected architecture
    reference: float  # cost of the full supernet
    best_epoch: int
    valid: dict[str, float]
    argmax_in_budget: bool  # False: the argmax was over budget and a neighbour was taken
    seconds: float
    model: Supernet  # at the selected epoch

    @property
    def share(self) -> float:
        """Cost of the selected architecture as a share of the full supernet."""
        return self.cost / self.reference


def budget_cost_model(
    budget: Budget, target: str | None, max_len: int, calibration_dir: str | Path | None = None
) -> tuple[CostModel, Any]:
    """The cost model for ``budget`` (FLOPs: analytic; latency/energy: the target's)."""
    if budget.kind == "flops":
        return FlopsModel(batch=1, seq_len=max_len), target
    if target is None:
        raise BudgetError(
            f"a {budget.kind} budget needs a hardware target; pass --target (e.g. --target x86_64)"
        )
    try:
        from dnsrec_edge.cost.calibrated import load_cost_model
    except ImportError as err:
        raise BudgetError(
            f"{budget.kind} budgets need the calibrated cost model, which this install lacks "
            f"({err}); use a flops budget"
        ) from err
    return load_cost_model(target, calibration_dir), target


def check_budget(table: CostTable, budget: Budget) -> tuple[float, float]:
    """``(limit, reference)``; ``BudgetError`` naming the cheapest cost if none can meet it."""
    reference = table.reference()
    limit = budget.limit(reference)
    cheapest, cost = table.cheapest()
    if cost > limit:
        arch = table.space.arch(cheapest)
        blocks = ", ".join(f"{b.heads} head(s) FFN {b.ffn}" for b in arch.blocks)
        raise BudgetError(
            f"no architecture in the search space meets the budget {budget} "
            f"({_fmt(limit, budget)}); the cheapest reachable costs {_fmt(cost, budget)} "
            f"({100 * cost / reference:.1f}% of the full supernet: depth {arch.depth}, {blocks}); "
            f"raise the budget to at least that"
        )
    return limit, reference


def _fmt(value: float, budget: Budget) -> str:
    if budget.kind == "flops":
        return f"{value / 1e6:.3f} MFLOPs"
    return f"{value:.4g} {budget.unit}"


def prepare_out_dir(out_dir: str | Path, force: bool) -> Path:
    """Refuse a folder holding a run unless ``force`` (then its run files are removed)."""
    out = Path(out_dir)
    if out.exists() and any((out / name).exists() for name in RUN_FILES):
        if not force:
            raise OutputExists(out)
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def search(
    dataset: Dataset | str | Path,
    budget: Budget | str,
    out_dir: str | Path,
    target: str | None = None,
    *,
    config: SearchConfig | None = None,
    space: SearchSpace | None = None,
    calibration_dir: str | Path | None = None,
    force: bool = False,
    quiet: bool = False,
) -> SearchResult:
    """Search the architecture that fits ``budget``; write the run folder ``out_dir``.

    ``dataset`` is a :class:`Dataset`, a registered name or a file; ``budget`` e.g.
    ``"flops=25%"``, ``"latency=1.5ms"`` (with ``target``), ``"energy=2mJ"``. ``space``
    defaults to 4 blocks, hidden 64, heads 4/2/1 x 16, FFN 256/128/64, data-aware gates.
    """
    config = config or SearchConfig()
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset, quiet=quiet)
    space = space or SearchSpace(dataset.n_items, config.max_len)
    if (space.n_items, space.max_len) != (dataset.n_items, config.max_len):
        raise BudgetError(
            f"the search space is for {space.n_items} items and length {space.max_len} but the "
            f"run has {dataset.n_items} items and --max-len {config.max_len}; build it for this dataset"
        )
    cost_model, target_arg = budget_cost_model(budget, target, config.max_len, calibration_dir)
    table = CostTable.build(space, cost_model, budget.kind, target_arg)
    limit, reference = check_budget(table, budget)  # fail before any training
    out = prepare_out_dir(out_dir, force)
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    model = Supernet(space, config.dropout, config.shared_alpha, config.gumbel)
    log.info(
        "search on %s: budget %s = %s (full supernet %s), %d epochs, penalty %s",
        dataset.name,
        budget,
        _fmt(limit, budget),
        _fmt(reference, budget),
        config.epochs,
        config.penalty,
    )
    meta = {"dataset_name": dataset.name, "budget": str(budget), "target": target}
    best_state: dict[str, torch.Tensor] = {}

    def on_epoch(record: dict[str, Any], improved: bool) -> None:
        record["budget_limit"] = limit
        append_jsonl(out / "search_log.jsonl", record)
        if improved:
            best_state.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            save_checkpoint(
                out / "supernet.pt", model, dataset.fingerprint, meta | {"epoch": record["epoch"]}
            )

    t0 = time.perf_counter()
    loop = run_search(model, dataset, table, limit, config, on_epoch=on_epoch, quiet=quiet)
    seconds = time.perf_counter() - t0
    best = loop.best
    model.load_state_dict(best_state)  # the supernet of the selected epoch, as in supernet.pt
    model.eval()
    arch = space.arch(best.choice)
    exact = float(cost_model.predict(arch, target_arg).get(budget.kind))
    if exact > limit:  # only for cost models that do not add up per block
        raise BudgetError(
            f"the selected architecture costs {_fmt(exact, budget)} under the cost model, over the "
            f"budget {_fmt(limit, budget)}, although its per-block estimate fits; raise the budget"
        )
    if not best.argmax_in_budget:
        log.warning(
            "the argmax architecture of epoch %d was over budget; selected the most probable "
            "in-budget architecture instead",
            best.epoch,
        )
    atomic_write_text(out / "arch.json", arch.to_json())
    atomic_write_json(
        out / "run.json",
        {
            "schema": RUN_SCHEMA,
            "tool_version": __version__,
            "dataset": {
                "name": dataset.name,
                "fingerprint": dataset.fingerprint,
                "source": dataset.settings.get("source"),
                "min_count": dataset.settings.get("min_count"),
            },
            "budget": {
                "text": str(budget),
                "kind": budget.kind,
                "value": budget.value,
                "relative": budget.relative,
                "limit": limit,
                "unit": budget.unit,
            },
            "target": target,
            "cost_model": type(cost_model).__name__,
            "reference_cost": reference,
            "space": space.to_dict(),
            "config": asdict(config),
            "selected": {
                "choice": asdict(best.choice),
                "cost": exact,
                "share": exact / reference,
                "epoch": best.epoch,
                "argmax_in_budget": best.argmax_in_budget,
                "valid": best.valid,
            },
            "search_seconds": round(seconds, 2),
            "threads": torch.get_num_threads(),
        },
    )
    return SearchResult(
        out,
        arch,
        best.choice,
        budget,
        limit,
        exact,
        reference,
        best.epoch,
        best.valid,
        best.argmax_in_budget,
        seconds,
        model,
    )
