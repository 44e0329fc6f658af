"""Training loop: next-item loss, Adam with warm-up + cosine decay, early stopping on valid NDCG@10.

``train_model`` trains any module with ``forward(item_seq) -> (B, T, d)``, ``score(h)`` and
``predict(item_seq)``; ``train_baseline`` builds a SASRec, trains it in a run folder and
evaluates it. A run folder holds ``config.json`` (resolved settings), ``history.jsonl`` (one
record per epoch, appended), ``last.pt`` (resume state, rewritten atomically each epoch),
``model.pt`` (best weights, a :mod:`checkpoint`) and ``metrics.json`` (final metrics).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dnsrec_edge.data.batching import count_batches, train_batches
from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.errors import CheckpointMismatch, InputFileError, OutputExists, TrainConfigError
from dnsrec_edge.evaluate import PROTOCOLS, evaluate
from dnsrec_edge.fsio import append_jsonl, atomic_write_bytes, atomic_write_json
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.progress import track
from dnsrec_edge.train.checkpoint import save_checkpoint
from dnsrec_edge.train.config import TrainConfig
from dnsrec_edge.train.losses import distilled_loss, sequence_loss

log = logging.getLogger(__name__)

RUN_FILES = ("config.json", "history.jsonl", "last.pt", "model.pt", "metrics.json")


@dataclass
class TrainResult:
    """What a training run produced."""

    model: nn.Module
    best_epoch: int
    epochs: int  # epochs run in total (over resumes)
    best_valid: dict[str, float]
    train_seconds: float  # training + per-epoch validation, over resumes
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # by part
    out_dir: Path | None = None
    stopped: str = ""  # why training ended: "patience", "epochs", "time", "budget"
    budget_spent: float = 0.0  # CPU seconds (wall off the CPU) of training, over resumes


@dataclass
class BatchInfo:
    """Passed to ``on_batch`` after each optimizer step."""

    epoch: int
    step: int
    loss: float
    model: nn.Module


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None``: every core); return the number used."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


class Schedule:
    """Learning-rate factor per step: linear warm-up, then cosine decay (or constant) to the
    end of ``epochs``; :meth:`fit_budget` moves that end so the decay finishes inside a time
    budget. An object, not a closure, so ``LambdaLR`` saves and restores its horizon."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.warmup = config.warmup_epochs * steps_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.cosine = config.schedule == "cosine"
        self.max_epochs = self.epochs = config.epochs

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.cosine:
            total = self.epochs * self.steps_per_epoch
            progress = (step - self.warmup) / max(1.0, total - self.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    def fit_budget(self, done: int, spent: float, budget: float) -> int:
        """Set the horizon to the epochs ``budget`` seconds buy at the mean cost of the
        ``done`` epochs so far (``spent`` seconds), at least ``done`` and at most the
        configured epochs; return it."""
        fits = math.floor(budget / (spent / done)) if spent > 0 else self.max_epochs
        self.epochs = max(done, min(self.max_epochs, fits))
        return self.epochs


def _clock(device: torch.device) -> float:
    """What a time budget counts: this process's CPU time on the CPU, wall time elsewhere."""
    return time.process_time() if device.type == "cpu" else time.perf_counter()


def _log_q(dataset: Dataset, config: TrainConfig) -> torch.Tensor | None:
    if config.loss != "sampled" or config.sampler == "uniform":
        return None
    counts = torch.from_numpy(dataset.item_counts[1:]).double().clamp(min=1.0)
    return (counts / counts.sum()).log().float()  # (n_items,)


def train_model(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    quiet: bool = False,
    on_batch: Callable[[BatchInfo], None] | None = None,
    resume: bool = False,
    teacher: nn.Module | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset``; early-stop on valid NDCG@10 (full ranking); restore the best.

    With a ``teacher`` and ``config.distill > 0`` the loss mixes the cross-entropy with the KL
    to the teacher's softened full-catalogue scores (:func:`losses.distilled_loss`).

    With ``out_dir``, each epoch rewrites ``last.pt`` and appends to ``history.jsonl``, and a
    better epoch rewrites ``model.pt``; ``resume`` continues from ``last.pt``. Training runs
    on ``config.device``; the returned model is on the CPU.
    """
    threads = set_threads(config.threads)
    device = torch.device(config.device)
    model.to(device)
    if config.distill > 0 and teacher is None:
        raise TrainConfigError("distill > 0 needs a teacher model; pass the trained baseline")
    if teacher is not None:
        teacher.to(device).eval()
    out = Path(out_dir) if out_dir is not None else None
    holdout = validation_holdout(dataset, config)
    valid_set = validation_users(dataset, holdout)
    steps_per_epoch = count_batches(dataset, config.max_len, config.batch_size, holdout=holdout)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay
    )
    schedule = Schedule(config, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    state = _initial_state()
    if resume and out is not None:
        state = _restore(out / "last.pt", model, optimizer, scheduler, dataset, state, device)
        log.info(
            "resuming at epoch %d (best so far: epoch %d)", state["epoch"] + 1, state["best_epoch"]
        )
    log_q = _log_q(dataset, config)
    if config.ema > 0 and state["ema"] is None:
        state["ema"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loop = _Loop(
        model,
        teacher,
        dataset,
        config,
        device,
        holdout,
        steps_per_epoch,
        optimizer,
        scheduler,
        log_q,
        _ema_pairs(model, state["ema"]),
        on_batch,
        quiet,
    )
    extra = _checkpoint_extra(dataset, config)
    start_seconds, start_spent = state["seconds"], state["budget_spent"]
    t0, c0 = time.perf_counter(), _clock(device)
    step = state["epoch"] * steps_per_epoch
    while state["epoch"] < config.epochs and state["stopped"] == "":
        epoch = state["epoch"] + 1
        losses, step = _train_epoch(loop, epoch, step)
        live = _swap_in(model, state["ema"])  # validate (and keep) the averaged weights
        valid = _validate(model, valid_set, config)
        seconds = start_seconds + time.perf_counter() - t0
        state["budget_spent"] = start_spent + _clock(device) - c0
        horizon = None  # where the time budget now ends the schedule
        if config.budget_seconds is not None:
            horizon = schedule.fit_budget(epoch, state["budget_spent"], config.budget_seconds)
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(seconds, 2),
            **{f"valid_{k}": v for k, v in valid.items()},
        }
        if horizon is not None:
            record["horizon"] = horizon
        improved = _end_epoch(state, record, valid, seconds, model, config, horizon)
        if not quiet:
            log.info(
                "epoch %d%s loss %.4f valid ndcg@10 %.4f hr@10 %.4f (%.0f s)%s",
                epoch,
                f" of {horizon}" if horizon is not None else "",
                record["loss"],
                valid["ndcg@10"],
                valid["hr@10"],
                seconds,
                " *" if improved else "",
            )
        if out is not None and improved:
            save_checkpoint(out / "model.pt", model, dataset.fingerprint, extra)
        _swap_out(model, live)
        if out is not None:
            append_jsonl(out / "history.jsonl", record)
            _save_state(out / "last.pt", model, optimizer, scheduler, dataset, state, config)
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.to("cpu").eval()
    if teacher is not None:
        teacher.to("cpu")
    log.debug("trained with %d threads", threads)
    return TrainResult(
        model=model,
        best_epoch=state["best_epoch"],
        epochs=state["epoch"],
        best_valid=state["best_valid"],
        train_seconds=state["seconds"],
        history=state["history"],
        out_dir=out,
        stopped=state["stopped"] or "epochs",
        budget_spent=state["budget_spent"],
    )


@dataclass
class _Loop:
    """What every epoch of one :func:`train_model` run uses."""

    model: nn.Module
    teacher: nn.Module | None
    dataset: Dataset
    config: TrainConfig
    device: torch.device
    holdout: np.ndarray | None
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    log_q: torch.Tensor | None
    ema_pairs: list[tuple[torch.Tensor, torch.Tensor]]
    on_batch: Callable[[BatchInfo], None] | None
    quiet: bool


def _initial_state() -> dict[str, Any]:
    """The resumable state of a run before its first epoch (``last.pt`` holds it later)."""
    return {
        "epoch": 0,
        "best_ndcg": -1.0,
        "best_epoch": 0,
        "best_valid": {},
        "bad_epochs": 0,
        "seconds": 0.0,
        "history": [],
        "best_state": None,
        "stopped": "",
        "ema": None,  # exponential moving average of the weights (config.ema > 0)
        "budget_spent": 0.0,  # what config.budget_seconds counts, over resumes
    }


def _checkpoint_extra(dataset: Dataset, config: TrainConfig) -> dict[str, Any]:
    """What ``model.pt`` says about its data and settings (``evaluate`` reads it back)."""
    return {
        "dataset_name": dataset.name,
        "min_count": dataset.settings.get("min_count"),
        "dataset_source": dataset.settings.get("source", {}),
        "max_len": config.max_len,
        "train_config": asdict(config),
    }


def _train_epoch(loop: _Loop, epoch: int, step: int) -> tuple[list[float], int]:
    """One pass over the training batches; the batch losses and the step count after it."""
    config, model = loop.config, loop.model
    torch.manual_seed(config.seed * 100_003 + epoch)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    model.train()
    losses = []
    for item_seq, targets in track(
        _batches(loop.dataset, config, epoch, loop.holdout),
        f"epoch {epoch}",
        total=loop.steps_per_epoch,
        quiet=loop.quiet,
    ):
        item_seq, targets = item_seq.to(loop.device), targets.to(loop.device)
        with torch.autocast(loop.device.type, torch.bfloat16, enabled=config.precision == "bf16"):
            loss = _batch_loss(loop, item_seq, targets, generator)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()
        loop.scheduler.step()
        step += 1
        if loop.ema_pairs:
            _ema_update(loop.ema_pairs, min(config.ema, (1 + step) / (10 + step)))
        losses.append(loss.item())
        if loop.on_batch is not None:
            loop.on_batch(BatchInfo(epoch, step, losses[-1], model))
    return losses, step


def _batch_loss(
    loop: _Loop, item_seq: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The task loss of one batch, distilled from the teacher when the run has one."""
    config = loop.config
    if loop.teacher is not None and config.distill > 0:
        return distilled_loss(
            loop.model,
            loop.teacher,
            item_seq,
            targets,
            config.distill,
            config.distill_temperature,
        )
    return sequence_loss(
        loop.model, item_seq, targets, config.loss, config.negatives, loop.log_q, generator
    )


def _validate(model: nn.Module, valid_set: Dataset, config: TrainConfig) -> dict[str, float]:
    """Full-ranking metrics on the validation users (what early stopping reads)."""
    return evaluate(
        model.predict,
        valid_set,
        "valid",
        config.max_len,
        protocols=("full",),
        batch_size=config.eval_batch_size,
        trim=True,  # models trained here accept T < max_len
    )["full"]


def _end_epoch(
    state: dict[str, Any],
    record: dict[str, Any],
    valid: dict[str, float],
    seconds: float,
    model: nn.Module,
    config: TrainConfig,
    horizon: int | None = None,
) -> bool:
    """Add the epoch to ``state`` (history, best weights, why to stop: also reaching the time
    budget's ``horizon``); whether it improved."""
    epoch = record["epoch"]
    state["history"].append(record)
    state["epoch"], state["seconds"] = epoch, seconds
    improved = valid["ndcg@10"] > state["best_ndcg"]
    if improved:
        state.update(best_ndcg=valid["ndcg@10"], best_epoch=epoch, best_valid=valid, bad_epochs=0)
        state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        state["bad_epochs"] += 1
    if state["bad_epochs"] >= config.patience:
        state["stopped"] = "patience"
    elif config.max_minutes is not None and seconds >= config.max_minutes * 60:
        state["stopped"] = "time"
    elif epoch >= config.epochs:
        state["stopped"] = "epochs"
    elif horizon is not None and epoch >= horizon:
        state["stopped"] = "budget"
    return improved


def _ema_pairs(model: nn.Module, ema: dict | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(average, live tensor) pairs of the floating-point weights; empty without averaging."""
    if ema is None:
        return []
    return [(ema[k], v) for k, v in model.state_dict().items() if v.is_floating_point()]


@torch.no_grad()
def _ema_update(pairs: list[tuple[torch.Tensor, torch.Tensor]], decay: float) -> None:
    for avg, live in pairs:
        avg.lerp_(live, 1.0 - decay)


def _swap_in(model: nn.Module, weights: dict | None) -> dict | None:
    """Load ``weights`` into ``model``; return a copy of the live weights (None: no swap)."""
    if weights is None:
        return None
    live = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    return live


def _swap_out(model: nn.Module, live: dict | None) -> None:
    if live is not None:
        model.load_state_dict(live)


def validation_holdout(dataset: Dataset, config: TrainConfig) -> np.ndarray | None:
    """Which users' validation item is held out (bool per user), or ``None`` for all of them.

    With ``config.valid_share < 1`` a seeded random share of the users validates (early
    stopping); every other user also trains on its second-last item. Test items are never
    trained on.
    """
    if config.valid_share >= 1:
        return None
    n = max(1, round(config.valid_share * dataset.n_users))
    chosen = np.random.default_rng([config.seed, 7]).choice(dataset.n_users, n, replace=False)
    holdout = np.zeros(dataset.n_users, dtype=bool)
    holdout[chosen] = True
    return holdout


def validation_users(dataset: Dataset, holdout: np.ndarray | None) -> Dataset:
    """The users validation is measured on: those whose validation item was held out."""
    return dataset if holdout is None else dataset.subset(np.flatnonzero(holdout))


def final_metrics(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    protocols: tuple[str, ...] = PROTOCOLS,
    quiet: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{"valid", "test"}`` metrics of a trained model: valid over the users whose validation
    item was held out from training, test over every user."""
    valid_set = validation_users(dataset, validation_holdout(dataset, config))
    return {
        part: evaluate(
            model.predict,
            valid_set if part == "valid" else dataset,
            part,
            config.max_len,
            protocols=protocols,
            batch_size=config.eval_batch_size,
            quiet=quiet,
            trim=True,
        )
        for part in ("valid", "test")
    }


def _batches(dataset: Dataset, config: TrainConfig, epoch: int, holdout: np.ndarray | None):
    rng = np.random.default_rng([config.seed, epoch])
    return train_batches(
        dataset, config.max_len, config.batch_size, rng, crop=config.crop, holdout=holdout
    )


def _save_state(path, model, optimizer, scheduler, dataset, state, config) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "dataset": dataset.fingerprint,
        "config": asdict(config),
        **{k: v for k, v in state.items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _restore(
    path: Path, model, optimizer, scheduler, dataset: Dataset, state: dict, device
) -> dict:
    if not path.is_file():
        raise InputFileError(f"no training state '{path}' to resume from; start without --resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # garbage raises assorted errors; torch's hint is unsafe advice
        raise InputFileError(
            f"training state '{path}' is damaged or not a dnsrec-edge training state; start "
            "again with --force"
        ) from err
    if not isinstance(payload, dict) or "model" not in payload:
        raise InputFileError(
            f"'{path}' is not a dnsrec-edge training state; start again with --force"
        )
    if payload.get("dataset") != dataset.fingerprint:
        raise CheckpointMismatch(
            f"run folder '{path.parent}' was trained on another dataset; resume it with the same dataset "
            "and --min-count, or start a new run"
        )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    restored = {k: payload.get(k, state[k]) for k in state}  # older states lack newer keys
    for key in ("ema", "best_state"):  # weight copies live beside the model
        if restored[key] is not None:
            restored[key] = {k: v.to(device) for k, v in restored[key].items()}
    return restored


def baseline_arch(dataset: Dataset, config: TrainConfig) -> ArchSpec:
    """The SASRec ArchSpec the config describes (FFN width defaults to hidden, as in SASRec)."""
    return ArchSpec.uniform(
        dataset.n_items,
        config.max_len,
        config.hidden,
        config.blocks,
        config.heads,
        ffn=config.ffn,
        norm=config.norm,
        positions=config.positions,
    )


def prepare_run_dir(out_dir: str | Path, force: bool, resume: bool) -> Path:
    """Refuse an existing run folder unless ``force`` (its run files are removed) or ``resume``."""
    out = Path(out_dir)
    if out.exists() and not resume:
        if not force:
            raise OutputExists(out)
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def train_baseline(
    dataset: Dataset,
    out_dir: str | Path | None,
    config: TrainConfig | None = None,
    arch: ArchSpec | None = None,
    quiet: bool = False,
    resume: bool = False,
    force: bool = False,
    protocols: tuple[str, ...] = PROTOCOLS,
) -> TrainResult:
    """Train a SASRec baseline, then evaluate valid and test under every protocol.

    With ``out_dir``, the run folder gets ``config.json``, checkpoints and ``metrics.json``.
    """
    config = config or TrainConfig()
    out = prepare_run_dir(out_dir, force, resume) if out_dir is not None else None
    if resume and out is not None and (out / "config.json").exists():
        saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
        config = TrainConfig.from_dict(saved["train"])
    arch = arch or baseline_arch(dataset, config)
    if arch.n_items != dataset.n_items:
        raise CheckpointMismatch(
            f"the architecture has {arch.n_items} items but dataset '{dataset.name}' has {dataset.n_items}; "
            "use an ArchSpec made for this dataset"
        )
    torch.manual_seed(config.seed)
    model = SASRec(arch, dropout=config.dropout)
    if out is not None and not resume:
        atomic_write_json(
            out / "config.json",
            {"dataset": dataset.stats(), "train": asdict(config), "arch": arch.to_dict()},
        )
    result = train_model(model, dataset, config, out, quiet=quiet, resume=resume)
    result.metrics = final_metrics(result.model, dataset, config, protocols, quiet)
    if out is not None:
        atomic_write_json(
            out / "metrics.json",
            {
                "dataset": dataset.name,
                "fingerprint": dataset.fingerprint,
                "metrics": result.metrics,
                "best_epoch": result.best_epoch,
                "epochs": result.epochs,
                "stopped": result.stopped,
                "train_seconds": round(result.train_seconds, 2),
                "threads": torch.get_num_threads(),
            },
        )
    return result
