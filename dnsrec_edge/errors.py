"""Typed errors a user can cause; the CLI turns each into one sentence and exit code 1.

Every message names the bad input and the fix. Raise these (not ``assert``) for anything
that comes from a user: paths, names, budgets, files, devices.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DnsrecError(Exception):
    """Base class: ``str(err)`` is the one sentence shown to the user."""

    exit_code = 1


class UnknownName(DnsrecError):
    """A name (dataset, target, stage, ...) that is not in a registry."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        super().__init__(f"unknown {kind} '{name}'; known: {', '.join(known)}{hint}")
        self.name, self.known = name, known


class UnknownDataset(UnknownName):
    def __init__(self, name: str, known: Iterable[str]):
        super().__init__("dataset", name, known)


class UnknownTarget(UnknownName):
    def __init__(self, name: str, known: Iterable[str]):
        super().__init__("target", name, known)


class InputFileError(DnsrecError):
    """A file the user named is missing, unreadable, corrupt or of the wrong shape."""


class DataError(DnsrecError):
    """Interaction data that cannot be used (bad columns, bad timestamps, empty after filtering)."""


class ChecksumMismatch(DnsrecError):
    """A cached or downloaded file whose sha256 differs from the expected one."""


class CheckpointMismatch(DnsrecError):
    """A checkpoint used with a dataset, architecture or tool it was not made for."""


class ArchSpecError(DnsrecError):
    """An architecture description that is malformed or does not fit the search space."""


class BudgetError(DnsrecError):
    """A resource budget that cannot be parsed or cannot be met."""


class OutputExists(DnsrecError):
    """An output path that already exists; nothing is overwritten without ``--force``."""

    def __init__(self, path: object):
        super().__init__(f"output '{path}' already exists; choose another path or pass --force")


class OutputNotWritable(DnsrecError):
    """An output folder that cannot be written."""


class OutputMismatch(DnsrecError):
    """A converted or compiled model whose outputs differ from the reference."""


class NonFiniteScores(DnsrecError):
    """A model that returns NaN or infinite scores (damaged weights, diverged training)."""


class CompileError(DnsrecError):
    """TVM could not import or build a model."""


class CrossCompilerMissing(DnsrecError):
    """The cross compiler a target names is not installed."""


class DeviceUnreachable(DnsrecError):
    """An RPC server or tracker that cannot be reached."""


class DeviceError(DnsrecError):
    """A board that is reachable but cannot run the artifact."""


class CalibrationError(DnsrecError):
    """Measurement records or cost-model files that cannot be used."""


class StageFailed(DnsrecError):
    """A pipeline stage that failed; the message names the stage and the cause."""


class ExportError(DnsrecError):
    """An export request that cannot be met (top-k larger than the item count, bad batch)."""


class PipelineError(DnsrecError):
    """Pipeline options that do not fit together (e.g. --emulate with a non-arm64 target)."""


class TrainConfigError(DnsrecError):
    """Training settings that cannot be used (unknown loss or schedule, non-positive sizes)."""


class StreamingError(DnsrecError):
    """A streaming session asked to do something its step model cannot; the cache is unchanged."""


class UnknownItem(StreamingError):
    """An item id outside the catalogue (1..n_items) pushed into a streaming session."""


class PositionOutOfRange(StreamingError):
    """A cache length or position past the step model's cache (max_len)."""


class CacheShapeMismatch(StreamingError):
    """A key/value cache whose count, shape or dtype differs from the step model's layout."""


class NotStreaming(StreamingError):
    """A model or artifact that is not a streaming step graph, given to the streaming API."""
