"""A small resumable stage runner.

A :class:`Stage` is a function with named upstream stages and JSON settings. Each stage
writes into its own folder ``RUN/stages/<name>/``; ``done.json``, written atomically and
last, is the commit marker. It holds the sha256 of the stage's inputs (its settings and the
output hashes of the stages it reads), the sha256 of every file it wrote, its small JSON
result and its wall time.

Re-running skips a stage whose input hash matches and whose files are intact, and redoes a
stage whose inputs changed. Downstream stages see the new output hashes in their own input
hash, so they are redone too unless the upstream outputs came out byte-identical (nothing
downstream could then differ). ``from_stage`` forces a stage and every stage downstream of
it. A stage killed mid-way leaves no ``done.json`` and is redone; finished stages are never
touched. A failing stage raises :class:`StageFailed` naming the stage and the cause.

Example::

    stages = [
        Stage("data", load, settings={"dataset": "ml-100k"}),
        Stage("train", train, deps=("data",), settings={"epochs": 5}),
    ]
    outputs = run_stages("runs/x", stages)      # {name: StageOutput}
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dnsrec_edge import __version__
from dnsrec_edge.errors import DnsrecError, OutputNotWritable, StageFailed, UnknownName
from dnsrec_edge.fsio import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

DONE_SCHEMA = 1
DONE_FILE = "done.json"


@dataclass(frozen=True)
class StageOutput:
    """What a finished stage left: its folder, JSON result, file hashes and timing."""

    name: str
    path: Path
    result: dict[str, Any]
    files: dict[str, str]  # relative path -> sha256
    input_hash: str
    output_hash: str
    wall_seconds: float
    skipped: bool = False  # True when this run reused it
    cpu_seconds: float | None = None  # CPU time of this process's threads while it ran

    def file(self, relpath: str) -> Path:
        """Path of one of the stage's files."""
        return self.path / relpath


@dataclass
class StageContext:
    """What a stage function gets: its settings, the upstream outputs and its folder."""

    name: str
    out: Path  # the stage's (empty) output folder
    settings: dict[str, Any]
    upstream: dict[str, StageOutput]
    quiet: bool = False

    def __getitem__(self, dep: str) -> StageOutput:
        return self.upstream[dep]


@dataclass(frozen=True)
class Stage:
    """A named step: ``run(ctx) -> result`` (a JSON object), reading the ``deps`` outputs.

    ``summary(result) -> str`` gives the one-line summary printed when the stage finishes.
    ``settings`` must be JSON data (paths and tuples are accepted and normalised).
    """

    name: str
    run: Callable[[StageContext], Mapping[str, Any] | None]
    deps: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    summary: Callable[[Mapping[str, Any]], str] | None = None


def canonical(obj: Any) -> Any:
    """JSON-ready copy of settings: paths to strings, tuples to lists, dataclasses to dicts."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return canonical(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"setting value {obj!r} of type {type(obj).__name__} is not JSON data")


def hash_json(obj: Any) -> str:
    """sha256 of the canonical JSON form of ``obj``."""
    text = json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hash_outputs(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except ``done.json`` (sorted relative paths)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != DONE_FILE)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}


def _read_done(folder: Path) -> dict[str, Any] | None:
    path = folder / DONE_FILE
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable %s (%s); the stage will be redone", path, err)
        return None
    if not isinstance(done, dict) or done.get("schema") != DONE_SCHEMA:
        return None
    return done


def _intact(folder: Path, done: dict[str, Any]) -> bool:
    """Every file ``done.json`` lists is there with its recorded sha256."""
    files = done.get("files")
    if not isinstance(files, dict):
        return False
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file() or sha256_file(path) != digest:
            log.warning("%s changed or vanished since the stage finished; redoing it", path)
            return False
    return True


def _output_hash(files: Mapping[str, str], result: Mapping[str, Any]) -> str:
    return hash_json({"files": files, "result": result})


def _descendants(stages: Sequence[Stage], root: str) -> list[str]:
    """``root`` and every stage that reads it, directly or through others, in order."""
    hit = {root}
    for stage in stages:
        if any(d in hit for d in stage.deps):
            hit.add(stage.name)
    return [s.name for s in stages if s.name in hit]


def _check_graph(stages: Sequence[Stage]) -> None:
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"stage '{stage.name}' is listed twice")
        missing = [d for d in stage.deps if d not in seen]
        if missing:
            raise ValueError(f"stage '{stage.name}' reads {missing} which do not come before it")
        seen.add(stage.name)


@contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """One pipeline at a time per run folder (the kernel drops the lock if we are killed)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fh = open(run_dir / ".lock", "a")  # noqa: SIM115 (held for the whole run)
    except OSError as err:
        raise OutputNotWritable(
            f"cannot write to run folder '{run_dir}' ({err.strerror}); choose a writable --out"
        ) from err
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise OutputNotWritable(
                f"run folder '{run_dir}' is in use by another pipeline; wait for it or "
                "choose another --out"
            ) from err
        yield
    finally:
        fh.close()


def _default_echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_stages(
    run_dir: str | Path,
    stages: Sequence[Stage],
    *,
    from_stage: str | None = None,
    quiet: bool = False,
    echo: Callable[[str], None] | None = None,
) -> dict[str, StageOutput]:
    """Run ``stages`` (listed upstream first) in ``run_dir``, skipping what is already done.

    Returns every stage's :class:`StageOutput`. Raises :class:`StageFailed` when a stage
    fails (earlier stages stay finished) and ``UnknownName`` for an unknown ``from_stage``.
    """
    _check_graph(stages)
    names = [s.name for s in stages]
    if from_stage is not None and from_stage not in names:
        raise UnknownName("stage", from_stage, names)
    echo = echo or (lambda _line: None if quiet else _default_echo(_line))
    run_dir = Path(run_dir)
    root = run_dir / "stages"
    forced = set(_descendants(stages, from_stage)) if from_stage else set()
    width = max(len(n) for n in names) if names else 0
    outputs: dict[str, StageOutput] = {}
    with _run_lock(run_dir):
        for name in forced:  # invalidate the whole restart set before any work
            (root / name / DONE_FILE).unlink(missing_ok=True)
        for index, stage in enumerate(stages, start=1):
            upstream = {d: outputs[d] for d in stage.deps}
            settings = canonical(stage.settings)
            inputs = {
                "stage": stage.name,
                "tool_version": __version__,
                "settings": settings,
                "upstream": {d: upstream[d].output_hash for d in stage.deps},
            }
            input_hash = hash_json(inputs)
            folder = root / stage.name
            done = _read_done(folder)
            if done and done.get("input_hash") == input_hash and _intact(folder, done):
                out = StageOutput(
                    stage.name,
                    folder,
                    done["result"],
                    done["files"],
                    input_hash,
                    done["output_hash"],
                    float(done["wall_seconds"]),
                    skipped=True,
                    cpu_seconds=done.get("cpu_seconds"),
                )
                outputs[stage.name] = out
                echo(f"  {stage.name:<{width}}  done    {_summary(stage, out.result)}")
                continue
            echo(f"[{index}/{len(stages)}] {stage.name} ...")
            out = _execute(stage, folder, settings, upstream, inputs, input_hash, quiet)
            outputs[stage.name] = out
            echo(
                f"  {stage.name:<{width}}  {_fmt_seconds(out.wall_seconds):>6}  "
                f"{_summary(stage, out.result)}"
            )
    return outputs


def _execute(
    stage: Stage,
    folder: Path,
    settings: dict[str, Any],
    upstream: dict[str, StageOutput],
    inputs: dict[str, Any],
    input_hash: str,
    quiet: bool,
) -> StageOutput:
    """Run one stage in a clean folder and commit it with ``done.json``."""
    (folder / DONE_FILE).unlink(missing_ok=True)  # uncommitted from here on
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    failed_log = folder.parent / f"{stage.name}.failed.txt"
    failed_log.unlink(missing_ok=True)
    ctx = StageContext(stage.name, folder, settings, upstream, quiet)
    started = datetime.now(UTC)
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        result = canonical(dict(stage.run(ctx) or {}))
    except DnsrecError as err:
        raise StageFailed(f"stage '{stage.name}' failed: {err}") from err
    except Exception as err:
        failed_log.write_text(traceback.format_exc(), encoding="utf-8")
        raise StageFailed(
            f"stage '{stage.name}' failed: {type(err).__name__}: {err} "
            f"(traceback in {failed_log}); finished stages are kept, rerun to resume"
        ) from err
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    files = _hash_outputs(folder)
    output_hash = _output_hash(files, result)
    atomic_write_json(
        folder / DONE_FILE,
        {
            "schema": DONE_SCHEMA,
            "stage": stage.name,
            "input_hash": input_hash,
            "inputs": inputs,
            "files": files,
            "output_hash": output_hash,
            "result": result,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),  # this process, all threads (not child processes)
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "tool_version": __version__,
            "pid": os.getpid(),
        },
    )
    return StageOutput(
        stage.name, folder, result, files, input_hash, output_hash, wall, cpu_seconds=cpu
    )


def _summary(stage: Stage, result: Mapping[str, Any]) -> str:
    if stage.summary is None:
        return ""
    try:
        return stage.summary(result)
    except (KeyError, TypeError, ValueError) as err:  # an old result without a field
        log.debug("no summary for stage %s: %s", stage.name, err)
        return ""


def _fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m{sec:02d}s"
