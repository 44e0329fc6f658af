"""``bench`` for a streaming artifact: check one step, time a step and a replayed session.

Order of work: verify the artifact (sha256s, ELF machine), open the board (this host, ``rpc``
or a tracker key), refuse another architecture, upload and load the library, run the stored
reference step and compare it with ONNX Runtime's outputs (scores under the comparison rule,
caches within 1e-4; a mismatch fails and times nothing), then time:

- ``step_ms``: one step (``time_evaluator`` on the cache after a few pushes: the latency of
  one new interaction on the device, without host round trips);
- ``session``: ``steps`` pushes of random catalogue items through a
  :class:`~dnsrec_edge.compile.session.StreamingSession` from an empty cache, timed one by one
  on the host (includes the host's call overhead, and the RPC round trip on a remote board).

Streaming measurements are not appended to the calibration records (the cost model fits
whole-sequence runs).
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge import __version__
from dnsrec_edge.board import probe as probe_mod
from dnsrec_edge.board import rpc as rpc_mod
from dnsrec_edge.compile.artifact import Artifact, load_artifact
from dnsrec_edge.compile.session import StreamingSession
from dnsrec_edge.compile.streaming import REFERENCE_INPUT, REFERENCE_OUTPUT, check_step
from dnsrec_edge.errors import DeviceError
from dnsrec_edge.fsio import atomic_write_json, ensure_new

log = logging.getLogger(__name__)


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "median": float(np.median(a)),
        "mean": float(a.mean()),
        "p90": float(np.percentile(a, 90)),
        "min": float(a.min()),
        "std": float(a.std()),
        "samples": len(a),
    }


@dataclass
class StreamingBenchReport:
    """What ``bench`` measured on a streaming artifact (``to_dict`` is the JSON report)."""

    artifact: str
    data: dict[str, Any] = field(default_factory=dict)
    record_error: str | None = None  # the CLI's warning slot; streaming runs are not recorded

    def latency_ms(self) -> dict[str, float]:
        return self.data["step_ms"]

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, **self.data}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(Path(path), self.to_dict())

    def summary(self, console: Any = None) -> None:
        from rich.console import Console

        console = console or Console()
        d = self.data
        step, sess = d["step_ms"], d["session"]
        console.print(
            f"[bold]{self.artifact}[/bold] (streaming step, {d['target']}) on {d['board']}, "
            f"{d['threads']} thread(s): reference step max abs diff {d['max_abs_diff']:.2g}"
        )
        console.print(
            f"  step: median {step['median']:.4f} ms, p90 {step['p90']:.4f} ms "
            f"({step['samples']} samples)"
        )
        console.print(
            f"  session of {sess['steps']} pushes: {sess['ms_per_push']['median']:.4f} ms "
            f"median per push, {sess['total_ms']:.2f} ms in all ({sess['reprimes']} re-primes)"
        )
        cache = d["cache_bytes_per_user"]
        rss = d.get("peak_rss_bytes")
        console.print(
            f"  cache {cache:,} bytes per user"
            + (f"; peak RSS {rss / 2**20:.1f} MiB" if rss else "")
        )


def benchmark_streaming(
    artifact: str | Path | Artifact,
    *,
    rpc: str | None = None,
    tracker: str | None = None,
    key: str | None = None,
    threads: int | None = None,
    warmup: int = 10,
    repeat: int = 50,
    number: int = 10,
    steps: int | None = None,
    keep: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    force: bool = False,
) -> StreamingBenchReport:
    """Check and time a streaming artifact on one board; ``steps`` defaults to ``max_len``."""
    import tvm
    from tvm.runtime.vm import VirtualMachine  # runtime-only TVM installs have no relax

    if out is not None:
        ensure_new(out, force)
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact, verify=True)
    manifest = art.manifest
    layout = manifest.get("streaming")
    if not layout:
        raise DeviceError(f"artifact '{art.path}' is not a streaming step; bench it without it")
    link, session = rpc_mod.open_board(rpc, tracker, key)
    where = f"the board at {link.label}"
    facts = rpc_mod.board_facts(session)
    rpc_mod.check_arch(manifest.get("arch"), facts, where, str(art.path), manifest["target"])
    if not threads and manifest.get("threads"):
        threads = rpc_mod.capped_threads(int(manifest["threads"]), facts)
    if facts is not None:
        facts["agent"] = True
    used_threads = rpc_mod.set_threads(session, facts, threads)
    name = f"dnsrec_{art.sha256[:16]}.so"
    module = rpc_mod.load_library(session, str(art.library), name, where)
    dev = session.cpu()
    vm = VirtualMachine(module, dev)
    entry = manifest.get("entry", "main")

    feeds = dict(np.load(Path(art.path) / REFERENCE_INPUT, allow_pickle=False))
    ref = np.load(Path(art.path) / REFERENCE_OUTPUT, allow_pickle=False)
    ref_out = [ref[o["name"]] for o in manifest["outputs"]]
    args = [tvm.runtime.tensor(feeds[i["name"]], dev) for i in manifest["inputs"]]
    vm.set_input(entry, *args)  # a tuple returned over RPC is opaque: the stateful calls
    vm.invoke_stateful(entry)
    got = [t.numpy() for t in vm.get_outputs(entry)]
    diff = check_step(got, ref_out, f"the step on {where}")

    evaluator = vm.time_evaluator(entry, dev, number=number, repeat=repeat, min_repeat_ms=0)
    if warmup:
        vm.time_evaluator(entry, dev, number=1, repeat=warmup, min_repeat_ms=0)(*args)
    step_ms = [float(s) * 1e3 for s in evaluator(*args).results]

    if link.local:  # in-process, as a device app runs it (not through the RPC session)
        stream = StreamingSession.from_artifact(art, keep=keep, threads=used_threads)
    else:
        stream = StreamingSession.from_module(module, dev, layout, entry=entry, keep=keep, rpc=True)
    n = int(steps or layout["max_len"])
    items = np.random.default_rng(seed).integers(1, int(layout["n_items"]) + 1, size=n)
    for item in items[: min(5, n)]:  # warm the host side too
        stream.push(int(item))
    stream.reset()
    stream.reprimes = 0
    per_push, t_all = [], time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        stream.push(int(item))
        per_push.append((time.perf_counter() - t0) * 1e3)
    total_ms = (time.perf_counter() - t_all) * 1e3
    rss = probe_mod.peak_rss_bytes() if link.local else rpc_mod.peak_rss(session)

    report = StreamingBenchReport(artifact=str(art.path))
    report.data = {
        "kind": "streaming",
        "artifact_sha256": art.sha256,
        "target": manifest["target"],
        "arch": manifest.get("arch"),
        "archspec": manifest.get("archspec"),
        "board": link.label,
        "device": facts,
        "threads": used_threads,
        "max_abs_diff": diff,
        "step_ms": latency_stats(step_ms),
        "session": {
            "steps": n,
            "keep": stream.keep,
            "reprimes": stream.reprimes,
            "ms_per_push": latency_stats(per_push),
            "total_ms": total_ms,
        },
        "cache_bytes_per_user": int(layout.get("cache_bytes_per_user", 0)),
        "peak_rss_bytes": rss,
        "settings": {"warmup": warmup, "repeat": repeat, "number": number, "seed": seed},
        "recorded": False,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "host_tvm_version": tvm.__version__,
    }
    if out is not None:
        report.save(out)
    return report
