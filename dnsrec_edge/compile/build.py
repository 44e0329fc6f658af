"""``compile``: ONNX model -> TVM library for one target, cross-linked, checked, self-described.

Steps: resolve the target and check its cross compiler; load and check the ONNX file; pin
static shapes and import into Relax; legalise and fuse; schedule (tuned records from the
database where they exist, the default CPU rules or dlight GPU rules for the rest); build;
link with the target's compiler; check the library's ELF machine; compare with ONNX Runtime
when the library can run here; write the artifact folder atomically.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge import __version__
from dnsrec_edge.compare import TOLERANCE, TOPK, compare_scores
from dnsrec_edge.compile import artifact as art
from dnsrec_edge.compile.elf import elf_machine
from dnsrec_edge.compile.onnx_io import (
    OnnxModel,
    check_operators,
    fold_static,
    load_onnx,
    reference_input,
    run_onnxruntime,
    static_shape,
)
from dnsrec_edge.compile.rewrites import calls, function_pass
from dnsrec_edge.compile.targets import Target, host_target, load_target
from dnsrec_edge.compile.weights import lift_weights, write_weights
from dnsrec_edge.errors import CompileError, OutputMismatch, OutputNotWritable
from dnsrec_edge.fsio import atomic_write_json, ensure_new, sha256_file
from dnsrec_edge.hostinfo import host_arch

log = logging.getLogger(__name__)


def import_relax(model: OnnxModel, shape: list[int]):
    """The Relax module of ``model`` with its input pinned to ``shape``."""
    from tvm.relax.frontend.onnx import from_onnx

    folded = fold_static(model, shape)
    try:
        return from_onnx(folded, shape_dict={model.input_name: shape}, keep_params_in_input=False)
    except Exception as err:  # the importer raises assorted untyped errors
        raise CompileError(
            f"TVM could not import '{model.path}' ({type(err).__name__}: {str(err).splitlines()[-1][:200]}); "
            "check that the model exports with opset >= 13 and static shapes"
        ) from err


def fast_sigmoid_pass():
    """A Relax pass: ``sigmoid(x)`` -> ``1 / (1 + fast_exp(-x))`` (the data-aware gates).

    TVM's FastMathTransform covers exp, softmax, erf and tanh but not sigmoid, which otherwise
    lowers to one scalar libm ``expf`` per element.
    """
    import tvm
    from tvm import relax, topi

    @relax.expr_functor.mutator
    class FastSigmoid(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if calls(call, "relax.sigmoid"):
                return self.builder_.call_te(_te_fast_sigmoid, call.args[0])
            return call

    def _te_fast_sigmoid(x):
        one = tvm.tirx.const(1.0, x.dtype)
        return topi.divide(one, topi.add(one, topi.fast_exp(topi.negative(x))))

    return function_pass("DnsrecFastSigmoid", FastSigmoid)


def lower_to_tir(mod, tvm_target):
    """Legalise Relax ops into fused TIR kernels (what tuning and scheduling work on)."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    # (the CUDA backend's own legalize step also schedules; ours schedules separately)
    passes = [
        *_cpu_rewrites(tvm_target),  # first: the library dispatch would lower TopK to a call
        *_backend(tvm_target).library_dispatch_passes(tvm_target),
        relax.transform.DecomposeOpsForInference(),
        # exp/softmax/sigmoid as polynomials that vectorise (libm's expf does not); error < 1e-6
        relax.transform.FastMathTransform(),
        fast_sigmoid_pass(),
        *cpu.legalize_passes(tvm_target),
    ]
    with tvm_target:
        return tvm.transform.Sequential(passes)(mod)


def _cpu_rewrites(tvm_target) -> list:
    """Relax rewrites that fit CPU kernels to SIMD registers (none for GPUs)."""
    if tvm_target.kind.name != "llvm":
        return []
    from dnsrec_edge.compile.int8_table import int8_item_table_pass
    from dnsrec_edge.compile.rewrites import (
        pad_constant_matmul_pass,
        share_item_table_pass,
        topk_pass,
    )
    from dnsrec_edge.compile.schedules import vector_lanes

    return [
        int8_item_table_pass(2 * vector_lanes(tvm_target)),
        pad_constant_matmul_pass(2 * vector_lanes(tvm_target)),
        share_item_table_pass(),
        topk_pass(),
    ]


def schedule_module(mod, target: Target, tvm_target, database=None):
    """Apply tuned records (if any), then default schedules to what is left. Returns the module."""
    import tvm
    from tvm import relax

    if database is not None:
        with tvm_target, database, tvm.transform.PassContext(opt_level=3):
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    if target.device == "cuda":
        from tvm.s_tir import dlight as dl

        # No dl.gpu.Matmul: on an H100 its schedule gave scores 0.135 away from ONNX
        # Runtime (benchmarks/cuda_run.py); the rules below matched within 3e-6.
        with tvm_target:
            mod = dl.ApplyDefaultSchedule(
                dl.gpu.GEMV(),
                dl.gpu.Reduction(),
                dl.gpu.GeneralReduction(),
                dl.gpu.Fallback(),
            )(mod)
    else:
        from dnsrec_edge.compile.schedules import apply_default_schedules

        mod = apply_default_schedules(mod, tvm_target, target.threads)
    return mod


def _backend(tvm_target):
    """TVM's pipeline module for the target's device (CPU or CUDA)."""
    if tvm_target.kind.name == "cuda":
        from tvm.relax.backend.cuda import pipeline
    else:
        from tvm.relax.backend.cpu_generic import pipeline
    return pipeline


def build_executable(mod, tvm_target):
    """Finish the Relax pipeline on a scheduled module and generate code."""
    import tvm

    backend = _backend(tvm_target)

    @tvm.transform.module_pass(opt_level=0, name="DnsrecFinalize")
    def finalize(mod, _ctx):
        with tvm_target:
            seq = backend.dataflow_lower_passes(tvm_target) + backend.finalize_passes(tvm_target)
            return tvm.transform.Sequential(seq)(mod)

    return tvm.compile(mod, target=tvm_target, relax_pipeline=finalize)


def _versions() -> dict[str, str]:
    out = {}
    for key, dist in (
        ("tvm_version", "apache-tvm"),
        ("onnx_version", "onnx"),
        ("onnxruntime_version", "onnxruntime"),
    ):
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = "unknown"
    return out


def _settings_table(settings: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="compile settings", show_header=False, box=None)
    for key, value in settings.items():
        table.add_row(f"[bold]{key}[/bold]", str(value))
    Console(stderr=True).print(table)


def compare_outputs(got: np.ndarray, ref: np.ndarray, what: str) -> float:
    """Max abs difference from ONNX Runtime; ``OutputMismatch`` listing every row beyond
    :data:`~dnsrec_edge.compare.TOLERANCE` or with another top-10 (ties aside: see
    :mod:`dnsrec_edge.compare`)."""
    result = compare_scores(got, ref, atol=TOLERANCE, k=TOPK, reference="ONNX Runtime")
    if not result.ok:
        raise OutputMismatch(
            f"{what} differs from ONNX Runtime (max abs diff {result.max_abs_diff:.3g}, "
            f"tolerance {TOLERANCE:g}, top-{result.k}): {result.summary()}; "
            "report this with the ONNX file"
        )
    return result.max_abs_diff


def compile(  # the public name the contract fixes (shadows the builtin here only)
    onnx_path: str | Path,
    target: str | Target | None = None,
    out_dir: str | Path | None = None,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    tune: bool = False,
    trials: int | None = None,
    tuning_db: str | Path | None = None,
    rpc: str | None = None,
    tracker: str | None = None,
    key: str | None = None,
    force: bool = False,
    quiet: bool = False,
    targets_dir: str | Path | None = None,
    threads: int | None = None,
    minutes: float | None = None,
) -> art.Artifact:
    """Compile an ONNX SASRec for ``target`` into an artifact folder and return it.

    ``tune`` runs MetaSchedule for up to ``trials`` measured candidates (default 256; with
    ``minutes`` and no ``trials``, as many as fit in that many minutes) into a persistent
    database (``tuning_db`` or one per target and model shapes under the user store). The
    candidates are timed on this host (the target must then match it), or on the board behind
    ``rpc`` (``HOST:PORT`` of ``dnsrec-edge device serve``) or leased from ``tracker`` under
    ``key``. An existing database is applied even without ``tune``. ``out_dir`` defaults to
    ``<model>-<target>`` beside the ONNX file. ``target`` defaults to ``"host"``: the preset
    this machine's CPU features match, with its usable cores (:func:`host_target`); the
    manifest keeps both names. ``threads`` replaces the target's thread count (TVM's
    ``num-cores`` and what the default schedules parallelise for). ``force`` replaces an earlier artifact's own files in ``out_dir``,
    never anything else there.
    """
    from dnsrec_edge.compile import tuning

    started = time.perf_counter()
    if target is None:
        target = host_target(targets_dir)
    tgt = target if isinstance(target, Target) else load_target(target, targets_dir)
    if threads is not None:
        tgt = tgt.with_threads(threads)
    onnx_path = Path(onnx_path)
    out = (
        Path(out_dir)
        if out_dir is not None
        else onnx_path.with_name(f"{onnx_path.stem}-{tgt.name}")
    )
    ensure_new(out, force)
    art.check_replaceable(out, (art.LIBRARY, art.REFERENCE_INPUT, art.REFERENCE_OUTPUT))
    compiler = tgt.check_cross_compiler()
    board = rpc or tracker
    if board and not tune:
        raise CompileError("--rpc and --rpc-tracker name a board to tune on: add --tune")
    if tune:
        tuning.check_can_tune(tgt, remote=bool(board))
    if minutes is not None and not tune:
        raise CompileError("--minutes is a tuning time budget: add --tune")
    if minutes is not None and minutes <= 0:
        raise CompileError(f"--minutes must be positive (got {minutes:g})")
    if trials is None:
        trials = tuning.TIME_BOUND_TRIALS if minutes is not None else tuning.DEFAULT_TRIALS

    from dnsrec_edge.compile import streaming

    if streaming.streaming_layout_of(onnx_path) is not None:  # a step graph: several inputs
        if tune:
            raise CompileError("--tune does not cover streaming step graphs yet; drop --tune")
        return streaming.compile_streaming(
            onnx_path, tgt, out, compiler, batch=batch, seq_len=seq_len, quiet=quiet,
            started=started,
        )  # fmt: skip
    model = load_onnx(onnx_path)
    shape = static_shape(model, batch, seq_len)
    check_operators(model)
    tvm_target = tgt.tvm_target()
    db_path = Path(tuning_db) if tuning_db is not None else None

    if not quiet:
        _settings_table(
            _settings(
                onnx_path, tgt, compiler, model, shape, tune, trials, minutes, board, out, db_path
            )
        )

    mod = import_relax(model, shape)
    mod, weights = lift_weights(lower_to_tir(mod, tvm_target))
    if db_path is None:
        db_path = tuning.default_database_dir(tgt, mod)
    log.info("tuning database: %s", db_path)
    measure = (rpc, tracker, key) if board else None
    database, tune_info = _tuning_database(
        mod, tgt, tvm_target, db_path, compiler, tune, trials, minutes, measure, quiet
    )
    scheduled, kernels = _schedule(mod, tgt, tvm_target, database, tune_info)
    executable = _build(scheduled, tvm_target, onnx_path, tgt)
    ref_in = reference_input(model, shape, n_items=_n_items(model, shape))
    if tune_info["scheduled_funcs"] and tgt.runs_here:
        executable, kernels = _tuned_or_default(
            mod, executable, kernels, tgt, tvm_target, onnx_path, ref_in, weights, tune_info
        )
    ref_out = run_onnxruntime(model, ref_in)[0]
    return _write_artifact(
        out,
        executable,
        compiler,
        tgt,
        ref_in,
        ref_out,
        lambda files: _manifest(
            tgt, model, shape, ref_out, files, onnx_path, tune_info, kernels, started
        ),
        f"the {tgt.name} build of '{onnx_path}'",
        weights,
    )


def _settings(
    onnx_path: Path,
    tgt: Target,
    compiler: str | None,
    model: OnnxModel,
    shape: list[int],
    tune: bool,
    trials: int,
    minutes: float | None,
    board: str | None,
    out: Path,
    db_path: Path | None,
) -> dict[str, Any]:
    """The resolved settings, shown before the build starts."""
    from dnsrec_edge.compile import tuning

    return {
        "model": onnx_path,
        "target": f"{tgt.requested} -> {tgt.name} ({tgt.description})"
        if tgt.requested
        else f"{tgt.name} ({tgt.description})",
        "tvm target": tgt.tvm,
        "host": tgt.host or "(same as target)",
        "arch / device": f"{tgt.arch} / {tgt.device}",
        "linker": f"{compiler} ({tgt.deb_package})",
        "input": f"{model.input_name} int64 {shape}",
        "threads": tgt.threads,
        **({"cpu features": ", ".join(tgt.features)} if tgt.features else {}),
        "tuning": f"{trials} trials{f' or {minutes:g} min' if minutes else ''} on "
        f"{board or 'this host'}"
        if tune
        else "off (default schedules)",
        "output": out,
        "tuning database": db_path
        or f"one per target and model shapes under {tuning.database_root()}",
    }


def _tuning_database(
    mod: Any,
    tgt: Target,
    tvm_target: Any,
    db_path: Path,
    compiler: str | None,
    tune: bool,
    trials: int,
    minutes: float | None,
    measure: tuple[str | None, str | None, str | None] | None,
    quiet: bool,
) -> tuple[Any, dict[str, Any]]:
    """The tuning database the build applies (tuned now, an existing one, or ``None``) and
    what the manifest says about it. ``measure``: ``(rpc, tracker, key)`` of a board to time
    the candidates on, or ``None`` for this host."""
    from dnsrec_edge.compile import tuning

    tune_info = {"database": None, "trials": 0, "scheduled_funcs": 0, "seconds": 0.0}
    database = None
    if tune:
        t0 = time.perf_counter()
        measurer = _board_measurer(tgt, compiler, *measure) if measure else None
        before = tuning.record_count(db_path)
        database = tuning.tune(
            mod, tgt, tvm_target, db_path, trials, measurer=measurer, quiet=quiet, minutes=minutes
        )
        tune_info.update(
            trials=trials,
            measured=tuning.record_count(db_path) - before,
            minutes=minutes,
            seconds=round(time.perf_counter() - t0, 1),
            measured_on=measurer.where if measurer else "host",
        )
    elif tuning.database_exists(db_path):
        database = tuning.open_database(db_path)
    if database is not None:
        tune_info["database"] = str(db_path)
    return database, tune_info


def _schedule(
    mod: Any, tgt: Target, tvm_target: Any, database: Any, tune_info: dict[str, Any]
) -> tuple[Any, dict[str, int]]:
    """Schedule every kernel (tuned records first); the module and the kernel counts."""
    from dnsrec_edge.compile import tuning
    from dnsrec_edge.compile.schedules import count_scheduled

    if database is not None:
        mod_tuned = schedule_module(mod, tgt, tvm_target, database)
        tune_info["scheduled_funcs"] = tuning.count_from_database(mod, tvm_target, database)
        mod = mod_tuned
    else:
        mod = schedule_module(mod, tgt, tvm_target)
    scheduled, total = count_scheduled(mod)
    log.info(
        "%d of %d kernels scheduled (%d from the tuning database)",
        scheduled,
        total,
        tune_info["scheduled_funcs"],
    )
    return mod, {"scheduled": scheduled, "total": total}


def _tuned_or_default(
    mod: Any,
    tuned: Any,
    kernels: dict[str, int],
    tgt: Target,
    tvm_target: Any,
    onnx_path: Path,
    ref_in: np.ndarray,
    weights: list[np.ndarray],
    tune_info: dict[str, Any],
) -> tuple[Any, dict[str, int]]:
    """The tuned executable or the default one, whichever runs the whole model faster on this
    host (:mod:`dnsrec_edge.compile.tuned_or_default`), and its kernel counts; ``tune_info``
    gets both latencies and the choice."""
    from dnsrec_edge.compile.tuned_or_default import faster, whole_model_ms

    default_mod, default_kernels = _schedule(mod, tgt, tvm_target, None, {"scheduled_funcs": 0})
    default = _build(default_mod, tvm_target, onnx_path, tgt)
    timings = whole_model_ms({"tuned": tuned, "default": default}, ref_in, weights, tgt.threads)
    kept = faster(timings)
    tune_info.update(whole_model_ms=timings, kept=kept)
    log.info("whole model: tuned %.4f ms, default %.4f ms; keeping the %s build",
             timings["tuned"], timings["default"], kept)  # fmt: skip
    return (tuned, kernels) if kept == "tuned" else (default, default_kernels)


def _build(mod: Any, tvm_target: Any, onnx_path: Path, tgt: Target) -> Any:
    """The executable; TVM's (untyped) codegen errors become one CompileError."""
    try:
        return build_executable(mod, tvm_target)
    except Exception as err:  # TVM's codegen errors are untyped
        raise CompileError(
            f"TVM could not build '{onnx_path}' for target '{tgt.name}' ({str(err).splitlines()[-1][:200]})"
        ) from err


def _manifest(
    tgt: Target,
    model: OnnxModel,
    shape: list[int],
    ref_out: np.ndarray,
    files: dict[str, str],
    onnx_path: Path,
    tune_info: dict[str, Any],
    kernels: dict[str, int],
    started: float,
) -> dict[str, Any]:
    """``manifest.json``: versions, target, shapes, the files' sha256s, tuning, timing."""
    return {
        "schema": art.SCHEMA,
        "tool_version": __version__,
        **_versions(),
        "target": tgt.name,
        "target_requested": tgt.requested or tgt.name,
        "cpu_features": list(tgt.features),
        "target_dict": tgt.tvm,
        "host_dict": tgt.host,
        "arch": tgt.arch,
        "device": tgt.device,
        "threads": tgt.threads,
        "inputs": [{"name": model.input_name, "shape": shape, "dtype": "int64"}],
        "outputs": [
            {
                "name": model.output_names[0],
                "shape": list(ref_out.shape),
                "dtype": str(ref_out.dtype),
            }
        ],
        "files": files,
        "onnx_sha256": sha256_file(onnx_path),
        "archspec": model.archspec,
        "quantize": model.metadata.get("dnsrec_edge.quantize"),  # "int8" or None (float32)
        "tuning": tune_info,
        "kernels": kernels,
        "compile_seconds": round(time.perf_counter() - started, 2),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "entry": "main",
    }


def _write_artifact(
    out: Path,
    executable: Any,
    compiler: str | None,
    tgt: Target,
    ref_in: np.ndarray,
    ref_out: np.ndarray,
    manifest_for: Any,
    what: str,
    weights: list[np.ndarray] | None = None,
) -> art.Artifact:
    """Write library, weight files (:mod:`dnsrec_edge.compile.weights`), reference
    input/output and ``manifest_for(files' sha256s)`` into a folder beside ``out``; check the
    library's ELF machine and, where it runs here, its output against ONNX Runtime; then
    rename it into place."""
    tmp = staging_folder(out)
    try:
        lib = tmp / art.LIBRARY
        export_checked(executable, lib, compiler, tgt)
        np.save(tmp / art.REFERENCE_INPUT, ref_in)
        np.save(tmp / art.REFERENCE_OUTPUT, ref_out)
        entries = write_weights(tmp, weights or [])
        names = (art.LIBRARY, *(e["file"] for e in entries))
        files = {
            name: sha256_file(tmp / name)
            for name in (*names, art.REFERENCE_INPUT, art.REFERENCE_OUTPUT)
        }
        manifest = manifest_for(files)
        if entries:
            manifest["weights"] = entries
        atomic_write_json(tmp / art.MANIFEST, manifest)
        result = art.Artifact(path=tmp, manifest=manifest)
        if result.runs_here():
            diff = compare_outputs(result.run_local(ref_in), ref_out, what)
            log.info("matches ONNX Runtime: max abs diff %.2g, identical top-%d", diff, TOPK)
        art.install_artifact(tmp, out)  # an earlier artifact's own files only (force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return art.load_artifact(out)


def _board_measurer(
    tgt: Target, compiler: str | None, rpc: str | None, tracker: str | None, key: str | None
):
    """A tuning measurer on the named board, after checking it is the target's architecture."""
    from dnsrec_edge.board import rpc as rpc_mod
    from dnsrec_edge.compile.tuning import Measurer

    link, session = rpc_mod.open_board(rpc, tracker, key)
    facts = rpc_mod.board_facts(session)
    where = f"the board at {link.label}"
    rpc_mod.check_arch(tgt.arch, facts, where, "the tuning candidates", tgt.name)
    rpc_mod.set_threads(session, facts, rpc_mod.capped_threads(tgt.threads, facts))
    if (facts or {}).get("emulated"):
        log.warning("%s is emulated: tuning measures the emulator's speed, not a board's", where)
    return Measurer(session=session, compiler=compiler, where=where)


def _n_items(model: OnnxModel, shape: list[int]) -> int:
    spec = model.archspec
    if spec and "n_items" in spec:
        return int(spec["n_items"])
    # fall back on the score width: run once on padding only
    width = int(run_onnxruntime(model, np.zeros(shape, dtype=np.int64))[0].shape[-1])
    # ... capped by the embedding table the ids index (a file that scores the padding row
    # too has one column more than it has items: id `width` would be out of range)
    tables = {t.name: t.dims for t in model.proto.graph.initializer}
    for node in model.proto.graph.node:
        if node.op_type == "Gather" and node.input[1] == model.input_name:
            rows = tables.get(node.input[0])
            if rows:
                width = min(width, int(rows[0]) - 1)
    return max(width, 1)


def staging_folder(out: Path) -> Path:
    """A new hidden folder beside ``out`` to build an artifact in before renaming it there."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise OutputNotWritable(
            f"cannot write to folder '{out.parent}' ({err.strerror}); choose a writable folder"
        ) from err


def export_checked(executable, lib: Path, compiler: str | None, tgt: Target) -> None:
    """Export the library to ``lib`` and check its ELF machine is the target's."""
    _export(executable, lib, compiler, tgt)
    found = elf_machine(lib)
    if found != tgt.arch:
        raise CompileError(
            f"the library built for '{tgt.name}' is {found} code, not {tgt.arch}; "
            f"check the target's mtriple and cross compiler '{tgt.cross_compiler}'"
        )


def _export(executable, lib: Path, compiler: str | None, tgt: Target) -> None:
    from tvm.support import cc

    local = tgt.arch == host_arch() and tgt.cross_compiler in (None, "gcc", "g++", "cc")
    try:
        if local:
            executable.export_library(str(lib))
        else:
            executable.export_library(str(lib), fcompile=cc.cross_compiler(compiler))
    except Exception as err:  # the linker's failures come back as untyped errors
        raise CompileError(
            f"linking the library for '{tgt.name}' with '{tgt.cross_compiler}' failed "
            f"({str(err).strip().splitlines()[-1][:200]}); check that {tgt.deb_package} is complete"
        ) from err
