"""Pipeline stage names and the training/search budgets of each preset (plain data, no imports).

- ``full``: the settings the toolkit's benchmarks use (ml-1m: max length 200, early stopping).
- ``short``: the embedded default (ml-100k in a few minutes on two cores): few epochs, a
  small search; numbers are indicative, not paper-grade.
- ``smoke``: a tiny end-to-end check (tests, ``--quick``).

Each preset maps a stage to keyword settings: ``baseline`` and ``finetune`` to
``TrainConfig`` fields, ``search`` to ``SearchConfig`` fields (``space`` to ``SearchSpace``
fields), ``candidates`` caps the search candidates scored for the report, ``export`` sets
how many real histories validate the ONNX files, ``bench`` holds ``benchmark`` options.
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

DEFAULT_BUDGET = "flops=25%"

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        # benchmarks/baseline.py's ml-1m recipe: TrainConfig's defaults (warm-up, cosine
        # decay over 80 epochs, early stopping), 10% of users validating, weight averaging
        "baseline": {"max_len": 200, "valid_share": 0.1, "ema": 0.998},
        "search": {"max_len": 200, "epochs": 10, "warmup_epochs": 1},
        "space": {},
        "finetune": {"epochs": 20, "patience": 5},
        "candidates": {"max": 12},
        "export": {"rows": 512},
        "bench": {"warmup": 10, "repeat": 50, "number": 10},
    },
    "short": {
        "baseline": {
            "max_len": 50,
            "epochs": 20,
            "lr": 3e-3,
            "warmup_epochs": 1.0,
            "schedule": "cosine",
            "patience": 20,
        },
        "search": {"max_len": 50, "epochs": 4, "warmup_epochs": 1},
        "space": {},
        "finetune": {"epochs": 6, "patience": 3},
        "candidates": {"max": 6},
        "export": {"rows": 256},
        "bench": {"warmup": 5, "repeat": 30, "number": 10},
    },
    "smoke": {
        "baseline": {"max_len": 20, "epochs": 1, "hidden": 32, "eval_batch_size": 256},
        "search": {"max_len": 20, "epochs": 2, "warmup_epochs": 1, "eval_batch_size": 256},
        "space": {"hidden": 32, "head_dim": 8, "max_depth": 2, "heads": (4, 2), "ffn": (64, 32)},
        "finetune": {"epochs": 1},
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
