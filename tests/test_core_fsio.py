"""Atomic writes and append-only records."""

import os

import pytest

from dnsrec_edge.errors import OutputExists, OutputNotWritable
from dnsrec_edge.fsio import (
    UMASK,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    ensure_new,
    read_jsonl,
)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "x.json", {"k": 1})
    assert path.read_text() == '{\n  "k": 1\n}\n'
    assert os.listdir(path.parent) == ["x.json"]


def test_ensure_new_refuses_existing(tmp_path):
    (tmp_path / "x").write_text("mine")
    with pytest.raises(OutputExists, match="already exists; choose another path or pass --force"):
        ensure_new(tmp_path / "x", force=False)
    assert ensure_new(tmp_path / "x", force=True) == tmp_path / "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path):
    tmp_path.chmod(0o500)
    with pytest.raises(OutputNotWritable, match="cannot write to folder"):
        atomic_write_json(tmp_path / "x.json", {})


def test_torn_line_is_kept_and_reported(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as fh:
        fh.write('{"a": 2, "b"')  # a crash mid-write
    append_jsonl(path, {"a": 3})
    rows = list(read_jsonl(path))
    assert [r for _, r, _ in rows] == [{"a": 1}, None, {"a": 3}]
    assert rows[1][0] == 2 and '"b"' in rows[1][2]


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    path = atomic_write_text(tmp_path / "report.md", "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~UMASK
