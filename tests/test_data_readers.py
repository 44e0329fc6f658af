"""Readers: every supported format gives the same user/item/time frame; bad inputs name the fix."""

from __future__ import annotations

import pandas as pd
import pytest

from dnsrec_edge.data.preprocess import build_dataset
from dnsrec_edge.data.readers import read_interactions
from dnsrec_edge.errors import DataError, InputFileError


@pytest.fixture(scope="module")
def slice_(ml100k_raw):
    """The first 300 real ml-100k rows."""
    return ml100k_raw.head(300).reset_index(drop=True)


def _check_same(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(frame.columns) == ["user", "item", "time"]
    assert frame["user"].tolist() == expected["user"].tolist()
    assert frame["item"].tolist() == expected["item"].tolist()
    assert frame["time"].tolist() == expected["time"].tolist()


def test_grouplens_dat(tmp_path, slice_):
    lines = [f"{r.user}::{r.item}::4::{r.time}" for r in slice_.itertuples()]
    path = tmp_path / "ratings.dat"
    path.write_text("\n".join(lines) + "\n")
    _check_same(read_interactions(path), slice_)


def test_csv_with_default_names(tmp_path, slice_):
    path = tmp_path / "log.csv"
    slice_.rename(columns={"user": "userId", "item": "movieId", "time": "timestamp"}).to_csv(
        path, index=False
    )
    _check_same(read_interactions(path), slice_)


def test_tsv_with_configured_names(tmp_path, slice_):
    path = tmp_path / "log.tsv"
    slice_.rename(columns={"user": "who", "item": "what", "time": "when"}).to_csv(
        path, sep="\t", index=False
    )
    frame = read_interactions(path, columns={"user": "who", "item": "what", "time": "when"})
    _check_same(frame, slice_)


def test_parquet(tmp_path, slice_):
    path = tmp_path / "log.parquet"
    slice_.rename(columns={"user": "user_id", "item": "item_id", "time": "ts"}).to_parquet(path)
    _check_same(read_interactions(path), slice_)


def test_recbole_inter(tmp_path, slice_):
    path = tmp_path / "x.inter"
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    rows += [f"{r.user}\t{r.item}\t3\t{r.time}" for r in slice_.itertuples()]
    path.write_text("\n".join(rows) + "\n")
    _check_same(read_interactions(path), slice_)


def test_string_ids_are_kept(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\nu1,The Matrix (1999),5\nu1,Heat (1995),6\n")
    frame = read_interactions(path)
    assert frame["item"].tolist() == ["The Matrix (1999)", "Heat (1995)"]
    assert frame["time"].tolist() == [5, 6]


def test_distinct_ids_are_never_merged(tmp_path):
    """Ids beyond int64, or written with a leading zero, stay distinct strings."""
    big, bigger = str(10**30), str(10**30 + 1)
    path = tmp_path / "log.csv"
    path.write_text(f"user_id,item_id,timestamp\nu1,{big},1\nu1,{bigger},2\nu1,0302,3\nu1,302,4\n")
    frame = read_interactions(path)
    assert frame["item"].tolist() == [big, bigger, "0302", "302"]
    assert build_dataset(frame, "ids", min_count=0).n_items == 4


def test_integer_ids_that_fit_int64_stay_integers(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(f"user_id,item_id,timestamp\n-4,{2**63 - 1},1\n0,7,2\n")
    frame = read_interactions(path)
    assert frame["item"].tolist() == [2**63 - 1, 7] and frame["item"].dtype == "int64"
    assert frame["user"].tolist() == [-4, 0]
    path.write_text(f"user_id,item_id,timestamp\n1,{2**63},1\n1,7,2\n")  # one past int64
    assert read_interactions(path)["item"].tolist() == [str(2**63), "7"]


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError) as err:
        read_interactions(tmp_path / "nope.csv")
    assert str(err.value) == (
        f"interaction file '{tmp_path / 'nope.csv'}' does not exist; "
        "check the path or use a registered dataset name"
    )


def test_misnamed_column_lists_found_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid,movie,ts\n1,2,3\n")
    with pytest.raises(DataError) as err:
        read_interactions(path)
    assert str(err.value) == (
        f"'{path}' has no item column (looked for item_id, itemId, movieId, item, iid, MovieID; "
        "columns found: uid, movie, ts); name it with --item-col"
    )
    with pytest.raises(DataError) as err:
        read_interactions(path, columns={"item": "film"})
    assert str(err.value) == (
        f"'{path}' has no item column 'film' (columns found: uid, movie, ts); "
        "name the right one with --item-col"
    )


def test_non_numeric_timestamp(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,100\n1,3,yesterday\n")
    with pytest.raises(DataError) as err:
        read_interactions(path)
    assert str(err.value) == (
        f"column 'timestamp' of '{path}' has the non-numeric timestamp 'yesterday' on data row 2; "
        "give numeric timestamps (e.g. Unix seconds) or name another column with --time-col"
    )


def test_unknown_suffix(tmp_path):
    path = tmp_path / "log.xlsx"
    path.write_text("x")
    with pytest.raises(
        DataError, match="pass --format with one of grouplens, csv, tsv, parquet, inter"
    ):
        read_interactions(path)
