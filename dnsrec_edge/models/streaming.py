"""Streaming SASRec: one new interaction costs one position, not the whole history.

With causal attention a position's keys and values never change once computed, provided its
position embedding does not move either: that is the ``"start_anchored"`` layout of
:class:`ArchSpec` (the oldest item of the window is position 0). :class:`StreamingStep` then
scores the next item from the new item alone plus, per block, a key/value cache:

- inputs: ``item`` (B,) int64, ``position`` (B,) int64 (also the cache length: entries
  ``0..position-1`` are valid, the new item's key/value are written at ``position``), and per
  block ``k_i``, ``v_i`` (B, heads_i, max_len, head_dim_i) float32;
- outputs: ``scores`` (B, n_items) and the updated ``k_i``, ``v_i`` (same shapes).

Cache layout: block ``i`` keeps the keys and values as its attention uses them (for linear
attention, after ``elu`` + L2 normalisation); entries at and past the length are ignored.

Past ``max_len`` items a stream is defined by its window: when the cache is full, the next
push re-primes it from the last ``keep`` items (:func:`windows`; default ``max_len // 2``,
or ``max_len - 1`` for the training/evaluation window of the last ``max_len`` items), so the
scores are always exactly those of a full recompute over the window (``compile/session.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dnsrec_edge.errors import ArchSpecError
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import MASK_VALUE, SASRec


def cache_shapes(arch: ArchSpec, batch: int = 1) -> list[tuple[int, int, int, int]]:
    """Shapes of the caches, in input order (k_0, v_0, k_1, v_1, ...)."""
    shapes = []
    for block in arch.blocks:
        shape = (batch, block.heads, arch.max_len, block.head_dim)  # (B, nh, L, hs)
        shapes += [shape, shape]
    return shapes


def cache_names(arch: ArchSpec) -> list[str]:
    """Names of the cache inputs (and, with an ``_out`` suffix, outputs), in order."""
    return [f"{kind}_{i}" for i in range(arch.depth) for kind in ("k", "v")]


def empty_cache(arch: ArchSpec, batch: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(s) for s in cache_shapes(arch, batch)]


def require_start_anchored(arch: ArchSpec) -> None:
    """Refuse a left-padded model: its positions move with every item, so nothing caches."""
    if arch.positions != "start_anchored":
        raise ArchSpecError(
            f"a '{arch.positions}' model cannot stream (every position moves with each new "
            "item); train one with `dnsrec-edge train --positions start_anchored`"
        )


class StreamingStep(nn.Module):
    """One position of a start-anchored :class:`SASRec`, over its key/value cache.

    Shares the model's parameters (no copy). ``forward(item, position, *cache)`` returns
    ``(scores, *new_cache)``; ``topk > 0`` adds ``topk_items`` (ids, index + 1) and
    ``topk_scores`` after ``scores``.

    Example::

        step = StreamingStep(model).eval()
        cache = empty_cache(model.arch)
        for t, item in enumerate(history):
            scores, *cache = step(torch.tensor([item]), torch.tensor([t]), *cache)
    """

    def __init__(self, model: SASRec, topk: int = 0):
        super().__init__()
        require_start_anchored(model.arch)
        self.model, self.topk = model, topk

    def forward(self, item: torch.Tensor, position: torch.Tensor, *cache: torch.Tensor):
        m, arch = self.model, self.model.arch
        n, length = arch.n_items, arch.max_len
        item = torch.where((item < 0) | (item > n), 0, item)  # (B,) out of range -> padding
        pos = torch.where((position < 0) | (position > length - 1), 0, position)  # (B,)
        x = m.item_emb(item) * math.sqrt(arch.hidden) + m.pos_emb(pos)  # (B, d)
        x = (x * (item != 0).unsqueeze(-1).to(x.dtype)).unsqueeze(1)  # (B, 1, d)
        b = x.shape[0]
        slots = torch.arange(length, device=x.device).view(1, length)  # (1, L)
        here = (slots == pos.view(b, 1)).view(b, 1, length, 1)  # (B, 1, L, 1): the new entry
        allowed = (slots < pos.view(b, 1) + 1).view(b, 1, 1, length)  # (B, 1, 1, L): 0..pos
        x0 = None if m.gate_norm is None else m.gate_norm(x)
        new_cache = []
        for i, block in enumerate(m.blocks):
            k_cache, v_cache = cache[2 * i], cache[2 * i + 1]  # (B, nh, L, hs) each
            x, k_cache, v_cache = _block_step(block, x, x0, k_cache, v_cache, here, allowed)
            new_cache += [k_cache, v_cache]
        scores = m.score(m.ln_f(x[:, 0]))  # (B, n_items)
        if not self.topk:
            return (scores, *new_cache)
        top_scores, top_idx = torch.topk(scores, self.topk, dim=-1)  # (B, k) each
        return (scores, top_idx + 1, top_scores, *new_cache)


def _block_step(block, x, x0, k_cache, v_cache, here, allowed):
    """One block at one position: ``x`` (B, 1, d) -> (B, 1, d) and the updated caches."""
    attn = block.attn
    h = block.ln1(x)
    kv = h if block.norm == "pre" else x
    q, k, v = _split(attn, attn.q(h)), _split(attn, attn.k(kv)), _split(attn, attn.v(kv))
    if attn.kind == "linear":  # (B, nh, 1, hs) each
        q = nn.functional.normalize(nn.functional.elu(q), dim=-1)
        k = nn.functional.normalize(nn.functional.elu(k), dim=-1)
    k_cache = torch.where(here, k, k_cache)  # (B, nh, L, hs)
    v_cache = torch.where(here, v, v_cache)  # (B, nh, L, hs)
    att = (q @ k_cache.transpose(-2, -1)) * (1.0 / math.sqrt(attn.head_dim))  # (B, nh, 1, L)
    if attn.kind == "softmax":
        att = torch.softmax(att.masked_fill(~allowed, MASK_VALUE), dim=-1)
    else:
        att = att * allowed.to(att.dtype)
    y = att @ v_cache  # (B, nh, 1, hs)
    y = y.transpose(1, 2).reshape(x.shape[0], 1, attn.heads * attn.head_dim)  # (B, 1, nh*hs)
    residual = x if block.norm == "pre" else h
    x = residual + attn.o(y)
    h = block.ln2(x)
    x = (x if block.norm == "pre" else h) + block.ffn(h, x0)
    return x, k_cache, v_cache


def _split(attn, t: torch.Tensor) -> torch.Tensor:
    b, s, _ = t.shape
    return t.view(b, s, attn.heads, attn.head_dim).transpose(1, 2)  # (B, nh, S, hs)


def default_keep(max_len: int) -> int:
    """Items a full cache keeps when it re-primes, by default: half of it."""
    return max_len // 2


def windows(n: int, max_len: int, keep: int | None = None) -> list[tuple[int, int]]:
    """Per step ``t`` of an ``n``-item stream, the slice ``(start, t + 1)`` the cache holds.

    When the cache is full (``max_len`` items) the next push first re-primes it from the last
    ``keep`` items (pushed one by one), then adds the new item. The default ``max_len // 2``
    re-primes every ``max_len - keep`` pushes, so a push costs at most 2 positions on average,
    and the window holds between ``keep + 1`` and ``max_len`` recent items. ``keep =
    max_len - 1`` keeps the window at the last ``max_len`` items, exactly the training and
    evaluation window, but re-primes (``max_len - 1`` positions) on every push past
    ``max_len``. Either way a step's scores equal the full model's over its slice.
    """
    keep = default_keep(max_len) if keep is None else keep
    if not 0 <= keep < max_len:
        raise ArchSpecError(f"keep must be in 0..{max_len - 1} (got {keep})")
    out, start, length = [], 0, 0
    for t in range(n):
        if length == max_len:
            start, length = t - keep, keep
        length += 1
        out.append((start, t + 1))
    return out


@torch.no_grad()
def replay(model: SASRec, history: list[int], keep: int | None = None) -> list[torch.Tensor]:
    """Scores (n_items,) after each item of ``history``, streamed through the cache.

    Re-primes as :func:`windows` says, so step ``t``'s scores equal ``model.predict`` on
    ``history[start:t + 1]``.
    """
    step = StreamingStep(model).eval()
    arch = model.arch
    cache, length, out = empty_cache(arch), 0, []
    for t, (start, _) in enumerate(windows(len(history), arch.max_len, keep)):
        if length == arch.max_len:  # full: re-prime from the kept items
            cache, length = empty_cache(arch), 0
            for old in history[start:t]:
                _, *cache = step(torch.tensor([old]), torch.tensor([length]), *cache)
                length += 1
        scores, *cache = step(torch.tensor([history[t]]), torch.tensor([length]), *cache)
        length += 1
        out.append(scores[0])
    return out
