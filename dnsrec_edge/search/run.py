"""``search``: a DNS-Rec search run, from a dataset and a budget to ``arch.json``.

A run folder holds:

- ``arch.json``: the selected architecture (an :class:`ArchSpec`: ``depth`` and ``blocks``);
- ``supernet.pt``: the supernet checkpoint (weights and controllers) after the search;
- ``front.json``: the scored front (:mod:`search.front`) the architecture was picked from;
- ``search_log.jsonl``: one record per epoch (alpha, beta, temperature, penalty weight,
  expected cost, the argmax and selected architectures and their costs, validation metrics);
- ``run.json``: dataset, budget, cost model, search space, settings and the outcome.

Example::

    result = search("ml-1m", "flops=25%", "runs/s1")
    result.arch.depth, result.cost, result.limit
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnsrec_edge import __version__
from dnsrec_edge.cost.model import CostModel, FlopsModel
from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.data.load import load_dataset
from dnsrec_edge.errors import BudgetError, InputFileError, OutputExists
from dnsrec_edge.fsio import append_jsonl, atomic_write_json, atomic_write_text
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.search.budget import Budget, parse_budget
from dnsrec_edge.search.constraint import CostTable
from dnsrec_edge.search.front import MEASURE_TOLERANCE, FrontPoint, Measure, pick, score_front
from dnsrec_edge.search.loop import LoopResult, SearchConfig, run_search
from dnsrec_edge.search.space import Choice, SearchSpace
from dnsrec_edge.search.supernet import Supernet
from dnsrec_edge.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from dnsrec_edge.train.config import TrainConfig
from dnsrec_edge.train.trainer import set_threads, validation_holdout, validation_users

log = logging.getLogger(__name__)

RUN_SCHEMA = 1
RUN_FILES = ("arch.json", "supernet.pt", "search_log.jsonl", "run.json", "front.json")


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
    model: Supernet  # after the search, as in supernet.pt
    front: list[FrontPoint] = field(default_factory=list)
    warmup_reused: bool = False  # the warm-up came from the warm-up cache
    warmup_cpu_seconds: float | None = None  # what that warm-up cost when it was trained

    @property
    def share(self) -> float:
        """Cost of the selected architecture as a share of the budget's reference."""
        return self.cost / self.reference


def budget_cost_model(
    budget: Budget, target: str | None, max_len: int, calibration_dir: str | Path | None = None
) -> tuple[CostModel, Any]:
    """The cost model for ``budget`` (FLOPs: analytic; latency/energy: the target's; a
    streaming step's latency: the target's, pricing one step)."""
    if budget.kind == "flops":
        return FlopsModel(batch=1, seq_len=max_len), target
    if target is None:
        raise BudgetError(
            f"a {budget.kind} budget needs a hardware target; pass --target (e.g. --target x86_64)"
        )
    from dnsrec_edge.cost.calibrated import load_cost_model

    model = load_cost_model(target, calibration_dir)
    if budget.streaming:
        from dnsrec_edge.cost.streaming import StepCostModel

        return StepCostModel(model), target
    return model, target


def runs_on_this_host(target: str | None) -> bool:
    """True when ``target`` is a CPU target of this host's architecture (it can be measured
    here, without a board)."""
    from dnsrec_edge.bench.boards import bench_mode

    return target is not None and bench_mode(target, False, None, None)[0] == "local"


def host_measurers(
    baseline: ArchSpec, threads: int = 1, runtime: str = "ort", target: str | None = None
) -> tuple[CostModel, Measure]:
    """The cost model and front measurer of a latency budget on this host: costs measured
    under ``runtime`` (``"ort"``: ONNX Runtime; ``"tvm"``: default TVM builds for
    ``target``), the front's shares measured beside ``baseline`` in one run."""
    from dnsrec_edge.bench.host_latency import HostLatencyModel, check_runtime, host_shares

    check_runtime(runtime)
    return HostLatencyModel(runtime, target, threads), functools.partial(
        host_shares, reference=baseline, runtime=runtime, target=target, threads=threads
    )


def _not_a_baseline(path: str | Path) -> InputFileError:
    return InputFileError(
        f"'{path}' is not a trained SASRec baseline; pass the model.pt of a 'dnsrec-edge "
        "train' run folder"
    )


def load_baseline(checkpoint: str | Path) -> tuple[ArchSpec, float | None]:
    """A trained baseline's architecture and, from its run folder's ``metrics.json``, its
    validation NDCG@10 (``None`` when the folder holds none)."""
    import json

    path = Path(checkpoint)
    payload = read_checkpoint(path)
    if payload.get("kind") != "sasrec" or not payload.get("arch"):
        raise _not_a_baseline(path)
    arch = ArchSpec.from_dict(payload["arch"])
    metrics = path.parent / "metrics.json"
    try:
        valid = json.loads(metrics.read_text(encoding="utf-8"))["metrics"]["valid"]["full"]
        return arch, float(valid["ndcg@10"])
    except (OSError, ValueError, KeyError, TypeError):
        return arch, None


def inherit_baseline(
    model: Supernet, checkpoint: str | Path, dataset: Dataset
) -> tuple[list[str], np.ndarray | None]:
    """Start ``model`` from the trained baseline in ``checkpoint``; return what was copied
    and the baseline's validation holdout (bool per user, ``None``: every user), which the
    search must keep: the inherited weights trained on the other users' validation items."""
    teacher, meta = load_checkpoint(checkpoint, dataset.fingerprint, dataset.name)
    if not isinstance(teacher, SASRec):
        raise _not_a_baseline(checkpoint)
    copied = model.inherit(teacher)
    if copied:
        log.info("the supernet starts from the baseline's weights (%s)", ", ".join(copied))
    else:
        log.warning(
            "the baseline's shapes do not match the search space; the supernet starts from "
            "its own initialisation"
        )
    trained_with = TrainConfig.from_dict(meta.get("extra", {}).get("train_config", {}))
    return copied, validation_holdout(dataset, trained_with)


def default_baseline_arch(space: SearchSpace) -> ArchSpec:
    """The baseline a ``%`` budget refers to when none is given: ``TrainConfig``'s SASRec
    (2 blocks, 1 head, FFN as wide as the hidden size) at the space's items and length."""
    return ArchSpec.uniform(space.n_items, space.max_len, space.hidden, depth=2, heads=1)


def baseline_cost(cost_model: CostModel, baseline: ArchSpec, budget: Budget, target: Any) -> float:
    """The baseline's predicted cost; ``BudgetError`` saying what to calibrate if there is none."""
    reason = f"it has no {budget.kind} figure"
    try:
        value = cost_model.predict(baseline, target).get(budget.metric)
    except KeyError:
        value = None
    except ValueError as err:
        value, reason = None, str(err)
    if value is None or not value > 0:
        raise BudgetError(
            f"the budget {budget} is a share of the baseline's {budget.kind}, which the cost "
            f"model of target '{target}' cannot predict ({reason}); calibrate the target with "
            f"'dnsrec-edge calibrate --target {target}' or give an absolute budget"
        )
    return float(value)


def check_budget(
    table: CostTable, budget: Budget, baseline: float | None = None
) -> tuple[float, float]:
    """``(limit, reference)``: the reference is the baseline's cost for a share of the
    baseline, else the full supernet's; ``BudgetError`` naming the cheapest cost if no
    architecture can meet the limit."""
    reference = baseline if budget.relative_to == "baseline" else table.reference()
    limit = budget.limit(reference)
    cheapest, cost = table.cheapest()
    if cost > limit:
        arch = table.space.arch(cheapest)
        blocks = ", ".join(f"{b.heads} head(s) FFN {b.ffn}" for b in arch.blocks)
        of = "the baseline" if budget.relative_to == "baseline" else "the full supernet"
        raise BudgetError(
            f"no architecture in the search space meets the budget {budget} "
            f"({_fmt(limit, budget)}); the cheapest reachable costs {_fmt(cost, budget)} "
            f"({100 * cost / reference:.1f}% of {of}: depth {arch.depth}, {blocks}); "
            f"raise the budget to at least that"
        )
    return limit, reference


def feasible_depths(table: CostTable, limit: float) -> CostTable:
    """``table`` over the depths whose cheapest architecture meets ``limit`` within the
    tolerance the front's pick allows (:data:`MEASURE_TOLERANCE`): a deeper supernet would spend
    its training on paths that no in-budget architecture contains."""
    depth = table.deepest_within(limit * (1 + MEASURE_TOLERANCE))
    if depth >= table.space.max_depth:
        return table
    log.info(
        "searching depths 1-%d: the cheapest architecture of %d blocks costs %.3g, over the "
        "budget %.3g",
        depth,
        depth + 1,
        table.cheapest_of_depth(depth + 1),
        limit,
    )
    return replace(table, space=replace(table.space, max_depth=depth))


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
    baseline: ArchSpec | None = None,
    baseline_valid: float | None = None,
    measure: Measure | None = None,
    front_size: int = 8,
    cost_model: CostModel | None = None,
    warmup_cache: str | Path | None = None,
    baseline_checkpoint: str | Path | None = None,
) -> SearchResult:
    """Search the architecture that fits ``budget``; write the run folder ``out_dir``.

    ``dataset`` is a :class:`Dataset`, a registered name or a file; ``budget`` e.g.
    ``"latency=25%"`` (a share of the ``baseline``'s latency on ``target``), ``"flops=30M"``,
    ``"energy=2mJ"``, ``"step-latency=0.05ms"`` (one streaming step; the default space is then
    start-anchored, so the subnet streams). ``baseline`` defaults to :func:`default_baseline_arch`;
    ``baseline_valid`` (its validation NDCG@10) turns on the warm-up rule; ``measure`` (see
    :mod:`search.front`) adds measured latency shares to the front. ``space`` defaults to 4
    blocks, hidden 64, heads 4/2/1 x 16, FFN 256/128/64, data-aware gates. ``cost_model``
    replaces the budget's usual one (e.g. a ``HostLatencyModel`` measuring on this host).
    ``warmup_cache`` (a folder) shares the budget-independent supernet warm-up between
    searches that differ only in their budget (:mod:`search.warmup_cache`). With
    ``baseline_checkpoint`` (the trained baseline's ``model.pt``) and ``config.inherit``, the
    supernet starts from the baseline's weights (:meth:`Supernet.inherit`), its weights train
    at ``config.inherit_lr`` times the learning rate, and the search validates on the users
    whose validation item the baseline did not train on.
    """
    config = config or SearchConfig()
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset, quiet=quiet)
    positions = "start_anchored" if budget.streaming else "left_padded"
    space = space or SearchSpace(dataset.n_items, config.max_len, positions=positions)
    if budget.streaming and space.positions != "start_anchored":
        raise BudgetError(
            f"a {budget.kind} budget prices a streaming step, which needs a start-anchored "
            f"search space, not '{space.positions}'; build it with positions='start_anchored' "
            "(on the command line, leave out --positions or pass start_anchored)"
        )
    if (space.n_items, space.max_len) != (dataset.n_items, config.max_len):
        raise BudgetError(
            f"the search space is for {space.n_items} items and length {space.max_len} but the "
            f"run has {dataset.n_items} items and --max-len {config.max_len}; build it for this dataset"
        )
    if cost_model is None:
        cost_model, target_arg = budget_cost_model(budget, target, config.max_len, calibration_dir)
    else:
        target_arg = target
    baseline = baseline or default_baseline_arch(space)
    table = CostTable.build(space, cost_model, budget.metric, target_arg, extra=[baseline])
    base_cost = None
    if budget.relative_to == "baseline":
        base_cost = baseline_cost(cost_model, baseline, budget, target_arg)
    limit, reference = check_budget(table, budget, base_cost)  # fail before any training
    if config.feasible_depths:
        table = feasible_depths(table, limit)
        space = table.space
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    model = Supernet(space, config.dropout, config.shared_alpha, config.gumbel)
    inherited, holdout = [], None
    if baseline_checkpoint is not None and config.inherit:
        inherited, holdout = inherit_baseline(model, baseline_checkpoint, dataset)
    if inherited:  # a trained start: a full learning rate would undo what it inherited
        config = replace(config, lr=config.lr * config.inherit_lr)
    valid_set = validation_users(dataset, holdout)
    out = prepare_out_dir(out_dir, force)  # after every check of the inputs
    log.info(
        "search on %s: budget %s = %s (%s %s), %d epochs, penalty %s",
        dataset.name,
        budget,
        _fmt(limit, budget),
        "baseline" if budget.relative_to == "baseline" else "full supernet",
        _fmt(reference, budget),
        config.epochs,
        config.penalty,
    )
    meta = {"dataset_name": dataset.name, "budget": str(budget), "target": target}

    def on_epoch(record: dict[str, Any], improved: bool) -> None:
        record["budget_limit"] = limit
        append_jsonl(out / "search_log.jsonl", record)

    t0 = time.perf_counter()
    loop = run_search(
        model,
        dataset,
        table,
        limit,
        config,
        on_epoch,
        quiet,
        baseline_valid=baseline_valid,
        warmup_cache=None if warmup_cache is None else Path(warmup_cache),
        holdout=holdout,
    )
    # saved before the front is picked, so a run whose selection fails keeps its training
    save_checkpoint(
        out / "supernet.pt", model, dataset.fingerprint, meta | {"epoch": loop.best.epoch}
    )
    visited = [(f"epoch {e.epoch}", e.choice) for e in loop.epochs]
    share = budget.value if budget.relative_to == "baseline" and budget.kind == "latency" else None
    model.eval()
    front = score_front(
        model,
        valid_set,
        table,
        limit,
        config.max_len,
        front_size,
        visited,
        measure,
        config.eval_batch_size,
    )
    chosen = pick(front, limit, share)
    atomic_write_json(out / "front.json", [p.to_dict() for p in front])
    if chosen is None:
        cheapest = min(p.measured_share for p in front if p.measured_share is not None)
        raise BudgetError(
            f"no architecture on the front meets the budget {budget} when measured, even "
            f"{100 * MEASURE_TOLERANCE:.0f}% over it: the cheapest measured "
            f"{100 * cheapest:.0f}% of the baseline; raise the budget (the trained supernet "
            f"and the measured front are kept in {out})"
        )
    if not chosen.fits(limit, share):  # taken within the measurement tolerance only
        log.warning(
            "no architecture on the front measured within %s; taking one measured at %.1f%% of "
            "the baseline (within the %.0f%% measurement tolerance)",
            budget,
            100 * chosen.measured_share,
            100 * MEASURE_TOLERANCE,
        )
    seconds = time.perf_counter() - t0
    arch = space.arch(chosen.choice)
    if getattr(cost_model, "measured", False):  # a measured cost: the table's sum of blocks
        exact = chosen.cost
    else:
        exact = float(cost_model.predict(arch, target_arg).get(budget.metric))
    if exact > limit:  # only for cost models that do not add up per block
        raise BudgetError(
            f"the selected architecture costs {_fmt(exact, budget)} under the cost model, over the "
            f"budget {_fmt(limit, budget)}, although its per-block estimate fits; raise the budget"
        )
    best = loop.best
    atomic_write_text(out / "arch.json", arch.to_json())
    atomic_write_json(
        out / "run.json",
        run_record(
            dataset,
            budget,
            limit,
            target,
            cost_model,
            reference,
            table,
            config,
            loop,
            chosen,
            exact,
            seconds,
            baseline,
            base_cost,
            inherited,
            valid_set.n_users,
        ),
    )
    return SearchResult(
        out,
        arch,
        chosen.choice,
        budget,
        limit,
        exact,
        reference,
        best.epoch,
        chosen.valid,
        best.argmax_in_budget,
        seconds,
        model,
        front,
        loop.warmup_reused,
        loop.warmup_cpu_seconds,
    )


def run_record(
    dataset: Dataset,
    budget: Budget,
    limit: float,
    target: str | None,
    cost_model: CostModel,
    reference: float,
    table: CostTable,
    config: SearchConfig,
    loop: LoopResult,
    chosen: FrontPoint,
    cost: float,
    seconds: float,
    baseline: ArchSpec,
    base_cost: float | None,
    inherited: list[str],
    valid_users: int,
) -> dict[str, Any]:
    """The ``run.json`` schema: dataset, budget, cost model, space, settings and the outcome."""
    return {
        "schema": RUN_SCHEMA,
        "tool_version": __version__,
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "source": dataset.settings.get("source"),
            "min_count": dataset.settings.get("min_count"),
        },
        "budget": budget.to_dict() | {"limit": limit},
        "target": target,
        "cost_model": type(cost_model).__name__,
        "reference_cost": reference,
        "baseline": {"arch": baseline.to_dict(), "cost": base_cost},
        "supernet_cost": table.reference(),
        "space": table.space.to_dict(),
        "config": asdict(config),
        "warmup": {
            "epochs": loop.warmup_epochs,
            "largest_valid_ndcg@10": loop.warmup_valid,
            "reused": loop.warmup_reused,
            "reused_cpu_seconds": loop.warmup_cpu_seconds,
            "inherited": inherited,  # what the supernet took from the baseline's weights
            "validation_users": valid_users,
        },
        "selected": {
            "choice": asdict(chosen.choice),
            "cost": cost,
            "share": cost / reference,
            "measured_share": chosen.measured_share,
            "epoch": loop.best.epoch,
            "argmax_in_budget": loop.best.argmax_in_budget,
            "valid": chosen.valid,
            "sources": chosen.sources,
        },
        "search_seconds": round(seconds, 2),
        "threads": torch.get_num_threads(),
    }
