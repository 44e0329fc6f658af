"""ArchSpec: the architecture of a plain SASRec, as searched, pruned, exported and costed.

Item ids run 1..n_items with 0 as padding. Scores are over items 1..n_items: column ``j``
of a score matrix is item id ``j + 1``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dnsrec_edge.errors import ArchSpecError

ARCHSPEC_VERSION = 1
ATTENTION_KINDS = ("softmax", "linear")
NORM_KINDS = ("pre", "query")
# Where position 0 sits: "left_padded" (today's: the newest item is at position max_len - 1,
# so every position shifts with each new item) or "start_anchored" (the oldest item of the
# window is at position 0, the i-th at i - 1: positions never move, so keys and values can be
# cached and one new item costs one position; see models/streaming.py).
POSITION_LAYOUTS = ("left_padded", "start_anchored")


@dataclass(frozen=True)
class BlockSpec:
    """One transformer block: attention heads x head size, FFN width, data-aware gates."""

    heads: int
    head_dim: int
    ffn: int
    gate_hidden: int = 0  # hidden width of each data-aware gate MLP; 0 = no gates
    attention: str = "softmax"  # "softmax" or causal L2-normalised "linear"
    norm: str = "pre"  # "pre": pre-LayerNorm block; "query": the SASRec paper's block

    @property
    def attn_width(self) -> int:
        """Channels of Q, K and V: heads * head_dim."""
        return self.heads * self.head_dim


@dataclass(frozen=True)
class ArchSpec:
    """A SASRec architecture: embedding width, sequence length, item count, and its blocks."""

    n_items: int
    max_len: int
    hidden: int
    blocks: tuple[BlockSpec, ...] = field(default_factory=tuple)
    version: int = ARCHSPEC_VERSION
    positions: str = "left_padded"  # one of POSITION_LAYOUTS

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        problems = []
        if self.n_items < 1:
            problems.append(f"n_items must be >= 1 (got {self.n_items})")
        if self.max_len < 1:
            problems.append(f"max_len must be >= 1 (got {self.max_len})")
        if self.hidden < 1:
            problems.append(f"hidden must be >= 1 (got {self.hidden})")
        for i, b in enumerate(self.blocks):
            if b.heads < 1 or b.head_dim < 1 or b.ffn < 1 or b.gate_hidden < 0:
                problems.append(
                    f"block {i} needs heads, head_dim, ffn >= 1 and gate_hidden >= 0 (got {b})"
                )
            if b.attention not in ATTENTION_KINDS:
                problems.append(
                    f"block {i} attention '{b.attention}' is not one of {', '.join(ATTENTION_KINDS)}"
                )
            if b.norm not in NORM_KINDS:
                problems.append(f"block {i} norm '{b.norm}' is not one of {', '.join(NORM_KINDS)}")
        if self.positions not in POSITION_LAYOUTS:
            problems.append(
                f"positions '{self.positions}' is not one of {', '.join(POSITION_LAYOUTS)}"
            )
        if self.version != ARCHSPEC_VERSION:
            problems.append(f"version {self.version} is not {ARCHSPEC_VERSION}")
        if problems:
            raise ArchSpecError("invalid ArchSpec: " + "; ".join(problems))

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @classmethod
    def uniform(
        cls,
        n_items: int,
        max_len: int,
        hidden: int = 64,
        depth: int = 2,
        heads: int = 1,
        ffn: int | None = None,
        gate_hidden: int = 0,
        attention: str = "softmax",
        norm: str = "pre",
        positions: str = "left_padded",
    ) -> ArchSpec:
        """A SASRec with ``depth`` identical blocks (head_dim = hidden / heads)."""
        if hidden % heads:
            raise ArchSpecError(f"hidden {hidden} is not divisible by heads {heads}")
        block = BlockSpec(heads, hidden // heads, ffn or hidden, gate_hidden, attention, norm)
        return cls(n_items, max_len, hidden, tuple([block] * depth), positions=positions)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["depth"] = self.depth
        d["blocks"] = [asdict(b) for b in self.blocks]
        if self.positions == "left_padded":  # the default: specs written before it look the same
            del d["positions"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        """Build from a dict; every problem becomes an ``ArchSpecError`` naming the field."""
        if not isinstance(d, dict):
            raise ArchSpecError(f"an ArchSpec must be a JSON object, not {type(d).__name__}")
        missing = [k for k in ("n_items", "max_len", "hidden", "blocks") if k not in d]
        if missing:
            raise ArchSpecError(f"ArchSpec lacks the field(s) {', '.join(missing)}")
        if not isinstance(d["blocks"], list):
            raise ArchSpecError("ArchSpec field 'blocks' must be a list")
        try:
            blocks = tuple(BlockSpec(**b) for b in d["blocks"])
            spec = cls(
                n_items=int(d["n_items"]),
                max_len=int(d["max_len"]),
                hidden=int(d["hidden"]),
                blocks=blocks,
                version=int(d.get("version", ARCHSPEC_VERSION)),
                positions=str(d.get("positions", "left_padded")),
            )
        except (TypeError, ValueError) as err:
            raise ArchSpecError(f"malformed ArchSpec: {err}") from err
        if "depth" in d and int(d["depth"]) != spec.depth:
            raise ArchSpecError(f"ArchSpec says depth {d['depth']} but lists {spec.depth} block(s)")
        return spec

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise ArchSpecError(f"ArchSpec is not valid JSON ({err})") from err

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ArchSpecError(f"cannot read ArchSpec '{path}' ({err.strerror})") from err
        try:
            return cls.from_json(text)
        except ArchSpecError as err:
            raise ArchSpecError(f"'{path}': {err}") from err
