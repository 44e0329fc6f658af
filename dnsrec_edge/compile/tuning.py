"""MetaSchedule tuning with an in-process builder and runner and a persistent JSON database.

TVM's LocalBuilder/LocalRunner start worker processes that each import TVM's tensor
intrinsics (tens of seconds per worker on small machines); here candidates are built in this
process and timed either in this process (the host is the target) or on a board over TVM RPC
(``--rpc HOST:PORT`` or a tracker key): each candidate is cross-linked with the target's
compiler, uploaded into the board's server session, and timed there with ``time_evaluator``.
The database lives per (target, kernel shapes) under ``paths.home()/tuning`` and is reused by
later compiles. It is seeded with the default schedules, measured the same way, so a tuned
record only replaces a default schedule when it measured faster.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge import paths
from dnsrec_edge.compile.targets import Target
from dnsrec_edge.errors import CompileError
from dnsrec_edge.hostinfo import host_arch

log = logging.getLogger(__name__)

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
MAX_TASKS = 12  # tune at most this many kernels, heaviest first
DEFAULT_TRIALS = 256
TIME_BOUND_TRIALS = 100_000  # the trial cap under a time budget (--minutes): time ends first
MIN_SHARE = 0.01  # ... and only those with at least this share of the model's FLOPs


def check_can_tune(target: Target, remote: bool = False) -> None:
    """Tuning measures candidates on this machine unless a board is named: then the target
    must be a CPU (on the board); without one it must be this host's CPU."""
    if target.device != "cpu":
        raise CompileError(
            f"--tune measures CPU kernels; '{target.name}' is a {target.device} target: compile "
            "it without --tune"
        )
    if not remote and target.arch != host_arch():
        raise CompileError(
            f"--tune measures candidates on this {host_arch()} host, which cannot run "
            f"'{target.name}' ({target.arch}); name the board to measure on with --rpc HOST:PORT "
            "or --rpc-tracker HOST:PORT --rpc-key KEY, or compile without --tune"
        )


def _prim_funcs(mod):
    from tvm import tirx

    return [(gv.name_hint, f) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]


def database_root() -> Path:
    """Where per-target tuning databases live by default."""
    return paths.home() / "tuning"


def default_database_dir(target: Target, mod) -> Path:
    """``home()/tuning/<target>/<hash of the kernels' shapes>``: one database per model shape."""
    from tvm_ffi import structural_hash

    hashes = sorted(f"{structural_hash(f) & 0xFFFFFFFFFFFFFFFF:x}" for _, f in _prim_funcs(mod))
    key = hashlib.sha256(" ".join([target.name, *hashes]).encode()).hexdigest()[:16]
    return database_root() / target.name / key


def database_exists(path: Path) -> bool:
    return (Path(path) / WORKLOADS).is_file() and (Path(path) / RECORDS).is_file()


def record_count(path: Path) -> int:
    """Candidates measured into the database at ``path`` so far (0 when there is none)."""
    records = Path(path) / RECORDS
    if not records.is_file():
        return 0
    with records.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def open_database(path: Path):
    """The JSON database in folder ``path`` (created if missing)."""
    from tvm.s_tir import meta_schedule as ms

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(
        path_workload=str(path / WORKLOADS), path_tuning_record=str(path / RECORDS)
    )


def _random_args(args_info, rng: np.random.Generator, device):
    import tvm

    out = []
    for info in args_info:
        kind, dtype, shape = info.as_json()[0], info.as_json()[1], info.as_json()[2]
        if kind != "TENSOR":
            raise CompileError(f"cannot measure a kernel argument of kind {kind}")
        if dtype.startswith("float"):
            data = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            data = rng.integers(0, 2, shape).astype(bool)
        else:
            data = np.zeros(shape, dtype=dtype)  # indices: 0 is always in range
        out.append(tvm.runtime.tensor(data, device))
    return out


def measure(
    rt_mod, args_info, repeat: int = 3, min_repeat_ms: int = 20, device=None
) -> list[float]:
    """Seconds per call of a built kernel, ``repeat`` samples of at least ``min_repeat_ms``.

    ``device`` is where ``rt_mod`` lives: this host's CPU by default, or a board session's.
    """
    import tvm

    device = device if device is not None else tvm.cpu()
    args = _random_args(args_info, np.random.default_rng(0), device)
    evaluator = rt_mod.time_evaluator(
        rt_mod.entry_name, device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms
    )
    return [float(x) for x in evaluator(*args).results]


@dataclass
class Measurer:
    """Times built kernels: in this process (``session`` None) or on a board over TVM RPC.

    For a board, each kernel is linked with the target's cross compiler, uploaded into the
    server's session and loaded there; ``where`` names the board in messages.
    """

    session: Any = None
    compiler: str | None = None
    where: str = "this host"
    _tmp: Path | None = field(default=None, repr=False)
    _count: int = 0

    @property
    def remote(self) -> bool:
        return self.session is not None

    def close(self) -> None:
        """Remove the local folder of linked kernels (each is deleted after its upload)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __call__(self, rt_mod, args_info) -> list[float]:
        if self.session is None:
            return measure(rt_mod, args_info)
        from tvm.support import cc

        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="dnsrec-tune-"))
        self._count += 1
        name = f"kernel{self._count}.so"
        path = self._tmp / name
        rt_mod.export_library(str(path), fcompile=cc.cross_compiler(self.compiler))
        self.session.upload(str(path), name)
        path.unlink()
        remote_mod = self.session.load_module(name)
        return measure(remote_mod, args_info, device=self.session.cpu())


def register_cpu_intrinsics(target: Target) -> None:
    """Register only this CPU's tensor intrinsics, not every device's.

    MetaSchedule imports ``tvm.s_tir.tensor_intrin`` (on its TuneContext and in its builder),
    whose ``__init__`` parses every device's intrinsics through TVMScript: 60 s on an idle
    2-core machine, 290 s on a loaded one, versus 0.7 s for the x86 ones alone. The package is
    entered into ``sys.modules`` without running its ``__init__``, then the submodule for
    ``target``'s architecture is imported (other submodules still import on demand).
    """
    import importlib
    import importlib.util
    import sys

    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        sys.modules[name] = importlib.util.module_from_spec(spec)
    sub = {"x86_64": "x86", "aarch64": "arm_cpu", "riscv64": "riscv_cpu"}[target.arch]
    importlib.import_module(f"{name}.{sub}")


def build_kernel(mod, target):
    """Build one candidate kernel (what MetaSchedule's default builder does, in-process)."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.tirx.build(mod, target=target)


def _in_process_builder_runner(measurer: Measurer):
    """A MetaSchedule builder and runner that share built modules in memory; the runner
    times each candidate with ``measurer`` (here or on a board)."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerResult

    built: dict[str, object] = {}

    @derived_object
    class Builder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for inp in build_inputs:
                key = f"mem://{len(built)}-{time.monotonic_ns()}"
                try:
                    mod = build_kernel(inp.mod, inp.target)
                except Exception as err:  # a bad candidate: report it to the tuner, go on
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"))
                    continue
                built[key] = mod
                results.append(BuilderResult(key, None))
            return results

    @derived_object
    class Done(PyRunnerFuture):
        def __init__(self, result):
            super().__init__()
            self._result = result

        def done(self):
            return True

        def result(self):
            return self._result

    @derived_object
    class Runner(PyRunner):
        def run(self, runner_inputs):
            futures = []
            for inp in runner_inputs:
                rt_mod = built.pop(inp.artifact_path, None)
                try:
                    secs = measurer(rt_mod, list(inp.args_info))  # ArgInfo objects
                    futures.append(Done(RunnerResult(secs, None)))
                except Exception as err:  # a candidate that crashes or times out
                    log.debug("candidate failed on %s: %s", measurer.where, err)
                    futures.append(Done(RunnerResult(None, f"{type(err).__name__}: {err}")))
            return futures

    del tvm
    return Builder(), Runner()


def _select_tasks(tasks) -> list:
    from tvm.s_tir.analysis import estimate_tir_flops

    # Matmul kernels only: the default row-reduction schedules are already near memory speed,
    # and MetaSchedule's softmax candidates take minutes each for LLVM to compile here.
    flops = [
        (estimate_tir_flops(t.dispatched[0]) * t.weight, t)
        for t in tasks
        if "matmul" in t.task_name
    ]
    total = sum(f for f, _ in flops) or 1.0
    ranked = sorted(flops, key=lambda ft: -ft[0])
    return [t for f, t in ranked[:MAX_TASKS] if f / total >= MIN_SHARE]


def _seed_defaults(tasks, database, tvm_target, threads: int, measurer: Measurer) -> None:
    """Commit each task's default schedule, measured, so tuning must beat it to be used."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from dnsrec_edge.compile.schedules import schedule_func_sch

    for task in tasks:
        mod = task.dispatched[0]
        sch = schedule_func_sch(mod["main"], tvm_target, threads)
        if sch is None:
            continue
        workload = database.commit_workload(mod)
        if any(r.trace is not None for r in database.get_top_k(workload, 1)):
            continue  # this database already holds measured records for the kernel
        rt_mod = build_kernel(sch.mod, tvm_target)
        args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
        secs = measurer(rt_mod, args_info)
        database.commit_tuning_record(
            ms.database.TuningRecord(
                trace=sch.trace,
                workload=workload,
                run_secs=[tvm.runtime.convert(s) for s in secs],
                target=tvm_target,
                args_info=args_info,
            )
        )


def tune(
    mod,
    target: Target,
    tvm_target,
    db_path: Path,
    trials: int,
    *,
    measurer: Measurer | None = None,
    quiet: bool = False,
    minutes: float | None = None,
):
    """Tune the heaviest kernels of the lowered ``mod`` for ``trials`` candidates; the database.

    Candidates are timed by ``measurer`` (default: on this host, which must then be the target).
    ``minutes`` stops tuning once that much time is spent (after the running batch of
    candidates), whatever is left of ``trials``. MetaSchedule's gradient task scheduler
    gives the next batch to the kernel whose measured time (latency x calls) can drop most,
    so the budget goes to kernels by their share of the model's time.
    """
    from tvm.s_tir import meta_schedule as ms

    deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
    state = {"time_up": False}
    measurer = measurer or Measurer()
    check_can_tune(target, remote=measurer.remote)
    if not measurer.remote:  # time candidates on the thread count the build is made for
        from dnsrec_edge.compile.artifact import set_threads

        set_threads(target.threads)
    register_cpu_intrinsics(target)
    database = open_database(db_path)
    tasks = _select_tasks(ms.relax_integration.extract_tasks(mod, tvm_target))
    log.info(
        "tuning %d kernels on %s: %s",
        len(tasks),
        measurer.where,
        ", ".join(t.task_name for t in tasks),
    )
    _reset_tuner_logging()
    try:
        _seed_defaults(tasks, database, tvm_target, target.threads, measurer)
        builder, runner = _in_process_builder_runner(measurer)
        # A smaller population than the default 2048: candidates are cheap to measure here,
        # generating them on two shared cores is not.
        strategy = ms.search_strategy.EvolutionarySearch(
            population_size=256, init_min_unmeasured=32
        )
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted_tasks=tasks, work_dir=str(db_path), strategy=strategy, seed=0
        )
        per_iter = max(8, min(32, trials // max(1, len(tasks))))
        # the default callbacks minus RemoveBuildArtifact: our artifacts live in memory
        callbacks = [ms.measure_callback.AddToDatabase(), ms.measure_callback.UpdateCostModel()]
        if deadline is not None:
            callbacks.append(_deadline_callback(deadline, state))
        if not quiet:
            callbacks = [*callbacks, _progress_callback(trials)]
        try:
            ms.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(db_path),
                max_trials_global=trials,
                num_trials_per_iter=per_iter,
                builder=builder,
                runner=runner,
                database=database,
                measure_callbacks=callbacks,
            )
        except Exception:  # the deadline's _TimeUp comes back wrapped by TVM's FFI
            if not state["time_up"]:
                raise
            log.info("tuning stopped: its %g-minute budget is spent", minutes)
    finally:
        measurer.close()
    return database


class _TimeUp(Exception):
    """Raised by the deadline callback to end ``tune_tasks`` (its records are already saved)."""


def _deadline_callback(deadline: float, state: dict):
    """A measure callback that stops tuning once ``time.monotonic()`` passes ``deadline``.

    MetaSchedule's task scheduler runs every task once before it looks at terminations, so
    the callback raises instead; ``state["time_up"]`` tells the caller that it did. It runs
    after ``AddToDatabase``: the batch just measured is kept."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Deadline(PyMeasureCallback):
        def apply(
            self, task_scheduler, task_id, measure_candidates, builder_results, runner_results
        ):
            if time.monotonic() >= deadline:
                state["time_up"] = True
                raise _TimeUp(f"the tuning time budget ran out at task {task_id}")

    return Deadline()


def _reset_tuner_logging() -> None:
    """Drop the handlers a previous tuning run (or a log capture) left on MetaSchedule's
    logger: its set-up lists them by name and fails on an unnamed one, so a second tuning
    in one process would crash. Each run adds its own console and file handlers again."""
    tuner_log = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(tuner_log.handlers):
        tuner_log.removeHandler(handler)


def _progress_callback(trials: int):
    """A measure callback that advances a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    progress = Progress(
        TextColumn("tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task("tuning", total=trials)

    @derived_object
    class Callback(PyMeasureCallback):
        def apply(
            self, task_scheduler, task_id, measure_candidates, builder_results, runner_results
        ):
            progress.start()  # no-op once started
            progress.advance(task, len(runner_results))
            if progress.finished:
                progress.stop()

    return Callback()


def count_from_database(mod, tvm_target, database) -> int:
    """How many of ``mod``'s kernels the database schedules (records can silently not apply)."""
    import tvm
    from tvm import relax

    from dnsrec_edge.compile.schedules import count_scheduled

    with tvm_target, database, tvm.transform.PassContext(opt_level=3):
        applied = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    return count_scheduled(applied)[0]
