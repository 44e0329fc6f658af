"""SASRec: causal self-attention over item + position embeddings, per-block widths.

Explicit Q/K/V/O ``nn.Linear`` layers (no ``nn.MultiheadAttention``) so whole heads and
channels can be pruned and the attention exports to ONNX as plain MatMul/Softmax. A pruned
model is an instance of this same class with a smaller :class:`ArchSpec`.

Conventions: ``item_seq`` is int64 ``(B, L)``, left-padded with 0, most recent item last;
ids outside ``0..n_items`` are treated as padding (so no out-of-range id reaches a gather).
``ArchSpec.positions`` says which position embedding each item gets: ``"left_padded"`` (the
newest item at ``max_len - 1``) or ``"start_anchored"`` (the oldest real item at 0), with the
same input layout either way.
Scores are over items ``1..n_items``: column ``j`` is item id ``j + 1``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.gates import DataAwareGate

MASK_VALUE = -1e9  # finite: masked scores underflow to exactly 0 after softmax, never NaN


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention, softmax or causal L2-normalised linear."""

    def __init__(self, hidden: int, block: BlockSpec, dropout: float):
        super().__init__()
        self.heads, self.head_dim, self.kind = block.heads, block.head_dim, block.attention
        width = block.attn_width
        self.q = nn.Linear(hidden, width)
        self.k = nn.Linear(hidden, width)
        self.v = nn.Linear(hidden, width)
        self.o = nn.Linear(width, hidden)
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, h_q: torch.Tensor, h_kv: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``h_q`` (B, Tq, d) queries, ``h_kv`` (B, T, d) keys/values, ``allowed`` (B, 1, Tq, T) bool.

        A 2-D ``h_q`` (B, d) is one query per row (the last position): the result is (B, d), and
        the projections run as plain 2-D matrix products (no reshapes around them in ONNX).
        """
        if h_q.dim() == 2:
            b = h_q.shape[0]
            q = self.q(h_q).view(b, self.heads, 1, self.head_dim)  # (B, nh, 1, hs)
            y = self._attend(q, h_kv, allowed)  # (B, nh, 1, hs)
            return self.o(y.reshape(b, self.heads * self.head_dim))  # (B, d)
        q = self._split(self.q(h_q))  # (B, nh, Tq, hs)
        y = self._attend(q, h_kv, allowed)  # (B, nh, Tq, hs)
        b, _, tq, _ = y.shape
        y = y.transpose(1, 2).reshape(b, tq, self.heads * self.head_dim)  # (B, Tq, nh*hs)
        return self.o(y)

    def _attend(self, q: torch.Tensor, h_kv: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Attention of ``q`` (B, nh, Tq, hs) over the keys/values of ``h_kv``: (B, nh, Tq, hs)."""
        k = self._split(self.k(h_kv))  # (B, nh, T, hs)
        v = self._split(self.v(h_kv))  # (B, nh, T, hs)
        scale = 1.0 / math.sqrt(self.head_dim)
        if self.kind == "softmax":
            att = (q @ k.transpose(-2, -1)) * scale  # (B, nh, Tq, T)
            att = att.masked_fill(~allowed, MASK_VALUE)
            att = self.drop(torch.softmax(att, dim=-1))
        else:  # causal linear attention, computed in its exact masked quadratic form
            q = nn.functional.normalize(nn.functional.elu(q), dim=-1)
            k = nn.functional.normalize(nn.functional.elu(k), dim=-1)
            att = (q @ k.transpose(-2, -1)) * scale  # (B, nh, Tq, T)
            att = self.drop(att * allowed.to(att.dtype))
        return att @ v  # (B, nh, Tq, hs)


class FeedForward(nn.Module):
    """Position-wise FFN with optional data-aware gates on its inner and output activations."""

    def __init__(self, hidden: int, block: BlockSpec, dropout: float, gamma: float):
        super().__init__()
        self.fc1 = nn.Linear(hidden, block.ffn)
        self.fc2 = nn.Linear(block.ffn, hidden)
        self.drop = nn.Dropout(dropout)
        self.gate_in = self.gate_out = None
        if block.gate_hidden:
            self.gate_in = DataAwareGate(hidden, block.gate_hidden, block.ffn, gamma)
            self.gate_out = DataAwareGate(hidden, block.gate_hidden, hidden, gamma)

    def forward(self, h: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
        f = torch.relu(self.fc1(h))  # (B, T, ffn)
        if self.gate_in is not None:
            f = f * self.gate_in(x0)
        f = self.fc2(self.drop(f))  # (B, T, d)
        if self.gate_out is not None:
            f = f * self.gate_out(x0)
        return f


class SASRecBlock(nn.Module):
    """A transformer block; ``norm`` picks where the LayerNorms sit.

    - ``"pre"``: ``x + Attn(LN(x))``, then ``x + FFN(LN(x))``.
    - ``"query"`` (the SASRec paper's block): only the queries are normalised; keys and
      values read the raw stream, and each residual adds to the normalised input:
      ``h = LN1(x); x = h + Attn(h, x, x); h = LN2(x); x = h + FFN(h)``.
    """

    def __init__(self, hidden: int, block: BlockSpec, dropout: float, gamma: float):
        super().__init__()
        self.norm = block.norm
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, block, dropout)
        self.ln2 = nn.LayerNorm(hidden)
        self.ffn = FeedForward(hidden, block, dropout, gamma)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        x0: torch.Tensor | None,
        last_only: bool = False,
    ) -> torch.Tensor:
        h = self.ln1(x)
        kv = h if self.norm == "pre" else x
        if last_only:  # only the last position is needed downstream: 2-D rows (B, d)
            x, h = x[:, -1], h[:, -1]
            x0, allowed = (None if x0 is None else x0[:, -1]), allowed[:, :, -1:]
        residual = x if self.norm == "pre" else h
        x = residual + self.drop(self.attn(h, kv, allowed))
        h = self.ln2(x)
        return (x if self.norm == "pre" else h) + self.drop(self.ffn(h, x0))


class SASRec(nn.Module):
    """SASRec with per-block heads, head size, FFN width, gates and attention kind."""

    def __init__(self, arch: ArchSpec, dropout: float = 0.2, gate_gamma: float = 2.0):
        super().__init__()
        self.arch = arch
        d = arch.hidden
        self.item_emb = nn.Embedding(arch.n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(arch.max_len, d)
        self.emb_drop = nn.Dropout(dropout)
        self.gate_norm = nn.LayerNorm(d) if any(b.gate_hidden for b in arch.blocks) else None
        self.blocks = nn.ModuleList(SASRecBlock(d, b, dropout, gate_gamma) for b in arch.blocks)
        self.ln_f = nn.LayerNorm(d)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def embed(
        self, item_seq: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return ``(x, allowed, x0)``: embeddings (B, L, d), attention mask, gate input."""
        n = self.arch.n_items
        item_seq = torch.where((item_seq < 0) | (item_seq > n), 0, item_seq)  # out of range -> pad
        b, t = item_seq.shape
        keep = item_seq != 0  # (B, T)
        if self.arch.positions == "start_anchored":
            # the oldest real item is position 0 and the i-th real item i - 1, whatever the
            # padding: positions never move as items arrive (models/streaming.py caches them)
            pos = torch.where(keep, keep.cumsum(1) - 1, 0)  # (B, T), in 0..T-1
        else:
            # Left padding keeps the most recent item at position max_len - 1, whatever T is.
            pos = torch.arange(self.arch.max_len - t, self.arch.max_len, device=item_seq.device)
        x = self.item_emb(item_seq) * math.sqrt(self.arch.hidden) + self.pos_emb(pos)  # (B, T, d)
        x = self.emb_drop(x) * keep.unsqueeze(-1).to(x.dtype)
        ones = torch.ones(t, t, dtype=torch.bool, device=item_seq.device)
        causal, diag = ones.tril(), ones.triu().tril()  # (T, T)
        # a query sees earlier non-padding keys; a padding query sees only itself (no leak)
        allowed = causal.view(1, 1, t, t) & (keep.view(b, 1, 1, t) | diag)  # (B, 1, T, T)
        x0 = None if self.gate_norm is None else self.gate_norm(x)
        return x, allowed, x0

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden states at every position, ``(B, L, d)``, after the final LayerNorm."""
        x, allowed, x0 = self.embed(item_seq)
        for block in self.blocks:
            x = block(x, allowed, x0)
        return self.ln_f(x)

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of ``hidden`` (..., d) against items 1..n_items: (..., n_items)."""
        return hidden @ self.item_emb.weight[1:].t()

    def predict(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Scores for the next item after the last position only, ``(B, n_items)``.

        The last block computes its queries and FFN at the last position only, which is
        exact (keys and values still cover the whole sequence) and cheaper.
        """
        x, allowed, x0 = self.embed(item_seq)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, x0, last_only=(i == last))  # the last block returns (B, d)
        if last < 0:
            x = x[:, -1]
        return self.score(self.ln_f(x))
