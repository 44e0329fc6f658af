"""ONNX export: graph shape, metadata, id guard, validation against PyTorch, bad outputs."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dnsrec_edge.errors import ExportError, OutputExists, OutputMismatch, OutputNotWritable
from dnsrec_edge.export.onnx_export import check_graph, export_onnx
from dnsrec_edge.export.validate import synthetic_inputs, validate_onnx
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec


@pytest.fixture(scope="module")
def histories(ml100k_small):
    """Real test histories of the ml-100k slice: ``(n_items, (U, L) int64)``."""
    from dnsrec_edge.data.batching import eval_inputs

    return ml100k_small.n_items, eval_inputs(ml100k_small, "test", 30)[0][:96].numpy()


@pytest.fixture(scope="module")
def model(histories):
    n_items, _ = histories
    torch.manual_seed(0)
    arch = ArchSpec(n_items, 30, 32, (BlockSpec(2, 16, 64, 8), BlockSpec(4, 8, 48, 0, "linear")))
    m = SASRec(arch)
    with torch.no_grad():  # trained-like weights: non-zero biases, no exact ties
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


@pytest.fixture(scope="module")
def dynamic_onnx(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(model, path, metadata={"dataset": "fp-123"})


@pytest.mark.slow
def test_dynamic_export_has_the_contract_interface_and_metadata(model, dynamic_onnx):
    proto = onnx.load(dynamic_onnx)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = proto.graph.input
    assert inp.name == "item_seq"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == model.arch.max_len
    assert [o.name for o in proto.graph.output] == ["scores"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert ArchSpec.from_dict(json.loads(props["dnsrec_edge.archspec"])) == model.arch
    assert props["dnsrec_edge.n_items"] == str(model.arch.n_items)
    assert props["dnsrec_edge.dataset"] == "fp-123"
    assert props["dnsrec_edge.version"]
    # the exporter's per-node trace info (stack traces with this machine's paths) is dropped
    assert not any(n.metadata_props or n.doc_string for n in proto.graph.node)
    assert b"stack_trace" not in dynamic_onnx.read_bytes()
    session = ort.InferenceSession(str(dynamic_onnx))
    for batch in (1, 7):  # the batch axis is dynamic
        seqs = synthetic_inputs(model.arch.n_items, model.arch.max_len, rows=batch, seed=batch)
        (scores,) = session.run(None, {"item_seq": seqs})
        assert scores.shape == (batch, model.arch.n_items)


def test_graph_is_plain_matmul_softmax_with_a_guarded_gather(dynamic_onnx):
    proto = onnx.load(dynamic_onnx)
    ops = {n.op_type for n in proto.graph.node}
    assert {"MatMul", "Softmax", "Where"} <= ops
    assert not ops & {"Attention", "MultiHeadAttention"}
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    producer = {out: n for n in proto.graph.node for out in n.output}
    gathers = [n for n in proto.graph.node if n.op_type == "Gather" and "item_emb" in n.input[0]]
    assert gathers and all(producer[g.input[1]].op_type == "Where" for g in gathers)
    check_graph(proto)  # the exporter's own check passes
    # an unguarded gather is refused
    proto.graph.node.remove(producer[gathers[0].input[1]])
    gathers[0].input[1] = "item_seq"
    with pytest.raises(OutputMismatch, match="without the range guard"):
        check_graph(proto)


def test_out_of_range_ids_score_like_padding(model, dynamic_onnx):
    n, length = model.arch.n_items, model.arch.max_len
    seqs = synthetic_inputs(n, length, rows=4, seed=3)
    seqs[:, 5:8] = [-9, n + 1, 10**9]
    clean = seqs.copy()
    clean[:, 5:8] = 0
    session = ort.InferenceSession(str(dynamic_onnx))
    (bad,) = session.run(None, {"item_seq": seqs})
    (good,) = session.run(None, {"item_seq": clean})
    np.testing.assert_array_equal(bad, good)


def test_validation_on_real_batches_passes(model, dynamic_onnx, histories):
    report = validate_onnx(dynamic_onnx, model, histories[1])
    assert report.rows == len(histories[1]) and report.inputs == "given"
    assert report.max_abs_diff <= 1e-4


@pytest.mark.slow
def test_static_topk_export_matches_torch_and_keeps_train_mode(model, histories, tmp_path):
    model.train()
    try:
        path = export_onnx(model, tmp_path / "static.onnx", batch=4, topk=10)
        assert model.training  # the prior mode is restored
    finally:
        model.eval()
    proto = onnx.load(path)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [4, model.arch.max_len]
    assert [o.name for o in proto.graph.output] == ["scores", "topk_items", "topk_scores"]
    assert proto.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    seqs = histories[1][:4]
    _, items, _ = ort.InferenceSession(str(path)).run(None, {"item_seq": seqs})
    with torch.no_grad():  # the graph ran in eval mode: deterministic, like predict in eval
        expected = model.predict(torch.from_numpy(seqs)).topk(10).indices.numpy() + 1
    np.testing.assert_array_equal(items, expected)
    report = validate_onnx(path, model, histories[1])  # 96 rows in padded chunks of 4
    assert report.outputs == ["scores", "topk_items", "topk_scores"]


def test_validation_fails_hard_listing_every_mismatch(model, dynamic_onnx, histories):
    changed = SASRec(model.arch).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.ln_f.bias.add_(0.01)
    rows = 8
    with pytest.raises(OutputMismatch) as err:
        validate_onnx(dynamic_onnx, changed, histories[1][:rows])
    message = str(err.value)
    assert message.startswith("ONNX Runtime disagrees with PyTorch on")
    assert message.count("scores max abs diff") == rows  # every row, not just the first


def test_bad_outputs_are_refused_before_exporting(model, dynamic_onnx, tmp_path):
    with pytest.raises(OutputExists, match="already exists; choose another path or pass --force"):
        export_onnx(model, dynamic_onnx)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritable, match="cannot write to folder"):
        export_onnx(model, blocker / "model.onnx")
    with pytest.raises(ExportError, match=r"top-k \d+ is outside 0\.\.\d+ \(the item count\)"):
        export_onnx(model, tmp_path / "k.onnx", topk=model.arch.n_items + 1)
    assert not (tmp_path / "k.onnx").exists()


@pytest.mark.tvm
@pytest.mark.slow
def test_tvm_imports_and_runs_the_static_graph(model, histories, tmp_path):
    pytest.importorskip("tvm")
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    path = export_onnx(model, tmp_path / "tvm.onnx", batch=2, topk=10)
    mod = from_onnx(onnx.load(path), keep_params_in_input=False)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    seqs = histories[1][:2]
    scores, items, _ = vm["main"](tvm.runtime.tensor(seqs))
    ref_scores, ref_items, _ = ort.InferenceSession(str(path)).run(None, {"item_seq": seqs})
    assert np.abs(scores.numpy() - ref_scores).max() <= 1e-4
    np.testing.assert_array_equal(items.numpy(), ref_items)


def test_query_norm_blocks_export_and_validate(histories, tmp_path):
    n_items, seqs = histories
    torch.manual_seed(1)
    arch = ArchSpec.uniform(n_items, 30, 32, depth=2, heads=2, ffn=64, norm="query")
    m = SASRec(arch)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = export_onnx(m.eval(), tmp_path / "query.onnx")
    assert validate_onnx(path, m, seqs).max_abs_diff <= 1e-4
