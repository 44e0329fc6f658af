"""The wheel carries the shipped targets and calibration, and an installed copy finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("setuptools")


@pytest.mark.slow
def test_wheel_ships_targets_and_calibration(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("dnsrec_edge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for toml in (REPO / "targets").glob("*.toml"):
        assert f"dnsrec_edge/targets/{toml.name}" in names
    assert "dnsrec_edge/calibration/x86_64/model.json" in names
    assert "dnsrec_edge/calibration/x86_64/records.jsonl" in names

    # unpacked like an install: paths resolve inside the package, not a source checkout
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "from dnsrec_edge import paths; "
        "print(paths.targets_dir()); print(paths.shipped_calibration_dir())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(site / "dnsrec_edge" / "targets"), str(site / "dnsrec_edge" / "calibration")]
