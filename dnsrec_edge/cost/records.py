"""The measurement store: one append-only JSON Lines file of records per target.

Layout: ``<store>/<target>/records.jsonl``. The ``calibration/`` folder shipped with the
toolkit is read-only data; new records go to a user store (``$DNSREC_EDGE_HOME/calibration``,
or ``calibration_dir`` when given) that overlays it: :func:`load_records` returns the shipped
records followed by the store's. Lines are never rewritten; a torn or malformed line (a crash
mid-append, a hand edit) is skipped with a warning naming the file and line.

Record schema 1::

    {"schema": 1, "target", "arch": ArchSpec dict | null, "batch", "seq_len",
     "latency_ms": {"mean", "median", "p90", "p99", "std", "min", "max"},
     "energy": {"joules_per_inference", "source"} | null, "device": {...},
     "artifact_sha256", "tuned", "tool_version", "tvm_version", "time"}

An energy figure is a measurement only when its ``source`` is one of
:data:`MEASURED_SOURCES`, the labels bench's meters (``bench/energy.py``) give their
readings. The set lives here, with the record schema, because both sides read it: bench
decides with it what to record and the cost model's energy fit what to use, and ``cost``
sits below ``bench`` (it may not import it). ``model`` (a power prior x latency) is never a
measurement.

Example::

    append_measurement("x86_64", record)        # -> ~/.cache/dnsrec-edge/calibration/x86_64/records.jsonl
    records = load_records("x86_64")            # shipped + user records, each with an "id"
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from dnsrec_edge import paths
from dnsrec_edge.errors import CalibrationError, OutputNotWritable
from dnsrec_edge.fsio import append_jsonl, read_jsonl, sha256_file

log = logging.getLogger(__name__)

RECORD_SCHEMA = 1
RECORDS_FILE = "records.jsonl"
MODEL_FILE = "model.json"
MEASURED_SOURCES = ("rapl", "hwmon", "ina3221", "command")  # the meters' labels; not "model"
REQUIRED = ("target", "batch", "seq_len", "latency_ms", "device", "artifact_sha256")
LATENCY_KEYS = ("mean", "median", "p90", "p99", "std", "min", "max")
# Device facts that name the board (the first present wins); the rest may vary run to run.
BOARD_KEYS = ("board_id", "board", "hostname", "node")
BOARD_DETAIL_KEYS = ("cpu_model", "machine", "arch", "cpu_count")


def store_dir(calibration_dir: str | Path | None = None) -> Path:
    """The writable store: ``calibration_dir`` or the user's ``$DNSREC_EDGE_HOME/calibration``."""
    return Path(calibration_dir) if calibration_dir is not None else paths.user_calibration_dir()


def store_folders(target: str, calibration_dir: str | Path | None = None) -> list[Path]:
    """Folders read for ``target``, lowest priority first: shipped, then the store."""
    shipped = paths.shipped_calibration_dir() / target
    store = store_dir(calibration_dir) / target
    return [shipped] if store.resolve() == shipped.resolve() else [shipped, store]


def model_file(target: str, calibration_dir: str | Path | None = None) -> Path | None:
    """The ``model.json`` the target's cost model loads: the store's, else the shipped one."""
    for folder in reversed(store_folders(target, calibration_dir)):
        if (folder / MODEL_FILE).is_file():
            return folder / MODEL_FILE
    return None


def model_id(target: str, calibration_dir: str | Path | None = None) -> str:
    """sha256 of the target's :func:`model_file`, or "prior" when it has none."""
    path = model_file(target, calibration_dir)
    return "prior" if path is None else sha256_file(path)


def record_id(record: dict[str, Any]) -> str:
    """Content hash of a record (without its ``id``): how a model file names its records."""
    body = {k: v for k, v in record.items() if k != "id"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def board_key(device: dict[str, Any] | None) -> str:
    """A stable name for the board a record was measured on, from its device facts."""
    device = device or {}
    name = next((str(device[k]) for k in BOARD_KEYS if device.get(k)), "unknown")
    detail = "/".join(str(device[k]) for k in BOARD_DETAIL_KEYS if device.get(k) is not None)
    return f"{name}|{detail}" if detail else name


def duplicate_key(record: dict[str, Any]) -> tuple[str, str]:
    """Records with the same artifact hash measured on the same board are duplicates."""
    return str(record.get("artifact_sha256")), board_key(record.get("device"))


def validate_record(record: dict[str, Any], target: str) -> dict[str, Any]:
    """Check a record against schema 1 for ``target``; raise CalibrationError naming the problem."""
    if not isinstance(record, dict):
        raise CalibrationError(
            f"a measurement record must be a JSON object, not {type(record).__name__}"
        )
    if record.get("emulated"):
        raise CalibrationError(
            "emulated measurements say nothing about the board and are not recorded; "
            "measure on the device (--rpc or --local on the board itself)"
        )
    if record.get("schema", RECORD_SCHEMA) != RECORD_SCHEMA:
        raise CalibrationError(
            f"record schema {record.get('schema')} is not {RECORD_SCHEMA}; upgrade dnsrec-edge"
        )
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise CalibrationError(
            f"measurement record lacks {', '.join(missing)}; record what bench reports"
        )
    if record["target"] != target:
        raise CalibrationError(
            f"record is for target '{record['target']}', not '{target}'; append it to its own target"
        )
    latency = record["latency_ms"]
    if not isinstance(latency, dict) or not _positive(latency.get("median")):
        raise CalibrationError("record latency_ms needs a positive 'median' (milliseconds)")
    bad = [k for k in LATENCY_KEYS if k in latency and not _non_negative(latency[k])]
    if bad:
        raise CalibrationError(
            f"record latency_ms {', '.join(bad)} must be non-negative numbers (milliseconds)"
        )
    if not isinstance(record["device"], dict):
        raise CalibrationError(
            f"record device must be an object of board facts, not {type(record['device']).__name__}"
        )
    energy = record.get("energy")
    if energy is not None and not isinstance(energy, dict):
        raise CalibrationError("record energy must be null or {joules_per_inference, source}")
    return record


def _positive(value: Any) -> bool:
    return _non_negative(value) and value > 0


def _non_negative(value: Any) -> bool:
    """A finite number >= 0 (not a bool, not a string)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf


def is_measured_energy(energy: Any) -> bool:
    """Whether a record's ``energy`` is a measured, positive figure (not a model's)."""
    return (
        isinstance(energy, dict)
        and energy.get("source") in MEASURED_SOURCES
        and _positive(energy.get("joules_per_inference"))
    )


def append_measurement(
    target: str, record: dict[str, Any], calibration_dir: str | Path | None = None
) -> Path:
    """Append one measurement of ``target`` to the store; return the records file.

    Emulated measurements are refused. A repeat measurement of an artifact already
    measured on the same board is still appended (it is information) and logged as such;
    fits merge duplicates into one point.
    """
    record = dict(validate_record(record, target))
    record.setdefault("schema", RECORD_SCHEMA)
    record.pop("id", None)
    shipped = paths.shipped_calibration_dir().resolve()
    path = store_dir(calibration_dir) / target / RECORDS_FILE
    if path.resolve().is_relative_to(shipped) and calibration_dir is None:
        raise CalibrationError(
            f"'{path}' is the shipped calibration, which is read-only; set DNSREC_EDGE_HOME"
        )
    key = duplicate_key(record)
    seen = sum(
        1 for r in load_records(target, calibration_dir, warn=False) if duplicate_key(r) == key
    )
    try:
        append_jsonl(path, record)
    except OSError as err:
        raise OutputNotWritable(
            f"cannot append to '{path}' ({err.strerror}); pass a writable --calibration-dir"
        ) from err
    if seen:
        log.info("repeat measurement %d of artifact %s on board %s", seen + 1, key[0][:12], key[1])
    return path


def read_records_file(path: Path, target: str, warn: bool = True) -> list[dict[str, Any]]:
    """Valid records of one file, each with its ``id``; bad lines are skipped with a warning."""
    if not path.is_file():
        return []
    records = []
    try:
        lines = list(read_jsonl(path))
    except OSError as err:
        raise CalibrationError(f"cannot read records '{path}' ({err.strerror})") from err
    for lineno, record, raw in lines:
        problem = None
        if record is None:
            torn = not raw.endswith("\n")
            problem = "torn last line (an interrupted append)" if torn else "not a JSON object"
        else:
            try:
                validate_record(record, target)
            except CalibrationError as err:
                problem = str(err)
        if problem:
            if warn:
                log.warning(
                    "%s line %d skipped: %s; the line is kept as it is", path, lineno, problem
                )
            continue
        records.append(record | {"id": record_id(record)})
    return records


def load_records(
    target: str, calibration_dir: str | Path | None = None, *, warn: bool = True
) -> list[dict[str, Any]]:
    """All valid records of ``target``: shipped first, then the store's (same id kept once)."""
    out, ids = [], set()
    for folder in store_folders(target, calibration_dir):
        for record in read_records_file(folder / RECORDS_FILE, target, warn=warn):
            if record["id"] not in ids:
                ids.add(record["id"])
                out.append(record)
    return out


def merge_duplicates(
    records: list[dict[str, Any]], statistic: str = "median"
) -> list[dict[str, Any]]:
    """One record per (artifact, board): the latest, with ``statistic`` over all its repeats.

    ``min`` takes the fastest repeat (the fastest call of them all); any other statistic
    the median of the repeats' figures. A merged record lists each repeat's figure under
    ``repeats_ms``.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(duplicate_key(record), []).append(record)
    merged = []
    for group in groups.values():
        latest = dict(max(group, key=lambda r: str(r.get("time", ""))))
        values = [r["latency_ms"].get(statistic) for r in group]
        values = [float(v) for v in values if _positive(v)]
        if len(values) > 1:
            latency = dict(latest["latency_ms"])
            latency[statistic] = min(values) if statistic == "min" else statistics.median(values)
            latest["latency_ms"] = latency
            latest["repeats_ms"] = values
        merged.append(latest)
    return merged
