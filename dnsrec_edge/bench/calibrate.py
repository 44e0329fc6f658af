"""Calibration run: sample architectures, compile and measure each, fit the target's cost model.

Each sampled architecture is built as a SASRec with random weights (latency does not depend
on the weights), exported to ONNX at batch 1, compiled for the target with its default build
(no tuning) and benchmarked; ``benchmark`` appends each measurement to the store. The
model is then fitted on every record (``dnsrec_edge.cost.calibrate.fit_records``).

Each measurement times single calls (``number=1``), so its ``min`` is the fastest call: the
figure the code and the board determine. On a machine shared with other work the median
moves with the load (on the 2-core machine this was made on, medians of one artifact varied
by 2x between rounds while the fastest call stayed within a few percent).

Example::

    result = calibrate("x86_64", local=True, samples=40)
    print(result.summary())
    calibrate("x86_64", refit=True)      # refit from the records alone
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from dnsrec_edge.cost.calibrate import CalibrationResult, check_model_file, fit_records
from dnsrec_edge.cost.calibrated import TargetFacts
from dnsrec_edge.cost.records import board_key, duplicate_key, load_records
from dnsrec_edge.cost.sampling import SearchSpace, sample_archs
from dnsrec_edge.errors import CalibrationError, CompileError, OutputMismatch
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.progress import track

log = logging.getLogger(__name__)

WARMUP = 5  # calls before timing, per measurement
REPEAT = 200  # single calls timed per measurement


def calibrate(
    target: Any,
    *,
    local: bool = False,
    rpc: str | None = None,
    tracker: str | None = None,
    key: str | None = None,
    samples: int = 40,
    refit: bool = False,
    calibration_dir: str | Path | None = None,
    seed: int = 0,
    quiet: bool = False,
    rounds: int = 3,
    threads: int | None = None,
    statistic: str = "min",
    space: SearchSpace | None = None,
) -> CalibrationResult:
    """Measure ``samples`` sampled architectures on the target (or only ``refit``) and fit.

    Exactly one of ``local``, ``rpc`` ("host:port") or ``tracker`` ("host:port", with
    ``key``) says where to measure, unless ``refit``. Each architecture is measured in
    ``rounds`` interleaved rounds of ``REPEAT`` single calls, with ``threads`` TVM threads
    (default: the target's, capped at the board's cores). A library already measured on the
    same board (same sha256) is not measured again, so an interrupted run resumes where it
    stopped, while builds of a newer toolkit's schedules are measured anew.
    The model fits ``statistic`` ("min" or "median") of each measurement.
    """
    facts = TargetFacts.of(target)
    check_model_file(facts, calibration_dir)
    measured = skipped = 0
    failed: list[str] = []
    if not refit:
        where = [
            w for w, on in (("--local", local), ("--rpc", rpc), ("--rpc-tracker", tracker)) if on
        ]
        if len(where) != 1:
            raise CalibrationError(
                "say where to measure with exactly one of --local, --rpc HOST:PORT or "
                f"--rpc-tracker HOST:PORT (got {', '.join(where) or 'none'}), or pass --refit"
            )
        if tracker and not key:
            raise CalibrationError("--rpc-tracker needs --rpc-key KEY naming the board's key")
        if samples < 1 or rounds < 1:
            raise CalibrationError(
                f"--samples and --rounds must be >= 1 (got {samples} and {rounds})"
            )
        archs = sample_archs(space or SearchSpace(), samples, seed=seed)
        where = {"rpc": rpc, "tracker": tracker, "key": key, "threads": threads}
        measured, skipped, failed = _measure(
            archs,
            facts.name,
            where,
            rounds=rounds,
            calibration_dir=calibration_dir,
            seed=seed,
            quiet=quiet,
        )
    model, path, plot = fit_records(facts, calibration_dir, statistic)
    return CalibrationResult(facts.name, model, path, plot, measured, skipped, failed)


def measure_architecture(
    arch: ArchSpec,
    target: Any,
    *,
    rpc: str | None = None,
    tracker: str | None = None,
    key: str | None = None,
    threads: int | None = None,
    rounds: int = 3,
    statistic: str = "min",
    calibration_dir: str | Path | None = None,
    seed: int = 0,
) -> float:
    """Compile ``arch`` (random weights) and measure it as calibration does; return the ms.

    The result merges the rounds as a fit does (``min``: the fastest round; else the median
    over rounds); every measurement is appended to the target's store (closing the loop:
    the next fit uses it).
    """
    import statistics

    name = TargetFacts.of(target).name
    where = {"rpc": rpc, "tracker": tracker, "key": key, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="dnsrec-measure-") as tmp:
        path, _sha = _compile_arch(arch, name, Path(tmp), seed, threads)
        reports = [_bench(path, where, calibration_dir) for _ in range(rounds)]
    values = [r.boards[0].latency_ms()[statistic] for r in reports]
    return min(values) if statistic == "min" else statistics.median(values)


def _compile_arch(
    arch: ArchSpec, target: str, folder: Path, seed: int, threads: int | None = None
) -> tuple[Path, str]:
    """Export a random-weight SASRec of ``arch`` and compile it (default build, made for
    ``threads`` when given: the count it is measured at, as the pipeline builds what it
    benches): the artifact's folder and its library's sha256 (the same code, weights and
    build give the same one)."""
    import torch

    from dnsrec_edge.compile.build import compile as compile_onnx
    from dnsrec_edge.export.onnx_export import export_onnx
    from dnsrec_edge.models.sasrec import SASRec

    torch.manual_seed(seed)
    onnx_path = export_onnx(SASRec(arch).eval(), folder / "model.onnx", batch=1)
    artifact = compile_onnx(
        onnx_path,
        target=target,
        out_dir=folder / "artifact",
        batch=1,
        tune=False,
        quiet=True,
        threads=threads,
    )
    return Path(artifact.path), artifact.sha256


def _bench(path: Path, where: dict[str, Any], calibration_dir: str | Path | None):
    """One measurement of ``REPEAT`` single calls on the board ``where`` names (``rpc``,
    ``tracker``, ``key``, ``threads``), recorded in the store; the BenchReport."""
    from dnsrec_edge.bench.run import benchmark

    return benchmark(
        path,
        **where,
        warmup=WARMUP,
        repeat=REPEAT,
        number=1,
        record=True,
        calibration_dir=calibration_dir,
    )


def _measure(archs, target: str, where: dict[str, Any], *, rounds, calibration_dir, seed, quiet):
    """Export and compile each architecture, then benchmark them all ``rounds`` times.

    Rounds interleave the architectures, so a burst of load on a shared machine spreads over
    many of them rather than skewing one; the fit takes the median over rounds (repeat
    measurements of one artifact on one board are merged). ``benchmark`` appends every
    measurement to the store as it finishes, so an interrupted run loses nothing.
    """
    # measurements per (library sha256, board): a build of other code (a newer toolkit's
    # schedules) is measured again, the same build is not (an interrupted run resumes)
    counts: dict[tuple[str, str], int] = {}
    for record in load_records(target, calibration_dir, warn=False):
        k = duplicate_key(record)
        counts[k] = counts.get(k, 0) + 1
    board = None
    measured, skipped, failed = 0, 0, []
    with tempfile.TemporaryDirectory(prefix="dnsrec-calibrate-") as tmp:
        artifacts = []
        for i, arch in enumerate(track(archs, f"compiling for {target}", quiet=quiet)):
            try:
                path, sha = _compile_arch(
                    arch, target, Path(tmp) / f"arch{i:03d}", seed * 100003 + i, where["threads"]
                )
            except (CompileError, OutputMismatch) as err:
                failed.append(f"{_describe(arch)}: {err}")
                log.warning("architecture %d (%s) failed: %s", i, _describe(arch), err)
                continue
            artifacts.append((arch, path, sha))
        for r in range(rounds):
            for arch, path, sha in track(
                artifacts, f"measuring, round {r + 1} of {rounds}", quiet=quiet
            ):
                if board is not None and counts.get((sha, board), 0) > r:
                    skipped += r == 0
                    continue
                try:
                    report = _bench(path, where, calibration_dir)
                except OutputMismatch as err:
                    failed.append(f"{_describe(arch)}: {err}")
                    log.warning("%s failed on the board: %s", _describe(arch), err)
                    continue
                board = board_key(report.boards[0].device)
                measured += r == 0
                stats = report.boards[0].latency_ms()
                log.info(
                    "%s: %.3f ms min, %.3f ms median",
                    _describe(arch),
                    stats["min"],
                    stats["median"],
                )
    return measured, skipped, failed


def _describe(arch) -> str:
    blocks = " ".join(f"{b.heads}h/{b.ffn}f/{b.gate_hidden}g/{b.attention[0]}" for b in arch.blocks)
    return f"items={arch.n_items} L={arch.max_len} [{blocks}]"
