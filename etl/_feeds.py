"""Shared by the point feeds (positions, incidents) and the unit table: reading a file
as text columns, parsing times and coordinates, rejecting rows with a reason, and
loading each file in one transaction recorded in the ``loaded_file`` ledger.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa

from gridwatch.errors import InputError
from gridwatch.etl._fuse_points import Reference
from gridwatch.etl.manifest import FileEntry
from gridwatch.etl.runlog import RunCounts, already_loaded, file_digest, mark_loaded, quarantine_rows

__all__ = [
    "Rejections", "pg_transaction", "load_each_file", "read_csv_text", "require_fields",
    "parse_times", "parse_numbers", "check_coordinates",
]

# "+08:00", "+0800", "-05", "Z" at the end of an ISO 8601 time.
_OFFSET = r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
# Text columns stay Arrow strings: no Python object per field.
_TEXT = pd.ArrowDtype(pa.string())
_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


@dataclass
class Rejections:
    """The first reason each row is rejected for; ``ok`` marks rows still accepted."""

    n: int
    ok: np.ndarray = field(init=False)
    reasons: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.ok = np.ones(self.n, dtype=bool)
        self.reasons = np.full(self.n, None, dtype=object)

    def reject(self, mask: np.ndarray, reason: str) -> None:
        """Reject the still-accepted rows where ``mask`` holds."""
        hit = np.asarray(mask, dtype=bool) & self.ok
        self.reasons[hit] = reason
        self.ok &= ~hit

    def quarantine(self, conn: psycopg.Connection, counts: RunCounts, source: str, raw: pd.DataFrame) -> None:
        """Write the rejected rows (original fields) to ``quarantine`` and count them."""
        bad = ~self.ok
        quarantine_rows(conn, counts.run_id, source, raw.loc[bad].reset_index(drop=True), pd.Series(self.reasons[bad]))
        counts.rows_rejected += int(bad.sum())


@contextmanager
def pg_transaction(engine: sa.Engine) -> Iterator[psycopg.Connection]:
    """A psycopg connection inside one transaction: committed at exit, rolled back on error."""
    with engine.connect() as conn, conn.begin():
        yield conn.connection.driver_connection


def load_each_file(
    engine: sa.Engine,
    entries: Sequence[FileEntry],
    *,
    target: str,
    counts: RunCounts,
    load: Callable[[psycopg.Connection, FileEntry, RunCounts], None],
) -> None:
    """Run ``load`` for each file not loaded before, one transaction per file.

    Loads of one target are serialized (an advisory lock), the file's digest
    goes into ``loaded_file`` in the same transaction, and every input row must
    end up loaded or quarantined.
    """
    for entry in entries:
        digest = file_digest(entry.path)
        file_counts = RunCounts(counts.run_id)
        with pg_transaction(engine) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"gridwatch.load.{target}",))
            if already_loaded(conn, digest, target):
                continue
            load(conn, entry, file_counts)
            if file_counts.rows_in != file_counts.rows_loaded + file_counts.rows_rejected:
                raise RuntimeError(
                    f"{entry.path}: {file_counts.rows_in} rows in but {file_counts.rows_loaded} loaded "
                    f"+ {file_counts.rows_rejected} rejected; nothing was loaded"
                )
            mark_loaded(conn, digest, entry.path, target, file_counts)
        counts.rows_in += file_counts.rows_in
        counts.rows_loaded += file_counts.rows_loaded
        counts.rows_rejected += file_counts.rows_rejected


def read_csv_text(entry: FileEntry) -> pd.DataFrame:
    """Every column of a CSV as text (missing cells as ""), read by pyarrow's multithreaded reader."""
    encoding = entry.encoding or "utf-8"
    try:
        with open(entry.path, newline="", encoding="utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding) as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError:
        raise InputError(f"{entry.path}: its text is not {encoding}; give the encoding in the manifest") from None
    if not header:
        raise InputError(f"{entry.path}: the file is empty; a CSV needs a header row")
    try:
        table = pacsv.read_csv(
            entry.path,
            read_options=pacsv.ReadOptions(encoding=encoding, column_names=header, skip_rows=1),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header}),
        )
    except pa.ArrowInvalid as exc:
        raise InputError(f"{entry.path}: cannot read it as CSV ({str(exc).splitlines()[0]})") from None
    return table.to_pandas(types_mapper=pd.ArrowDtype).fillna("")


def require_fields(entry: FileEntry, frame: pd.DataFrame, required: Sequence[str], optional: Sequence[str]) -> pd.DataFrame:
    """The target fields of ``frame`` under their target names; InputError naming every missing column."""
    missing = [
        f"{entry.source_column(f)!r}" + (f" (for {f})" if entry.source_column(f) != f else "")
        for f in required
        if entry.source_column(f) not in frame.columns
    ]
    if missing:
        raise InputError(
            f"{entry.path}: required column(s) {', '.join(missing)} missing; the file has {list(frame.columns)} "
            "(map other names in the manifest's 'columns')"
        )
    out = pd.DataFrame(index=frame.index)
    for name in (*required, *optional):
        column = entry.source_column(name)
        out[name] = frame[column].astype(_TEXT).str.strip() if column in frame.columns else ""
    return out


def parse_times(text: pd.Series, zone: str) -> pd.Series:
    """ISO 8601 times to UTC; a time with an offset is taken as is, one without is read in ``zone``.

    Unparseable or missing times become NaT.
    """
    text = text.astype(_TEXT).str.strip()
    has_offset = text.str.contains(_OFFSET, regex=True).to_numpy()
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    if has_offset.any():
        out[has_offset] = pd.to_datetime(text[has_offset], format="ISO8601", utc=True, errors="coerce")
    naive = ~has_offset & (text != "").to_numpy()
    if naive.any():
        local = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        out[naive] = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return out


def parse_numbers(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Numbers from text: the values (NaN where missing or bad) and where a value was given but is not a number."""
    strings = pc.utf8_trim_whitespace(pa.array(text.astype(_TEXT).array))
    number = pc.match_substring_regex(strings, _NUMBER)
    values = pc.cast(pc.if_else(number, strings, None), pa.float64())
    values = values.to_numpy(zero_copy_only=False)
    values = np.where(np.isfinite(values), values, np.nan)
    given = (text != "").to_numpy(dtype=bool, na_value=False)
    return values, given & np.isnan(values)


def check_coordinates(rej: Rejections, lon: np.ndarray, lat: np.ndarray, given_bad: np.ndarray, ref: Reference) -> None:
    """Reject unparseable, (0, 0), swapped, out-of-range and far-away coordinates, in that order."""
    rej.reject(given_bad | ~np.isfinite(lon) | ~np.isfinite(lat), "unparseable coordinates")
    rej.reject((lon == 0) & (lat == 0), "coordinates at (0, 0)")
    outer = ref.outer_bbox()
    if outer is not None:
        minx, miny, maxx, maxy = outer
        inside = (lon >= minx) & (lon <= maxx) & (lat >= miny) & (lat <= maxy)
        swapped_inside = (lat >= minx) & (lat <= maxx) & (lon >= miny) & (lon <= maxy)
        rej.reject(~inside & swapped_inside, "lat/lon swapped")
    rej.reject((np.abs(lon) > 180) | (np.abs(lat) > 90), "coordinates out of range")
    if outer is not None:
        rej.reject(~inside, "far outside the region")
