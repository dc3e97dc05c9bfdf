"""Bulk writes with PostgreSQL COPY (binary), the fast path for every load."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

__all__ = ["copy_rows", "create_staging"]


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
