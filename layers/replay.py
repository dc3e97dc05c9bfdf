"""The situation at an earlier moment: every unit's position at a time T, the whole situation over a
window (every unit at steps across it), and one unit's track.

All read ``position`` through its primary key ``(unit_id, ts)``: one LATERAL
index probe per unit (and step) for the last fix at or before T, and one index
range for a track. A unit's status is today's (``unit`` keeps no history), so "silent"
at T means no fix in the ``settings.unit_silent_after_s`` before T.
"""
from __future__ import annotations

from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from gridwatch.layers.queries import SCOPE, UNIT_IN_SCOPE
from gridwatch.settings import Settings

__all__ = ["positions_at", "situation", "track", "unit_roster", "LOOKBACK_H", "MAX_TRACK_POINTS", "STEPS"]

LOOKBACK_H = 24  # a unit with no fix in the day before T is not shown
MAX_TRACK_POINTS = 600  # a longer track is thinned evenly (its first and last fix kept)
STEPS = 60  # moments of a whole-situation replay, evenly from the window's start to its end


def positions_at(engine: sa.Engine, settings: Settings, at: datetime, *, scope: int | None = None) -> pd.DataFrame:
    """Each unit's last fix at or before ``at`` (within :data:`LOOKBACK_H`), same columns as
    :func:`gridwatch.layers.queries.live_units` (a ``scope``: units of that command unit and below)."""
    sql = SCOPE + f"""
    SELECT u.id AS unit_id, u.callsign, u.kind, u.status,
           round(ST_X(p.geom)::numeric, 5)::float8 AS lon, round(ST_Y(p.geom)::numeric, 5)::float8 AS lat,
           p.heading, p.speed, p.ts, p.ts < CAST(:at AS timestamptz) - make_interval(secs => :silent_s) AS silent
    FROM unit u
    CROSS JOIN LATERAL (
        SELECT ts, geom, heading, speed FROM position
        WHERE unit_id = u.id AND ts <= CAST(:at AS timestamptz)
          AND ts > CAST(:at AS timestamptz) - make_interval(hours => :lookback_h)
        ORDER BY ts DESC LIMIT 1
    ) p
    WHERE u.status <> 'off_duty' AND {UNIT_IN_SCOPE}
    ORDER BY u.id
    """
    params = {"scope": scope, "at": at, "silent_s": settings.unit_silent_after_s, "lookback_h": LOOKBACK_H}
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), params)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def situation(engine: sa.Engine, settings: Settings, *, start: datetime, end: datetime, steps: int = STEPS,
              scope: int | None = None) -> pd.DataFrame:
    """Every unit (not off duty; of command unit ``scope`` and below) at ``steps + 1`` moments evenly from
    ``start`` to ``end``: its last fix at or before each moment, unless it was silent then (no fix in the
    ``settings.unit_silent_after_s`` before it). Columns step (0..steps), at, unit_id, callsign, kind, lon,
    lat, by step and unit; no rows when no unit reported in the window."""
    sql = SCOPE + f""", moments AS (
        SELECT n AS step, CAST(:start AS timestamptz) + (CAST(:end AS timestamptz) - CAST(:start AS timestamptz))
                                                        * n / :steps AS at
        FROM generate_series(0, :steps) n
    )
    SELECT m.step, m.at, u.id AS unit_id, u.callsign, u.kind,
           round(ST_X(p.geom)::numeric, 5)::float8 AS lon, round(ST_Y(p.geom)::numeric, 5)::float8 AS lat
    FROM moments m
    CROSS JOIN unit u
    CROSS JOIN LATERAL (
        SELECT geom FROM position
        WHERE unit_id = u.id AND ts <= m.at AND ts > m.at - make_interval(secs => :silent_s)
        ORDER BY ts DESC LIMIT 1
    ) p
    WHERE u.status <> 'off_duty' AND {UNIT_IN_SCOPE}
    ORDER BY m.step, u.id
    """
    params = {"scope": scope, "start": start, "end": end, "steps": max(1, steps),
              "silent_s": settings.unit_silent_after_s}
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), params)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def track(engine: sa.Engine, unit_id: int, *, start: datetime, end: datetime,
          max_points: int = MAX_TRACK_POINTS, scope: int | None = None) -> pd.DataFrame:
    """The unit's fixes from ``start`` to ``end`` in time order (ts, lon, lat), at most ``max_points``
    (none when the unit is not of command unit ``scope`` or below it)."""
    sql = SCOPE + f""", fixes AS (
        SELECT ts, geom, row_number() OVER (ORDER BY ts) - 1 AS n, count(*) OVER () AS total
        FROM position
        WHERE unit_id = :unit AND ts BETWEEN :start AND :end
          AND EXISTS (SELECT 1 FROM unit u WHERE u.id = :unit AND {UNIT_IN_SCOPE})
    )
    SELECT ts, round(ST_X(geom)::numeric, 5)::float8 AS lon, round(ST_Y(geom)::numeric, 5)::float8 AS lat
    FROM fixes
    WHERE n % ceil(total::float8 / :max_points)::int = 0 OR n = total - 1
    ORDER BY ts
    """
    params = {"scope": scope, "unit": unit_id, "start": start, "end": end, "max_points": max(2, max_points)}
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), params)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def unit_roster(engine: sa.Engine, *, scope: int | None = None) -> pd.DataFrame:
    """Every unit (unit_id, callsign, kind) of command unit ``scope`` and below (None: all), by callsign."""
    with engine.connect() as conn:
        result = conn.execute(sa.text(SCOPE + f"SELECT u.id AS unit_id, u.callsign, u.kind FROM unit u "
                                              f"WHERE {UNIT_IN_SCOPE} ORDER BY u.callsign"), {"scope": scope})
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
