"""``benchmark``: check an artifact on its board, time it, meter its energy, record it.

Order of work, per board: verify the artifact's sha256s (before anything runs), read the
board's facts, refuse a board of another architecture (before upload), upload and load the
library, run the reference input and compare with the stored ONNX Runtime output (max abs
diff <= 1e-4 and the same top-10 up to ties, by :mod:`dnsrec_edge.compare`; a mismatch fails
and records nothing), then warm up,
time ``repeat`` samples of ``number`` calls each (in chunks, so a dropped connection is
retried once and finished chunks are kept), meter energy over a separate window, and read
the serving process's peak memory. Successful non-emulated boards become calibration records,
filed under the target whose architecture the library's ELF header shows (a manifest that
disagrees with its library is refused); a store that cannot be written keeps the report and
says so in ``report.record_error``.

Example::

    report = benchmark("artifacts/arm64", rpc="192.168.1.20:9090", repeat=50)
    print(report.latency_ms()["median"], report.to_dict()["energy"])
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnsrec_edge import __version__
from dnsrec_edge.bench import energy as energy_mod
from dnsrec_edge.bench.cuda_runtime import load_cuda_runtime
from dnsrec_edge.bench.report import BenchReport, BoardResult
from dnsrec_edge.board import probe as probe_mod
from dnsrec_edge.board import rpc as rpc_mod
from dnsrec_edge.compare import TOLERANCE, TOPK, compare_scores
from dnsrec_edge.compile.artifact import library_arch, load_artifact
from dnsrec_edge.compile.targets import load_target
from dnsrec_edge.errors import (
    CalibrationError,
    DeviceError,
    DeviceUnreachable,
    DnsrecError,
    OutputMismatch,
    OutputNotWritable,
)
from dnsrec_edge.fsio import ensure_new

log = logging.getLogger(__name__)

CHUNK_REPEATS = 10  # repeats timed per RPC call; a dropped connection loses at most one chunk


def _target_priors(name: str) -> tuple[tuple[float, float] | None, int | None]:
    """``((idle_watts, active_watts) or None, threads or None)`` from the target preset."""
    try:
        target = load_target(name)
    except DnsrecError as err:
        log.info("no target preset for '%s' (%s): energy cannot be modelled", name, err)
        return None, None
    power = (float(target.idle_watts), float(target.active_watts)) if target.active_watts else None
    # threads = "auto" presets (x86_64*, arm64) claim no core count: the board's own is used
    return power, None if target.threads_auto else target.threads or None


class _BoardRun:
    """Everything one board session needs; rebuilt after a dropped connection."""

    def __init__(
        self, link: rpc_mod.BoardLink, art: Any, result: BoardResult, opts: dict, session: Any
    ):
        self.link, self.art, self.result, self.opts = link, art, result, opts
        self.session = session  # None: open a fresh one (a reconnect)

    def prepare(self) -> None:
        """Connect, check arch, upload, load, check outputs, set threads, pick the meter."""
        import tvm
        from tvm.runtime.vm import VirtualMachine  # runtime-only TVM installs have no relax

        if self.session is None:
            self.session = self.link.open()
        session = self.session
        manifest, where = self.art.manifest, f"the board at {self.link.label}"
        facts = rpc_mod.board_facts(session)
        if facts is None:
            facts = {"agent": False}
            log.warning(
                "%s runs no dnsrec-edge agent: no board facts, sensors or memory "
                "figures (serve it with `dnsrec-edge device serve`)",
                where,
            )
        else:
            facts["agent"] = True
            if not self.link.named and facts.get("rpc_port"):
                self.result.label = f"{facts['hostname']}:{facts['rpc_port']}"
        self.result.device = facts
        rpc_mod.check_arch(
            self.opts["library_arch"], facts, where, str(self.art.path), manifest["target"]
        )
        threads = self.opts["threads"]
        if not threads and self.opts["target_threads"]:  # the target's count, if the board has it
            threads = rpc_mod.capped_threads(self.opts["target_threads"], facts)
        elif not threads:  # an "auto" preset or none: the board's usable cores
            threads = (facts or {}).get("cpus_available")
        self.result.threads = rpc_mod.set_threads(session, facts, threads)
        lib = Path(self.art.path) / "lib.so"
        name = f"dnsrec_{manifest['files']['lib.so'][:16]}.so"
        if manifest.get("device") == "cuda" and self.link.local and not load_cuda_runtime():
            raise DeviceError(
                f"artifact '{self.art.path}' is a CUDA build and this machine's TVM cannot use "
                "a GPU (no libtvm_runtime_cuda.so or no NVIDIA driver); bench it on a GPU "
                "board with `dnsrec-edge device serve` there"
            )
        module = rpc_mod.load_library(session, str(lib), name, where)
        self.dev = session.cuda(0) if manifest.get("device") == "cuda" else session.cpu()
        self.vm = VirtualMachine(module, self.dev)
        x, ref = self.art.reference()
        self.x = tvm.runtime.tensor(x, self.dev)
        self.weights = self.art.weights(self.dev)  # weight files: mapped here, copied to a board
        out = self.vm[manifest.get("entry", "main")](self.x, *self.weights)
        out = (out[0] if not hasattr(out, "numpy") else out).numpy()
        if out.shape != ref.shape:
            raise OutputMismatch(
                f"{where} returned scores of shape {out.shape}, the reference has {ref.shape}; "
                "the artifact does not match its reference files: recompile it"
            )
        check = compare_scores(out, ref, atol=TOLERANCE, k=TOPK, reference="ONNX Runtime")
        self.result.max_abs_diff, self.result.top10_match = check.max_abs_diff, check.topk_match
        if not check.ok:
            raise OutputMismatch(
                f"outputs on {where} differ from ONNX Runtime (max abs diff "
                f"{check.max_abs_diff:.2e}, limit {TOLERANCE:g}; top-{check.k} "
                f"{'same' if check.topk_match else 'different'}: {check.summary(3)}); nothing "
                "was timed or recorded: recompile the artifact, or check the board's TVM version"
            )
        self.meter, self.meter_note = self._meter(session, facts)

    def _meter(self, session: Any, facts: dict) -> tuple[Any, str]:
        spec, power = self.opts["energy"], self.opts["power"]
        where = f"the board at {self.link.label}"
        if facts.get("emulated") and not spec.startswith("command:"):
            model = energy_mod.ModelMeter(power[1], power[0]) if power else None
            return model, "emulated board: its sensors are the host's, so energy is modelled"
        if self.link.local:
            probe = energy_mod.LocalProbe(self.opts["sysfs_root"])
        elif facts.get("agent"):
            probe = energy_mod.RemoteProbe(session, self.opts["sysfs_root"])
        else:
            probe = None
        return energy_mod.make_meter(spec, probe, power, where)

    def evaluator(self, number: int, repeat: int) -> Callable[..., Any]:
        entry = self.art.manifest.get("entry", "main")
        return self.vm.time_evaluator(
            entry, self.dev, number=number, repeat=repeat, min_repeat_ms=0
        )

    def warmup(self) -> None:
        if self.opts["warmup"] > 0:
            self.evaluator(1, self.opts["warmup"])(self.x, *self.weights)

    def time_chunks(self, on_run: Callable[[int], None] | None) -> None:
        """Time the repeats still missing, in chunks; each finished chunk is kept at once."""
        number = self.opts["number"]
        while (remaining := self.opts["repeat"] - len(self.result.samples_ms)) > 0:
            chunk = min(remaining, CHUNK_REPEATS)
            result = self.evaluator(number, chunk)(self.x, *self.weights)
            self.result.runs.append([float(s) * 1e3 for s in result.results])
            if on_run is not None:
                on_run(len(self.result.runs))

    def measure_energy(self) -> dict[str, Any]:
        meter, note = self.meter, self.meter_note
        stats = self.result.latency_ms()
        latency_s = stats["mean"] / 1e3
        base = {
            "meter": None,
            "note": note or None,
            "idle_watts": None,
            "baseline_subtracted": False,
        }
        if meter is None:
            return base | {"joules_per_inference": None, "source": "none"}
        base["meter"] = meter.describe()
        idle_s = self.opts["idle_baseline_s"]
        if isinstance(meter, energy_mod.ModelMeter):
            return base | {
                "joules_per_inference": meter.joules_per_inference(latency_s, net=idle_s > 0),
                "source": "model",
                "idle_watts": meter.idle_watts if idle_s > 0 else None,
                "baseline_subtracted": idle_s > 0,
            }
        try:
            idle_w = energy_mod.measure_idle(meter, idle_s) if idle_s > 0 else None
            calls = max(1, math.ceil(self.opts["energy_seconds"] / max(latency_s, 1e-6)))
            meter.start()
            self.evaluator(calls, 1)(self.x, *self.weights)
            reading = meter.stop()
        except DeviceError as err:
            log.warning("energy measurement failed: %s", err)
            return base | {"joules_per_inference": None, "source": meter.source, "error": str(err)}
        joules = energy_mod.net_joules(reading, idle_w) if idle_w is not None else reading.joules
        inferences = calls + 1  # time_evaluator makes one untimed call first
        return base | {
            "joules_per_inference": joules / inferences,
            "source": reading.source,
            "window_s": reading.seconds,
            "inferences": inferences,
            "idle_watts": idle_w,
            "baseline_subtracted": idle_w is not None,
            "detail": reading.detail,
        }

    def peak_rss(self) -> int | None:
        if self.link.local:
            return probe_mod.peak_rss_bytes()
        return rpc_mod.peak_rss(self.session)


def _bench_board(
    link: rpc_mod.BoardLink,
    art: Any,
    opts: dict,
    result: BoardResult,
    on_run: Callable[[int], None] | None,
) -> None:
    """Fill ``result`` for one board; one reconnect after a dropped connection."""
    session = link.open()  # unreachable at first: a plain DeviceUnreachable, no retry
    while True:
        run = _BoardRun(link, art, result, opts, session)
        try:
            run.prepare()
            run.warmup()
            run.time_chunks(on_run)
            result.energy = run.measure_energy()
            result.peak_rss_bytes = run.peak_rss()
            return
        except (RuntimeError, DeviceUnreachable) as err:
            cause = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            done = len(result.samples_ms)
            if link.local:
                raise DeviceError(f"the TVM runtime failed running the artifact ({cause})") from err
            if result.reconnects >= 1:
                raise DeviceError(
                    f"the connection to {link.label} dropped during the run and the retry failed "
                    f"({cause}); the {done} finished repeats are kept in the report"
                ) from err
            result.reconnects += 1
            session = None
            log.warning(
                "connection to %s dropped (%s); reconnecting once (%d repeats kept)",
                link.label,
                cause,
                done,
            )


def _links(rpc: str | None, tracker: str | None, key: str | None, devices: int) -> tuple:
    if rpc and tracker:
        raise DeviceUnreachable("pass either --rpc or --rpc-tracker, not both")
    if devices < 1:
        raise DeviceUnreachable(f"--devices must be >= 1 (got {devices})")
    if tracker:
        return "tracker", tracker, rpc_mod.tracker_links(tracker, key or "", devices)
    if devices != 1:
        raise DeviceUnreachable("--devices N needs --rpc-tracker: one --rpc address is one board")
    if rpc:
        return "rpc", rpc, [rpc_mod.rpc_link(rpc)]
    return "local", None, [rpc_mod.local_link()]


def _record(report: BenchReport, board: BoardResult, art: Any, calibration_dir: Any) -> Path:
    from dnsrec_edge.cost.records import append_measurement, is_measured_energy

    energy = board.energy or {}
    measured = is_measured_energy(energy)
    record = {
        "schema": 1,
        "target": report.target,
        "arch": report.archspec,
        "batch": report.batch,
        "seq_len": report.seq_len,
        "latency_ms": board.latency_ms(),
        "energy": {
            "joules_per_inference": energy["joules_per_inference"],
            "source": energy["source"],
        }
        if measured
        else None,
        "device": board.device,
        "artifact_sha256": report.artifact_sha256,
        "tuned": report.tuned,
        "tool_version": __version__,
        "tvm_version": art.manifest.get("tvm_version"),
        "time": report.time,
        "threads": board.threads,
    }
    return append_measurement(report.target, record, calibration_dir)


def benchmark(
    artifact: str | Path,
    *,
    rpc: str | None = None,
    tracker: str | None = None,
    key: str | None = None,
    devices: int = 1,
    threads: int | None = None,
    warmup: int = 10,
    repeat: int = 50,
    number: int = 10,
    energy: str = "auto",
    out: str | Path | None = None,
    record: bool = True,
    calibration_dir: str | Path | None = None,
    force: bool = False,
    idle_baseline_s: float = 0.0,
    energy_seconds: float = 1.0,
    sysfs_root: str = "/",
    on_run: Callable[[int], None] | None = None,
    session_steps: int | None = None,
) -> BenchReport:
    """Benchmark a compiled artifact locally (no ``rpc``/``tracker``), on one RPC board, or
    on ``devices`` boards of a tracker ``key``; return the report (saved to ``out`` if set).

    ``threads`` overrides the target's thread count; ``repeat`` samples of ``number`` calls
    are timed after ``warmup`` calls; ``energy`` is ``auto``, ``rapl``, ``hwmon[:NAME]``,
    ``ina3221[:RAIL]``, ``command:CMD`` or ``model``; ``idle_baseline_s`` > 0 measures idle
    power first and subtracts it; ``sysfs_root`` is where the board's ``/sys`` is mounted
    (a container's view of the host, or a constructed tree in tests). ``on_run(i)`` is called after each timed chunk. A failure
    raises the typed error with ``err.report``, the partial report (also saved to ``out``).
    A streaming artifact (``export --streaming``) is checked and timed by
    :func:`dnsrec_edge.bench.streaming.benchmark_streaming`: one step, and a session of
    ``session_steps`` pushes (default ``max_len``); it returns a ``StreamingBenchReport``.
    """
    if importlib.util.find_spec("tvm") is None:
        raise DeviceError(
            "TVM is not installed in this Python, and the host needs it to drive a board; "
            "install it with: pip install 'dnsrec-edge[tvm]'"
        )
    if repeat < 1 or number < 1 or warmup < 0:
        raise DeviceError("--repeat and --number must be >= 1 and --warmup >= 0")
    if out is not None:
        ensure_new(out, force)
    art = load_artifact(artifact, verify=True)  # also: the manifest's arch is the library's
    manifest = art.manifest
    if manifest.get("streaming"):  # a step graph: one step and a replayed session
        from dnsrec_edge.bench.streaming import benchmark_streaming

        if devices != 1:
            raise DeviceError("a streaming artifact is benched on one board: drop --devices")
        return benchmark_streaming(  # type: ignore[return-value]
            art, rpc=rpc, tracker=tracker, key=key, threads=threads, warmup=warmup,
            repeat=repeat, number=number, steps=session_steps, out=out, force=force,
        )  # fmt: skip
    power, target_threads = _target_priors(manifest["target"])
    opts = {
        "threads": threads,
        "target_threads": target_threads,
        "warmup": warmup,
        "repeat": repeat,
        "number": number,
        "energy": energy,
        "power": power,
        "idle_baseline_s": idle_baseline_s,
        "energy_seconds": energy_seconds,
        "sysfs_root": sysfs_root,
        "library_arch": library_arch(Path(art.path)),
    }
    mode, address, links = _links(rpc, tracker, key, devices)
    report = _new_report(art, opts, mode, address, key if mode == "tracker" else None)
    for link in links:
        board = BoardResult(label=link.label)
        report.boards.append(board)
        try:
            _bench_board(link, art, opts, board, on_run)
        except DnsrecError as err:
            board.error = report.error = str(err)
            err.report = report  # type: ignore[attr-defined]
            if out is not None:
                report.save(out)
            raise
    report.complete = True
    if record:
        _record_boards(report, art, calibration_dir)
    if out is not None:
        report.save(out)
    return report


def _new_report(art: Any, opts: dict, mode: str, address: str | None, key: str | None):
    """The empty report of one run: what was benched, where and with which settings."""
    import tvm

    manifest = art.manifest
    shape = manifest["inputs"][0]["shape"]
    tuning = manifest.get("tuning") or {}
    return BenchReport(
        artifact=str(art.path),
        artifact_sha256=art.sha256,
        target=manifest["target"],
        arch=opts["library_arch"],
        batch=int(shape[0]),
        seq_len=int(shape[1]),
        archspec=manifest.get("archspec"),
        tuned=bool(tuning.get("trials") or tuning.get("scheduled_funcs")),
        library_bytes=art.library.stat().st_size,
        mode=mode,
        address=address,
        key=key,
        host_tvm_version=tvm.__version__,
        settings={k: v for k, v in opts.items() if k not in ("power", "library_arch")},
    )


def _record_boards(report: BenchReport, art: Any, calibration_dir: Any) -> None:
    """Append each non-emulated board's measurement to the store; a store that cannot be
    written leaves the report complete and says so in ``report.record_error``."""
    for board in report.boards:
        if board.device.get("emulated"):
            log.info("board %s is emulated: not recorded as a measurement", board.label)
            continue
        try:
            path = _record(report, board, art, calibration_dir)
        except (OutputNotWritable, CalibrationError) as err:
            report.record_error = str(err)
            log.warning("the measurement on %s was not recorded: %s", board.label, err)
            continue
        log.info("recorded the measurement on %s in %s", board.label, path)
