"""Fused fixes as rows of ``position`` and ``unit_latest``: one column list, the daily partitions
the fixes need, one binary-COPY encoding and one upsert of each unit's latest fix, shared by the
file loader (:mod:`gridwatch.etl.positions`) and the live ingest (:mod:`gridwatch.etl.ingest.writer`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg

from gridwatch.etl import _pgbinary as pgb
from gridwatch.etl.schema import position

__all__ = ["POSITION_COLUMNS", "ensure_partitions", "position_columns", "upsert_latest"]

# The columns of position (and unit_latest), in the table's order.
POSITION_COLUMNS: tuple[str, ...] = tuple(c.name for c in position.columns)

_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in POSITION_COLUMNS if c != "unit_id")
_NAMES = ", ".join(POSITION_COLUMNS)


def ensure_partitions(conn: psycopg.Connection, ts: np.ndarray) -> int:
    """Make the daily partitions of ``position`` for the UTC days the fixes at ``ts`` (UTC
    ``datetime64``) fall on, and no others: a fix of 1970 among today's makes two partitions, not
    twenty thousand. Returns how many were made."""
    days = np.unique(np.asarray(ts).astype("datetime64[D]"))
    return conn.execute(
        "SELECT coalesce(sum(ensure_position_partitions(t, t)), 0)::int "
        "FROM unnest(%s::date[]) d, LATERAL (SELECT d::timestamp AT TIME ZONE 'UTC') AS day(t)",
        (days.astype(str).tolist(),),
    ).fetchone()[0]


def position_columns(
    unit_id: np.ndarray, ts: np.ndarray, lon: np.ndarray, lat: np.ndarray, speed: np.ndarray, heading: np.ndarray,
    accuracy: np.ndarray, *, source: str, fused: pd.DataFrame,
) -> list[pgb.Column]:
    """The binary-COPY columns of fixes (``ts`` as UTC ``datetime64``; NaN and -1 ids are NULL),
    with ``fused`` holding each fix's grid_id, zone_id, segment_id, border_m and h3."""
    values = {
        "unit_id": pgb.int4("unit_id", unit_id),
        "ts": pgb.timestamptz("ts", ts),
        "geom": pgb.point4326("geom", lon, lat),
        "speed": pgb.float4("speed", speed),
        "heading": pgb.float4("heading", heading),
        "accuracy": pgb.float4("accuracy", accuracy),
        "source": pgb.text_const("source", source, len(unit_id)),
        "h3": pgb.int8("h3", fused["h3"].to_numpy()),
        "border_m": pgb.float4("border_m", fused["border_m"].to_numpy()),
    }
    for name in ("grid_id", "zone_id", "segment_id"):
        ids = fused[name].to_numpy()
        values[name] = pgb.int4(name, ids, ids < 0)
    return [values[name] for name in POSITION_COLUMNS]


def upsert_latest(conn: psycopg.Connection, staged: str) -> None:
    """Move ``unit_latest`` forward to the newest fix of each unit in the table ``staged``
    (which has position's columns); an older fix never replaces a newer one."""
    conn.execute(
        f"INSERT INTO unit_latest ({_NAMES}) "
        f"SELECT DISTINCT ON (unit_id) {_NAMES} FROM {staged} ORDER BY unit_id, ts DESC "
        f"ON CONFLICT (unit_id) DO UPDATE SET {_UPDATES} WHERE EXCLUDED.ts > unit_latest.ts"
    )
