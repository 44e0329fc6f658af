"""Which board measures a target, when a caller names at most one: how the pipeline benches.

:func:`bench_mode` decides from the target and the options given: an emulated arm64 board,
a board behind ``rpc`` or a tracker, this host when the target is its own kind, or none (then
the target is compiled, not measured). :func:`board` turns that mode into the keyword
arguments of :func:`dnsrec_edge.bench.run.benchmark`, starting and stopping the emulator.

Example::

    mode, note = bench_mode("x86_64", emulate=False, rpc=None, tracker=None)   # "local", ...
    with board(mode) as where:
        benchmark("artifact", **where)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dnsrec_edge.compile.targets import load_target
from dnsrec_edge.errors import PipelineError
from dnsrec_edge.hostinfo import host_arch


def bench_mode(
    target_name: str, emulate: bool, rpc: str | None, tracker: str | None
) -> tuple[str, str]:
    """How the target is measured (local, rpc, tracker, emulate or none), and a note."""
    target = load_target(target_name)
    if emulate:
        if target.arch != "aarch64":
            raise PipelineError(
                f"--emulate runs arm64 targets only, not {target.name} ({target.arch}); "
                "pass --target arm64 or drop --emulate"
            )
        return "emulate", "emulated arm64 board (qemu-user on this host): not the board's timings"
    if rpc:
        return "rpc", f"board at {rpc}"
    if tracker:
        return "tracker", f"board from tracker {tracker}"
    if target.runs_here:
        return "local", f"this host ({host_arch()})"
    return "none", (
        f"no board named for {target.name} ({target.arch}): compiled, not measured "
        "(pass --rpc, --rpc-tracker or --emulate)"
    )


@contextmanager
def board(
    mode: str, rpc: str | None = None, tracker: str | None = None, key: str | None = None
) -> Iterator[dict[str, Any]]:
    """``benchmark`` keyword arguments for the board of ``mode`` (an emulator runs inside)."""
    if mode == "emulate":
        from dnsrec_edge.bench.emulate import EmulatedBoard

        emulator = EmulatedBoard("arm64", quiet=True).start()
        try:
            yield {"rpc": emulator.address}
        finally:
            emulator.stop()
    elif mode == "rpc":
        yield {"rpc": rpc}
    elif mode == "tracker":
        yield {"tracker": tracker, "key": key}
    else:
        yield {}
