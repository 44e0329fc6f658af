"""SASRec behaviour the rest of the toolkit relies on."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dnsrec_edge.cost.analysis import analyze, param_count
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec

ARCHS = [
    ArchSpec(100, 20, 32, (BlockSpec(2, 16, 64, 8), BlockSpec(1, 8, 32, 0, "linear"))),
    ArchSpec.uniform(300, 50, 64, depth=2, heads=2, ffn=256),
    ArchSpec(50, 10, 16, (BlockSpec(1, 4, 8, 3),)),
    ArchSpec(
        80, 12, 16, (BlockSpec(2, 8, 32, 4, norm="query"), BlockSpec(1, 16, 16, norm="query"))
    ),
]


def _seq(arch, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, arch.n_items + 1, (batch, arch.max_len), generator=g)
    seq[0, : arch.max_len // 2] = 0  # a left-padded user
    return seq


@pytest.mark.parametrize("arch", ARCHS)
def test_predict_equals_last_position_of_forward(arch):
    model = SASRec(arch).eval()
    seq = _seq(arch)
    with torch.no_grad():
        full = model.score(model(seq))[:, -1]
        last = model.predict(seq)
    assert last.shape == (3, arch.n_items)
    assert torch.allclose(full, last, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_analysis_matches_torch_flop_counter_and_params(arch):
    model = SASRec(arch).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.predict(_seq(arch))
    assert analyze(arch, batch=3).matmul_flops == counter.get_total_flops()
    assert param_count(arch) == sum(p.numel() for p in model.parameters())


def test_causal_mask_hides_the_future():
    arch = ARCHS[1]
    model = SASRec(arch).eval()
    seq = _seq(arch)
    changed = seq.clone()
    changed[:, -1] = (changed[:, -1] % arch.n_items) + 1
    with torch.no_grad():
        a, b = model(seq), model(changed)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_out_of_range_ids_are_padding():
    arch = ARCHS[2]
    model = SASRec(arch).eval()
    seq = _seq(arch)
    bad = seq.clone()
    bad[1, 0], bad[2, 1] = arch.n_items + 7, -3
    ref = seq.clone()
    ref[1, 0], ref[2, 1] = 0, 0
    with torch.no_grad():
        assert torch.equal(model.predict(bad), model.predict(ref))


def test_shorter_input_uses_the_last_positions():
    arch = ARCHS[1]
    model = SASRec(arch).eval()
    seq = _seq(arch)
    seq[:, :10] = 0
    with torch.no_grad():
        assert torch.allclose(model.predict(seq), model.predict(seq[:, 10:]), atol=1e-5)


def test_query_norm_block_normalises_only_the_queries():
    arch = ArchSpec.uniform(40, 8, 16, depth=1, heads=2, ffn=32, norm="query")
    torch.manual_seed(0)
    model = SASRec(arch, dropout=0.0).eval()
    seq = _seq(arch)
    block = model.blocks[0]
    x, allowed, x0 = model.embed(seq)
    with torch.no_grad():
        h = block.ln1(x)
        y = h + block.attn(h, x, allowed)  # keys and values from the raw stream
        h = block.ln2(y)
        want = model.ln_f(h + block.ffn(h, x0))
        assert torch.allclose(model(seq), want, atol=1e-6)
        pre = SASRec(ArchSpec.uniform(40, 8, 16, depth=1, heads=2, ffn=32), dropout=0.0).eval()
        pre.load_state_dict(model.state_dict())
        assert not torch.allclose(pre(seq), want, atol=1e-3)  # the block kind matters
