"""``load_dataset``: a registered name (fetched and cached on first use) or a user's file."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from dnsrec_edge.data import registry
from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.data.preprocess import build_dataset
from dnsrec_edge.data.readers import SUFFIX_FORMATS, read_interactions
from dnsrec_edge.errors import UnknownDataset

log = logging.getLogger(__name__)


def looks_like_path(name_or_path: str | Path) -> bool:
    """Whether the argument names a file rather than a registered dataset."""
    text = str(name_or_path)
    path = Path(text)
    return (
        isinstance(name_or_path, Path)
        or path.exists()
        or "/" in text
        or "\\" in text
        or path.suffix.lower() in SUFFIX_FORMATS
    )


def load_raw(
    name_or_path: str | Path, fmt: str | None = None, columns: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, str, dict]:
    """Raw interactions ``(frame, name, source)`` of a registered dataset or a file."""
    text = str(name_or_path)
    if text in registry.REGISTRY:
        if not registry.is_cached(text):
            log.info("dataset %s is not cached yet; fetching it", text)
            registry.fetch(text)
        table = registry.verify_cached(text)
        src = registry.source(text)
        return pd.read_parquet(table), text, {"registry": text, "member_sha256": src.file_sha256}
    if not looks_like_path(name_or_path):
        raise UnknownDataset(text, registry.known_names())
    path = Path(name_or_path)
    frame = read_interactions(path, fmt=fmt, columns=columns)
    source = {"path": str(path.resolve()), "format": fmt, "columns": dict(columns or {})}
    return frame, path.stem, source


def load_dataset(
    name_or_path: str | Path,
    *,
    min_count: int = 5,
    fmt: str | None = None,
    columns: Mapping[str, str] | None = None,
    quiet: bool = False,
) -> Dataset:
    """Load and preprocess a dataset (registered name: ml-1m, ml-100k, ml-latest-small; or a path).

    ``fmt`` forces a reader (grouplens, csv, tsv, parquet, inter); ``columns`` maps
    ``user``/``item``/``time`` to the file's column names. ``quiet`` logs the summary at debug level.
    """
    frame, name, source = load_raw(name_or_path, fmt=fmt, columns=columns)
    return build_dataset(frame, name, min_count=min_count, source=source, quiet=quiet)
