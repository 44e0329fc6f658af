"""``TrainConfig``: the training settings (plain data; no torch import, so the CLI stays fast).

The defaults are the measured baseline recipe (benchmarks/baseline.py): full cross-entropy,
batch 64, Adam at 3e-3 with a 2-epoch linear warm-up and cosine decay over 80 epochs,
dropout 0.1, max length 200, hidden 64, 2 blocks, 1 head (the SASRec paper's architecture).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from dnsrec_edge.errors import TrainConfigError
from dnsrec_edge.models.archspec import NORM_KINDS as NORMS
from dnsrec_edge.models.archspec import POSITION_LAYOUTS

LOSSES = ("ce", "sampled", "bce")
SCHEDULES = ("constant", "cosine")
SAMPLERS = ("uniform", "pop")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Training settings; ``threads=None`` uses every core."""

    epochs: int = 80  # the cosine schedule decays to 0 at this epoch
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_epochs: float = 2.0  # linear warm-up, then the schedule
    schedule: str = "cosine"  # "constant" or "cosine"
    loss: str = "ce"  # "ce" (full softmax), "sampled" (shared negatives + logQ), "bce"
    negatives: int = 256  # per batch for "sampled", per position for "bce"
    sampler: str = "uniform"  # proposal of the sampled loss: "uniform" or "pop" (logQ-corrected)
    patience: int = 20  # epochs without a better valid NDCG@10 before stopping
    seed: int = 0
    threads: int | None = None
    max_len: int = 200
    valid_share: float = 1.0  # users whose validation item is held out; the rest train on it
    crop: float = 0.0  # chance that a long history trains on an earlier window than its last
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    ffn: int | None = None  # FFN width; None: hidden, as in the SASRec paper
    norm: str = "pre"  # block kind: "pre" (pre-LayerNorm) or "query" (the SASRec paper's)
    positions: str = "left_padded"  # or "start_anchored" (streaming; see models/streaming.py)
    dropout: float = 0.1
    ema: float = 0.0  # per-step decay of an average of the weights that is validated and kept
    eval_batch_size: int = 512
    max_minutes: float | None = None  # stop after the epoch that crosses this wall time
    # seconds of this process's CPU time (wall time off the CPU) the run may take: from the
    # first epoch on, the schedule ends at the last epoch the measured epoch time fits in
    budget_seconds: float | None = None
    device: str = "cpu"  # torch device that trains, e.g. "cuda"; results come back on the CPU
    precision: str = "fp32"  # "bf16": matmuls of the training steps in bfloat16 (autocast)
    distill: float = 0.0  # weight of the KL to a teacher's softened scores (needs a teacher)
    distill_temperature: float = 2.0  # softmax temperature of the distillation term

    def __post_init__(self) -> None:
        problems = []
        if self.loss not in LOSSES:
            problems.append(f"loss '{self.loss}' is not one of {', '.join(LOSSES)}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule '{self.schedule}' is not one of {', '.join(SCHEDULES)}")
        if self.norm not in NORMS:
            problems.append(f"norm '{self.norm}' is not one of {', '.join(NORMS)}")
        if self.positions not in POSITION_LAYOUTS:
            problems.append(
                f"positions '{self.positions}' is not one of {', '.join(POSITION_LAYOUTS)}"
            )
        if self.ffn is not None and self.ffn < 1:
            problems.append(f"ffn must be >= 1 (got {self.ffn})")
        if self.precision not in PRECISIONS:
            problems.append(f"precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.sampler not in SAMPLERS:
            problems.append(f"sampler '{self.sampler}' is not one of {', '.join(SAMPLERS)}")
        for name in ("epochs", "batch_size", "max_len", "hidden", "blocks", "heads", "negatives"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.budget_seconds is not None and self.budget_seconds <= 0:
            problems.append(f"budget_seconds must be > 0 (got {self.budget_seconds})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if not 0 <= self.ema < 1:
            problems.append(f"ema must be in [0, 1) (got {self.ema})")
        if not 0 < self.valid_share <= 1:
            problems.append(f"valid_share must be in (0, 1] (got {self.valid_share})")
        if not 0 <= self.crop <= 1:
            problems.append(f"crop must be in [0, 1] (got {self.crop})")
        if not 0 <= self.distill <= 1 or self.distill_temperature <= 0:
            problems.append(
                f"distill must be in [0, 1] and distill_temperature > 0 (got {self.distill}, "
                f"{self.distill_temperature})"
            )
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            problems.append(f"device '{self.device}' is not cpu, cuda, cuda:N or mps")
        if problems:
            raise TrainConfigError("invalid training settings: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
