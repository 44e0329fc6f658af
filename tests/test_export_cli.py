"""``prune``, ``prune-baseline`` and ``export`` on the command line: outputs, exact error messages."""

import json

import pytest
import torch
from click.testing import CliRunner

from dnsrec_edge.cli import main
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.search.space import Choice, SearchSpace
from dnsrec_edge.search.supernet import Supernet
from dnsrec_edge.train.checkpoint import load_checkpoint, save_checkpoint

N_ITEMS, MAX_LEN = 120, 16


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _error(result) -> str:
    assert result.exit_code == 1, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    return line


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A search run folder: supernet.pt + arch.json, as the search writes them."""
    folder = tmp_path_factory.mktemp("search")
    space = SearchSpace(n_items=N_ITEMS, max_len=MAX_LEN, hidden=16, head_dim=4, max_depth=2,
                        heads=(4, 2), ffn=(32, 16), gate_hidden=4)  # fmt: skip
    net = Supernet(space).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(folder / "supernet.pt", net, "fp-search", {"dataset_name": "synthetic"})
    (folder / "arch.json").write_text(space.arch(Choice(1, ((1, 1),))).to_json())
    return folder


@pytest.fixture(scope="module")
def sasrec_ckpt(tmp_path_factory):
    arch = ArchSpec(N_ITEMS, MAX_LEN, 16, (BlockSpec(2, 8, 16),))
    path = tmp_path_factory.mktemp("base") / "model.pt"
    return save_checkpoint(path, SASRec(arch), "fp-base")


def test_prune_writes_a_small_checkpoint_and_plan(run_dir, tmp_path):
    out = tmp_path / "pruned"
    result = _run("prune", run_dir, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'model.pt'}" in result.output and "max abs diff" in result.output
    model, meta = load_checkpoint(out / "model.pt")
    assert type(model) is SASRec and meta["kind"] == "sasrec" and meta["dataset"] == "fp-search"
    assert model.arch == ArchSpec.load(run_dir / "arch.json") == ArchSpec.load(out / "arch.json")
    plan = json.loads((out / "plan.json").read_text())
    assert plan["equivalence"]["max_abs_diff"] <= 1e-5
    assert meta["extra"]["prune_plan"]["params_after"] == plan["params_after"]
    # the output exists now: refused without --force, replaced with it
    again = _run("prune", run_dir, "-o", out)
    assert _error(again) == (
        f"Error: output '{out / 'model.pt'}' already exists; choose another path or pass --force"
    )
    assert _run("prune", run_dir, "-o", out, "--force").exit_code == 0


def test_prune_bad_inputs(run_dir, sasrec_ckpt, tmp_path):
    wrong = tmp_path / "wrong.json"
    wrong.write_text(ArchSpec(N_ITEMS, MAX_LEN, 16, (BlockSpec(3, 4, 32, 4),)).to_json())
    result = _run("prune", run_dir, "--arch", wrong, "-o", tmp_path / "a")
    assert _error(result) == (
        f"Error: the ArchSpec does not match the supernet '{run_dir / 'supernet.pt'}': block 0 "
        "(softmax attention, 3 heads, FFN 32) is not a candidate of the search space"
    )
    result = _run("prune", sasrec_ckpt, "--arch", run_dir / "arch.json", "-o", tmp_path / "b")
    assert _error(result) == (
        f"Error: '{sasrec_ckpt}' holds a sasrec checkpoint, not a supernet; prune takes the "
        "supernet checkpoint of a search run (use prune-baseline for a trained SASRec)"
    )
    result = _run("prune", tmp_path, "-o", tmp_path / "c")
    assert _error(result) == (
        f"Error: '{tmp_path}' holds no supernet.pt; pass a search run folder or a supernet "
        "checkpoint"
    )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _run("prune", run_dir, "-o", blocker / "out")
    assert _error(result).startswith(f"Error: cannot write to folder '{blocker / 'out'}'")
    assert _error(result).endswith("; choose a writable folder")


@pytest.mark.slow
def test_export_cli_writes_validated_onnx_and_refuses_bad_outputs(run_dir, sasrec_ckpt, tmp_path):
    out = tmp_path / "model.onnx"
    result = _run("export", sasrec_ckpt, "-o", out, "--topk", "10", "--static-shape")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "top-10 identical" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temp file left
    result = _run("export", sasrec_ckpt, "-o", out)
    assert _error(result) == (
        f"Error: output '{out}' already exists; choose another path or pass --force"
    )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _run("export", sasrec_ckpt, "-o", blocker / "m.onnx")
    assert _error(result) == (
        f"Error: cannot write to folder '{blocker}' (it is a file); choose a writable folder"
    )
    result = _run("export", run_dir / "supernet.pt", "-o", tmp_path / "s.onnx")
    assert _error(result) == (
        f"Error: '{run_dir / 'supernet.pt'}' holds a supernet checkpoint; export takes a plain "
        "SASRec (run dnsrec-edge prune on the search run first and export its model.pt)"
    )
    result = _run("export", sasrec_ckpt, "-o", tmp_path / "k.onnx", "--topk", N_ITEMS + 1)
    assert _error(result) == (
        f"Error: top-k {N_ITEMS + 1} is outside 0..{N_ITEMS} (the item count); pass a smaller --topk"
    )


def test_prune_baseline_cli_without_finetuning(sasrec_ckpt, tmp_path):
    out = tmp_path / "pb"
    result = _run("prune-baseline", sasrec_ckpt, "--ratio", "0.5", "--no-finetune", "-o", out)
    assert result.exit_code == 0, result.output
    model, _ = load_checkpoint(out / "model.pt")
    assert model.arch.blocks == (BlockSpec(1, 8, 8),)
    result = _run("prune-baseline", sasrec_ckpt, "--ratio", "0.5", "-o", tmp_path / "pc")
    assert _error(result) == (
        f"Error: checkpoint '{sasrec_ckpt}' names no dataset to fine-tune on; pass --dataset"
    )
    result = _run("prune-baseline", sasrec_ckpt, "--ratio", "0.5", "--no-finetune", "-o", out)
    assert (
        _error(result)
        == f"Error: output '{out}' already exists; choose another path or pass --force"
    )
