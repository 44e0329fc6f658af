"""materialize: masked full-width models and real supernets become dense small SASRecs."""

import copy

import onnx
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dnsrec_edge.cost.analysis import analyze, param_count
from dnsrec_edge.errors import ArchSpecError, CheckpointMismatch
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.export.validate import validate_onnx
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.prune.materialize import materialize
from dnsrec_edge.search.space import Choice, SearchSpace
from dnsrec_edge.search.supernet import Supernet
from dnsrec_edge.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def histories(ml100k_small):
    """Real test histories of the ml-100k slice: ``(n_items, (U, L) int64)``."""
    from dnsrec_edge.data.batching import eval_inputs

    return ml100k_small.n_items, eval_inputs(ml100k_small, "test", 24)[0][:128].numpy()


def _jitter(model: torch.nn.Module) -> None:
    """Trained-like weights: every parameter non-zero."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def _matmul_flops(model: SASRec, seqs) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.predict(torch.as_tensor(seqs))
    return counter.get_total_flops()


def _check_small(model, arch, reference, seqs):
    assert type(model) is SASRec and model.arch == arch
    assert sum(p.numel() for p in model.parameters()) == param_count(arch)
    assert _matmul_flops(model, seqs[:3]) == analyze(arch, batch=3).matmul_flops
    with torch.no_grad():
        x = torch.as_tensor(seqs)
        assert (model.predict(x) - reference(x)).abs().max().item() <= 1e-5


def _mask(full: SASRec, heads: dict, ffn: dict, dims: dict, identity_blocks=()) -> SASRec:
    """A full-width SASRec whose listed heads / FFN channels / head dims contribute nothing."""
    m = copy.deepcopy(full)
    with torch.no_grad():
        for i, drop in heads.items():  # whole heads, as to_full_sasrec zeroes them
            a = m.blocks[i].attn
            for h in drop:
                cols = slice(h * a.head_dim, (h + 1) * a.head_dim)
                for lin in (a.q, a.k, a.v):
                    lin.weight[cols] = 0
                    lin.bias[cols] = 0
                a.o.weight[:, cols] = 0
        for i, keep_dims in dims.items():  # the same dims of every head (q/k/v rows)
            a = m.blocks[i].attn
            for h in range(a.heads):
                for d in range(keep_dims, a.head_dim):
                    for lin in (a.q, a.k, a.v):
                        lin.weight[h * a.head_dim + d] = 0
                        lin.bias[h * a.head_dim + d] = 0
        for i, chans in ffn.items():  # scattered FFN channels
            f = m.blocks[i].ffn
            f.fc1.weight[chans] = 0
            f.fc1.bias[chans] = -1.0  # relu(-1) = 0: dead, though its bias is not zero
            f.fc2.weight[:, chans[::2]] = 0  # some also unread
        for i in identity_blocks:  # a block that adds nothing: droppable past the depth
            b = m.blocks[i]
            for lin in (b.attn.o, b.ffn.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
    return m


def test_materialize_hand_masked_sasrec(histories):
    n_items, seqs = histories
    full_arch = ArchSpec(
        n_items, 24, 32,
        (BlockSpec(4, 8, 64, 8), BlockSpec(2, 16, 48, 0, "linear"), BlockSpec(1, 32, 32, 0)),
    )  # fmt: skip
    full = SASRec(full_arch).eval()
    _jitter(full)
    chans = [1, 5, 6, 9, 20, 33, 40, 41, 42, 60, 61, 63]
    masked = _mask(full, heads={0: [1, 3]}, ffn={0: chans, 1: [0, 47]}, dims={1: 10},
                   identity_blocks=[2])  # fmt: skip
    arch = ArchSpec(
        n_items, 24, 32, (BlockSpec(2, 8, 64 - len(chans), 8), BlockSpec(2, 10, 46, 0, "linear"))
    )
    masked.train()
    model, plan = materialize(masked, arch, inputs=seqs)
    assert masked.training  # the caller's mode is restored
    masked.eval()
    _check_small(model, arch, masked.predict, seqs)
    assert plan["blocks_dropped"] == [2]
    attn0 = next(s for s in plan["steps"] if s["block"] == 0 and s["group"] == "attention")
    assert attn0["removed_heads"] == [1, 3]
    assert {"blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v", "blocks.0.attn.o"} <= set(
        attn0["layers"]
    )
    ffn0 = next(s for s in plan["steps"] if s["block"] == 0 and s["group"] == "ffn")
    assert ffn0["removed"] == chans
    assert {"blocks.0.ffn.fc1", "blocks.0.ffn.fc2", "blocks.0.ffn.gate_in.fc2"} <= set(
        ffn0["layers"]
    )
    assert plan["folded"] == [
        {"block": 1, "what": "attention scale", "into": "v", "factor": (10 / 16) ** 0.5}
    ]
    assert plan["equivalence"]["max_abs_diff"] <= 1e-5 and plan["equivalence"]["inputs"] == "given"
    assert plan["params_after"] == param_count(arch) < plan["params_before"]


@pytest.fixture(scope="module")
def supernet(histories):
    n_items, _ = histories
    space = SearchSpace(
        n_items=n_items, max_len=24, hidden=32, head_dim=8, max_depth=3, heads=(4, 2, 1),
        ffn=(64, 32, 16), attention=("softmax", "linear"), gate_hidden=8,
    )  # fmt: skip
    net = Supernet(space).eval()
    _jitter(net)
    return net


@pytest.mark.slow
def test_materialize_real_supernet_matches_the_hard_selection(supernet, histories, tmp_path):
    _, seqs = histories
    space = supernet.space
    choice = Choice(2, ((1, 0), (space.attn_candidates.index(("linear", 1)), 2)))
    arch = space.arch(choice)

    def selected(x):
        with supernet.selected(choice):
            return supernet.predict(x)

    model, plan = materialize(supernet, arch, inputs=seqs)
    _check_small(model, arch, selected, seqs)
    assert plan["source"]["kind"] == "supernet" and plan["source"]["choice"]["depth"] == 2
    assert [s["removed_heads"] for s in plan["steps"] if s["group"] == "attention"] == [
        [2, 3],
        [1, 2, 3],
    ]
    # the same from a checkpoint file
    path = save_checkpoint(tmp_path / "supernet.pt", supernet, "fp")
    from_file, plan2 = materialize(path, arch, inputs=seqs[:16])
    assert plan2["source"]["path"] == str(path)
    with torch.no_grad():
        x = torch.as_tensor(seqs[:16])
        assert torch.equal(from_file.predict(x), model.predict(x))
    # the pruned subnet exports and validates like any SASRec
    onnx_path = export_onnx(model, tmp_path / "subnet.onnx")
    assert validate_onnx(onnx_path, model, seqs).max_abs_diff <= 1e-4
    onnx.checker.check_model(str(onnx_path))


def test_archspec_that_does_not_fit_is_refused(supernet, tmp_path):
    space = supernet.space
    wider = ArchSpec(space.n_items, 24, 32, (BlockSpec(8, 8, 64, 8),))
    with pytest.raises(CheckpointMismatch, match="the ArchSpec does not match the supernet"):
        materialize(supernet, wider)
    full, _ = supernet.to_full_sasrec(Choice(1, ((0, 0),)))
    narrow = ArchSpec(space.n_items, 24, 32, (BlockSpec(2, 8, 64, 8),))
    with pytest.raises(
        CheckpointMismatch,
        match="block 0 keeps 2 head\\(s\\) but 4 carry weight; pass the ArchSpec chosen",
    ):
        materialize(full, narrow)
    with pytest.raises(ArchSpecError, match="needs the target ArchSpec"):
        materialize(full)
    sasrec = save_checkpoint(tmp_path / "model.pt", full, "fp")
    with pytest.raises(CheckpointMismatch, match="holds a sasrec checkpoint, not a supernet"):
        materialize(sasrec, narrow)
