"""Default CPU schedules: register tiles on odd widths, padded scoring weights, and a build
for `host`: every build matches ONNX Runtime (max abs diff <= 1e-4, same top-10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dnsrec_edge.compile.build import compile as compile_model
from dnsrec_edge.compile.host import detect_host, usable_cores
from dnsrec_edge.compile.onnx_io import load_onnx, run_onnxruntime
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec

pytest.importorskip("tvm")
pytestmark = [pytest.mark.tvm, pytest.mark.slow]

# 77 items and length 13: no width is a whole number of vectors
ODD = ArchSpec(77, 13, 32, (BlockSpec(2, 16, 48), BlockSpec(1, 32, 40)))


def _inputs(n_items, shape, seed=3):
    rng = np.random.default_rng(seed)
    seq = rng.integers(1, n_items + 1, shape).astype(np.int64)
    seq[0, : shape[1] // 2] = 0  # left padding
    return seq


def _check(artifact, onnx_path, n_items):
    shape = artifact.manifest["inputs"][0]["shape"]
    seq = _inputs(n_items, shape)
    got = artifact.run_local(seq)
    ref = run_onnxruntime(load_onnx(onnx_path), seq)[0]
    assert np.max(np.abs(got - ref)) <= 1e-4
    top = lambda s: np.argsort(-s, axis=-1, kind="stable")[:, :10]  # noqa: E731
    assert (top(got) == top(ref)).all()


@pytest.fixture(scope="module")
def odd_onnx(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("onnx") / "odd.onnx"
    return export_onnx(SASRec(ODD).eval(), path)


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
@pytest.mark.parametrize("batch", [1, 4])
def test_odd_widths_match_onnxruntime(odd_onnx, tmp_path, target, batch):
    if target == "x86_64-avx512" and detect_host().preset != "x86_64-avx512":
        pytest.skip("this CPU cannot run AVX-512 code")
    art = compile_model(odd_onnx, target, tmp_path / "a", batch=batch, quiet=True)
    _check(art, odd_onnx, ODD.n_items)


def test_host_build_records_the_resolved_target(odd_onnx, tmp_path):
    art = compile_model(odd_onnx, None, tmp_path / "h", quiet=True)  # the default: host
    m = art.manifest
    assert m["target_requested"] == "host"
    assert m["target"] == detect_host().preset
    assert m["threads"] == usable_cores() == m["target_dict"]["num-cores"]
    _check(art, odd_onnx, ODD.n_items)
    one = compile_model(odd_onnx, "host", tmp_path / "h1", threads=1, quiet=True)
    assert one.manifest["threads"] == 1 and one.manifest["target_dict"]["num-cores"] == 1


class _ForeignSASRec(nn.Module):
    """A SASRec not written by this toolkit: packed QKV, additive mask, every position scored
    against the transposed embedding (padding row included)."""

    def __init__(self, n_items=53, max_len=11, d=16, heads=2, ffn=24):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos = nn.Embedding(max_len, d)
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.ln, self.d, self.h = nn.LayerNorm(d), d, heads

    def forward(self, seq):
        b, t = seq.shape
        x = self.item(seq) * math.sqrt(self.d) + self.pos(torch.arange(t))
        q, k, v = self.qkv(self.ln1(x)).split(self.d, dim=-1)
        q, k, v = (z.view(b, t, self.h, -1).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        mask = torch.triu(torch.full((t, t), -1e9), diagonal=1)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d // self.h) + mask, -1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, self.d))
        x = x + self.fc2(torch.relu(self.fc1(self.ln2(x))))
        return self.ln(x)[:, -1, :] @ self.item.weight.t()  # (B, n_items + 1)


def test_a_foreign_sasrec_matches_onnxruntime(tmp_path):
    torch.manual_seed(2)
    model = _ForeignSASRec().eval()
    path = tmp_path / "foreign.onnx"
    torch.onnx.export(
        model,
        (torch.randint(1, 54, (1, 11)),),
        str(path),
        input_names=["item_seq"],
        output_names=["scores"],
        dynamic_axes={"item_seq": {0: "batch"}, "scores": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    art = compile_model(path, "x86_64", tmp_path / "f", batch=2, quiet=True)
    _check(art, path, 53)


def test_minutes_is_a_tuning_budget(odd_onnx, tmp_path):
    from dnsrec_edge.errors import CompileError

    with pytest.raises(CompileError, match="add --tune"):
        compile_model(odd_onnx, "host", tmp_path / "m", minutes=1, quiet=True)


@pytest.mark.parametrize(
    ("m", "n", "lanes", "registers", "tile"),
    [
        (200, 64, 16, 32, (10, 16)),  # AVX-512 matrix: one vector, ten rows share each load
        (200, 208, 16, 32, (10, 16)),  # attention scores padded to whole vectors
        (200, 64, 8, 16, (5, 16)),  # AVX2: two vectors, rows from the registers left (<= 6)
        (200, 64, 4, 32, (5, 8)),  # NEON / SSE width
        (1, 3424, 16, 32, (1, 32)),  # a row vector keeps two accumulator chains
        (None, 64, 16, 32, (1, 32)),
    ],
)
def test_register_tile_fits_the_simd_width(m, n, lanes, registers, tile):
    from dnsrec_edge.compile.schedules import _register_tile

    assert _register_tile(m, n, lanes, registers) == tile
