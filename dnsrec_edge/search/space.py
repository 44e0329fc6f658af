"""The DNS-Rec search space: depth 1..N, per block an attention and an FFN candidate.

An attention candidate is ``(kind, heads)``: the first ``heads`` of the supernet's heads (each
``head_dim`` wide) are kept, so masking hidden channels removes whole heads. An FFN candidate
is an inner width; the first ``ffn`` channels are kept. Candidate lists are ordered from the
widest (index 0) to the narrowest. A :class:`Choice` picks a depth and, per kept block, one
candidate of each list; :meth:`SearchSpace.arch` turns it into the plain SASRec
:class:`ArchSpec` it prunes down to.

Example::

    space = SearchSpace(n_items=3416, max_len=200)          # 4 blocks, heads 4/2/1, FFN 256/128/64
    choice = Choice(depth=2, blocks=((0, 1), (2, 2)))      # (attention index, FFN index) per block
    arch = space.arch(choice)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dnsrec_edge.errors import ArchSpecError
from dnsrec_edge.models.archspec import ATTENTION_KINDS, POSITION_LAYOUTS, ArchSpec, BlockSpec


@dataclass(frozen=True)
class Choice:
    """A hard selection: ``depth`` and ``(attention index, FFN index)`` for each kept block."""

    depth: int
    blocks: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple((int(a), int(f)) for a, f in self.blocks))
        if self.depth != len(self.blocks):
            raise ArchSpecError(f"a choice of depth {self.depth} lists {len(self.blocks)} block(s)")


@dataclass(frozen=True)
class SearchSpace:
    """Supernet shape and candidate lists (widest first)."""

    n_items: int
    max_len: int
    hidden: int = 64
    head_dim: int = 16
    max_depth: int = 4
    heads: tuple[int, ...] = (4, 2, 1)
    ffn: tuple[int, ...] = (256, 128, 64)
    attention: tuple[str, ...] = ("softmax",)
    gate_hidden: int = 16  # hidden width of each data-aware gate MLP; 0 = no gates
    gate_gamma: float = 2.0
    positions: str = "left_padded"  # or "start_anchored": subnets that stream (models/streaming.py)
    attn_candidates: tuple[tuple[str, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("heads", "ffn", "attention"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if self.max_depth < 1:
            problems.append(f"max_depth must be >= 1 (got {self.max_depth})")
        if not self.heads or min(self.heads) < 1:
            problems.append(f"head candidates must be >= 1 (got {list(self.heads)})")
        if not self.ffn or min(self.ffn) < 1:
            problems.append(f"FFN candidates must be >= 1 (got {list(self.ffn)})")
        if not self.attention or any(k not in ATTENTION_KINDS for k in self.attention):
            problems.append(
                f"attention kinds {list(self.attention)} must come from {', '.join(ATTENTION_KINDS)}"
            )
        if self.positions not in POSITION_LAYOUTS:
            problems.append(
                f"positions '{self.positions}' is not one of {', '.join(POSITION_LAYOUTS)}"
            )
        if self.head_dim < 1 or self.gate_hidden < 0:
            problems.append("head_dim must be >= 1 and gate_hidden >= 0")
        for name in ("heads", "ffn", "attention"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                problems.append(f"{name} candidates repeat a value ({list(values)})")
        if problems:
            raise ArchSpecError("invalid search space: " + "; ".join(problems))
        # widest first, so index 0 is the full supernet and "one step down" means index + 1
        object.__setattr__(self, "heads", tuple(sorted(self.heads, reverse=True)))
        object.__setattr__(self, "ffn", tuple(sorted(self.ffn, reverse=True)))
        cands = tuple((kind, h) for kind in self.attention for h in self.heads)
        object.__setattr__(self, "attn_candidates", cands)

    @property
    def max_heads(self) -> int:
        return self.heads[0]

    @property
    def max_ffn(self) -> int:
        return self.ffn[0]

    @property
    def n_attn(self) -> int:
        return len(self.attn_candidates)

    @property
    def n_ffn(self) -> int:
        return len(self.ffn)

    def block(self, attn: int, ffn: int) -> BlockSpec:
        """The plain block of attention candidate ``attn`` and FFN candidate ``ffn``."""
        kind, heads = self.attn_candidates[attn]
        return BlockSpec(heads, self.head_dim, self.ffn[ffn], self.gate_hidden, kind)

    def arch(self, choice: Choice) -> ArchSpec:
        """The plain SASRec architecture of a hard choice."""
        self.check(choice)
        blocks = tuple(self.block(a, f) for a, f in choice.blocks)
        return ArchSpec(self.n_items, self.max_len, self.hidden, blocks, positions=self.positions)

    def full_arch(self) -> ArchSpec:
        """The supernet at full width and depth (first attention kind)."""
        return self.arch(self.widest())

    def widest(self) -> Choice:
        return Choice(self.max_depth, ((0, 0),) * self.max_depth)

    def check(self, choice: Choice) -> None:
        """Raise ``ArchSpecError`` unless ``choice`` lies in this space."""
        if not 1 <= choice.depth <= self.max_depth:
            raise ArchSpecError(f"depth {choice.depth} is outside 1..{self.max_depth}")
        for i, (a, f) in enumerate(choice.blocks):
            if not (0 <= a < self.n_attn and 0 <= f < self.n_ffn):
                raise ArchSpecError(f"block {i} picks candidates ({a}, {f}) outside the space")

    def choice_of(self, arch: ArchSpec) -> Choice:
        """The choice that yields ``arch``; ``ArchSpecError`` naming the first mismatch."""
        if (arch.n_items, arch.max_len, arch.hidden) != (self.n_items, self.max_len, self.hidden):
            raise ArchSpecError(
                f"architecture has n_items {arch.n_items}, max_len {arch.max_len}, hidden "
                f"{arch.hidden} but the search space has {self.n_items}, {self.max_len}, "
                f"{self.hidden}"
            )
        if arch.positions != self.positions:
            raise ArchSpecError(
                f"architecture has '{arch.positions}' positions but the search space "
                f"'{self.positions}'"
            )
        if not 1 <= arch.depth <= self.max_depth:
            raise ArchSpecError(f"architecture depth {arch.depth} is outside 1..{self.max_depth}")
        blocks = []
        for i, b in enumerate(arch.blocks):
            try:
                a = self.attn_candidates.index((b.attention, b.heads))
                f = self.ffn.index(b.ffn)
            except ValueError:
                raise ArchSpecError(
                    f"block {i} ({b.attention} attention, {b.heads} heads, FFN {b.ffn}) is not a "
                    "candidate of the search space"
                ) from None
            if (b.head_dim, b.gate_hidden) != (self.head_dim, self.gate_hidden):
                raise ArchSpecError(
                    f"block {i} has head_dim {b.head_dim} and gate_hidden {b.gate_hidden}; the "
                    f"search space has {self.head_dim} and {self.gate_hidden}"
                )
            blocks.append((a, f))
        return Choice(arch.depth, tuple(blocks))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("attn_candidates")
        for key in ("heads", "ffn", "attention"):
            d[key] = list(d[key])
        if self.positions == "left_padded":  # the default: spaces written before it look the same
            del d["positions"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        try:
            return cls(**d)
        except TypeError as err:
            raise ArchSpecError(f"malformed search space: {err}") from err
