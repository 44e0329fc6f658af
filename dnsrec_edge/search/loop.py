"""The bilevel search loop: supernet weights on training batches, controllers on a held-out slice.

Warm-up (the controllers stay still): the shared weights train with the sandwich rule and
in-place distillation (:mod:`sandwich`: the largest path on the true items, the smallest and
``sandwich_random`` random paths on the largest path's predictions), with the baseline's
recipe (Adam at its learning rate, a one-epoch linear ramp, its dropout; a supernet that
starts from the trained baseline, see ``search.run``, trains at ``inherit_lr`` of that rate,
and only the baseline's validation users validate). The warm-up lasts
at least ``warmup_epochs`` and, given the baseline's validation NDCG@10, goes on (up to
``max_warmup_epochs``) until the largest hard path reaches ``warmup_target`` of it or an
epoch no longer raises it, so the controllers start from shared weights whose hard paths
rank items about as well as the baseline does (or as well as more warm-up would make them:
a start inherited from the baseline begins near the target, and the sandwich rule's small
paths then trade some of the largest path's accuracy for their own).

Search (``epochs - warmup_epochs`` epochs): first order (DARTS-style), every batch updates the
weights with the mixture's task loss; every ``arch_every`` batches one batch of the held-out
users updates alpha and beta (their own Adam) with ``task loss + penalty``; the penalty
weight then takes its dual-ascent step. The learning rate of the weights decays along a
cosine to a tenth over the search epochs. The temperature anneals exponentially from
``t_start`` to ``t_end``, but a step of the schedule is taken only while the expected cost
sits within ``anneal_band`` of the budget (``|E[cost] / budget - 1| <= anneal_band``), so the
controllers cannot freeze on an architecture far from the budget.

After each epoch the argmax architecture is taken (or, when it is over budget, the most
probable in-budget architecture under the controllers), evaluated in hard mode on the
validation users, and logged; the epoch with the best validation NDCG@10 wins.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnsrec_edge.data.batching import train_batches
from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.errors import DataError
from dnsrec_edge.progress import track
from dnsrec_edge.search.constraint import PENALTY_MODES, CostTable, Penalty, depth_factor
from dnsrec_edge.search.controllers import anneal
from dnsrec_edge.search.front import hard_valid, most_probable_in_budget
from dnsrec_edge.search.sandwich import sandwich_step
from dnsrec_edge.search.space import Choice
from dnsrec_edge.search.supernet import Supernet
from dnsrec_edge.search.warmup_cache import load_warmup, save_warmup, state_digest, warmup_key
from dnsrec_edge.train.losses import LOSSES, sequence_loss
from dnsrec_edge.train.trainer import validation_users

log = logging.getLogger(__name__)


@dataclass
class SearchConfig:
    """Search settings; the training ones match ``TrainConfig`` of the baseline."""

    epochs: int = 10  # warm-up + search epochs, when the warm-up is not prolonged
    batch_size: int = 64  # the baseline's
    lr: float = 3e-3  # the baseline's
    loss: str = "ce"
    negatives: int = 256
    dropout: float = 0.1  # the baseline's
    max_len: int = 200
    seed: int = 0
    threads: int | None = None
    eval_batch_size: int = 512
    # architecture step
    arch_lr: float = 1e-2  # the authors' 1e-3 barely moves alpha in the few steps of MovieLens
    arch_every: int = 1  # one architecture step every this many weight steps
    heldout: float = 0.1  # share of users whose training sequences drive the architecture step
    warmup_epochs: int = 3  # weights only (every path trains), temperature held at t_start
    sandwich: bool = True  # warm-up with the sandwich rule (False: the mixture's loss)
    sandwich_random: int = 2  # random paths per sandwich step
    feasible_depths: bool = True  # leave out depths whose cheapest architecture is over budget
    inherit: bool = True  # start from the trained baseline's weights when one is given
    inherit_lr: float = 0.1  # then the weights' learning rate is this share of lr
    warmup_target: float = 0.95  # prolong the warm-up until the largest path reaches this
    max_warmup_epochs: int = 0  # share of the baseline's valid NDCG@10 (0: epochs - 1)
    t_start: float = 1.0
    t_end: float = 0.01
    anneal_band: float = 0.1  # anneal only while |E[cost] / budget - 1| is within this
    gumbel: bool = False
    shared_alpha: bool = False  # one alpha for all blocks (the authors' code)
    # penalty
    penalty: str = "dynamic"  # "dynamic" (dual ascent) or "fixed"
    lam: float = 0.01  # initial (dynamic) or constant (fixed) penalty weight
    dual_step: float = 0.05

    def __post_init__(self) -> None:
        problems = []
        if self.loss not in LOSSES:
            problems.append(f"loss '{self.loss}' is not one of {', '.join(LOSSES)}")
        if self.penalty not in PENALTY_MODES:
            problems.append(f"penalty '{self.penalty}' is not one of {', '.join(PENALTY_MODES)}")
        for name in ("epochs", "batch_size", "max_len", "arch_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not 0 < self.heldout < 1:
            problems.append(f"heldout must lie strictly between 0 and 1 (got {self.heldout})")
        if not 0 <= self.warmup_epochs < self.epochs:
            problems.append(
                f"warmup_epochs must lie in 0..epochs-1 (got {self.warmup_epochs} of {self.epochs})"
            )
        if not 0 <= self.warmup_target <= 1.5 or self.anneal_band <= 0:
            problems.append(
                f"warmup_target must lie in 0..1.5 and anneal_band be > 0 (got "
                f"{self.warmup_target}, {self.anneal_band})"
            )
        if not 0 < self.inherit_lr <= 1:
            problems.append(f"inherit_lr must lie in (0, 1] (got {self.inherit_lr})")
        if not 0 < self.t_end <= self.t_start:
            problems.append(
                f"temperatures need 0 < t_end <= t_start (got {self.t_start}, {self.t_end})"
            )
        if problems:
            raise DataError("invalid search settings: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class EpochResult:
    """What one search epoch selected and how it scored."""

    epoch: int
    choice: Choice
    cost: float
    argmax_in_budget: bool
    valid: dict[str, float]


@dataclass
class LoopResult:
    """Best epoch and the per-epoch records of a search."""

    best: EpochResult | None
    epochs: list[EpochResult] = field(default_factory=list)
    seconds: float = 0.0
    warmup_epochs: int = 0  # warm-up epochs actually run (or reused)
    warmup_valid: float = -1.0  # the largest path's valid NDCG@10 after the last warm-up epoch
    warmup_reused: bool = False  # loaded from the warm-up cache instead of trained
    warmup_cpu_seconds: float | None = None  # a reused warm-up's CPU time when it was trained


def split_users(dataset: Dataset, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(weight users, held-out users)``: a seeded random ``share`` of users is held out."""
    perm = np.random.default_rng([seed, 7]).permutation(dataset.n_users)
    n_held = max(1, round(share * dataset.n_users))
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def _cycle_batches(
    dataset: Dataset, users: np.ndarray, config: SearchConfig, holdout: np.ndarray | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for round_ in itertools.count():
        rng = np.random.default_rng([config.seed, 1_000_003, round_])
        yield from train_batches(
            dataset, config.max_len, config.batch_size, rng, users=users, holdout=holdout
        )


def run_search(
    model: Supernet,
    dataset: Dataset,
    table: CostTable,
    limit: float,
    config: SearchConfig,
    on_epoch: Callable[[dict[str, Any], bool], None] | None = None,
    quiet: bool = False,
    baseline_valid: float | None = None,
    warmup_cache: Path | None = None,
    holdout: np.ndarray | None = None,
) -> LoopResult:
    """Train ``model`` and its controllers; ``on_epoch(record, improved)`` after each epoch.

    ``baseline_valid`` (the baseline's validation NDCG@10) turns on the warm-up rule. With
    ``warmup_cache`` (a folder, :mod:`search.warmup_cache`), a finished warm-up of the same
    data, space, settings and baseline is loaded instead of trained, and a trained one saved.
    ``holdout`` (bool per user, as in ``train_batches``): only these users' validation items
    are held out; the others train on theirs, and validation uses the held-out users only.
    """
    weight_users, held_users = split_users(dataset, config.heldout, config.seed)
    if len(weight_users) == 0:
        raise DataError(
            f"dataset '{dataset.name}' has too few users to hold out a share for the search"
        )
    ctrl = model.controller
    w_opt = torch.optim.Adam(model.weight_parameters(), lr=config.lr, betas=(0.9, 0.98))
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=config.arch_lr)
    penalty = Penalty(config.penalty, config.lam, config.dual_step)
    valid_set = validation_users(dataset, holdout)
    arch_batches = _cycle_batches(dataset, held_users, config, holdout)
    steps_per_epoch = sum(1 for _ in _weight_batches(dataset, weight_users, config, 0, holdout))
    search_epochs = config.epochs - config.warmup_epochs
    anneal_steps = search_epochs * steps_per_epoch
    max_warmup = config.max_warmup_epochs or max(config.warmup_epochs, config.epochs - 1)
    target = None if baseline_valid is None else config.warmup_target * baseline_valid
    rng = np.random.default_rng([config.seed, 31])
    ctrl.set_temperature(config.t_start)
    result, best_ndcg, t0, cpu0 = LoopResult(None), -1.0, time.perf_counter(), time.process_time()
    step, anneal_step, searched, warmed, ratio = 0, 0, 0, 0, float("inf")
    stalled = False  # True once the warm-up is over, whatever the target says
    epoch = 0
    key = None
    if warmup_cache is not None:
        start = state_digest(model)  # a start inherited from a baseline differs
        key = warmup_key(dataset.fingerprint, model.space, config, baseline_valid, start)
        reused = load_warmup(warmup_cache, key, model, w_opt)
        if reused is not None:
            step, warmed, epoch = reused["step"], reused["warmed"], reused["warmed"]
            result.warmup_epochs, result.warmup_valid = warmed, reused["warmup_valid"]
            result.warmup_reused = True
            result.warmup_cpu_seconds = reused.get("cpu_seconds")  # older entries lack it
            stalled = True  # an entry is saved when its warm-up ended: search from here on
            # the controllers did not move in the warm-up: every warm-up epoch selected this
            record, epoch_result = _end_epoch(model, valid_set, table, limit, config, epoch)
            record.update(
                phase="warmup-reused",
                penalty_weight=penalty.lam,
                mean_expected_ratio=None,
                seconds=0.0,
            )
            record["largest_valid_ndcg@10"] = result.warmup_valid
            result.epochs.append(epoch_result)
            if on_epoch is not None:
                on_epoch(record, False)
            key = None  # nothing to save
    while searched < search_epochs:
        epoch += 1
        torch.manual_seed(config.seed * 100_003 + epoch)
        model.train()
        searching = warmed >= config.warmup_epochs and (
            target is None or warmed >= max_warmup or result.warmup_valid >= target or stalled
        )
        if searching and key is not None:  # the warm-up just ended: keep it for other budgets
            if warmed:  # (a search without warm-up epochs has nothing to share)
                state = {
                    "step": step,
                    "warmed": warmed,
                    "warmup_valid": result.warmup_valid,
                    "cpu_seconds": time.process_time() - cpu0,  # what a reuse saves
                }
                save_warmup(warmup_cache, key, model, w_opt, state)
            key = None
        losses, ratios = [], []
        batches = _weight_batches(dataset, weight_users, config, epoch, holdout)
        for i, (item_seq, targets) in enumerate(
            track(batches, f"search epoch {epoch}", total=steps_per_epoch, quiet=quiet)
        ):
            _set_lr(w_opt, config, step, steps_per_epoch, searched, search_epochs)
            step += 1
            if searching and abs(ratio - 1.0) <= config.anneal_band:
                anneal_step += 1
            ctrl.set_temperature(anneal(anneal_step, anneal_steps, config.t_start, config.t_end))
            if not searching and config.sandwich:
                losses.append(
                    sandwich_step(model, item_seq, targets, w_opt, rng, config.sandwich_random)
                )
            else:
                loss = sequence_loss(model, item_seq, targets, config.loss, config.negatives)
                w_opt.zero_grad(set_to_none=True)
                loss.backward()
                w_opt.step()
                losses.append(loss.item())
            if searching and i % config.arch_every == 0:
                ratio = _arch_step(model, table, limit, penalty, a_opt, next(arch_batches), config)
                ratios.append(ratio)
        record, epoch_result = _end_epoch(model, valid_set, table, limit, config, epoch)
        if searching:
            searched += 1
        else:
            warmed += 1
            largest = _largest_valid(model, valid_set, config)
            stalled = largest <= result.warmup_valid  # prolonging no longer helps
            result.warmup_valid = largest
            record["largest_valid_ndcg@10"] = result.warmup_valid
        result.warmup_epochs = warmed
        record.update(
            phase="search" if searching else "warmup",
            train_loss=float(np.mean(losses)),
            penalty_weight=penalty.lam,
            mean_expected_ratio=float(np.mean(ratios)) if ratios else None,
            seconds=round(time.perf_counter() - t0, 2),
        )
        result.epochs.append(epoch_result)
        improved = searching and epoch_result.valid["ndcg@10"] > best_ndcg
        if improved:
            best_ndcg, result.best = epoch_result.valid["ndcg@10"], epoch_result
        log.info(
            "search epoch %d (%s): T %.3f, lambda %.4g, expected cost %.3g (%.0f%% of budget), "
            "arch %s cost %.3g, valid ndcg@10 %.4f%s",
            epoch,
            record["phase"],
            float(ctrl.temperature),
            penalty.lam,
            record["expected_cost"],
            100 * record["expected_cost"] / limit,
            list(epoch_result.choice.blocks),
            epoch_result.cost,
            epoch_result.valid["ndcg@10"],
            " *" if improved else "",
        )
        if on_epoch is not None:
            on_epoch(record, improved)
    result.seconds = time.perf_counter() - t0
    return result


def _set_lr(
    optimizer: torch.optim.Optimizer,
    config: SearchConfig,
    step: int,
    steps_per_epoch: int,
    searched: int,
    search_epochs: int,
) -> None:
    """One-epoch linear ramp, flat through the warm-up, cosine to a tenth over the search."""
    if step < steps_per_epoch:
        factor = (step + 1) / steps_per_epoch
    else:
        progress = min(1.0, searched / max(1, search_epochs))
        factor = 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))
    for group in optimizer.param_groups:
        group["lr"] = config.lr * factor


def _largest_valid(model: Supernet, dataset: Dataset, config: SearchConfig) -> float:
    """Validation NDCG@10 of the largest hard path (max depth, widest candidates)."""
    widest = model.space.widest()
    return hard_valid(model, dataset, widest, config.max_len, config.eval_batch_size)["ndcg@10"]


def _weight_batches(
    dataset: Dataset,
    users: np.ndarray,
    config: SearchConfig,
    epoch: int,
    holdout: np.ndarray | None,
):
    rng = np.random.default_rng([config.seed, epoch])
    return train_batches(
        dataset, config.max_len, config.batch_size, rng, users=users, holdout=holdout
    )


def _arch_step(
    model: Supernet,
    table: CostTable,
    limit: float,
    penalty: Penalty,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    config: SearchConfig,
) -> float:
    """One first-order step of alpha and beta; returns the expected cost / budget."""
    item_seq, targets = batch
    task = sequence_loss(model, item_seq, targets, config.loss, config.negatives)
    probs = model.controller.probs()
    ratio = table.expected(probs) / limit
    loss = task + penalty.term(ratio, depth_factor(probs))
    params = model.arch_parameters()
    for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
        p.grad = g  # first order: the weights' gradients are not needed here
    optimizer.step()
    value = ratio.item()
    penalty.update(value)
    return value


def _end_epoch(
    model: Supernet,
    dataset: Dataset,
    table: CostTable,
    limit: float,
    config: SearchConfig,
    epoch: int,
) -> tuple[dict[str, Any], EpochResult]:
    ctrl = model.controller
    argmax = ctrl.choice()
    argmax_cost = table.of(argmax)
    choice = argmax if argmax_cost <= limit else most_probable_in_budget(ctrl, table, limit)[0]
    cost = table.of(choice)
    valid = hard_valid(model, dataset, choice, config.max_len, config.eval_batch_size)
    with torch.no_grad():
        expected = float(table.expected(ctrl.probs()))
    record = {
        "epoch": epoch,
        "temperature": float(ctrl.temperature),
        "expected_cost": expected,
        "argmax": asdict(argmax),
        "argmax_cost": argmax_cost,
        "argmax_in_budget": argmax_cost <= limit,
        "selected": asdict(choice),
        "selected_cost": cost,
        "valid": valid,
        **ctrl.snapshot(),
    }
    return record, EpochResult(epoch, choice, cost, argmax_cost <= limit, valid)
