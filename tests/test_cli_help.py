"""Every command has help text, and ``--help`` loads neither torch nor TVM."""

import subprocess
import sys

import click
from click.testing import CliRunner

from dnsrec_edge.cli import main


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


def test_every_command_and_option_has_help():
    missing = []
    for path, cmd in _commands(main):
        if not (cmd.help or cmd.short_help):
            missing.append(" ".join(path))
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert not missing, f"without help text: {missing}"


def test_help_runs_for_every_command():
    runner = CliRunner()
    for path, _ in _commands(main):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_help_is_light():
    code = (
        "import sys; from dnsrec_edge.cli import main\n"
        "heavy = [m for m in ('torch', 'tvm', 'onnx', 'onnxruntime', 'pandas') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
