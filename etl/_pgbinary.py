"""PostgreSQL binary COPY built in numpy: whole columns encoded at once, no loop per row.

:func:`copy_columns` writes typed numpy columns straight into a table in the
``COPY ... (FORMAT BINARY)`` wire format. Each row is laid out as a fixed-width
byte matrix (field count, then each field's length and big-endian value); NULL
fields keep their ``-1`` length and drop their payload through one boolean
mask, so nullable columns cost no Python per row either. Points go in as EWKB
with SRID 4326, which ``geometry``'s binary input accepts. :func:`read_columns`
reads the other way: a query's fixed-width columns straight into numpy, each
packed by the server into one value.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import psycopg
import shapely
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

__all__ = ["Column", "binary_copy", "copy_columns", "int4", "int8", "float4", "timestamptz", "text_const", "point4326",
           "float8", "boolean", "ewkb_batches", "read_columns"]

_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2
_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
_CHUNK = 200_000


@dataclass(frozen=True)
class Column:
    """One column: its name, the (n, width) payload bytes, and which rows are NULL."""

    name: str
    payload: np.ndarray
    null: np.ndarray | None = None


def _fixed(name: str, values: np.ndarray, dtype: str, null: np.ndarray | None) -> Column:
    arr = np.ascontiguousarray(values, dtype=dtype)
    return Column(name, arr.view(np.uint8).reshape(len(arr), arr.itemsize), null)


def int4(name: str, values: np.ndarray, null: np.ndarray | None = None) -> Column:
    """An ``integer`` column (values where ``null`` is True are ignored)."""
    return _fixed(name, np.where(null, 0, values) if null is not None else values, ">i4", null)


def int8(name: str, values: np.ndarray, null: np.ndarray | None = None) -> Column:
    """A ``bigint`` column."""
    return _fixed(name, np.where(null, 0, values) if null is not None else values, ">i8", null)


def float4(name: str, values: np.ndarray) -> Column:
    """A ``real`` column; NaN becomes NULL."""
    values = np.asarray(values, dtype=np.float64)
    null = np.isnan(values)
    return _fixed(name, values, ">f4", null if null.any() else None)


def float8(name: str, values: np.ndarray) -> Column:
    """A ``double precision`` column; NaN becomes NULL."""
    values = np.asarray(values, dtype=np.float64)
    null = np.isnan(values)
    return _fixed(name, values, ">f8", null if null.any() else None)


def boolean(name: str, values: np.ndarray) -> Column:
    """A ``boolean`` column."""
    return _fixed(name, np.asarray(values, dtype=bool), "u1", None)


def timestamptz(name: str, utc: np.ndarray) -> Column:
    """A ``timestamptz`` column from ``datetime64`` values in UTC."""
    micros = np.asarray(utc).astype("datetime64[us]").view(np.int64) - _PG_EPOCH_US
    return _fixed(name, micros, ">i8", None)


def text_const(name: str, value: str, n: int) -> Column:
    """A ``text`` column holding one value in every row."""
    raw = np.frombuffer(value.encode("utf-8"), dtype=np.uint8)
    return Column(name, np.broadcast_to(raw, (n, raw.size)))


def point4326(name: str, lon: np.ndarray, lat: np.ndarray) -> Column:
    """A ``geometry(Point, 4326)`` column as little-endian EWKB."""
    rec = np.empty(len(lon), dtype=[("order", "u1"), ("type", "<u4"), ("srid", "<u4"), ("x", "<f8"), ("y", "<f8")])
    rec["order"], rec["type"], rec["srid"] = 1, 0x20000001, 4326
    rec["x"], rec["y"] = lon, lat
    return Column(name, rec.view(np.uint8).reshape(len(rec), rec.itemsize))


def ewkb_batches(name: str, geoms: np.ndarray, srid: int) -> Iterator[tuple[np.ndarray, Column]]:
    """A ``geometry`` column of ``geoms`` (as EWKB with ``srid``) in batches of one encoded length each
    (all hexagons, say), as the rows of each batch and its column."""
    wkb = shapely.to_wkb(shapely.set_srid(geoms, srid), include_srid=True)
    length = np.fromiter(map(len, wkb), dtype=np.int64, count=len(wkb))
    for width in np.unique(length):
        rows = np.flatnonzero(length == width)
        yield rows, Column(name, np.frombuffer(b"".join(wkb[rows]), dtype=np.uint8).reshape(len(rows), width))


def _encode(columns: Sequence[Column], start: int, stop: int) -> bytes:
    n = stop - start
    blocks = [np.broadcast_to(np.array([len(columns)], dtype=">i2").view(np.uint8), (n, 2))]
    keeps: list[np.ndarray] = [np.ones((n, 2), dtype=bool)]
    has_null = False
    for col in columns:
        payload = col.payload[start:stop]
        width = payload.shape[1]
        null = col.null[start:stop] if col.null is not None else None
        length = np.full(n, width, dtype=">i4") if null is None else np.where(null, -1, width).astype(">i4")
        blocks += [length.view(np.uint8).reshape(n, 4), payload]
        keeps.append(np.ones((n, 4), dtype=bool))
        if null is None:
            keeps.append(np.ones((n, width), dtype=bool))
        else:
            has_null = True
            keeps.append(np.repeat(~null[:, None], width, axis=1))
    matrix = np.hstack(blocks)
    return (matrix[np.hstack(keeps)] if has_null else matrix.ravel()).tobytes()


@contextmanager
def binary_copy(
    conn: psycopg.Connection, table: str, names: Sequence[str], *, threaded: bool = False
) -> Iterator[Callable[[Sequence[Column]], int]]:
    """A COPY into ``table`` that takes batches of columns (in ``names`` order); yields ``write(columns)``.

    ``threaded`` sends the data from a background thread, so the caller can
    prepare the next batch while the server stores this one.
    """
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    cursor = conn.cursor()
    with cursor.copy(stmt, writer=QueuedLibpqWriter(cursor) if threaded else None) as copy:
        copy.write(_HEADER)

        def write(columns: Sequence[Column]) -> int:
            n = len(columns[0].payload)
            for start in range(0, n, _CHUNK):
                copy.write(_encode(columns, start, min(start + _CHUNK, n)))
            return n

        yield write
        copy.write(_TRAILER)


def copy_columns(conn: psycopg.Connection, table: str, columns: Sequence[Column]) -> int:
    """Binary-COPY the columns (all of the same length) into ``table``; return the row count."""
    if len(columns[0].payload) == 0:
        return 0
    with binary_copy(conn, table, [c.name for c in columns]) as write:
        return write(columns)


# The fixed-width types :func:`read_columns` reads: each one's binary send function and the big-endian
# numpy type of what it sends (a timestamptz goes as microseconds since 2000-01-01 UTC, and is handed
# out in Unix microseconds).
_READ_TYPES = {"bool": ("boolsend", "u1"), "int4": ("int4send", ">i4"), "int8": ("int8send", ">i8"),
               "float8": ("float8send", ">f8"), "timestamptz": ("timestamptz_send", ">i8")}


def read_columns(
    conn: psycopg.Connection, query: str, params: dict, columns: Sequence[tuple[str, str]]
) -> dict[str, np.ndarray]:
    """The rows of ``query`` as numpy columns. The server packs each column into one ``bytea`` of its
    values' binary form (``string_agg`` of the type's send function, the aggregates fed the rows in
    one order), so the client takes a few large values instead of a message per row (a COPY's), and
    numpy reads them as they are. ``columns`` names each of the query's columns in order with its
    type (a key of :data:`_READ_TYPES`); none may be NULL, and each packed column stays under
    PostgreSQL's 1 GB per value (~130 M values of 8 bytes)."""
    aliases = [sql.Identifier(f"c{i}") for i in range(len(columns))]
    stmt = sql.SQL("SELECT {} FROM ({}) q ({})").format(
        sql.SQL(", ").join(sql.SQL("string_agg({}({}), ''::bytea)").format(sql.SQL(_READ_TYPES[kind][0]), alias)
                           for alias, (_, kind) in zip(aliases, columns)),
        sql.SQL(query), sql.SQL(", ").join(aliases))
    packed = conn.execute(stmt, params, binary=True).fetchone()
    out = {}
    for (name, kind), data in zip(columns, packed):
        wire = np.dtype(_READ_TYPES[kind][1])
        out[name] = np.frombuffer(data or b"", dtype=wire).astype(wire.newbyteorder("="))
    if len({len(column) for column in out.values()}) > 1:
        raise ValueError("read_columns: a column holds a NULL")
    for name, kind in columns:
        if kind == "timestamptz":
            out[name] += _PG_EPOCH_US
        elif kind == "bool":
            out[name] = out[name].astype(bool)
    return out
