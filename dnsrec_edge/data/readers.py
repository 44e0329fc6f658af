"""Readers for interaction logs: GroupLens ``ratings.dat``, CSV/TSV, Parquet, RecBole ``.inter``.

Every reader returns a frame with exactly the columns ``user``, ``item``, ``time`` (numeric),
rows in file order. Column names are configurable; by default common names are tried.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from dnsrec_edge.data.formats import FORMATS, SUFFIX_FORMATS
from dnsrec_edge.errors import DataError, InputFileError

ROLES = ("user", "item", "time")
_INT64_TEXT = r"0|-?[1-9][0-9]{0,18}"  # an integer written the way int64 prints it
# Names tried, in order, when a column name is not given.
DEFAULT_COLUMNS = {
    "user": ("user_id", "userId", "user", "uid", "UserID"),
    "item": ("item_id", "itemId", "movieId", "item", "iid", "MovieID"),
    "time": ("timestamp", "time", "ts", "Timestamp"),
}


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The reader for ``path``: ``fmt`` if given, else from the file suffix."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
        return fmt
    found = SUFFIX_FORMATS.get(path.suffix.lower())
    if found is None:
        raise DataError(
            f"cannot tell the format of '{path}' from its suffix '{path.suffix}'; "
            f"pass --format with one of {', '.join(FORMATS)}"
        )
    return found


def read_interactions(
    path: str | Path, fmt: str | None = None, columns: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Read a user log into ``user``, ``item``, ``time`` columns in file order.

    ``columns`` maps ``user``/``item``/``time`` to the file's column names (not used for
    GroupLens ``ratings.dat``, which has no header).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise InputFileError(
            f"interaction file '{path}' {what}; check the path or use a registered dataset name"
        )
    fmt = detect_format(path, fmt)
    try:
        frame = pd.read_parquet(path) if fmt == "parquet" else _read_text(path.read_bytes(), fmt)
    except (OSError, ValueError, pd.errors.ParserError, ImportError) as err:
        raise InputFileError(
            f"cannot read '{path}' as {fmt} ({err}); check the file and --format"
        ) from err
    return select_columns(frame, str(path), columns)


def read_inter_bytes(raw: bytes, label: str) -> pd.DataFrame:
    """Read RecBole ``.inter`` content (used for the registered datasets)."""
    return select_columns(_read_text(raw, "inter"), label, None)


def _read_text(raw: bytes, fmt: str) -> pd.DataFrame:
    if fmt == "grouplens":  # user::item::rating::timestamp, no header
        frame = pd.read_csv(
            io.BytesIO(raw.replace(b"::", b"\t")),
            sep="\t",
            header=None,
            dtype=str,
            quoting=csv.QUOTE_NONE,
        )
        if frame.shape[1] < 4:
            raise DataError(
                f"a GroupLens ratings file needs 4 '::'-separated fields per line, found {frame.shape[1]}; "
                "pass --format csv or tsv for other files"
            )
        frame = frame.iloc[:, :4]
        frame.columns = ["user_id", "item_id", "rating", "timestamp"]
        return frame
    sep = {"csv": ",", "tsv": "\t", "inter": "\t"}[fmt]
    quoting = csv.QUOTE_NONE if fmt == "inter" else csv.QUOTE_MINIMAL
    frame = pd.read_csv(io.BytesIO(raw), sep=sep, dtype=str, quoting=quoting, keep_default_na=False)
    if fmt == "inter":  # header fields are "name:type"
        frame.columns = [c.split(":", 1)[0].strip() for c in frame.columns]
    else:
        frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def select_columns(
    frame: pd.DataFrame, label: str, columns: Mapping[str, str] | None
) -> pd.DataFrame:
    """Pick the user/item/time columns (named or guessed) and check the timestamps."""
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(ROLES))
    if unknown:
        raise DataError(f"unknown column role(s) {', '.join(unknown)}; use user, item and time")
    found = [str(c) for c in frame.columns]
    picked = {}
    for role in ROLES:
        want = columns.get(role)
        if want is not None:
            if want not in found:
                raise DataError(
                    f"'{label}' has no {role} column '{want}' (columns found: {', '.join(found)}); "
                    f"name the right one with --{role}-col"
                )
            picked[role] = want
            continue
        guess = next((c for c in DEFAULT_COLUMNS[role] if c in found), None)
        if guess is None:
            raise DataError(
                f"'{label}' has no {role} column (looked for {', '.join(DEFAULT_COLUMNS[role])}; "
                f"columns found: {', '.join(found)}); name it with --{role}-col"
            )
        picked[role] = guess
    out = pd.DataFrame({role: frame[picked[role]] for role in ROLES})
    for role in ("user", "item"):
        out[role] = _tokens(out[role], label, picked[role])
    out["time"] = _timestamps(out["time"], label, picked["time"])
    return out.reset_index(drop=True)


def _tokens(values: pd.Series, label: str, name: str) -> pd.Series:
    """User/item ids, never merging two distinct ones: int64 when every id is an integer that
    round-trips through int64 (``302`` but not ``0302``, ``1e3``, ``1.0`` or ``10**30``),
    else the ids as strings, exactly as written."""
    missing = values.isna() | (values.astype(str).str.strip() == "")
    if missing.any():
        row = int(missing.to_numpy().argmax())
        raise DataError(
            f"column '{name}' of '{label}' is empty on data row {row + 1}; fill or drop that row"
        )
    if pd.api.types.is_signed_integer_dtype(values):
        return values.astype("int64")
    if pd.api.types.is_float_dtype(values) and _whole_below_2_53(values):  # e.g. Parquet
        return values.astype("int64")
    text = values.astype(str).str.strip()
    if text.str.fullmatch(_INT64_TEXT).all():
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.dtype == "int64":  # wider values come back as uint64, float or object
            return numeric
    return text


def _whole_below_2_53(values: pd.Series) -> bool:
    """Floats that are all whole numbers float64 holds exactly (|x| < 2**53)."""
    return bool(((values % 1 == 0) & (values.abs() < 2**53)).all())


def _timestamps(values: pd.Series, label: str, name: str) -> pd.Series:
    """Numeric timestamps; the first non-numeric value is reported with its row."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numeric = values
    else:
        numeric = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    bad = numeric.isna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(
            f"column '{name}' of '{label}' has the non-numeric timestamp '{values.iloc[row]}' on "
            f"data row {row + 1}; give numeric timestamps (e.g. Unix seconds) or name another column with --time-col"
        )
    if (numeric % 1 == 0).all():
        return numeric.astype("int64")
    return numeric.astype("float64")
