"""Supernet: zero masks, candidate mixing, the subnet as a SASRec, exact FLOPs of its subnets."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dnsrec_edge.cost.analysis import analyze, param_count
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.search.controllers import MixWeights
from dnsrec_edge.search.space import Choice, SearchSpace
from dnsrec_edge.search.supernet import Supernet
from dnsrec_edge.train.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: waking a second thread costs more than the work on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SPACES = [
    SearchSpace(n_items=40, max_len=12, max_depth=3, gate_hidden=8),
    SearchSpace(
        n_items=30, max_len=10, max_depth=2, attention=("softmax", "linear"), gate_hidden=0
    ),
]


def _seq(space, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, space.n_items + 1, (batch, space.max_len), generator=g)
    seq[0, : space.max_len // 2] = 0  # a left-padded user
    return seq


def _randomised(space, seed=0, **kwargs):
    """A supernet whose every weight, bias and logit is random (nothing zero by chance)."""
    torch.manual_seed(seed)
    model = Supernet(space, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        model.controller.set_temperature(0.7)
    return model.eval()


def _choices(space):
    last = space.n_attn - 1, space.n_ffn - 1
    return [
        Choice(1, ((0, 0),)),
        Choice(1, (last,)),
        Choice(
            space.max_depth,
            tuple((i % space.n_attn, (i + 1) % space.n_ffn) for i in range(space.max_depth)),
        ),
        Choice(2, ((last[0], 0), (1, last[1]))),
    ]


@pytest.mark.parametrize("space", SPACES)
def test_soft_predict_is_the_last_position_of_forward(space):
    model = _randomised(space)
    seq = _seq(space)
    with torch.no_grad():
        assert torch.allclose(model.score(model(seq))[:, -1], model.predict(seq), atol=1e-5)


@pytest.mark.parametrize("space", SPACES)
def test_to_full_sasrec_predicts_like_the_hard_selected_supernet(space):
    model = _randomised(space)
    seq = _seq(space)
    for choice in _choices(space):
        full, small = model.to_full_sasrec(choice)
        assert small == space.arch(choice)
        assert full.arch.depth == choice.depth
        assert all(b.attn_width == space.max_heads * space.head_dim for b in full.arch.blocks)
        with torch.no_grad(), model.selected(choice):
            hard = model.predict(seq)
            hard_forward = model.score(model(seq))[:, -1]
        assert torch.allclose(hard, full.eval().predict(seq), atol=1e-5)
        assert torch.allclose(hard, hard_forward, atol=1e-5)
        # SASRec's own parameter names: the supernet holds each but the per-candidate gates
        plain = {k for k in full.state_dict() if ".gate_in." not in k and ".gate_out." not in k}
        assert plain <= set(model.state_dict())
        assert len(plain) < len(full.state_dict()) or not space.gate_hidden
    assert model.fixed is None  # the context manager restored the soft mode


def test_masked_channels_are_zero_in_the_full_sasrec():
    space = SPACES[0]
    model = _randomised(space)
    choice = Choice(2, ((1, 2), (2, 1)))  # 2 heads + FFN 64, then 1 head + FFN 128
    full, _ = model.to_full_sasrec(choice)
    for block, (a, f) in zip(full.blocks, choice.blocks, strict=True):
        kept = space.attn_candidates[a][1] * space.head_dim
        width = space.ffn[f]
        for layer in (block.attn.q, block.attn.k, block.attn.v):
            assert layer.weight[kept:].abs().sum() == 0 and layer.bias[kept:].abs().sum() == 0
            assert layer.weight[:kept].abs().sum() > 0
        assert block.attn.o.weight[:, kept:].abs().sum() == 0
        assert block.ffn.fc1.weight[width:].abs().sum() == 0
        assert block.ffn.fc2.weight[:, width:].abs().sum() == 0
        assert block.ffn.gate_in.fc2.weight[width:].abs().sum() == 0


@pytest.mark.parametrize("space", SPACES)
def test_masking_a_candidate_really_zeroes_its_channels(space):
    """Changing the weights of masked heads/channels changes nothing in hard mode."""
    model = _randomised(space)
    seq = _seq(space)
    choice = Choice(space.max_depth, ((space.n_attn - 1, space.n_ffn - 1),) * space.max_depth)
    kept_heads = space.attn_candidates[-1][1]
    kept, width = kept_heads * space.head_dim, space.ffn[-1]
    with torch.no_grad():
        soft_before = model.predict(seq)
    with torch.no_grad(), model.selected(choice):
        before = model.predict(seq)
        for block in model.blocks:
            block.attn.v.weight[kept:] += 5.0  # the dropped heads' values
            block.attn.v.bias[kept:] -= 3.0
            block.ffn.fc1.weight[width:] += 5.0  # the dropped FFN channels
            block.ffn.fc2.weight[:, width:] += 5.0
            if block.ffn.gates_in is not None:  # the other candidates' gates
                for gate in list(block.ffn.gates_in[:-1]) + list(block.ffn.gates_out[:-1]):
                    gate.fc2.bias += 4.0
        after = model.predict(seq)
        assert torch.equal(before, after)
        model.select(None)  # the soft mixture does use them
        assert not torch.allclose(model.predict(seq), soft_before, atol=1e-3)
        model.blocks[0].attn.v.weight[:kept] += 1.0  # a kept channel does matter
        with model.selected(choice):
            assert not torch.allclose(model.predict(seq), after, atol=1e-4)


@pytest.mark.parametrize("space", SPACES)
def test_mixture_is_the_alpha_weighted_sum_of_candidate_outputs(space):
    model = _randomised(space)
    block = model.blocks[0]
    seq = _seq(space)
    with torch.no_grad():
        x, allowed, x0 = model.embed(seq)
        h = block.ln1(x)
        w = model.controller.probs()
        mixed = block.attn.mixed(h, h, allowed, w.attn[0], hard=False)
        each = sum(
            w.attn[0, c] * block.attn.mixed(h, h, allowed, torch.eye(space.n_attn)[c], hard=True)
            for c in range(space.n_attn)
        )
        assert torch.allclose(mixed, each, atol=1e-5)
        mixed = block.ffn(h, x0, w.ffn[0], hard=False)
        each = sum(
            w.ffn[0, c] * block.ffn(h, x0, torch.eye(space.n_ffn)[c], hard=True)
            for c in range(space.n_ffn)
        )
        assert torch.allclose(mixed, each, atol=1e-5)


def test_depth_mixture_weights_each_depth_by_beta():
    space = SPACES[0]
    model = _randomised(space)
    seq = _seq(space)
    with torch.no_grad():
        w = model.controller.probs()
        x, allowed, x0 = model.embed(seq)
        outs = []
        for i, block in enumerate(model.blocks):
            x = block(x, allowed, x0, w.attn[i], w.ffn[i], hard=False)
            outs.append(x)
        expected = model.ln_f(sum(w.depth[i] * o for i, o in enumerate(outs)))
        assert torch.allclose(model(seq), expected, atol=1e-5)


def test_shared_alpha_uses_one_row_for_every_block():
    space = SPACES[0]
    model = _randomised(space, shared_alpha=True)
    assert model.controller.alpha_attn.shape == (1, space.n_attn)
    w = model.controller.probs()
    assert w.attn.shape == (space.max_depth, space.n_attn)
    assert torch.equal(w.attn[0], w.attn[-1])
    choice = model.controller.choice()
    assert len({blk for blk in choice.blocks}) == 1


@pytest.mark.parametrize("space", SPACES)
def test_analytic_flops_match_torch_for_subnets_of_the_space(space):
    model = _randomised(space)
    seq = _seq(space, batch=3)
    for choice in _choices(space):
        arch = space.arch(choice)
        small = SASRec(arch).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            small.predict(seq)
        assert analyze(arch, batch=3).matmul_flops == counter.get_total_flops()
        assert param_count(arch) == sum(p.numel() for p in small.parameters())
        # the full-width SASRec of the same subnet does the work of the widest blocks
        full, _ = model.to_full_sasrec(choice)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            full.predict(seq)
        assert analyze(full.arch, batch=3).matmul_flops == counter.get_total_flops()


def test_checkpoint_round_trip(tmp_path):
    space = SPACES[1]
    model = _randomised(space, shared_alpha=True)
    seq = _seq(space)
    save_checkpoint(tmp_path / "supernet.pt", model, "fp")
    loaded, meta = load_checkpoint(tmp_path / "supernet.pt", "fp")
    assert meta["kind"] == "supernet" and isinstance(loaded, Supernet)
    assert loaded.space == space and loaded.controller.shared
    with torch.no_grad():
        assert torch.equal(loaded.predict(seq), model.predict(seq))
        assert float(loaded.controller.temperature) == pytest.approx(0.7)


def test_one_hot_weights_of_a_choice():
    w = MixWeights.one_hot(Choice(2, ((1, 0), (2, 2))), 3, 3, 3)
    assert w.hard and w.depth.tolist() == [0.0, 1.0, 0.0]
    assert w.attn.argmax(1).tolist()[:2] == [1, 2] and w.ffn.argmax(1).tolist()[:2] == [0, 2]


def _baseline(space, depth, heads, ffn, hidden=None, seed=1):
    """A SASRec with random weights (nothing zero by chance) fitting ``space``."""
    torch.manual_seed(seed)
    arch = ArchSpec.uniform(space.n_items, space.max_len, hidden or space.hidden, depth, heads,
                            ffn=ffn)  # fmt: skip
    model = SASRec(arch, dropout=0.1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def test_an_inherited_supernet_computes_the_baseline_on_every_path_as_deep_and_wide():
    space = SearchSpace(n_items=40, max_len=12, max_depth=3, heads=(4, 2), ffn=(64, 32),
                        gate_hidden=8)  # fmt: skip
    base = _baseline(space, depth=2, heads=4, ffn=32)  # 4 heads of 16: the supernet's split
    model = _randomised(space)
    assert model.inherit(base) == ["item_emb", "pos_emb", "ln_f", "blocks.0", "blocks.1"]
    seq = _seq(space)
    with torch.no_grad():
        want = base.predict(seq)
        for choice in (
            Choice(2, ((0, 1), (0, 1))),
            Choice(2, ((0, 0), (0, 1))),
            Choice(3, ((0, 0), (0, 0), (1, 1))),  # the extra block starts as an identity
        ):
            with model.selected(choice):
                assert torch.allclose(model.predict(seq), want, atol=1e-5), choice
        with model.selected(Choice(2, ((1, 1), (0, 1)))):  # two heads fewer: another function
            assert not torch.allclose(model.predict(seq), want, atol=1e-3)
        with model.selected(Choice(1, ((0, 1),))):
            assert not torch.allclose(model.predict(seq), want, atol=1e-3)


def test_a_baseline_of_another_shape_is_not_inherited():
    space = SearchSpace(n_items=40, max_len=12, max_depth=2, heads=(4, 2), ffn=(64, 32))
    model = _randomised(space)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.inherit(_baseline(space, depth=2, heads=2, ffn=32, hidden=32)) == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_supernet_shallower_than_the_baseline_takes_its_first_blocks():
    space = SearchSpace(n_items=40, max_len=12, max_depth=1, heads=(4, 2), ffn=(64, 32))
    base = _baseline(space, depth=2, heads=4, ffn=32)
    model = _randomised(space)
    assert model.inherit(base) == ["item_emb", "pos_emb", "ln_f", "blocks.0"]
    one_block = SASRec(ArchSpec.uniform(40, 12, space.hidden, 1, 4, ffn=32), dropout=0.1).eval()
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("blocks.1.")}
    one_block.load_state_dict(state)
    seq = _seq(space)
    with torch.no_grad(), model.selected(Choice(1, ((0, 1),))):
        assert torch.allclose(model.predict(seq), one_block.predict(seq), atol=1e-5)
