"""The stage runner: skip, redo what changed, --from, failures and SIGKILL leave finished work."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dnsrec_edge.errors import StageFailed, UnknownName
from dnsrec_edge.pipeline.stages import DONE_FILE, Stage, run_stages


def _make_stages(calls, settings=None, fail_in=None):
    """a -> b -> c, and d reads only a; each writes a file derived from its inputs."""
    settings = settings or {}

    def make(name):
        def run(ctx):
            calls.append(name)
            if name == fail_in:
                (ctx.out / "partial.txt").write_text("half")
                raise RuntimeError("disk on fire")
            upstream = "+".join(ctx[d].file("out.txt").read_text() for d in sorted(ctx.upstream))
            text = f"{name}({ctx.settings.get('k', '')})[{upstream}]"
            (ctx.out / "out.txt").write_text(text)
            return {"text": text}

        return run

    deps = {"a": (), "b": ("a",), "c": ("b",), "d": ("a",)}
    return [
        Stage(n, make(n), deps=deps[n], settings=settings.get(n, {}), summary=lambda r: r["text"])
        for n in ("a", "b", "c", "d")
    ]


def test_first_run_then_rerun_does_nothing(tmp_path):
    calls = []
    out = run_stages(tmp_path, _make_stages(calls), quiet=True)
    assert calls == ["a", "b", "c", "d"]
    assert out["c"].result["text"] == "c()[b()[a()[]]]"
    done = json.loads((tmp_path / "stages" / "c" / DONE_FILE).read_text())
    assert set(done) >= {"input_hash", "files", "output_hash", "wall_seconds", "inputs"}
    assert done["inputs"]["upstream"] == {"b": out["b"].output_hash}
    calls.clear()
    lines = []
    again = run_stages(tmp_path, _make_stages(calls), echo=lines.append)
    assert calls == []
    assert all(o.skipped for o in again.values())
    assert len(lines) == 4 and "done" in lines[0] and "a()[]" in lines[0]


def test_changed_setting_reruns_only_dependent_stages(tmp_path):
    calls = []
    run_stages(tmp_path, _make_stages(calls), quiet=True)
    calls.clear()
    out = run_stages(tmp_path, _make_stages(calls, settings={"b": {"k": 2}}), quiet=True)
    assert calls == ["b", "c"]  # a and d read nothing that changed
    assert out["c"].result["text"] == "c()[b(2)[a()[]]]"
    assert out["a"].skipped and out["d"].skipped and not out["c"].skipped


def test_from_stage_forces_it_and_downstream(tmp_path):
    calls = []
    run_stages(tmp_path, _make_stages(calls), quiet=True)
    calls.clear()
    run_stages(tmp_path, _make_stages(calls), from_stage="b", quiet=True)
    assert calls == ["b", "c"]
    with pytest.raises(UnknownName, match="unknown stage 'bb'.*did you mean b"):
        run_stages(tmp_path, _make_stages(calls), from_stage="bb", quiet=True)


def test_tampered_output_is_redone(tmp_path):
    calls = []
    run_stages(tmp_path, _make_stages(calls), quiet=True)
    (tmp_path / "stages" / "d" / "out.txt").write_text("edited by hand")
    calls.clear()
    run_stages(tmp_path, _make_stages(calls), quiet=True)
    assert calls == ["d"]


def test_failure_keeps_earlier_stages_and_failed_stage_reruns(tmp_path):
    calls = []
    with pytest.raises(StageFailed, match="stage 'b' failed: RuntimeError: disk on fire") as err:
        run_stages(tmp_path, _make_stages(calls, fail_in="b"), quiet=True)
    assert isinstance(err.value.__cause__, RuntimeError)
    assert calls == ["a", "b"]
    assert (tmp_path / "stages" / "a" / DONE_FILE).exists()
    assert not (tmp_path / "stages" / "b" / DONE_FILE).exists()
    assert "disk on fire" in (tmp_path / "stages" / "b.failed.txt").read_text()
    calls.clear()
    out = run_stages(tmp_path, _make_stages(calls), quiet=True)
    assert calls == ["b", "c", "d"]
    assert not (out["b"].path / "partial.txt").exists()


def test_settings_must_be_json_data(tmp_path):
    stage = Stage("a", lambda ctx: {}, settings={"x": object()})
    with pytest.raises(TypeError, match="not JSON data"):
        run_stages(tmp_path, [stage], quiet=True)


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from dnsrec_edge.pipeline.stages import Stage, run_stages

    run, log = Path(sys.argv[1]), Path(sys.argv[2])

    def make(name, slow):
        def fn(ctx):
            with open(log, "a") as fh:
                fh.write(name + "\\n")
            (ctx.out / "out.txt").write_text(name)
            if slow and len(sys.argv) > 3:
                (run / "slow-started").write_text("")
                time.sleep(60)
            return {"name": name}
        return fn

    stages = [Stage("one", make("one", False)), Stage("two", make("two", True), deps=("one",)),
              Stage("three", make("three", False), deps=("two",))]
    run_stages(run, stages, quiet=True)
    """
)


def test_sigkill_mid_stage_loses_nothing_finished(tmp_path):
    script = tmp_path / "pipe.py"
    script.write_text(_KILL_SCRIPT)
    run, log = tmp_path / "run", tmp_path / "calls.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(run), str(log), "slow"])
    deadline = time.monotonic() + 60
    while not (run / "slow-started").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    done_one = (run / "stages" / "one" / DONE_FILE).read_bytes()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "stages" / "two" / DONE_FILE).exists()
    subprocess.run([sys.executable, str(script), str(run), str(log)], check=True)
    assert log.read_text().split() == ["one", "two", "two", "three"]
    assert (run / "stages" / "one" / DONE_FILE).read_bytes() == done_one
    assert (run / "stages" / "three" / DONE_FILE).exists()
