"""Evidence of a shift: what a command unit's area held over a time window, and its GeoPackage.

The area is the command unit's polygon (its subtree's ground). Five layers, each one
set-based statement:

- ``grids``: every grid whose point on surface lies in the area, with its coverage as the
  coverage tables judge it (``status``, ``last_visit``, ``limit_h``, ``judged_at``);
- ``border_segments``: every border segment touching the area, with its status;
- ``positions``: every fix taken in the window in the area (its grid in the area, or for a
  fix in no grid, its point), with the unit's callsign and kind;
- ``incidents``: every incident in the area reported by the window's end and not closed
  before it starts, with its times and handling time (closed − reported) in minutes;
- ``alerts``: every alert in the area raised by the window's end (an alert raised then is open
  at its end, as :func:`gridwatch.layers.alerts.alerts_at` has it) and not cleared before it starts, with who acknowledged it and when (an alert about a unit lies in the area when
  the unit is of the command unit or below it, as on the dispatch page).

Times are in UTC, as the GeoPackage standard wants them (the shift report shows the site's
zone). The file is written beside its target and moved into place when whole, so a failure
leaves no half file and keeps an older one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import geopandas as gpd
import pandas as pd
import psycopg
import pyarrow as pa
import pyogrio
import shapely
import sqlalchemy as sa

from gridwatch.errors import InputError
from gridwatch.geo.crs import export_crs, export_points_wkb, to_export_crs
from gridwatch.layers.alerts import ALERT_IN_SCOPE
from gridwatch.layers.queries import SCOPE, CommandUnit, UnknownCommandUnitError, command_unit

__all__ = ["LAYERS", "Window", "window", "read_layer", "read_evidence", "export_evidence", "position_counts",
           "ShiftSummary", "summarise", "check_target", "positions_sql", "positions_table"]

#: The layers of an evidence file and their geometry types.
LAYERS = {"grids": "MultiPolygon", "border_segments": "LineString", "positions": "Point", "incidents": "Point",
          "alerts": "Point"}


@dataclass(frozen=True)
class Window:
    """A command unit's area from ``start`` to ``end`` (fixes: ``[start, end)``; events: ``[start, end]``)."""

    area: CommandUnit
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600.0


def window(engine: sa.Engine, code: str, start: datetime, end: datetime) -> Window:
    """The window of command unit ``code`` from ``start`` to ``end`` (both with a zone)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InputError("the window's start and end need a time zone")
    if start >= end:
        raise InputError(f"the window starts at {start.isoformat()}, not before its end {end.isoformat()}")
    try:
        area = command_unit(engine, code)
    except UnknownCommandUnitError as exc:
        raise InputError(f"{exc}: give a prefecture, county, township or station code") from None
    return Window(area, start, end)


_AREA = "area AS (SELECT geom FROM command_unit WHERE id = :area)"

_SQL = {
    "grids": f"""
WITH {_AREA}
SELECT g.code, g.name, t.code AS township, pa.code AS police_area, g.households, g.population, g.workers,
       c.status, c.last_visit, c.limit_h, c.visits_24h, c.dwell_s_24h, c.updated_at AS judged_at,
       ST_AsBinary(g.geom) AS geom
FROM grid g JOIN area ON ST_Intersects(area.geom, ST_PointOnSurface(g.geom))
LEFT JOIN grid_coverage c ON c.grid_id = g.id
LEFT JOIN command_unit t ON t.id = g.township_id
LEFT JOIN police_area pa ON pa.id = g.police_area_id
ORDER BY g.code
""",
    "border_segments": f"""
WITH {_AREA}
SELECT s.id AS segment, s.km_from, s.km_to, c.status, c.watched, c.last_visit, c.limit_h, c.visits_24h,
       c.updated_at AS judged_at, ST_AsBinary(s.geom) AS geom
FROM border_segment s JOIN area ON ST_Intersects(area.geom, s.geom)
LEFT JOIN segment_coverage c ON c.segment_id = s.id
ORDER BY s.km_from
""",
    "incidents": f"""
WITH {_AREA}
SELECT i.source_id, i.kind, i.severity, i.status, i.reported_at, i.dispatched_at, i.on_scene_at, i.closed_at,
       extract(epoch FROM i.closed_at - i.reported_at)::float8 / 60.0 AS handling_min, i.note, ST_AsBinary(i.geom) AS geom
FROM incident i JOIN area ON ST_Intersects(area.geom, i.geom)
WHERE i.reported_at <= :end AND (i.closed_at IS NULL OR i.closed_at >= :start)
ORDER BY i.reported_at, i.id
""",
    "alerts": SCOPE + f"""
SELECT a.id AS alert, a.kind, a.subject, a.severity, a.raised_at, a.cleared_at, a.acknowledged_by,
       a.acknowledged_at, CAST(a.detail AS text) AS detail,
       ST_AsBinary(ST_SetSRID(ST_MakePoint((a.detail->>'lon')::float8, (a.detail->>'lat')::float8), 4326)) AS geom
FROM alert a
WHERE a.raised_at <= :end AND (a.cleared_at IS NULL OR a.cleared_at >= :start) AND {ALERT_IN_SCOPE}
ORDER BY a.raised_at, a.id
""",
}

# Positions (psycopg's placeholders: the statement is bound before ADBC runs it): the fast path by
# the fix's fused grid, the point only for a fix in no grid. The grids are joined, not a hashed
# IN: with IN the planner walks the day's primary key instead of its rows (2-3x slower).
_POSITIONS = """
WITH area AS (SELECT geom FROM command_unit WHERE id = %(area)s), area_grid AS (
    SELECT g.id FROM grid g JOIN area ON ST_Intersects(area.geom, ST_PointOnSurface(g.geom))
)
SELECT {columns}
FROM position p JOIN unit u ON u.id = p.unit_id LEFT JOIN area_grid ag ON ag.id = p.grid_id
WHERE p.ts >= %(start)s AND p.ts < %(end)s
  AND (ag.id IS NOT NULL
       OR (p.grid_id IS NULL AND EXISTS (SELECT 1 FROM area WHERE ST_Intersects(area.geom, p.geom))))
"""
_POSITION_COLUMNS = ("callsign", "kind", "ts_us", "lon", "lat", "speed", "heading", "accuracy", "source")
_POSITION_SELECT = ("u.callsign, u.kind, (extract(epoch FROM p.ts) * 1000000)::bigint, {geometry}, "
                    "p.speed, p.heading, p.accuracy, p.source")


def _params(win: Window) -> dict[str, object]:
    return {"area": win.area.id, "scope": win.area.id, "start": win.start, "end": win.end}


def read_layer(engine: sa.Engine, win: Window, name: str) -> gpd.GeoDataFrame:
    """One evidence layer of the window (EPSG:4326, times in UTC)."""
    if name not in _SQL:
        raise ValueError(f"layer {name!r} is not one of {list(_SQL)} (positions: positions_table)")
    with engine.connect() as conn:
        result = conn.execute(sa.text(_SQL[name]), _params(win))
        frame = pd.DataFrame(list(map(tuple, result.fetchall())), columns=list(result.keys()))
    geometry = shapely.from_wkb(frame.pop("geom").to_numpy())
    for column in frame.columns:  # all-NULL or mixed columns come back as objects
        if column.endswith(("_at", "last_visit")):
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=4326)


def positions_sql(conn: psycopg.Connection, win: Window, *, geometry: str = "ST_X(p.geom), ST_Y(p.geom)") -> str:
    """The statement that selects the window's fixes in the area, its values bound (for ADBC, or for
    another program): callsign, kind, time in µs since 1970, ``geometry``, speed, heading, accuracy,
    source."""
    return psycopg.ClientCursor(conn).mogrify(_POSITIONS.format(columns=_POSITION_SELECT.format(geometry=geometry)),
                                              _params(win))


def positions_table(engine: sa.Engine, win: Window, *, crs: str = "wgs84") -> pa.Table:
    """The window's fixes in the area as an Arrow table with a WKB ``geometry`` in the export CRS
    ``crs``: one query read straight into Arrow (ADBC, PostgreSQL's binary COPY), the points
    transformed and encoded at once."""
    with engine.connect() as conn:
        sql = positions_sql(conn.connection.driver_connection, win)
    uri = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with adbc.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    table = table.rename_columns(list(_POSITION_COLUMNS))
    return pa.table({
        "callsign": table["callsign"], "kind": table["kind"],
        "ts": table["ts_us"].cast(pa.timestamp("us", tz="UTC")),
        **{name: table[name] for name in ("speed", "heading", "accuracy", "source")},
        "geometry": export_points_wkb(table["lon"].to_numpy(), table["lat"].to_numpy(), crs).cast(pa.binary()),
    })


def position_counts(engine: sa.Engine, win: Window) -> tuple[int, int]:
    """How many fixes the window holds in the area, and from how many units."""
    sql = _POSITIONS.format(columns="count(*), count(DISTINCT p.unit_id)")
    with engine.connect() as conn:
        fixes, units = conn.exec_driver_sql(sql, _params(win)).one()
    return int(fixes), int(units)


@dataclass(frozen=True)
class ShiftSummary:
    """The figures of a shift: coverage at its end, incidents and their handling, alerts.

    ``handled_by_hour`` counts the incidents closed in each hour of the window (from the hour
    the window starts in); handling times (closed − reported) are of the incidents closed in
    the window, in minutes; ``ack_median_min`` is the median time from an alert to its
    acknowledgement, of those acknowledged in the window.
    """

    hours: float
    fixes: int
    units: int
    segments_total: int
    segments_covered: int
    grids_total: int
    grids_overdue: int
    grids_never: int
    reported: int
    closed: int
    handled_by_hour: pd.Series
    handling_median_min: float | None
    handling_p90_min: float | None
    alerts_raised: int
    alerts_acknowledged: int
    ack_median_min: float | None

    @property
    def handled_per_hour(self) -> float:
        return self.closed / self.hours if self.hours else 0.0


def _within(times: pd.Series, win: Window) -> pd.Series:
    """Whether each time lies in the window, its end included (what happened as it closed)."""
    return (times >= win.start) & (times <= win.end)


def _quantile(values: pd.Series, q: float) -> float | None:
    return float(values.quantile(q)) if len(values) else None


def summarise(frames: dict[str, gpd.GeoDataFrame], win: Window, *, fixes: int, units: int) -> ShiftSummary:
    """The :class:`ShiftSummary` of the window's ``grids``, ``border_segments``, ``incidents`` and ``alerts``."""
    grids, segments, incidents, alerts = (frames[k] for k in ("grids", "border_segments", "incidents", "alerts"))
    closed = incidents[_within(incidents["closed_at"], win)]
    first_hour = pd.Timestamp(win.start).tz_convert("UTC").floor("h")
    hours = pd.date_range(first_hour, pd.Timestamp(win.end).tz_convert("UTC"), freq="h", inclusive="left")
    by_hour = closed["closed_at"].dt.floor("h").value_counts().reindex(hours, fill_value=0)
    acked = alerts[_within(alerts["acknowledged_at"], win)]
    ack_min = (acked["acknowledged_at"] - acked["raised_at"]).dt.total_seconds() / 60.0
    return ShiftSummary(
        hours=win.hours, fixes=fixes, units=units,
        segments_total=len(segments), segments_covered=int(segments["status"].isin(["patrolled", "watched"]).sum()),
        grids_total=len(grids), grids_overdue=int((grids["status"] == "overdue").sum()),
        grids_never=int(grids["last_visit"].isna().sum()),
        reported=int(_within(incidents["reported_at"], win).sum()), closed=len(closed), handled_by_hour=by_hour,
        handling_median_min=_quantile(closed["handling_min"], 0.5), handling_p90_min=_quantile(closed["handling_min"], 0.9),
        alerts_raised=int(_within(alerts["raised_at"], win).sum()), alerts_acknowledged=len(acked),
        ack_median_min=_quantile(ack_min, 0.5),
    )


def read_evidence(engine: sa.Engine, win: Window) -> dict[str, gpd.GeoDataFrame]:
    """Every layer of the window but the positions (:func:`positions_table`)."""
    return {name: read_layer(engine, win, name) for name in _SQL}


def check_target(path: Path) -> None:
    """Refuse a file that cannot be written, before any work is done."""
    folder = path.parent
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name such as evidence.gpkg")
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write {path}: the folder {folder} is not writable")


def export_evidence(engine: sa.Engine, win: Window, path: Path, *, crs: str = "cgcs2000") -> dict[str, int]:
    """Write the window's evidence to the GeoPackage ``path``; returns the rows of each layer."""
    export_crs(crs)
    path = Path(path)
    check_target(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    partial.unlink(missing_ok=True)
    counts = {}
    try:
        for name, kind in LAYERS.items():
            options = {"driver": "GPKG", "layer": name, "geometry_type": kind, "append": bool(counts)}
            if name == "positions":
                table = positions_table(engine, win, crs=crs)
                pyogrio.write_arrow(table, partial, geometry_name="geometry", crs=export_crs(crs), **options)
                counts[name] = table.num_rows
            else:
                frame = to_export_crs(read_layer(engine, win, name), crs)
                pyogrio.write_dataframe(frame, partial, use_arrow=True, **options)
                counts[name] = len(frame)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return counts
