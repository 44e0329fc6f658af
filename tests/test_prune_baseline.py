"""Pruning without search: torch-pruning importance to a ratio, then fine-tuning."""

import json

import pytest
import torch

from dnsrec_edge.cost.analysis import param_count
from dnsrec_edge.errors import BudgetError, CheckpointMismatch
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.prune.baseline import prune_baseline, prune_by_importance
from dnsrec_edge.train.checkpoint import load_checkpoint, save_checkpoint
from dnsrec_edge.train.trainer import TrainConfig


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ((BlockSpec(4, 8, 64, 8), BlockSpec(2, 16, 48, 0, "linear")),
         [BlockSpec(2, 8, 32, 8), BlockSpec(1, 16, 24, 0, "linear")]),
        ((BlockSpec(1, 32, 32), BlockSpec(1, 32, 32)),  # one head: head dims go
         [BlockSpec(1, 16, 16), BlockSpec(1, 16, 16)]),
        ((BlockSpec(1, 32, 32, norm="query"),) * 2,  # the block kind survives pruning
         [BlockSpec(1, 16, 16, norm="query")] * 2),
    ],
)  # fmt: skip
def test_prune_by_importance_halves_heads_and_ffn(blocks, expected):
    arch = ArchSpec(100, 20, 32, blocks)
    model = SASRec(arch).eval()
    small, plan = prune_by_importance(model, 0.5, "magnitude")
    assert type(small) is SASRec and list(small.arch.blocks) == expected
    assert sum(p.numel() for p in small.parameters()) == param_count(small.arch)
    assert plan["params_after"] < plan["params_before"]
    assert plan["flops_after"] < plan["flops_before"]
    seqs = torch.randint(0, 101, (3, 20))
    assert small.predict(seqs).shape == (3, 100)
    # the original is untouched
    assert [b.ffn for b in model.arch.blocks] == [b.ffn for b in arch.blocks]
    assert model.blocks[0].ffn.fc1.out_features == arch.blocks[0].ffn


@pytest.mark.slow
def test_prune_baseline_finetunes_and_writes_a_run(ml100k_small, tmp_path):
    dataset = ml100k_small
    arch = ArchSpec.uniform(dataset.n_items, 20, 32, depth=2, heads=2, ffn=32)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "base.pt", SASRec(arch), dataset.fingerprint,
                           {"dataset_name": dataset.name})  # fmt: skip
    config = TrainConfig(epochs=1, batch_size=64, threads=1)
    result = prune_baseline(ckpt, 0.5, dataset=dataset, config=config, out_dir=tmp_path / "run",
                            quiet=True)  # fmt: skip
    assert result.model.arch.blocks[0] == BlockSpec(1, 16, 16)
    assert set(result.metrics) >= {"full"} and 0 <= result.metrics["full"]["ndcg@10"] <= 1
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["finetune"]["epochs"] == 1 and plan["ratio"] == 0.5
    loaded, _ = load_checkpoint(tmp_path / "run" / "model.pt")
    assert loaded.arch == result.model.arch


def test_prune_baseline_bad_inputs(ml100k_small, tmp_path):
    dataset = ml100k_small
    arch = ArchSpec.uniform(dataset.n_items, 20, 32, depth=1, heads=2)
    model = SASRec(arch)
    with pytest.raises(BudgetError, match=r"pruning ratio 1.5 is outside \(0, 1\)"):
        prune_baseline(model, 1.5, finetune=False)
    other = save_checkpoint(tmp_path / "other.pt", model, "another-fingerprint")
    with pytest.raises(CheckpointMismatch, match="was trained on other data than dataset"):
        prune_baseline(other, 0.5, dataset=dataset)
