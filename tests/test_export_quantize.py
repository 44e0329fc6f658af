"""int8 export (ONNX Runtime's QDQ tools) checked against float32 on real ml-100k; compile."""

import onnx
import pytest
import torch
from click.testing import CliRunner

from dnsrec_edge.cli import main
from dnsrec_edge.errors import OutputMismatch
from dnsrec_edge.export import quantize
from dnsrec_edge.export.checkpoint import export_checkpoint
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.train.trainer import TrainConfig, train_model

MAX_LEN = 20


@pytest.fixture(scope="module")
def trained(ml100k, tmp_path_factory):
    """A SASRec briefly trained on real ml-100k (its run folder's model.pt)."""
    out = tmp_path_factory.mktemp("int8-train")
    arch = ArchSpec(ml100k.n_items, MAX_LEN, 32, (BlockSpec(1, 32, 64),))
    torch.manual_seed(0)  # the same weights in every run: the accuracy check is not a coin toss
    config = TrainConfig(epochs=3, max_len=MAX_LEN, batch_size=128, threads=1, patience=3)
    train_model(SASRec(arch), ml100k, config, out, quiet=True)
    return out / "model.pt"


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_int8_export_is_smaller_qdq_and_keeps_accuracy(trained, ml100k, tmp_path):
    out = tmp_path / "int8.onnx"
    result = _run("export", trained, "-o", out, "--quantize", "int8", "--dataset", "ml-100k",
                  "--static-shape")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "x the float32 file); on 943 test users: NDCG@10" in result.output
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["dnsrec_edge.quantize"] == "int8" and "dnsrec_edge.archspec" in props
    int8_weights = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 2  # the FFN's linear layers, per channel
    fp32 = tmp_path / "fp32.onnx"
    assert _run("export", trained, "-o", fp32, "--static-shape").exit_code == 0
    assert out.stat().st_size < 0.6 * fp32.stat().st_size
    report = quantize.check_quantized(out, fp32, ml100k)
    assert report.ndcg_ratio >= quantize.MIN_NDCG_RATIO
    assert report.top10_overlap >= quantize.MIN_TOP10_OVERLAP and report.users == 943


def test_an_int8_model_that_loses_accuracy_is_refused_and_not_written(
    trained, ml100k, tmp_path, monkeypatch
):
    monkeypatch.setattr(quantize, "MIN_NDCG_RATIO", 1.5)  # no int8 model keeps 1.5x its NDCG
    out = tmp_path / "int8.onnx"
    with pytest.raises(OutputMismatch, match="the int8 model loses accuracy on ml-100k's 943"):
        export_checkpoint(trained, out, batch=1, dataset=ml100k, quantize="int8")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_quantize_bad_inputs_are_one_sentence(trained, ml100k_raw, tmp_path):
    out = tmp_path / "int8.onnx"
    csv = tmp_path / "other.csv"
    ml100k_raw[ml100k_raw["user"] <= 100].to_csv(csv, index=False)
    unknown = _run("export", trained, "-o", out, "--quantize", "int4", "--dataset", "ml-100k")
    assert unknown.exit_code == 2 and "'int4' is not 'int8'" in unknown.output
    no_data = _run("export", trained, "-o", out, "--quantize", "int8")
    assert no_data.exit_code == 1
    assert (
        "Error: --quantize int8 calibrates and checks on real histories; pass --dataset (the "
        "dataset the model was trained on)" in no_data.output
    )
    other = _run("export", trained, "-o", out, "--quantize", "int8", "--dataset", csv)
    assert other.exit_code == 1 and "was trained on other data than dataset" in other.output
    streaming = _run("export", trained, "-o", out, "--quantize", "int8", "--streaming")
    assert streaming.exit_code == 2 and "--quantize applies to whole-sequence exports" in (
        streaming.output
    )
    assert not out.exists()


@pytest.mark.tvm
@pytest.mark.slow
def test_an_int8_file_compiles_and_matches_onnx_runtime(trained, ml100k, tmp_path):
    from dnsrec_edge.compile.build import compile as compile_model

    path, _ = export_checkpoint(trained, tmp_path / "int8.onnx", batch=1, dataset=ml100k,
                                quantize="int8")  # fmt: skip
    art = compile_model(path, "host", tmp_path / "build", quiet=True)
    assert art.manifest["quantize"] == "int8"
    assert art.library.is_file()  # compile checked it against ONNX Runtime on the same file


@pytest.mark.tvm
def test_an_int8_build_keeps_one_8_bit_item_table(trained, ml100k, tmp_path):
    import tvm
    from tvm import relax

    from dnsrec_edge.compile.build import import_relax, lower_to_tir
    from dnsrec_edge.compile.onnx_io import load_onnx
    from dnsrec_edge.compile.targets import load_target

    path, _ = export_checkpoint(trained, tmp_path / "int8.onnx", batch=1, dataset=ml100k,
                                quantize="int8")  # fmt: skip
    mod = lower_to_tir(
        import_relax(load_onnx(path), [1, MAX_LEN]), load_target("x86_64").tvm_target()
    )
    consts = {}  # one entry per constant node (a node may be read at several call sites)

    def visit(e):
        if isinstance(e, tvm.ir.expr.Constant) and hasattr(e.value, "numpy"):
            consts[e.__chandle__()] = e.value.numpy()

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    n = ml100k.n_items
    tables = [c for c in consts.values() if c.size >= n * 32]
    # one (hidden, >= n items) table of 8-bit codes, read by the lookup and the scoring; no
    # float32 copy of it folded in by constant folding
    assert [(c.dtype.itemsize, c.shape[0]) for c in tables] == [(1, 32)]
    assert tables[0].shape[1] >= n


def test_calibration_runs_in_strides_only_for_a_large_catalogue():
    def proto(items: int):
        table = onnx.TensorProto(name="item_emb", dims=[items + 1, 64], data_type=1)
        ffn = onnx.TensorProto(name="ffn", dims=[64, 256], data_type=1)
        return onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [], [table, ffn]))

    assert quantize.calibration_stride(proto(3416), 1, 256) == 256  # 0.23 GB kept: one pass
    assert quantize.calibration_stride(proto(10**6), 1, 256) == 4  # 260 MB a batch
    assert quantize.calibration_stride(proto(10**6), 32, 8) == 2  # 384 MB a batch


def test_a_strided_calibration_still_passes_the_accuracy_check(
    trained, ml100k, tmp_path, monkeypatch
):
    monkeypatch.setattr(quantize, "CALIBRATION_MEMORY", 1)  # one batch per stride
    path, report = export_checkpoint(trained, tmp_path / "int8.onnx", dataset=ml100k,
                                     quantize="int8")  # fmt: skip
    assert path.is_file() and report.quantized["ndcg_ratio"] >= quantize.MIN_NDCG_RATIO
