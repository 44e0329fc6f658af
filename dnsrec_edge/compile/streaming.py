"""Compile a streaming step graph (``export --streaming``) like any model.

Same pipeline as ``compile.build`` (import into Relax with every input pinned, legalise, the
default schedules, build, link, check the ELF machine), but the graph has several inputs
(``item``, ``position``, the key/value caches) and outputs (scores [, top-k] and the updated
caches). The reference pair is a replayed step: a few random items pushed from an empty
cache by ONNX Runtime, then one more step, saved as ``reference_step_input.npz`` /
``reference_step_output.npz``. The manifest's ``streaming`` entry holds the cache layout
(``export.streaming.streaming_layout``); ``inputs``/``outputs`` list every tensor.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge import __version__
from dnsrec_edge.compare import TOLERANCE, compare_scores
from dnsrec_edge.compile import artifact as art
from dnsrec_edge.compile.targets import Target
from dnsrec_edge.errors import CompileError, InputFileError, OutputMismatch
from dnsrec_edge.fsio import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

STREAMING_META = "dnsrec_edge.streaming"
REFERENCE_INPUT = "reference_step_input.npz"
REFERENCE_OUTPUT = "reference_step_output.npz"
WARM_STEPS = 5  # items pushed before the reference step, so the cache it reads is not empty


def streaming_layout_of(onnx_path: str | Path) -> dict | None:
    """The streaming layout in an ONNX file's metadata, or None for a whole-sequence model."""
    import json

    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        return None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all: the normal loader says so in one sentence
        return None
    props = {p.key: p.value for p in proto.metadata_props}
    text = props.get(STREAMING_META)
    return json.loads(text) if text else None


def _load(path: Path):
    import onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx raises assorted untyped errors
        raise InputFileError(f"'{path}' is not a valid ONNX model ({err}); re-export it") from err
    return proto


def _fold(proto) -> Any:
    """Shape arithmetic folded by ONNX Runtime's basic optimisation (the shapes are static)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="dnsrec-fold-") as tmp:
        out = Path(tmp) / "folded.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(out)
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(str(out))


def _io_specs(proto) -> tuple[list[dict], list[dict]]:
    import onnx

    init = {t.name for t in proto.graph.initializer}

    def spec(value) -> dict:
        tt = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        return {"name": value.name, "shape": dims, "dtype": dtype}

    inputs = [spec(i) for i in proto.graph.input if i.name not in init]
    return inputs, [spec(o) for o in proto.graph.output]


def reference_step(proto, layout: dict, seed: int = 0) -> tuple[dict, list[np.ndarray]]:
    """``(inputs by name, ORT outputs)`` of one step after ``WARM_STEPS`` random pushes."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    batch, n_items = int(layout["batch"]), int(layout["n_items"])
    cache = [np.zeros(c["shape"], dtype=np.float32) for c in layout["cache"]]
    steps = min(WARM_STEPS, int(layout["max_len"]) - 1)
    feeds: dict = {}
    for position in range(steps + 1):
        feeds = {
            layout["item_input"]: rng.integers(1, n_items + 1, size=batch, dtype=np.int64),
            layout["position_input"]: np.full(batch, position, dtype=np.int64),
            **{c["name"]: a for c, a in zip(layout["cache"], cache, strict=True)},
        }
        outputs = session.run(None, feeds)
        if position < steps:
            cache = outputs[-len(cache) :]
    return feeds, outputs


def compile_streaming(
    onnx_path: Path,
    tgt: Target,
    out: Path,
    compiler: str | None,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    quiet: bool = False,
    started: float | None = None,
) -> art.Artifact:
    """Build the step graph at ``onnx_path`` for ``tgt`` into the artifact folder ``out``.

    The graph's shapes are fixed at export: ``batch`` must be its batch, and a step has no
    sequence length to pass (``seq_len`` must be None or the model's ``max_len``)."""
    from dnsrec_edge.compile.build import (
        _settings_table,
        _versions,
        build_executable,
        export_checked,
        lower_to_tir,
        schedule_module,
        staging_folder,
    )
    from dnsrec_edge.compile.schedules import count_scheduled

    started = started or time.perf_counter()
    proto = _load(onnx_path)
    layout = streaming_layout_of(onnx_path)
    if batch != int(layout["batch"]):
        raise InputFileError(
            f"'{onnx_path}' is a step graph exported for batch {layout['batch']}, not {batch}; "
            f"pass --batch {layout['batch']} or re-export with --streaming --batch {batch}"
        )
    if seq_len is not None and seq_len != int(layout["max_len"]):
        raise InputFileError(
            f"'{onnx_path}' is a step graph whose cache holds {layout['max_len']} positions; "
            "drop --seq-len (a step takes one item)"
        )
    inputs, outputs = _io_specs(proto)
    if any(None in i["shape"] for i in inputs):
        raise InputFileError(
            f"'{onnx_path}' has a dynamic input shape; re-export it with `--streaming`"
        )
    if not quiet:
        _settings_table(
            {
                "model": f"{onnx_path} (streaming step)",
                "target": f"{tgt.name} ({tgt.description})",
                "tvm target": tgt.tvm,
                "arch / device": f"{tgt.arch} / {tgt.device}",
                "linker": f"{compiler} ({tgt.deb_package})",
                "inputs": ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in inputs),
                "threads": tgt.threads,
                "tuning": "off (default schedules)",
                "output": out,
            }
        )
    from tvm.relax.frontend.onnx import from_onnx

    tvm_target = tgt.tvm_target()
    try:
        mod = from_onnx(
            _fold(proto),
            shape_dict={i["name"]: i["shape"] for i in inputs},
            keep_params_in_input=False,
        )
    except Exception as err:  # the importer raises assorted untyped errors
        raise CompileError(
            f"TVM could not import the step graph '{onnx_path}' "
            f"({type(err).__name__}: {str(err).splitlines()[-1][:200]}); re-export it"
        ) from err
    mod = schedule_module(lower_to_tir(mod, tvm_target), tgt, tvm_target)
    scheduled, total = count_scheduled(mod)
    try:
        executable = build_executable(mod, tvm_target)
    except Exception as err:  # TVM's codegen errors are untyped
        raise CompileError(
            f"TVM could not build '{onnx_path}' for target '{tgt.name}' "
            f"({str(err).splitlines()[-1][:200]})"
        ) from err
    feeds, ref_out = reference_step(proto, layout)

    tmp = staging_folder(out)
    try:
        lib = tmp / art.LIBRARY
        export_checked(executable, lib, compiler, tgt)
        np.savez(tmp / REFERENCE_INPUT, **feeds)
        np.savez(
            tmp / REFERENCE_OUTPUT, **dict(zip((o["name"] for o in outputs), ref_out, strict=True))
        )
        manifest = {
            "schema": art.SCHEMA,
            "tool_version": __version__,
            **_versions(),
            "target": tgt.name,
            "target_dict": tgt.tvm,
            "host_dict": tgt.host,
            "arch": tgt.arch,
            "device": tgt.device,
            "threads": tgt.threads,
            "inputs": inputs,
            "outputs": outputs,
            "streaming": layout,
            "files": {
                name: sha256_file(tmp / name)
                for name in (art.LIBRARY, REFERENCE_INPUT, REFERENCE_OUTPUT)
            },
            "onnx_sha256": sha256_file(onnx_path),
            "archspec": _archspec(proto),
            "tuning": {"database": None, "trials": 0, "scheduled_funcs": 0, "seconds": 0.0},
            "kernels": {"scheduled": scheduled, "total": total},
            "compile_seconds": round(time.perf_counter() - started, 2),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "entry": "main",
        }
        atomic_write_json(tmp / art.MANIFEST, manifest)
        result = art.Artifact(path=tmp, manifest=manifest)
        if result.runs_here():
            diff = check_step(run_step_local(result, feeds), ref_out, f"the {tgt.name} build")
            log.info("step matches ONNX Runtime: max abs diff %.2g", diff)
        art.install_artifact(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return art.load_artifact(out)


def _archspec(proto) -> dict | None:
    import json

    props = {p.key: p.value for p in proto.metadata_props}
    text = props.get("dnsrec_edge.archspec")
    return json.loads(text) if text else None


def run_step_local(artifact: art.Artifact, feeds: dict, threads: int | None = None):
    """Every output of one step of a streaming artifact on this host's CPU (numpy)."""
    import tvm

    vm = artifact.load_vm(threads)
    names = [i["name"] for i in artifact.manifest["inputs"]]
    args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[n]), tvm.cpu()) for n in names]
    out = vm[artifact.manifest["entry"]](*args)
    return [out[i].numpy() for i in range(len(artifact.manifest["outputs"]))]


def check_step(got: list[np.ndarray], ref: list[np.ndarray], what: str) -> float:
    """Scores under the comparison rule, every cache within the tolerance; else OutputMismatch."""
    if len(got) != len(ref):
        raise OutputMismatch(f"{what} returned {len(got)} outputs, ONNX Runtime {len(ref)}")
    result = compare_scores(got[0], ref[0], reference="ONNX Runtime")
    problems = list(result.mismatches)
    worst = result.max_abs_diff
    for i, (a, b) in enumerate(zip(got[1:], ref[1:], strict=True), start=1):
        if a.shape != b.shape:
            problems.append(f"output {i} shape {a.shape} != ONNX Runtime's {b.shape}")
            continue
        if a.dtype.kind == "f":
            diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
            worst = max(worst, diff)
            if not diff <= TOLERANCE:
                problems.append(f"output {i} max abs diff {diff:.3g} > {TOLERANCE:g}")
    if problems:
        raise OutputMismatch(
            f"{what} of the step graph differs from ONNX Runtime: " + "; ".join(problems[:5])
        )
    return worst
