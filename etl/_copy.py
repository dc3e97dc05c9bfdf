"""Bulk writes with PostgreSQL COPY (binary), the fast path for every load."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

__all__ = ["copy_rows", "create_staging", "keys_built_after"]


def create_staging(conn: psycopg.Connection, name: str, like: str | None = None, *, columns: str | None = None) -> None:
    """Create a temporary staging table, dropped at commit.

    Either ``LIKE`` an existing table (no constraints) or with explicit column DDL.
    """
    if like:
        ddl = sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
            sql.Identifier(name), sql.Identifier(like)
        )
    else:
        ddl = sql.SQL("CREATE TEMP TABLE {} (" + columns + ") ON COMMIT DROP").format(sql.Identifier(name))
    conn.execute(ddl)


@contextmanager
def keys_built_after(conn: psycopg.Connection, table: str) -> Iterator[None]:
    """Drop ``table``'s keys (primary, unique, foreign) and indexes, and build them again from their own
    definitions after the block's bulk insert: one sorted build per index and one set-based check per
    foreign key, where an insert per row costs a descent into every index and a trigger call per key.

    Only inside the transaction that empties ``table``: its lock holds until commit, so no reader
    sees the table without them, and a failed check rolls the whole write back.
    """
    keys = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
        "AND contype IN ('p', 'u', 'f') ORDER BY contype = 'f', conname", (table,)).fetchall()
    indexes = conn.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass AND NOT EXISTS (SELECT FROM pg_constraint c "
        "WHERE c.conindid = x.indexrelid AND c.contype IN ('p', 'u'))", (table,)).fetchall()
    for name, _ in reversed(keys):  # foreign keys first
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))
    for name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    yield
    for name, definition in keys:  # primary and unique keys before the foreign ones
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)))
    for _, definition in indexes:
        conn.execute(definition)


def copy_rows(
    conn: psycopg.Connection,
    table: str,
    frame: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
) -> int:
    """COPY a DataFrame's columns into ``table`` (binary when ``types`` are given).

    Geometry goes in as WKB bytes (``shapely.to_wkb``) into a ``geometry``
    column; NaN and None become NULL. Returns the number of rows written.
    """
    columns = list(columns or frame.columns)
    if frame.empty:
        return 0
    stmt = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(" (FORMAT BINARY)" if types else ""),
    )
    arrays = [_nullable(frame[c]) for c in columns]
    with conn.cursor().copy(stmt) as copy:
        if types:
            copy.set_types(list(types))
        for row in zip(*arrays):
            copy.write_row(row)
    return len(frame)


def _nullable(series: pd.Series) -> list:
    """Values as Python objects with missing values as None."""
    values = series.to_numpy(dtype=object)
    mask = pd.isna(series).to_numpy()
    if mask.any():
        values = values.copy()
        values[mask] = None
    return values.tolist() if isinstance(values, np.ndarray) else list(values)
