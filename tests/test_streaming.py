"""Streaming: start-anchored positions, the one-position step, its ONNX export, the session API."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dnsrec_edge.cli import main
from dnsrec_edge.data.batching import left_pad
from dnsrec_edge.errors import (
    ArchSpecError,
    CacheShapeMismatch,
    CheckpointMismatch,
    NotStreaming,
    PositionOutOfRange,
    TrainConfigError,
    UnknownItem,
)
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.models.streaming import StreamingStep, replay, windows
from dnsrec_edge.train.checkpoint import save_checkpoint
from dnsrec_edge.train.config import TrainConfig

N_ITEMS, MAX_LEN = 60, 8
MIXED = (  # gates, linear attention and the SASRec paper's block: every path of the step
    BlockSpec(2, 8, 32, gate_hidden=4),
    BlockSpec(1, 8, 16, attention="linear", norm="query"),
)


def _model(blocks=MIXED, positions="start_anchored", seed=0) -> SASRec:
    torch.manual_seed(seed)
    model = SASRec(ArchSpec(N_ITEMS, MAX_LEN, 16, blocks, positions=positions)).eval()
    with torch.no_grad():  # untrained LayerNorms are identities; perturb everything
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _history(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(1, N_ITEMS + 1, size=n).tolist()


def _full(model: SASRec, items: list[int]) -> torch.Tensor:
    with torch.no_grad():
        seq = torch.from_numpy(left_pad([np.asarray(items)], model.arch.max_len))
        return model.predict(seq)[0]


# --- the layout ----------------------------------------------------------------------------
def test_archspec_positions_default_and_round_trip():
    old = ArchSpec.uniform(10, 5).to_dict()
    assert "positions" not in old  # specs written before the field look the same
    assert ArchSpec.from_dict(old).positions == "left_padded"
    spec = ArchSpec.uniform(10, 5, positions="start_anchored")
    assert ArchSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ArchSpecError, match="positions 'right' is not one of left_padded"):
        ArchSpec.uniform(10, 5, positions="right")
    with pytest.raises(TrainConfigError, match="positions 'x' is not one of"):
        TrainConfig(positions="x")


def test_start_anchored_positions_ignore_the_padding():
    model = _model()
    items = _history(5)
    padded = torch.from_numpy(left_pad([np.asarray(items)], MAX_LEN))
    with torch.no_grad():
        a, b = model.predict(padded), model.predict(padded[:, -5:])
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_left_padded_default_is_unchanged():
    model = _model(positions="left_padded")
    x, _, _ = model.embed(torch.tensor([[0, 0, 3, 4]]))
    item = model.item_emb(torch.tensor([3, 4])) * 4.0  # sqrt(hidden 16)
    torch.testing.assert_close(x[0, 2:], item + model.pos_emb.weight[MAX_LEN - 2 :])


# --- the step ------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [None, MAX_LEN - 1, 0])
def test_replay_equals_a_full_recompute_over_each_window(keep):
    model = _model()
    history = _history(3 * MAX_LEN + 3)
    spans = windows(len(history), MAX_LEN, keep)
    for t, scores in enumerate(replay(model, history, keep)):
        start, end = spans[t]
        assert end - start <= MAX_LEN
        torch.testing.assert_close(scores, _full(model, history[start:end]), atol=1e-5, rtol=0)


def test_windows_rule():
    assert windows(10, 4, keep=3)[4:6] == [(1, 5), (2, 6)]  # the last max_len items
    assert windows(10, 4)[4:7] == [(2, 5), (2, 6), (4, 7)]  # keep 2: re-prime every 2 pushes
    with pytest.raises(ArchSpecError, match="keep must be in 0..3"):
        windows(5, 4, keep=4)


def test_a_left_padded_model_cannot_stream():
    with pytest.raises(ArchSpecError, match="cannot stream.*--positions start_anchored"):
        StreamingStep(_model(positions="left_padded"))


# --- export and the session ----------------------------------------------------------------
@pytest.fixture(scope="module")
def step_onnx(tmp_path_factory):
    from dnsrec_edge.export.streaming import export_streaming

    model = _model()
    path = export_streaming(model, tmp_path_factory.mktemp("step") / "step.onnx", topk=5)
    return model, path


def test_step_graph_replays_like_a_full_recompute(step_onnx):
    from dnsrec_edge.export.streaming import synthetic_histories, validate_streaming

    model, path = step_onnx
    histories = synthetic_histories(N_ITEMS, MAX_LEN, rows=6)
    for keep in (None, MAX_LEN - 1):
        report = validate_streaming(path, model, histories, keep=keep)
        assert report.steps == sum(len(h) for h in histories)
        assert report.max_abs_diff <= 1e-4 and report.top10_agreement == 1.0


def test_step_graph_metadata_describes_the_cache(step_onnx):
    import onnx

    from dnsrec_edge.export.streaming import read_layout

    _, path = step_onnx
    layout = read_layout(onnx.load(str(path)))
    assert layout["kind"] == "step" and layout["max_len"] == MAX_LEN
    assert [c["shape"] for c in layout["cache"]] == [[1, 2, MAX_LEN, 8]] * 2 + [
        [1, 1, MAX_LEN, 8]
    ] * 2
    assert layout["outputs"][:3] == ["scores", "topk_items", "topk_scores"]
    assert layout["cache_bytes_per_user"] == 4 * MAX_LEN * 8 * (2 + 2 + 1 + 1)


def test_session_push_prime_and_in_graph_topk(step_onnx):
    from dnsrec_edge.compile.session import StreamingSession

    model, path = step_onnx
    session = StreamingSession.from_onnx(path, topk=5)
    history = _history(MAX_LEN + 3, seed=2)
    for item in history:
        top = session.push(item)
    assert session.length == MAX_LEN // 2 + 3  # re-primed once, from max_len // 2 items
    expected = _full(model, session.items)
    assert top.items.tolist() == (torch.topk(expected, 5).indices + 1).tolist()
    primed = StreamingSession.from_onnx(path, topk=5)
    again = primed.prime(session.items)
    assert again.items.tolist() == top.items.tolist()
    np.testing.assert_allclose(primed.last_scores, session.last_scores, atol=1e-5)
    assert primed.prime([]) is None and primed.length == 0


def test_session_bad_input_leaves_the_cache_unchanged(step_onnx):
    from dnsrec_edge.compile.session import StreamingSession, StreamState

    _, path = step_onnx
    session = StreamingSession.from_onnx(path)
    session.prime([1, 2, 3])
    before = session.state()
    for bad in (0, N_ITEMS + 1, -3, 2.5, "7x"):
        with pytest.raises(UnknownItem, match=rf"outside the catalogue 1..{N_ITEMS}"):
            session.push(bad)
    with pytest.raises(PositionOutOfRange, match=f"past the cache's {MAX_LEN} positions"):
        session.restore(StreamState(list(range(1, MAX_LEN + 2)), before.cache))
    with pytest.raises(
        CacheShapeMismatch, match="holds 3 cache tensors but the step model takes 4"
    ):
        session.restore(StreamState([1], before.cache[:3]))
    wrong = [c[:, :, :-1] for c in before.cache]
    with pytest.raises(CacheShapeMismatch, match=r"cache tensor 0 \(k_0\) is float32"):
        session.restore(StreamState([1], wrong))
    after = session.state()
    assert after.items == [1, 2, 3]
    for a, b in zip(after.cache, before.cache, strict=True):
        np.testing.assert_array_equal(a, b)
    session.restore(before)  # a good state round-trips
    assert session.items == [1, 2, 3]


def test_session_refuses_a_whole_sequence_model(tmp_path):
    from dnsrec_edge.compile.session import StreamingSession
    from dnsrec_edge.export.onnx_export import export_onnx

    path = export_onnx(_model(), tmp_path / "full.onnx")
    with pytest.raises(NotStreaming, match="is not a streaming step model; export one with"):
        StreamingSession.from_onnx(path)


def test_session_module_runs_without_torch(step_onnx):
    _, path = step_onnx
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from dnsrec_edge.compile.session import StreamingSession\n"
        f"s = StreamingSession.from_onnx({str(path)!r})\n"
        "print(s.push(3).items.tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 10


# --- the command line ----------------------------------------------------------------------
def _ckpt(tmp_path, positions):
    return save_checkpoint(tmp_path / f"{positions}.pt", _model(positions=positions), "fp")


def test_export_streaming_cli(tmp_path):
    out = tmp_path / "step.onnx"
    result = CliRunner().invoke(
        main, ["export", str(_ckpt(tmp_path, "start_anchored")), "-o", str(out), "--streaming"]
    )
    assert result.exit_code == 0, result.output
    assert "replayed item by item" in result.output and "top-10 identical" in result.output
    assert out.is_file()


def test_export_streaming_refuses_a_left_padded_checkpoint(tmp_path):
    out = tmp_path / "step.onnx"
    result = CliRunner().invoke(
        main, ["export", str(_ckpt(tmp_path, "left_padded")), "-o", str(out), "--streaming"]
    )
    assert result.exit_code == 1
    assert (
        "Error: a 'left_padded' model cannot stream (every position moves with each new item); "
        "train one with `dnsrec-edge train --positions start_anchored`" in result.output
    )
    assert not out.exists()


# --- compiled ------------------------------------------------------------------------------
@pytest.mark.tvm
@pytest.mark.slow
def test_compiled_step_session_and_bench(tmp_path):
    from dnsrec_edge.bench.run import benchmark
    from dnsrec_edge.compile.build import compile as compile_model
    from dnsrec_edge.compile.session import StreamingSession
    from dnsrec_edge.export.streaming import export_streaming

    model = _model()
    onnx_path = export_streaming(model, tmp_path / "step.onnx")  # no in-graph top-k: boards
    artifact = compile_model(onnx_path, "x86_64", tmp_path / "art", quiet=True)
    layout = artifact.manifest["streaming"]
    assert layout["kind"] == "step" and len(artifact.manifest["inputs"]) == 2 + 4
    compiled = StreamingSession.from_artifact(artifact.path, threads=1)
    reference = StreamingSession.from_onnx(onnx_path)
    for item in _history(2 * MAX_LEN, seed=3):
        a, b = compiled.push(item), reference.push(item)
        assert a.items.tolist() == b.items.tolist()
        np.testing.assert_allclose(compiled.last_scores, reference.last_scores, atol=1e-4)
    report = benchmark(artifact.path, threads=1, warmup=1, repeat=3, number=2, session_steps=12)
    data = report.to_dict()
    assert data["kind"] == "streaming" and data["max_abs_diff"] <= 1e-4
    assert data["session"]["steps"] == 12 and data["session"]["reprimes"] == 1
    with pytest.raises(NotStreaming, match="is not a streaming step model"):
        from dnsrec_edge.export.onnx_export import export_onnx

        full = compile_model(
            export_onnx(model, tmp_path / "full.onnx", batch=1), "x86_64", tmp_path / "full",
            quiet=True,
        )  # fmt: skip
        StreamingSession.from_artifact(full.path)


# --- cost ----------------------------------------------------------------------------------
def test_step_work_is_one_position_plus_the_cache():
    from dnsrec_edge.cost.analysis import analyze
    from dnsrec_edge.cost.model import FlopsModel
    from dnsrec_edge.cost.streaming import analyze_step, cache_bytes, predict_step

    arch = ArchSpec(3416, 200, 64, (BlockSpec(1, 64, 256),) * 2, positions="start_anchored")
    work = analyze_step(arch)
    d, n, length, f = 64, 3416, 200, 256
    per_block = 2 * (3 * d * d + 2 * length * d + d * d + 2 * d * f)
    assert work.matmul_flops == 2 * per_block + 2 * d * n
    assert work.matmul_flops < analyze(arch).matmul_flops / 10
    assert cache_bytes(arch) == 2 * 2 * 4 * 200 * 64 == 204_800
    assert predict_step(FlopsModel(), arch).flops == work.flops


@pytest.mark.emulated_arm64
@pytest.mark.slow
@pytest.mark.tvm
@pytest.mark.skipif(
    __import__("shutil").which("qemu-aarch64") is None
    or __import__("shutil").which("aarch64-linux-gnu-gcc") is None,
    reason="needs qemu-user and gcc-aarch64-linux-gnu (scripts/bootstrap.sh installs them)",
)
def test_streaming_on_the_emulated_arm64_board(tmp_path):
    import signal
    from pathlib import Path

    from test_device_servers import Proc

    from dnsrec_edge.bench.emulate import free_port
    from dnsrec_edge.board import rpc as rpc_mod
    from dnsrec_edge.compile.build import compile as compile_model
    from dnsrec_edge.compile.session import StreamingSession
    from dnsrec_edge.export.streaming import export_streaming

    onnx_path = export_streaming(_model(), tmp_path / "step.onnx")
    artifact = compile_model(onnx_path, "arm64", tmp_path / "arm64", quiet=True)
    port = free_port()
    cli = str(Path(sys.executable).parent / "dnsrec-edge")
    board = Proc(
        [cli, "device", "emulate", "arm64", "--port", str(port)], ready="board serving TVM RPC on"
    )
    try:
        board.wait_ready(900)
        remote = rpc_mod.connect(f"127.0.0.1:{port}")
        on_board = StreamingSession.from_artifact(artifact, remote=remote)
        reference = StreamingSession.from_onnx(onnx_path)
        for item in _history(2 * MAX_LEN, seed=4):  # crosses the window re-prime
            a, b = on_board.push(item), reference.push(item)
            assert a.items.tolist() == b.items.tolist()
            np.testing.assert_allclose(on_board.last_scores, reference.last_scores, atol=1e-4)
        assert on_board.reprimes == 2
    finally:
        board.proc.send_signal(signal.SIGTERM)
        code = board.proc.wait(60)
    assert code == 0, board.lines


def test_compile_refuses_another_batch_for_a_step_graph(step_onnx, tmp_path):
    _, path = step_onnx
    result = CliRunner().invoke(
        main, ["compile", str(path), "-t", "x86_64", "-o", str(tmp_path / "a"), "--batch", "2"]
    )
    assert result.exit_code == 1
    assert f"Error: '{path}' is a step graph exported for batch 1, not 2; pass --batch 1" in (
        result.output
    )


def test_pruning_keeps_the_position_layout():
    from dnsrec_edge.prune.baseline import prune_baseline
    from dnsrec_edge.prune.materialize import prune_to

    model = _model(blocks=(BlockSpec(2, 8, 32),) * 2)
    result = prune_baseline(model, 0.5, finetune=False)
    assert result.model.arch.positions == "start_anchored"
    small = ArchSpec(N_ITEMS, MAX_LEN, 16, (BlockSpec(1, 8, 16),))  # left_padded
    with pytest.raises(CheckpointMismatch, match="positions left_padded != start_anchored"):
        prune_to(model, small)
