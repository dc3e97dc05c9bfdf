"""Shared by the point feeds (positions, incidents) and the unit table: reading a file
as text columns with the line each row stood on, parsing times and coordinates,
rejecting rows with a reason, and loading each file in one transaction recorded
in the ``loaded_file`` ledger (a file that cannot be read is refused, the next
one is loaded).
"""
from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Sequence
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
from gridwatch.etl.database import pg_transaction
from gridwatch.etl.manifest import FileEntry
from gridwatch.etl.runlog import (
    FileOutcome,
    RunCounts,
    already_loaded,
    forget_earlier_load,
    load_key,
    loaded_before,
    mark_loaded,
    quarantine_rows,
)

__all__ = [
    "CSV_FORMAT", "TextRows", "FileLoad", "Rejections", "load_each_file", "refusal",
    "read_csv_text", "require_fields", "parse_times", "parse_numbers", "check_coordinates",
]

# "+08:00", "+0800", "-05", "Z" at the end of an ISO 8601 time.
_OFFSET = r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
# What pandas' ISO 8601 parser also reads as an offset after a time ("+5", "+0:00", "+123" as +12:03):
# no local time.
_ODD_OFFSET = r"[T ].*[+-]\d{1,2}(?::?\d{1,2})?$"
# The form most feeds write a time in ("2026-11-21T05:00:06+08:00", "...Z"): whole seconds, an
# offset, a year pandas can hold. Arrow's ISO 8601 cast reads these (and refuses an impossible
# date, as pandas does); every other time is read by pandas.
_PLAIN_TIME = (r"^(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
               r"(Z|[+-](0\d|1[0-4]):[0-5]\d)$")
# Text columns stay Arrow strings: no Python object per field.
_TEXT = pd.ArrowDtype(pa.string())
_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
_UTF8 = ("utf-8", "utf8", "utf-8-sig")
# What the CSV reader reads, for messages about a file it cannot read.
CSV_FORMAT = "CSV (comma-separated, a header row, UTF-8 unless an encoding is given)"


@dataclass
class TextRows:
    """A file's records: every field as text, where each stood, and the records that could not be parsed.

    ``lines`` is the CSV line each row starts on (1 = the header) or, for other
    formats, the 1-based number of the feature or track point; ``unparsed`` has
    the ``line``, raw ``text`` and ``reason`` of each record that could not be
    split into the header's fields.
    """

    frame: pd.DataFrame
    lines: np.ndarray
    unparsed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"line": [], "text": [], "reason": []}))

    @property
    def count(self) -> int:
        """Every input record, parsed or not."""
        return len(self.frame) + len(self.unparsed)


@dataclass
class FileLoad:
    """One file being loaded: its entry, where its rows are counted, and whether it replaces an
    earlier load of the same file (a changed version, or ``--force``)."""

    entry: FileEntry
    run_id: int
    outcome: FileOutcome
    reload: bool


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

    def quarantine(self, conn: psycopg.Connection, file: FileLoad, rows: TextRows) -> None:
        """Write the rejected rows (original fields) and the unparsed records to ``quarantine`` with
        their lines, and count them."""
        bad = ~self.ok
        source = file.entry.source
        written = quarantine_rows(conn, file.run_id, source, rows.frame.loc[bad].reset_index(drop=True),
                                  pd.Series(self.reasons[bad]), lines=rows.lines[bad])
        written += quarantine_rows(conn, file.run_id, source, rows.unparsed[["text"]], rows.unparsed["reason"],
                                   lines=rows.unparsed["line"].to_numpy())
        file.outcome.rows_rejected += written


def refusal(exc: BaseException, entry: FileEntry) -> str:
    """Why a file was refused, in one line without its path (the outcome names it)."""
    if isinstance(exc, FileNotFoundError):
        return "the file is gone (moved or deleted after the run started?)"
    message = " ".join(str(exc).split())
    for prefix in (f"{entry.source}: ", f"{entry.path}: "):
        message = message.removeprefix(prefix)
    return message


def load_each_file(
    engine: sa.Engine,
    entries: Sequence[FileEntry],
    *,
    target: str,
    counts: RunCounts,
    load: Callable[[psycopg.Connection, FileLoad], None],
    force: bool = False,
) -> None:
    """Run ``load`` for each file not loaded before (by its load key), one transaction per file.

    Loads of one target are serialized (an advisory lock); the file's key goes
    into ``loaded_file`` in the same transaction, replacing an earlier
    version's, whose quarantine rows are dropped; every input row must end up
    loaded or quarantined. A file that cannot be read is refused (its outcome
    says why) and the next one is loaded; ``force`` loads files even when unchanged.
    """
    for entry in entries:
        try:
            outcome = _load_one(engine, entry, target=target, run_id=counts.run_id, load=load, force=force)
        except (InputError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            outcome = FileOutcome(entry.source, target, "refused", refusal(exc, entry))
        counts.add(outcome)


def _load_one(
    engine: sa.Engine, entry: FileEntry, *, target: str, run_id: int,
    load: Callable[[psycopg.Connection, FileLoad], None], force: bool,
) -> FileOutcome:
    key = load_key(entry)
    outcome = FileOutcome(entry.source, target, "loaded")
    with pg_transaction(engine) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"gridwatch.load.{target}",))
        if not force and already_loaded(conn, key, target):
            return FileOutcome(entry.source, target, "unchanged")
        reload = force or loaded_before(conn, entry.source, target)
        forget_earlier_load(conn, entry.source, target, key)
        load(conn, FileLoad(entry, run_id, outcome, reload))
        if outcome.rows_in != outcome.rows_loaded + outcome.rows_rejected:
            raise RuntimeError(
                f"{entry.source}: {outcome.rows_in} rows in but {outcome.rows_loaded} loaded "
                f"+ {outcome.rows_rejected} rejected; nothing was loaded"
            )
        mark_loaded(conn, key, outcome, run_id)
    return outcome


def read_csv_text(entry: FileEntry) -> TextRows:
    """Every column of a CSV as text (missing cells as ""), with the line each row starts on.

    A record that does not split into the header's fields (too few or too many,
    a quote left open) comes back in ``unparsed`` with its line and text; rows
    without a value in any field (blank lines) hold nothing and are left out.
    Only a file that cannot be read at all raises InputError.
    """
    if entry.format != "csv":
        raise InputError(f"{entry.path}: is not a .csv file; {entry.target} files are read as {CSV_FORMAT}")
    data = _utf8_bytes(entry)
    # The header ends at the first line break of any kind (a file with CR line ends has no LF).
    breaks = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    header = next(csv.reader([data[: min(breaks, default=len(data))].decode("utf-8", "replace")]), None)
    if not header or not any(h.strip() for h in header):
        raise InputError(f"{entry.path}: the file is empty; a CSV needs a header row")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise InputError(f"{entry.path}: the header names column(s) {', '.join(map(repr, twice))} more than once; "
                         "each column needs a name of its own")
    # Without a quote no record spans lines, and the threaded reader may cut the file anywhere;
    # only the serial reader numbers the records it cannot split, so they are read again by it.
    quoted = b'"' in data
    table, bad = _parse(entry, data, header, serial=quoted)
    if bad and not quoted:
        table, bad = _parse(entry, data, header, serial=True)
    # A record spans lines only if the file has more line breaks than ends of records (one per
    # record, the header's included, the last one's only if the file ends with a line break).
    ends = table.num_rows + len(bad) + 1 - (not data.endswith((b"\n", b"\r")))
    return _number_rows(table, len(header), bad, spanning=quoted and _breaks_in(data) > ends)


def _parse(entry: FileEntry, data: bytes, header: list[str], *, serial: bool) -> tuple[pa.Table, list]:
    """The CSV's rows as text columns, and (number, fields, text) of each record that did not split
    into the header's fields (numbered only by the serial reader)."""
    bad: list[tuple[int | None, int, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append((row.number, row.actual_columns, row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, use_threads=not serial),
            parse_options=pacsv.ParseOptions(newlines_in_values=serial, ignore_empty_lines=False,
                                             invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header}),
        )
    except pa.ArrowInvalid as exc:
        raise InputError(f"{entry.path}: cannot read it as {CSV_FORMAT}: {str(exc).splitlines()[0]}") from None
    return table, bad


def _utf8_bytes(entry: FileEntry) -> bytes:
    """The file's bytes as UTF-8 without a byte-order mark."""
    encoding = (entry.encoding or "utf-8").lower()
    raw = entry.path.read_bytes()
    try:
        if encoding in _UTF8:
            raw = raw.removeprefix(codecs.BOM_UTF8)
            raw.decode("utf-8")  # checked here, where the line of a bad byte is known
            return raw
        return raw.decode(encoding).encode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{entry.path}: its text is not {encoding} (line {line}): give the encoding in the "
                         "manifest ('encoding')") from None
    except LookupError:
        raise InputError(f"{entry.path}: encoding {encoding!r} is not a known text encoding (e.g. gbk)") from None


def _breaks_in(data: bytes) -> int:
    """How many line breaks (LF, CR LF or a lone CR) the file holds."""
    lf = data.count(b"\n")
    return lf + data.count(b"\r") - data.count(b"\r\n") if b"\r" in data else lf


def _breaks(text: pa.Array) -> np.ndarray:
    """How many line breaks (LF, CR LF or a lone CR) each text holds."""
    count = [pc.count_substring(text, s).to_numpy(zero_copy_only=False) for s in ("\n", "\r", "\r\n")]
    return count[0] + count[1] - count[2]


def _number_rows(table: pa.Table, n_columns: int, bad: list[tuple[int, int, str]], *, spanning: bool) -> TextRows:
    """Each row's and each unparsed record's line.

    The serial reader numbers records (the header is record 1, a blank line is
    a record); a record spans one line more for every line break inside it,
    searched for only when some record is ``spanning`` lines.
    """
    unparsed_at = np.array([b[0] for b in bad], dtype=np.int64) - 2
    is_unparsed = np.zeros(table.num_rows + len(bad), dtype=bool)
    is_unparsed[unparsed_at] = True
    span = np.ones(len(is_unparsed), dtype=np.int64)
    if spanning:
        for i in range(table.num_columns):
            span[~is_unparsed] += _breaks(table.column(i).combine_chunks())
        if bad:
            span[unparsed_at] += _breaks(pa.array([b[2] for b in bad], type=pa.string()))
    lines = 2 + np.concatenate([[0], np.cumsum(span)[:-1]])
    frame = table.to_pandas(types_mapper=pd.ArrowDtype).fillna("")
    row_lines = lines[~is_unparsed]
    blank = (frame.iloc[:, 0] == "").to_numpy()
    for column in frame.columns[1:] if blank.any() else ():
        blank &= (frame[column] == "").to_numpy()
    if blank.any():
        frame, row_lines = frame.loc[~blank].reset_index(drop=True), row_lines[~blank]
    first = lines[unparsed_at]
    reasons = [
        f"a quote is not closed: lines {line}-{line + n - 1} were read as one record" if text.count('"') % 2
        else f"{actual} field(s) but the header has {n_columns}"
        for line, n, (_, actual, text) in zip(first.tolist(), span[unparsed_at].tolist(), bad)
    ]
    unparsed = pd.DataFrame({"line": first, "text": [b[2] for b in bad], "reason": reasons})
    return TextRows(frame, row_lines, unparsed)


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

    Unparseable or missing times become NaT, and so does a time whose offset is none of ISO 8601's
    (``+0:00``, ``+5``): read as local, it made the whole column fail ("Already tz-aware").
    """
    text = text.astype(_TEXT).str.strip()
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    plain = _plain_times(out, text)
    has_offset = text.str.contains(_OFFSET, regex=True).to_numpy() & ~plain
    if has_offset.any():
        out[has_offset] = pd.to_datetime(text[has_offset], format="ISO8601", utc=True, errors="coerce")
    odd_offset = text.str.contains(_ODD_OFFSET, regex=True).to_numpy()
    naive = ~plain & ~has_offset & ~odd_offset & (text != "").to_numpy()
    if naive.any():
        local = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        out[naive] = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return out


def _plain_times(out: pd.Series, text: pd.Series) -> np.ndarray:
    """Parse the times of the plain form (:data:`_PLAIN_TIME`) into ``out`` with one Arrow cast;
    returns where they stood (none when one of them is an impossible date: pandas then reads all)."""
    strings = pa.array(text.array)
    plain = pc.match_substring_regex(strings, _PLAIN_TIME).to_numpy(zero_copy_only=False)
    if not plain.any():
        return plain
    try:
        utc = pc.cast(strings.filter(pa.array(plain)), pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        return np.zeros(len(plain), dtype=bool)
    out[plain] = pd.DatetimeIndex(utc.to_numpy(zero_copy_only=False)).tz_localize("UTC")
    return plain


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
