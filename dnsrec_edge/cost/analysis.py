"""Exact work of a SASRec ``predict`` call per operator class: FLOPs, bytes moved, kernels.

``predict`` runs every block over the whole sequence except the last, whose queries, output
projection and FFN run at the last position only (see ``SASRec.predict``). Matmul FLOPs are
``2 * M * N * K``; elementwise work counts one FLOP per element per arithmetic step.
Bytes count float32 reads and writes of each operator's inputs, weights and outputs.

Kernels count the launches of the compiled graph as TVM's Relax pipeline fuses it (counted
from ``R.call_tir`` in modules lowered by TVM 0.27): the id guard, masks, gather and scale
(6); per block two LayerNorms, Q/K/V each as row view, matmul and head transpose (9), scores,
softmax (linear attention: 4, the L2 normalisations and the causal mask), attention x V and
its transpose back (2), output projection and residual (2), the FFN's row view, two matmuls,
ReLU and residual (5); a gated block 8 more (two gate MLPs of row view, matmul, ReLU, matmul)
plus one shared gate LayerNorm; the last block of a deeper stack slices the mask (1); the
final row pick, LayerNorm and scoring (3). A launch costs time whatever its work (argument
checks, output allocation, the thread pool): at batch 1 a large share of the latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnsrec_edge.models.archspec import ArchSpec

F32 = 4
OP_CLASSES = (
    "embedding",
    "qkv_proj",
    "attn_scores",
    "softmax",
    "attn_v",
    "out_proj",
    "ffn",
    "layernorm",
    "gates",
    "scoring",
    "topk",
)
MATMUL_CLASSES = ("qkv_proj", "attn_scores", "attn_v", "out_proj", "ffn", "gates", "scoring")


@dataclass(frozen=True)
class MatMul:
    """One matmul kernel: ``batch`` products of (m, k) x (k, n)."""

    op: str
    batch: int
    m: int
    n: int
    k: int

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.n * self.k

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class RowKernel:
    """One softmax-class kernel over the attention scores: ``elements`` in, ``flops`` of work."""

    op: str
    elements: int
    flops: int


@dataclass
class OpWork:
    """Work of one operator class: FLOPs (matmul and elementwise), bytes and kernel count."""

    matmul_flops: int = 0
    other_flops: int = 0
    bytes: int = 0
    kernels: int = 0

    @property
    def flops(self) -> int:
        return self.matmul_flops + self.other_flops


@dataclass
class Work:
    """Per-class work of one ``predict`` call at a given batch and sequence length."""

    batch: int
    seq_len: int
    ops: dict[str, OpWork] = field(default_factory=lambda: {c: OpWork() for c in OP_CLASSES})
    matmuls: list[MatMul] = field(default_factory=list)  # every matmul kernel, with its shape
    row_kernels: list[RowKernel] = field(default_factory=list)  # softmax-class kernels

    def add(
        self, op: str, matmul: int = 0, other: int = 0, elems: int = 0, kernels: int = 1
    ) -> None:
        w = self.ops[op]
        w.matmul_flops += int(matmul)
        w.other_flops += int(other)
        w.bytes += int(elems) * F32
        w.kernels += kernels

    @property
    def flops(self) -> int:
        return sum(w.flops for w in self.ops.values())

    @property
    def matmul_flops(self) -> int:
        return sum(w.matmul_flops for w in self.ops.values())

    @property
    def bytes(self) -> int:
        return sum(w.bytes for w in self.ops.values())

    @property
    def kernels(self) -> int:
        return sum(w.kernels for w in self.ops.values())

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "seq_len": self.seq_len,
            "flops": self.flops,
            "matmul_flops": self.matmul_flops,
            "bytes": self.bytes,
            "kernels": self.kernels,
            "ops": {k: vars(v) | {"flops": v.flops} for k, v in self.ops.items()},
        }


def _linear(work: Work, op: str, rows: int, d_in: int, d_out: int) -> None:
    work.matmuls.append(MatMul(op, 1, rows, d_out, d_in))
    work.add(
        op,
        matmul=2 * rows * d_in * d_out,
        other=rows * d_out,
        elems=rows * d_in + d_in * d_out + d_out + rows * d_out,
    )


def _layernorm(work: Work, rows: int, d: int) -> None:
    work.add("layernorm", other=8 * rows * d, elems=2 * rows * d + 2 * d)


def analyze(arch: ArchSpec, batch: int = 1, seq_len: int | None = None, topk: int = 0) -> Work:
    """Work of ``SASRec(arch).predict`` on a ``(batch, seq_len)`` input (seq_len: max_len)."""
    b, t, d, n = batch, seq_len or arch.max_len, arch.hidden, arch.n_items
    work = Work(batch=b, seq_len=t)
    rows = b * t
    # gather + sqrt(d) scale + position add + padding mask; the id guard and masks are
    # elementwise kernels of their own.
    work.add(
        "embedding", other=3 * rows * d + 2 * rows, elems=rows + 3 * rows * d + t * d, kernels=6
    )
    if any(blk.gate_hidden for blk in arch.blocks):
        _layernorm(work, rows, d)
    for i, blk in enumerate(arch.blocks):
        last = i == arch.depth - 1
        tq = 1 if last else t
        q_rows = b * tq
        w, h, hs, f, g = blk.attn_width, blk.heads, blk.head_dim, blk.ffn, blk.gate_hidden
        _layernorm(work, rows, d)
        for r in (q_rows, rows, rows):
            _linear(work, "qkv_proj", r, d, w)
            work.add("qkv_proj", kernels=2)  # row view in, head transpose out
        score_elems = b * h * tq * t
        work.matmuls.append(MatMul("attn_scores", b * h, tq, t, hs))
        work.add(
            "attn_scores",
            matmul=2 * score_elems * hs,
            other=score_elems,
            elems=(q_rows + rows) * w + score_elems,
        )
        if blk.attention == "softmax":  # mask, max, exp, sum, divide
            work.add("softmax", other=5 * score_elems, elems=3 * score_elems, kernels=1)
            work.row_kernels.append(RowKernel("softmax", score_elems, 5 * score_elems))
        else:  # elu + L2-normalise q and k, then the causal 0/1 mask
            flops = 6 * (q_rows + rows) * w + score_elems
            work.add(
                "softmax",
                other=flops,
                elems=3 * (q_rows + rows) * w + 2 * score_elems,
                kernels=4,
            )
            # its kernels work on (rows, width) tensors; the mask fuses into the scores matmul
            work.row_kernels.append(RowKernel("linear_attention", rows * w, flops))
        if last and arch.depth > 1:
            work.add("softmax", kernels=1)  # the last block slices the mask to its query
        work.matmuls.append(MatMul("attn_v", b * h, tq, hs, t))
        work.add(
            "attn_v",
            matmul=2 * score_elems * hs,
            elems=score_elems + rows * w + q_rows * w,
            kernels=2,  # matmul, heads transposed back
        )
        _linear(work, "out_proj", q_rows, w, d)
        work.add("out_proj", other=q_rows * d, elems=3 * q_rows * d, kernels=1)  # residual add
        _layernorm(work, q_rows, d)
        _linear(work, "ffn", q_rows, d, f)
        work.add("ffn", other=q_rows * f, elems=0, kernels=2)  # row view, relu
        _linear(work, "ffn", q_rows, f, d)
        work.add("ffn", other=q_rows * d, elems=3 * q_rows * d, kernels=1)  # residual add
        if g:
            for d_out in (f, d):
                _linear(work, "gates", q_rows, d, g)
                _linear(work, "gates", q_rows, g, d_out)
                # relu, sigmoid, gamma scale, multiply onto the activation (the sigmoid and
                # multiply fuse into the FFN's kernels; a row view and the relu do not)
                work.add(
                    "gates",
                    other=q_rows * g + 3 * q_rows * d_out,
                    elems=3 * q_rows * d_out,
                    kernels=2,
                )
    _layernorm(work, b, d)
    work.add("scoring", kernels=1)  # pick the last row
    work.matmuls.append(MatMul("scoring", 1, b, n, d))
    work.add("scoring", matmul=2 * b * d * n, elems=b * d + n * d + b * n)
    if topk:
        work.add("topk", other=b * n, elems=b * n + 2 * b * topk)
    return work


def param_count(arch: ArchSpec) -> int:
    """Exact number of parameters of ``SASRec(arch)``."""
    d = arch.hidden
    total = (arch.n_items + 1) * d + arch.max_len * d + 2 * d  # embeddings + final LayerNorm
    if any(blk.gate_hidden for blk in arch.blocks):
        total += 2 * d
    for blk in arch.blocks:
        w, f, g = blk.attn_width, blk.ffn, blk.gate_hidden
        total += 4 * d  # two LayerNorms
        total += 3 * (d * w + w) + (w * d + d)  # q, k, v, o
        total += (d * f + f) + (f * d + d)  # FFN
        if g:
            total += (d * g + g + g * f + f) + (d * g + g + g * d + d)
    return total


def size(arch: ArchSpec) -> dict[str, int]:
    """``{"params", "flops"}`` of ``SASRec(arch)`` at batch 1: how reports state a model's size."""
    return {"params": param_count(arch), "flops": analyze(arch, 1).flops}
