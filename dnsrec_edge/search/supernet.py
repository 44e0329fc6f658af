"""DNS-Rec supernet over SASRec: width candidates per block, a depth controller, data-aware gates.

Every block holds SASRec's full-width layers under SASRec's names (``blocks.i.attn.{q,k,v,o}``,
``blocks.i.ffn.{fc1,fc2}``, ``blocks.i.ln1/ln2``; ``item_emb``, ``pos_emb``, ``gate_norm``,
``ln_f``) so a hard-selected subnet maps one to one onto a :class:`SASRec`.

- Attention: candidate ``(kind, heads)`` keeps the first ``heads`` heads. The zero masks are
  applied to V's output channels, which zeroes a dropped head's output exactly (its attention
  weights then multiply zeros); since the output projection is linear and the candidate weights
  sum to one, the alpha-weighted sum of the candidates' outputs equals one pass with V's head
  ``j`` scaled by the total weight of the candidates that keep head ``j`` (one pass per
  attention kind; SASRec's own attention code runs each pass, causal linear attention included).
- FFN: candidate ``w`` keeps the first ``w`` inner channels; with data-aware gates each
  candidate has its own pair of gates (inner ``w`` wide, output ``hidden`` wide) and the
  candidates' outputs are mixed by alpha; without gates, by one channel-weighted pass.
- Depth: the outputs after each block are mixed by beta, then the final LayerNorm.

``Supernet.select(choice)`` fixes a hard choice (one-hot weights, zero-weight candidates
skipped); ``to_full_sasrec(choice)`` returns that subnet as a full-width SASRec whose masked
channels are zero, plus the small ArchSpec it prunes down to.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.gates import DataAwareGate
from dnsrec_edge.models.sasrec import CausalSelfAttention, SASRec
from dnsrec_edge.search.controllers import ArchController, MixWeights
from dnsrec_edge.search.space import Choice, SearchSpace


class ScaledLinear(nn.Linear):
    """``nn.Linear`` whose output channels are multiplied by ``scale`` (a zero mask) when set."""

    scale: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y if self.scale is None else y * self.scale


class SuperAttention(CausalSelfAttention):
    """Full-width causal attention mixing head-count and attention-kind candidates."""

    def __init__(self, space: SearchSpace, dropout: float):
        full = BlockSpec(space.max_heads, space.head_dim, space.max_ffn, 0, space.attention[0])
        super().__init__(space.hidden, full, dropout)
        self.v = ScaledLinear(space.hidden, full.attn_width)
        self.kinds = space.attention
        cover = torch.zeros(space.n_attn, space.max_heads)  # (A, heads): candidate keeps head?
        kind_of = torch.zeros(len(self.kinds), space.n_attn)  # (kinds, A)
        for c, (kind, heads) in enumerate(space.attn_candidates):
            cover[c, :heads] = 1.0
            kind_of[self.kinds.index(kind), c] = 1.0
        self.register_buffer("cover", cover, persistent=False)
        self.register_buffer("kind_of", kind_of, persistent=False)

    def mixed(
        self,
        h_q: torch.Tensor,
        h_kv: torch.Tensor,
        allowed: torch.Tensor,
        w: torch.Tensor,
        hard: bool,
    ) -> torch.Tensor:
        """Alpha-weighted sum of the candidates' outputs; ``w`` (A,) candidate weights."""
        head_w = (self.kind_of * w) @ self.cover  # (kinds, heads): weight of each head per kind
        out, passes = None, 0
        for i, kind in enumerate(self.kinds):
            if hard and not bool(self.kind_of[i] @ w):
                continue  # a hard choice of another kind: this kind's weight is exactly zero
            self.kind = kind
            self.v.scale = head_w[i].repeat_interleave(self.head_dim)  # (heads * head_dim,)
            try:
                y = self.forward(h_q, h_kv, allowed)  # (B, Tq, d), SASRec's attention code
            finally:
                self.v.scale = None
            out = y if out is None else out + y
            passes += 1
        # each pass added the output bias once; the candidate weights sum to one
        return out if passes == 1 else out - (passes - 1) * self.o.bias


class SuperFFN(nn.Module):
    """Full-width FFN mixing inner-width candidates, each with its own data-aware gates."""

    def __init__(self, space: SearchSpace, dropout: float):
        super().__init__()
        d, g = space.hidden, space.gate_hidden
        self.widths = space.ffn
        self.fc1 = nn.Linear(d, space.max_ffn)
        self.fc2 = nn.Linear(space.max_ffn, d)
        self.drop = nn.Dropout(dropout)
        self.gates_in = self.gates_out = None
        if g:
            gamma = space.gate_gamma
            self.gates_in = nn.ModuleList(DataAwareGate(d, g, w, gamma) for w in self.widths)
            self.gates_out = nn.ModuleList(DataAwareGate(d, g, d, gamma) for _ in self.widths)
        masks = torch.zeros(len(self.widths), space.max_ffn)  # (F, max_ffn) kept channels
        for c, width in enumerate(self.widths):
            masks[c, :width] = 1.0
        self.register_buffer("masks", masks, persistent=False)

    def forward(
        self, h: torch.Tensor, x0: torch.Tensor | None, w: torch.Tensor, hard: bool
    ) -> torch.Tensor:
        """``h`` (B, T, d), ``x0`` (B, T, d) gate input, ``w`` (F,) candidate weights."""
        f = self.drop(torch.relu(self.fc1(h)))  # (B, T, max_ffn)
        if self.gates_in is None:
            return self.fc2(f * (w @ self.masks))  # channel-weighted mask, one pass
        out = None
        for c, width in enumerate(self.widths):
            if hard and not bool(w[c]):
                continue
            fc = f[..., :width] * self.gates_in[c](x0)  # (B, T, width)
            y = nn.functional.linear(fc, self.fc2.weight[:, :width], self.fc2.bias)  # (B, T, d)
            y = w[c] * (y * self.gates_out[c](x0))
            out = y if out is None else out + y
        return out


class SuperBlock(nn.Module):
    """Pre-LayerNorm block as in SASRec, with mixed attention and FFN candidates."""

    def __init__(self, space: SearchSpace, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(space.hidden)
        self.attn = SuperAttention(space, dropout)
        self.ln2 = nn.LayerNorm(space.hidden)
        self.ffn = SuperFFN(space, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        x0: torch.Tensor | None,
        attn_w: torch.Tensor,
        ffn_w: torch.Tensor,
        hard: bool,
        last_only: bool = False,
    ) -> torch.Tensor:
        h = self.ln1(x)
        if last_only:  # only the last position is needed downstream
            x, x0, allowed = x[:, -1:], (None if x0 is None else x0[:, -1:]), allowed[:, :, -1:]
            x = x + self.drop(self.attn.mixed(h[:, -1:], h, allowed, attn_w, hard))
        else:
            x = x + self.drop(self.attn.mixed(h, h, allowed, attn_w, hard))
        return x + self.drop(self.ffn(self.ln2(x), x0, ffn_w, hard))


class Supernet(nn.Module):
    """The DNS-Rec supernet; ``forward/score/predict`` as in :class:`SASRec`."""

    # Embedding, scoring and initialisation are SASRec's own (same names, same conventions).
    embed = SASRec.embed
    score = SASRec.score
    _init_weights = SASRec._init_weights

    def __init__(
        self,
        space: SearchSpace,
        dropout: float = 0.2,
        shared_alpha: bool = False,
        gumbel: bool = False,
    ):
        super().__init__()
        self.space, self.dropout, self.gate_gamma = space, dropout, space.gate_gamma
        self.arch = space.full_arch()
        d = space.hidden
        self.item_emb = nn.Embedding(space.n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(space.max_len, d)
        self.emb_drop = nn.Dropout(dropout)
        self.gate_norm = nn.LayerNorm(d) if space.gate_hidden else None
        self.blocks = nn.ModuleList(SuperBlock(space, dropout) for _ in range(space.max_depth))
        self.ln_f = nn.LayerNorm(d)
        self._init_weights()
        self.controller = ArchController(
            space.max_depth, space.n_attn, space.n_ffn, shared=shared_alpha, gumbel=gumbel
        )
        self.fixed: Choice | None = None

    # --- checkpoints (see dnsrec_edge.train.checkpoint) ---------------------------------
    checkpoint_kind = "supernet"

    def checkpoint_config(self) -> dict:
        return {
            "space": self.space.to_dict(),
            "dropout": self.dropout,
            "shared_alpha": self.controller.shared,
            "gumbel": self.controller.gumbel,
        }

    @classmethod
    def from_checkpoint_config(cls, config: dict) -> Supernet:
        """Rebuild an (untrained) supernet from ``checkpoint_config()``."""
        space = SearchSpace.from_dict(config["space"])
        return cls(space, config["dropout"], config["shared_alpha"], config["gumbel"])

    # --- parameters -------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The controllers' logits (alpha, beta)."""
        return list(self.controller.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        """Everything but the controllers."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # --- hard selection ---------------------------------------------------------------
    def select(self, choice: Choice | None) -> None:
        """Fix a hard choice (``None`` goes back to the soft mixture)."""
        if choice is not None:
            self.space.check(choice)
        self.fixed = choice

    @contextlib.contextmanager
    def selected(self, choice: Choice | None) -> Iterator[Supernet]:
        """Run with a hard choice fixed, restoring the previous mode afterwards."""
        before = self.fixed
        self.select(choice)
        try:
            yield self
        finally:
            self.fixed = before

    def _weights(self) -> MixWeights:
        if self.fixed is None:
            return self.controller.weights()
        s = self.space
        w = MixWeights.one_hot(self.fixed, s.max_depth, s.n_attn, s.n_ffn)
        device = self.ln_f.weight.device
        return MixWeights(w.attn.to(device), w.ffn.to(device), w.depth.to(device), hard=True)

    # --- model interface --------------------------------------------------------------
    def _run(self, item_seq: torch.Tensor, last_only: bool) -> torch.Tensor:
        x, allowed, x0 = self.embed(item_seq)
        w = self._weights()
        n_run = self.fixed.depth if w.hard else len(self.blocks)
        mix = None
        for i in range(n_run):
            x = self.blocks[i](
                x, allowed, x0, w.attn[i], w.ffn[i], w.hard, last_only and i == n_run - 1
            )
            if w.hard and i != n_run - 1:
                continue
            term = w.depth[i] * (x[:, -1:] if last_only else x)
            mix = term if mix is None else mix + term
        return self.ln_f(mix)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(B, L, d)``: beta-weighted outputs after each block, then ``ln_f``."""
        return self._run(item_seq, last_only=False)

    def predict(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, n_items)`` after the last position; the last block runs it alone."""
        return self.score(self._run(item_seq, last_only=True)[:, -1])

    # --- a start from a trained baseline -----------------------------------------------
    def inherit(self, baseline: SASRec) -> list[str]:
        """Start the shared weights from a trained pre-LayerNorm ``baseline``; returns what
        was copied (empty when the shapes do not match: the supernet keeps its own init).

        The embeddings and final LayerNorm are copied; block ``i`` of the baseline lends its
        LayerNorms, the first channels of Q/K/V (the output projection's matching columns)
        and the first inner channels of the FFN. The channels the baseline lacks start with
        zero output weights, the gates start at exactly 1 and blocks past the baseline's depth
        start as identities (zero output projections): every path of the baseline's depth
        or more then computes the baseline's function up to how heads split the channels.
        A supernet shallower than the baseline (a budget left only its shallow depths) takes
        the baseline's first blocks.
        """
        s, a = self.space, baseline.arch
        same = (a.n_items, a.max_len, a.hidden, a.positions) == (
            s.n_items,
            s.max_len,
            s.hidden,
            s.positions,
        )
        if not same or any(b.norm != "pre" for b in a.blocks):
            return []
        copied = ["item_emb", "pos_emb", "ln_f"]
        with torch.no_grad():
            for name in copied:
                getattr(self, name).load_state_dict(getattr(baseline, name).state_dict())
            for i, block in enumerate(self.blocks):
                _zero_outputs(block)
                if i < a.depth:
                    _inherit_block(block, baseline.blocks[i].state_dict())
                    copied.append(f"blocks.{i}")
        return copied

    # --- export of a subnet -----------------------------------------------------------
    def to_full_sasrec(self, choice: Choice) -> tuple[SASRec, ArchSpec]:
        """The hard subnet as a full-width SASRec (masked channels zero) and its small ArchSpec.

        ``SASRec.predict`` of the returned model equals ``predict`` under ``select(choice)``.
        """
        s = self.space
        small = s.arch(choice)
        full_blocks = tuple(
            BlockSpec(s.max_heads, s.head_dim, s.max_ffn, s.gate_hidden, b.attention)
            for b in small.blocks
        )
        full = ArchSpec(s.n_items, s.max_len, s.hidden, full_blocks, positions=s.positions)
        model = SASRec(full, dropout=self.dropout, gate_gamma=self.gate_gamma)
        with torch.no_grad():
            for name in ("item_emb", "pos_emb", "ln_f", "gate_norm"):
                if getattr(self, name) is not None:
                    getattr(model, name).load_state_dict(getattr(self, name).state_dict())
            for i, (a, f) in enumerate(choice.blocks):
                _copy_block(self.blocks[i], model.blocks[i], s, a, f)
        return model, small


def _copy_block(src: SuperBlock, dst: nn.Module, space: SearchSpace, a: int, f: int) -> None:
    """Copy candidate ``(a, f)`` of a supernet block into a full-width SASRec block, zero-masked."""
    dst.ln1.load_state_dict(src.ln1.state_dict())
    dst.ln2.load_state_dict(src.ln2.state_dict())
    kept = space.attn_candidates[a][1] * space.head_dim  # channels of the kept heads
    for name in ("q", "k", "v", "o"):
        getattr(dst.attn, name).load_state_dict(getattr(src.attn, name).state_dict())
    for name in ("q", "k", "v"):
        layer = getattr(dst.attn, name)
        layer.weight[kept:] = 0.0
        layer.bias[kept:] = 0.0
    dst.attn.o.weight[:, kept:] = 0.0
    width = space.ffn[f]
    dst.ffn.fc1.load_state_dict(src.ffn.fc1.state_dict())
    dst.ffn.fc2.load_state_dict(src.ffn.fc2.state_dict())
    dst.ffn.fc1.weight[width:] = 0.0
    dst.ffn.fc1.bias[width:] = 0.0
    dst.ffn.fc2.weight[:, width:] = 0.0
    if src.ffn.gates_in is not None:
        g_in, g_out = src.ffn.gates_in[f], src.ffn.gates_out[f]
        dst.ffn.gate_in.fc1.load_state_dict(g_in.fc1.state_dict())
        dst.ffn.gate_in.fc2.weight.zero_()
        dst.ffn.gate_in.fc2.bias.zero_()
        dst.ffn.gate_in.fc2.weight[:width] = g_in.fc2.weight
        dst.ffn.gate_in.fc2.bias[:width] = g_in.fc2.bias
        dst.ffn.gate_out.load_state_dict(g_out.state_dict())


def _zero_outputs(block: SuperBlock) -> None:
    """Zero the block's output projections and set its gates to exactly 1: an identity."""
    for layer in (block.attn.o, block.ffn.fc2):
        layer.weight.zero_()
        layer.bias.zero_()
    for gate in (*(block.ffn.gates_in or ()), *(block.ffn.gates_out or ())):
        gate.fc2.weight.zero_()
        gate.fc2.bias.fill_(math.log(1.0 / (gate.gamma - 1.0)) if gate.gamma > 1 else 0.0)


def _inherit_block(block: SuperBlock, src: dict[str, torch.Tensor]) -> None:
    """Copy a baseline block's LayerNorms and leading channels (``src``: its ``state_dict()``)."""
    for name in ("ln1", "ln2"):
        getattr(block, name).weight.copy_(src[f"{name}.weight"])
        getattr(block, name).bias.copy_(src[f"{name}.bias"])
    width = min(src["attn.q.weight"].shape[0], block.attn.q.out_features)
    for name in ("q", "k", "v"):
        layer = getattr(block.attn, name)
        layer.weight[:width] = src[f"attn.{name}.weight"][:width]
        layer.bias[:width] = src[f"attn.{name}.bias"][:width]
    block.attn.o.weight[:, :width] = src["attn.o.weight"][:, :width]
    block.attn.o.bias.copy_(src["attn.o.bias"])
    inner = min(src["ffn.fc1.weight"].shape[0], block.ffn.fc1.out_features)
    block.ffn.fc1.weight[:inner] = src["ffn.fc1.weight"][:inner]
    block.ffn.fc1.bias[:inner] = src["ffn.fc1.bias"][:inner]
    block.ffn.fc2.weight[:, :inner] = src["ffn.fc2.weight"][:, :inner]
    block.ffn.fc2.bias.copy_(src["ffn.fc2.bias"])
