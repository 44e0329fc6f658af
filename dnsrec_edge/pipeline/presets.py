"""Pipeline stage names and the training/search budgets of each preset (plain data, no imports).

- ``full``: the settings the toolkit's benchmarks use (ml-1m: max length 200, early stopping).
- ``short``: the embedded default (ml-100k in a few minutes on two cores): the baseline
  recipe of ``benchmarks/baseline.py`` (TrainConfig's defaults), a short search.
- ``smoke``: a tiny end-to-end check (tests, ``--quick``).

Each preset maps a stage to keyword settings: ``baseline`` to ``TrainConfig`` fields,
``finetune`` to the ``TrainConfig`` fields the subnet changes on top of the baseline's own
settings (it trains with the baseline's recipe, inheriting the supernet's weights and
distilled from the trained baseline) plus ``time_share``, the most that search and subnet
training may take together as a multiple of the baseline's training time, ``search`` to ``SearchConfig`` fields (``space`` to
``SearchSpace`` fields), ``candidates`` sizes the front scored after the search, ``export``
sets how many real histories validate the ONNX files, ``bench`` holds ``benchmark`` options.
"""

from __future__ import annotations

from typing import Any

STAGE_NAMES = (
    "data",
    "baseline",
    "search",
    "prune",
    "finetune",
    "export",
    "compile",
    "bench",
    "calibrate",
    "report",
)

# the default budget of each preset: a share of the trained baseline's latency on the
# pipeline's target (see search/budget.py); the smoke preset's tiny models are mostly fixed
# cost (embedding, scoring), so no subnet comes near 40% of its baseline
DEFAULT_BUDGETS = {"full": "latency=40%", "short": "latency=40%", "smoke": "latency=90%"}
# the subnet's training: distilled from the baseline, and ended (its cosine decay included)
# where search plus training reach twice the baseline's training time (steps.finetune_budget)
DISTILL = {"distill": 0.5, "distill_temperature": 2.0, "time_share": 2.0}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        # benchmarks/baseline.py's ml-1m recipe: TrainConfig's defaults (warm-up, cosine
        # decay over 80 epochs, early stopping), 10% of users validating, weight averaging
        "baseline": {"max_len": 200, "valid_share": 0.1, "ema": 0.998},
        # the supernet starts from the baseline (search/supernet.py: inherit) and holds only
        # the depths the budget can buy (search/run.py: feasible_depths), so a short search
        # leaves the subnet most of the baseline's training time (DISTILL's time_share)
        "search": {"max_len": 200, "epochs": 8, "warmup_epochs": 2, "max_warmup_epochs": 6},
        "space": {},
        "finetune": dict(DISTILL),
        "candidates": {"max": 12},
        "export": {"rows": 512},
        "bench": {"warmup": 10, "repeat": 50, "number": 10},
    },
    "short": {
        # benchmarks/baseline.py's ml-100k recipe (TrainConfig's defaults): NDCG@10 0.104
        "baseline": {},
        "search": {
            "max_len": 200,
            "epochs": 5,
            "warmup_epochs": 2,
            "max_warmup_epochs": 2,
            "sandwich_random": 1,
        },
        "space": {},
        "finetune": dict(DISTILL),
        "candidates": {"max": 8},
        "export": {"rows": 256},
        "bench": {"warmup": 5, "repeat": 30, "number": 10},
    },
    "smoke": {
        "baseline": {"max_len": 20, "epochs": 1, "hidden": 32, "eval_batch_size": 256},
        "search": {"max_len": 20, "epochs": 2, "warmup_epochs": 1, "eval_batch_size": 256},
        "space": {"hidden": 32, "head_dim": 8, "max_depth": 2, "heads": (4, 2), "ffn": (64, 32)},
        "finetune": {"epochs": 1, **DISTILL},
        "candidates": {"max": 2},
        "export": {"rows": 32},
        "bench": {"warmup": 2, "repeat": 5, "number": 2},
    },
}


def preset_settings(name: str, overrides: dict[str, dict[str, Any]] | None = None) -> dict:
    """The settings of preset ``name`` with per-stage ``overrides`` merged in."""
    settings = {stage: dict(values) for stage, values in PRESETS[name].items()}
    for stage, values in (overrides or {}).items():
        settings.setdefault(stage, {}).update(values)
    return settings
