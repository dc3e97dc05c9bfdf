"""Read queries of the wall: live units, short trails, KPIs, the command-unit tree.

Each is one set-based statement. A ``scope`` (a command unit's id) narrows the
answer to that unit's jurisdiction: units by the command subtree, places by
``ST_Intersects`` with the unit's polygon. ``None`` means everything.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from gridwatch.settings import Settings

__all__ = [
    "SCOPE", "UNIT_IN_SCOPE", "CommandUnit", "DataStatus", "FeedTrouble", "Kpis", "data_status", "feed_trouble",
    "UnknownCommandUnitError",
    "command_unit", "command_unit_tree", "subtree", "jurisdiction_bounds", "live_units", "trails", "kpis", "LEVELS",
]

LEVELS = ("prefecture", "county", "township", "station")

SCOPE = """
WITH RECURSIVE tree AS (
    SELECT id FROM command_unit WHERE id = CAST(:scope AS integer)
    UNION ALL
    SELECT c.id FROM command_unit c JOIN tree t ON c.parent_id = t.id
), scope AS (
    SELECT geom FROM command_unit WHERE id = CAST(:scope AS integer)
)
"""
UNIT_IN_SCOPE = "(CAST(:scope AS integer) IS NULL OR u.command_unit_id IN (SELECT id FROM tree))"


def _frame(result: sa.CursorResult) -> pd.DataFrame:
    """The rows as a frame; plain tuples make it ~2.5x faster than SQLAlchemy rows (18k units: ~100 vs ~270 ms)."""
    return pd.DataFrame(list(map(tuple, result.fetchall())), columns=list(result.keys()))


def _in_scope(geom: str) -> str:
    return f"(CAST(:scope AS integer) IS NULL OR EXISTS (SELECT 1 FROM scope WHERE ST_Intersects(scope.geom, {geom})))"


class UnknownCommandUnitError(LookupError):
    """A command-unit code that is not in the database."""


@dataclass(frozen=True)
class CommandUnit:
    """One command unit, with its bounds (west, south, east, north) in degrees."""

    id: int
    code: str
    level: str
    name: str
    name_en: str
    bounds: tuple[float, float, float, float]


@dataclass(frozen=True)
class DataStatus:
    """How fresh the live data is: the newest fix, stale past the limit, empty before any fix."""

    newest_fix: datetime | None
    stale: bool

    @property
    def empty(self) -> bool:
        return self.newest_fix is None


_STATUS_COLUMNS = """
    (SELECT max(ts) FROM unit_latest) AS newest_fix,
    coalesce((SELECT max(ts) FROM unit_latest) < now() - make_interval(secs => :stale_s), false) AS stale
"""


def data_status(engine: sa.Engine, settings: Settings) -> DataStatus:
    """The newest fix and whether it is older than ``settings.data_stale_after_s``."""
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT" + _STATUS_COLUMNS), {"stale_s": settings.data_stale_after_s}).one()
    return DataStatus(row.newest_fix, row.stale)


@dataclass(frozen=True)
class FeedTrouble:
    """The live feed is not being stored: ``kind`` is ``retrying`` (the writer cannot store),
    ``lagging`` (fixes wait unstored longer than ``settings.feed_lag_s``) or ``silent`` (the
    ingest service stopped reporting without a clean stop)."""

    kind: str
    since: datetime
    backlog: int
    last_error: str | None


_FEED_TROUBLE = """
SELECT kind, since, backlog, last_error FROM (
    SELECT CASE WHEN updated_at < now() - make_interval(secs => :lag_s) THEN 'silent'
                WHEN state = 'retrying' THEN 'retrying'
                WHEN oldest_unstored_at < now() - make_interval(secs => :lag_s) THEN 'lagging' END AS kind,
           CASE WHEN updated_at < now() - make_interval(secs => :lag_s) THEN updated_at
                ELSE coalesce(oldest_unstored_at, last_stored_at, updated_at) END AS since,
           backlog, last_error
    FROM ingest_status WHERE state <> 'stopped'
) s WHERE kind IS NOT NULL ORDER BY since LIMIT 1
"""


def feed_trouble(engine: sa.Engine, settings: Settings) -> FeedTrouble | None:
    """Why live fixes are not reaching the database, as the ingest writer last told (``ingest_status``)."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(_FEED_TROUBLE), {"lag_s": settings.feed_lag_s}).one_or_none()
    return None if row is None else FeedTrouble(row.kind, row.since, row.backlog, row.last_error)


@dataclass(frozen=True)
class Kpis:
    """The wall's key figures for one scope. The three unit counts are disjoint: a silent unit is
    counted as silent only, whatever its status."""

    units_on_duty: int
    units_responding: int
    units_silent: int
    segments_total: int
    segments_covered: int
    checkpoints: dict[int, tuple[int, int]]  # line_no: (staffed, total)
    grids_total: int
    grids_overdue: int
    grids_unknown: int
    incidents_open: dict[int, int]  # severity: count
    status: DataStatus

    @property
    def segments_covered_pct(self) -> float | None:
        return 100.0 * self.segments_covered / self.segments_total if self.segments_total else None


def command_unit(engine: sa.Engine, code: str) -> CommandUnit:
    """The command unit with this code; :class:`UnknownCommandUnitError` when there is none."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT id, code, level, name, coalesce(name_en, name) AS name_en, "
            "ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM command_unit WHERE code = :code"
        ), {"code": code}).first()
    if row is None:
        raise UnknownCommandUnitError(f"command unit {code!r} does not exist")
    return CommandUnit(row.id, row.code, row.level, row.name, row.name_en, tuple(row[5:9]))


def jurisdiction_bounds(engine: sa.Engine) -> tuple[float, float, float, float] | None:
    """The bounds of all top-level command units (None on an empty database)."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
            "FROM (SELECT ST_Extent(geom) AS e FROM command_unit WHERE parent_id IS NULL) x"
        )).one()
    return None if row[0] is None else tuple(row)


def command_unit_tree(engine: sa.Engine) -> pd.DataFrame:
    """Every command unit, depth first (a parent before its children), with its depth."""
    sql = """
    WITH RECURSIVE tree AS (
        SELECT id, code, name, coalesce(name_en, name) AS name_en, level, 0 AS depth, ARRAY[code] AS path
        FROM command_unit WHERE parent_id IS NULL
        UNION ALL
        SELECT c.id, c.code, c.name, coalesce(c.name_en, c.name), c.level, t.depth + 1, t.path || c.code
        FROM command_unit c JOIN tree t ON c.parent_id = t.id
    )
    SELECT code, name, name_en, level, depth FROM tree ORDER BY path
    """
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def subtree(tree: pd.DataFrame, code: str) -> pd.DataFrame:
    """The rows of a :func:`command_unit_tree` (depth first) that are ``code`` and the units below it."""
    at = (tree["code"] == code).to_numpy().nonzero()[0]
    if len(at) == 0:
        return tree.iloc[0:0]
    start = int(at[0])
    depths = tree["depth"].to_numpy()
    ends = (depths[start + 1:] <= depths[start]).nonzero()[0]
    return tree.iloc[start:start + 1 + (int(ends[0]) if len(ends) else len(depths) - start - 1)]


def live_units(engine: sa.Engine, settings: Settings, *, scope: int | None = None) -> pd.DataFrame:
    """The latest fix of every unit on duty or responding, with its silent flag."""
    sql = SCOPE + f"""
    SELECT u.id AS unit_id, u.callsign, u.kind, u.status,
           round(ST_X(l.geom)::numeric, 5)::float8 AS lon, round(ST_Y(l.geom)::numeric, 5)::float8 AS lat,
           l.heading, l.speed, l.ts, l.ts < now() - make_interval(secs => :silent_s) AS silent
    FROM unit_latest l JOIN unit u ON u.id = l.unit_id
    WHERE u.status <> 'off_duty' AND {UNIT_IN_SCOPE}
    ORDER BY u.id
    """
    with engine.connect() as conn:
        return _frame(conn.execute(sa.text(sql), {"scope": scope, "silent_s": settings.unit_silent_after_s}))


def trails(
    engine: sa.Engine, *, minutes: float, tolerance_deg: float = 0.0002, scope: int | None = None
) -> pd.DataFrame:
    """Each unit's track over the ``minutes`` before its latest fix, simplified to ``tolerance_deg``.

    One row per vertex (lon/lat to 1e-5 degrees, ~1 m), ordered by unit and time. Units whose
    latest fix reports speed 0 (posts, checkpoints) are not read: their track would collapse to a point.
    """
    sql = SCOPE + f"""
    , tracks AS (
        SELECT p.unit_id, ST_Simplify(ST_MakeLine(p.geom ORDER BY p.ts), :tolerance) AS line
        FROM unit_latest l
        JOIN unit u ON u.id = l.unit_id
        JOIN position p ON p.unit_id = l.unit_id AND p.ts BETWEEN l.ts - make_interval(secs => :minutes * 60) AND l.ts
        WHERE u.status <> 'off_duty' AND {UNIT_IN_SCOPE} AND (l.speed IS NULL OR l.speed > 0)
          AND p.ts >= (SELECT min(ts) FROM unit_latest) - make_interval(secs => :minutes * 60)
        GROUP BY p.unit_id
    )
    SELECT t.unit_id, round(ST_X(d.geom)::numeric, 5)::float8 AS lon, round(ST_Y(d.geom)::numeric, 5)::float8 AS lat
    FROM tracks t, ST_DumpPoints(t.line) d
    ORDER BY t.unit_id, d.path
    """
    with engine.connect() as conn:
        return _frame(conn.execute(sa.text(sql), {"scope": scope, "minutes": minutes, "tolerance": tolerance_deg}))


_KPI_SQL = SCOPE + f"""
, units AS (
    SELECT u.status, l.ts IS NULL OR l.ts < now() - make_interval(secs => :silent_s) AS silent
    FROM unit u LEFT JOIN unit_latest l ON l.unit_id = u.id
    WHERE u.status <> 'off_duty' AND {UNIT_IN_SCOPE}
), segments AS (
    SELECT c.status FROM border_segment s LEFT JOIN segment_coverage c ON c.segment_id = s.id
    WHERE {_in_scope("s.geom")}
), checkpoints AS (
    SELECT line_no, count(*) FILTER (WHERE staffed) AS staffed, count(*) AS total
    FROM checkpoint WHERE {_in_scope("checkpoint.geom")} GROUP BY line_no
), grids AS (
    SELECT c.status, c.last_visit FROM grid g LEFT JOIN grid_coverage c ON c.grid_id = g.id
    WHERE {_in_scope("g.label_point")}
), incidents AS (
    SELECT severity, count(*) AS n FROM incident
    WHERE status <> 'closed' AND {_in_scope("incident.geom")} GROUP BY severity
)
SELECT
    (SELECT count(*) FILTER (WHERE status = 'on_duty' AND NOT silent) FROM units) AS units_on_duty,
    (SELECT count(*) FILTER (WHERE status = 'responding' AND NOT silent) FROM units) AS units_responding,
    (SELECT count(*) FILTER (WHERE silent) FROM units) AS units_silent,
    (SELECT count(*) FROM segments) AS segments_total,
    (SELECT count(*) FILTER (WHERE status IN ('patrolled', 'watched')) FROM segments) AS segments_covered,
    (SELECT coalesce(jsonb_object_agg(line_no, jsonb_build_array(staffed, total)), '{{}}') FROM checkpoints)
        AS checkpoints,
    (SELECT count(*) FROM grids) AS grids_total,
    (SELECT count(*) FILTER (WHERE status = 'overdue') FROM grids) AS grids_overdue,
    (SELECT count(*) FILTER (WHERE last_visit IS NULL) FROM grids) AS grids_unknown,  -- never visited
    (SELECT coalesce(jsonb_object_agg(severity, n), '{{}}') FROM incidents) AS incidents_open,
""" + _STATUS_COLUMNS


def kpis(engine: sa.Engine, settings: Settings, *, scope: int | None = None) -> Kpis:
    """The key figures of the wall for a scope (the whole database when ``None``)."""
    params = {"scope": scope, "silent_s": settings.unit_silent_after_s, "stale_s": settings.data_stale_after_s}
    with engine.connect() as conn:
        row = conn.execute(sa.text(_KPI_SQL), params).mappings().one()
    figures = {key: value for key, value in row.items() if key not in ("newest_fix", "stale")}
    return Kpis(**{
        **figures,
        "status": DataStatus(row["newest_fix"], row["stale"]),
        "checkpoints": {int(line): (pair[0], pair[1]) for line, pair in row["checkpoints"].items()},
        "incidents_open": {int(severity): n for severity, n in row["incidents_open"].items()},
    })
