"""Derive coverage of grids, border segments and H3 cells from positions and sensors.

A unit *visits* a grid or border segment when one of its fixes lies within its
detection radius (by unit kind) of it, measured in metres in the region's
metric CRS; it visits an H3 cell when a fix lies in the cell (the fused
``position.h3``): with radii up to 1 km a drone fix would otherwise touch ~100
cells at resolution 9, and the derivation would cost ~30 s on a prefecture.
Consecutive fixes of a unit near a place no more than :data:`DWELL_CAP_S`
apart form one visit and add their time gap to the dwell. Each place's limit
is that of the strictest zone at its representative point (a grid's or cell's
point on surface, a segment's midpoint); statuses: grids and cells ``fresh``
(last visit < half the limit ago), ``due`` (< limit), ``overdue``; segments
``patrolled`` (visited within the limit), ``watched`` (else seen by a working
sensor), ``overdue``.

Hex cells covered: the cells holding a fix in the look-back window plus every
cell of the border_closed and port_control zones (all cells of the whole
region would be too many at resolution 9 for a province).

All three tables are rebuilt in one transaction, by set-based SQL driven from
the places (GiST on the window's fixes). Between rebuilds, live fixes move
``last_visit`` and the status forward at once (:func:`refresh_coverage_for`)
and statuses age with the clock (:func:`age_coverage`); visit counts and dwell
change only at the next rebuild.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import h3
import numpy as np
import pandas as pd
import psycopg
import shapely
import sqlalchemy as sa

from gridwatch.etl._copy import copy_rows, create_staging
from gridwatch.etl._feeds import pg_transaction
from gridwatch.etl._fuse_points import region_srid
from gridwatch.geo.h3cells import cell_polygons
from gridwatch.settings import Settings

__all__ = ["derive_coverage", "refresh_coverage_for", "age_coverage", "DWELL_CAP_S", "WINDOWS_H"]

DWELL_CAP_S = 120.0  # 2 x the longest regular report interval (60 s)
WINDOWS_H = (1, 4, 24)
HEX_ZONE_KINDS = ("border_closed", "port_control")


def derive_coverage(engine: sa.Engine, *, settings: Settings, as_of: datetime | None = None,
                    grid_ids: list[int] | None = None) -> None:
    """Rebuild ``grid_coverage``, ``segment_coverage`` and ``hex_coverage`` as of ``as_of`` (default now);
    with ``grid_ids``, the coverage of those grids only (after a publish changed them)."""
    if as_of is not None and as_of.tzinfo is None:
        raise ValueError("as_of must carry a time zone")
    as_of = as_of or datetime.now(timezone.utc)
    lookback_h = max(max(WINDOWS_H), 2 * max(settings.coverage_limit_h.values()))
    params = {
        "as_of": as_of,
        "lookback_h": lookback_h,
        "radius": json.dumps(settings.detection_radius_m),
        "limits": json.dumps(settings.coverage_limit_h),
        "max_radius": max(settings.detection_radius_m.values()),
        "cap": DWELL_CAP_S,
        "grid_ids": grid_ids,
    }
    with pg_transaction(engine) as conn:
        srid = region_srid(conn)
        if srid is None:
            return
        params["srid"] = srid
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('gridwatch.derive.coverage'))")
        if grid_ids is not None:
            for script in (_fixes(_NEAR_GRIDS), _LIMITS, _CHANGED_GRIDS, _HITS, _VISITS,
                           "DELETE FROM grid_coverage WHERE grid_id = ANY(%(grid_ids)s)", _WRITE_GRIDS):
                _run(conn, script, params)
            return
        for script in (_fixes(), _LIMITS):
            _run(conn, script, params)
        _stage_hexes(conn, settings)
        for script in (_PLACES, _HITS, _VISITS, "TRUNCATE grid_coverage, segment_coverage, hex_coverage", _WRITE):
            _run(conn, script, params)


def _run(conn: psycopg.Connection, script: str, params: dict) -> None:
    """Execute the statements of ``script`` one by one (bound parameters allow one per call)."""
    for statement in filter(str.strip, script.split(";\n")):
        conn.execute(statement, params if "%(" in statement else None)


def _stage_hexes(conn: psycopg.Connection, settings: Settings) -> None:
    """``cov_hex``: cells holding a fix in the look-back window, plus the cells of border zones."""
    visited = [r[0] for r in conn.execute("SELECT DISTINCT h3 FROM cov_fix WHERE h3 IS NOT NULL")]
    zones = conn.execute(
        "SELECT ST_AsBinary(geom) FROM zone WHERE kind = ANY(%s)", (list(HEX_ZONE_KINDS),)
    ).fetchall()
    zone_cells = [
        h3.str_to_int(c)
        for (wkb,) in zones
        for c in h3.geo_to_cells(shapely.from_wkb(wkb), settings.h3_resolution)
    ]
    cells = np.unique(np.asarray(visited + zone_cells, dtype=np.int64))
    polygons = cell_polygons(cells)
    create_staging(conn, "cov_hex", columns="h3 bigint, geom geometry(Polygon, 4326)")
    frame = pd.DataFrame({"h3": polygons["h3"], "geom": shapely.to_wkb(polygons.geometry.to_numpy(), hex=True)})
    copy_rows(conn, "cov_hex", frame)


def _fixes(near: str = "") -> str:
    """SQL staging the look-back window's fixes in metres (``near``: a JOIN narrowing them)."""
    return _FIXES.format(near=near)


_FIXES = """
CREATE TEMP TABLE cov_fix ON COMMIT DROP AS
SELECT p.unit_id, p.ts, p.h3, ST_Transform(p.geom, %(srid)s::int) AS g, r.radius_m
FROM position p
JOIN unit u ON u.id = p.unit_id
JOIN (SELECT key AS kind, value::float8 AS radius_m FROM jsonb_each_text(%(radius)s::jsonb)) r ON r.kind = u.kind
{near}
WHERE p.ts > %(as_of)s::timestamptz - make_interval(hours => %(lookback_h)s::int)
  AND p.ts <= %(as_of)s::timestamptz;
CREATE INDEX ON cov_fix USING gist (g);
ANALYZE cov_fix
"""

_LIMITS = """
CREATE TEMP TABLE cov_zone ON COMMIT DROP AS
SELECT ST_Transform(z.geom, %(srid)s::int) AS g, l.limit_h
FROM zone z JOIN (SELECT key AS kind, value::float8 AS limit_h FROM jsonb_each_text(%(limits)s::jsonb)) l
  ON l.kind = z.kind;
CREATE INDEX ON cov_zone USING gist (g);
CREATE TEMP TABLE cov_limit ON COMMIT DROP AS
SELECT key AS kind, value::float8 AS limit_h FROM jsonb_each_text(%(limits)s::jsonb);
"""

# Places in metres with their limit: the strictest zone at the representative point.
_PLACE_ROWS = {
    "grid": """SELECT 'grid' AS kind, id::bigint AS id, ST_Transform(geom, %(srid)s::int) AS g,
           ST_Transform(ST_PointOnSurface(geom), %(srid)s::int) AS pt, 'social_surface' AS fallback FROM grid""",
    "segment": """SELECT 'segment', id, ST_Transform(geom, %(srid)s::int),
           ST_Transform(ST_LineInterpolatePoint(geom, 0.5), %(srid)s::int), 'border_closed' FROM border_segment""",
    "hex": """SELECT 'hex', h3, ST_Transform(geom, %(srid)s::int), ST_Transform(ST_PointOnSurface(geom), %(srid)s::int),
           'social_surface' FROM cov_hex""",
}


def _places(rows: list[str]) -> str:
    """SQL staging the places ``rows`` (SELECTs of :data:`_PLACE_ROWS`) with their limits."""
    union = "\n    UNION ALL\n    ".join(rows)
    return f"""
CREATE TEMP TABLE cov_place ON COMMIT DROP AS
SELECT kind, id, g, coalesce(
         (SELECT min(z.limit_h) FROM cov_zone z WHERE ST_DWithin(z.g, pt, 1.0)),
         (SELECT limit_h FROM cov_limit WHERE cov_limit.kind = fallback)) AS limit_h
FROM (
    {union}
) places;
CREATE INDEX ON cov_place USING gist (g);
ANALYZE cov_place;
"""


_PLACES = _places(list(_PLACE_ROWS.values()))
# After a publish: the changed grids only, and the fixes near them (their bounding box grown by
# ~2 km, past every detection radius).
_CHANGED_GRIDS = _places([_PLACE_ROWS["grid"] + " WHERE id = ANY(%(grid_ids)s)"])
_NEAR_GRIDS = """JOIN (SELECT ST_Expand(ST_Extent(geom), 0.02) AS box FROM grid WHERE id = ANY(%(grid_ids)s)) near
  ON p.geom && near.box"""

# Grids and segments: fixes within their unit's detection radius, driven from the places.
# Cells: the cell each fix lies in (its fused h3).
_HITS = """
CREATE TEMP TABLE cov_hit ON COMMIT DROP AS
SELECT pl.kind, pl.id, f.unit_id, f.ts
FROM cov_place pl
JOIN cov_fix f ON ST_DWithin(f.g, pl.g, %(max_radius)s) AND ST_DWithin(f.g, pl.g, f.radius_m)
WHERE pl.kind <> 'hex'
UNION ALL
SELECT 'hex', h3, unit_id, ts FROM cov_fix WHERE h3 IS NOT NULL
"""

_VISITS = """
CREATE TEMP TABLE cov_visit ON COMMIT DROP AS
WITH gaps AS (
    SELECT kind, id, unit_id, ts,
           extract(epoch FROM ts - lag(ts) OVER (PARTITION BY kind, id, unit_id ORDER BY ts)) AS gap_s
    FROM cov_hit
), numbered AS (
    SELECT *, sum((gap_s IS NULL OR gap_s > %(cap)s)::int)
              OVER (PARTITION BY kind, id ORDER BY unit_id, ts) AS visit_no
    FROM gaps
)
SELECT kind, id, max(ts) AS last_visit,
       count(DISTINCT visit_no) FILTER (WHERE ts > %(as_of)s::timestamptz - interval '1 hour') AS visits_1h,
       count(DISTINCT visit_no) FILTER (WHERE ts > %(as_of)s::timestamptz - interval '4 hours') AS visits_4h,
       count(DISTINCT visit_no) FILTER (WHERE ts > %(as_of)s::timestamptz - interval '24 hours') AS visits_24h,
       coalesce(sum(gap_s) FILTER (WHERE gap_s <= %(cap)s AND ts > %(as_of)s::timestamptz - interval '1 hour'), 0) AS dwell_s_1h,
       coalesce(sum(gap_s) FILTER (WHERE gap_s <= %(cap)s AND ts > %(as_of)s::timestamptz - interval '4 hours'), 0) AS dwell_s_4h,
       coalesce(sum(gap_s) FILTER (WHERE gap_s <= %(cap)s AND ts > %(as_of)s::timestamptz - interval '24 hours'), 0) AS dwell_s_24h
FROM numbered
GROUP BY kind, id
"""

def _place_status(visit: str, limit_h: str, at: str) -> str:
    """SQL of a grid's or cell's status: fresh within half its limit, due within it, else overdue."""
    return (f"CASE WHEN {visit} > {at}::timestamptz - make_interval(secs => {limit_h} * 1800) THEN 'fresh' "
            f"WHEN {visit} > {at}::timestamptz - make_interval(secs => {limit_h} * 3600) THEN 'due' "
            "ELSE 'overdue' END")


def _segment_status(visit: str, limit_h: str, watched: str, at: str) -> str:
    """SQL of a border segment's status: patrolled within its limit, else watched by a sensor, else overdue."""
    return (f"CASE WHEN {visit} > {at}::timestamptz - make_interval(secs => {limit_h} * 3600) THEN 'patrolled' "
            f"WHEN {watched} THEN 'watched' ELSE 'overdue' END")


_COLUMNS = "last_visit, visits_1h, visits_4h, visits_24h, dwell_s_1h, dwell_s_4h, dwell_s_24h, limit_h"
_SELECT = f"""
SELECT pl.id, v.last_visit, coalesce(v.visits_1h, 0), coalesce(v.visits_4h, 0), coalesce(v.visits_24h, 0),
       coalesce(v.dwell_s_1h, 0), coalesce(v.dwell_s_4h, 0), coalesce(v.dwell_s_24h, 0), pl.limit_h,
       {_place_status("v.last_visit", "pl.limit_h", "%(as_of)s")}
FROM cov_place pl LEFT JOIN cov_visit v ON v.kind = pl.kind AND v.id = pl.id
"""
_WRITE_GRIDS = f"""
INSERT INTO grid_coverage (grid_id, {_COLUMNS}, status)
{_SELECT} WHERE pl.kind = 'grid'
"""
_WRITE = _WRITE_GRIDS + f""";

INSERT INTO hex_coverage (h3, {_COLUMNS}, status, geom)
SELECT s.*, h.geom FROM ({_SELECT} WHERE pl.kind = 'hex') s JOIN cov_hex h ON h.h3 = s.id;

INSERT INTO segment_coverage (segment_id, {_COLUMNS}, watched, status)
SELECT s.id, s.last_visit, s.visits_1h, s.visits_4h, s.visits_24h, s.dwell_s_1h, s.dwell_s_4h, s.dwell_s_24h,
       s.limit_h, s.watched,
       {_segment_status("s.last_visit", "s.limit_h", "s.watched", "%(as_of)s")}
FROM (
    SELECT pl.id, v.last_visit, coalesce(v.visits_1h, 0) AS visits_1h, coalesce(v.visits_4h, 0) AS visits_4h,
           coalesce(v.visits_24h, 0) AS visits_24h, coalesce(v.dwell_s_1h, 0) AS dwell_s_1h,
           coalesce(v.dwell_s_4h, 0) AS dwell_s_4h, coalesce(v.dwell_s_24h, 0) AS dwell_s_24h, pl.limit_h,
           EXISTS (SELECT 1 FROM sensor se WHERE se.up
                   AND ST_DWithin(ST_Transform(se.geom, %(srid)s::int), pl.g, se.range_m)) AS watched
    FROM cov_place pl LEFT JOIN cov_visit v ON v.kind = pl.kind AND v.id = pl.id
    WHERE pl.kind = 'segment'
) s;
"""


# A batch of live fixes moves coverage by the places it was fused with: its grid,
# its border segment when within the unit's detection radius, its H3 cell. A
# plain GROUP BY, cheap enough for every batch; visits of a neighbouring grid
# within the radius wait for the next full rebuild.
_LIVE_FIXES = f"""
CREATE TEMP TABLE live_fix ON COMMIT DROP AS
SELECT f.ts, f.grid_id, f.segment_id, f.border_m, f.h3, (%(radius)s::jsonb ->> u.kind)::float8 AS r
FROM unnest(%(unit_id)s::int[], %(ts)s::timestamptz[], %(grid_id)s::int[], %(segment_id)s::int[],
            %(border_m)s::float8[], %(h3)s::bigint[]) AS f(unit_id, ts, grid_id, segment_id, border_m, h3)
JOIN unit u ON u.id = f.unit_id;

UPDATE grid_coverage c SET last_visit = v.ts, updated_at = now(),
       status = {_place_status("v.ts", "c.limit_h", "%(now)s")}
FROM (SELECT grid_id, max(ts) AS ts FROM live_fix WHERE grid_id IS NOT NULL GROUP BY grid_id) v
WHERE c.grid_id = v.grid_id AND (c.last_visit IS NULL OR c.last_visit < v.ts);

UPDATE segment_coverage c SET last_visit = v.ts, updated_at = now(),
       status = {_segment_status("v.ts", "c.limit_h", "c.watched", "%(now)s")}
FROM (SELECT segment_id, max(ts) AS ts FROM live_fix WHERE segment_id IS NOT NULL AND border_m <= r
      GROUP BY segment_id) v
WHERE c.segment_id = v.segment_id AND (c.last_visit IS NULL OR c.last_visit < v.ts);

UPDATE hex_coverage c SET last_visit = v.ts, updated_at = now(),
       status = {_place_status("v.ts", "c.limit_h", "%(now)s")}
FROM (SELECT h3, max(ts) AS ts FROM live_fix WHERE h3 IS NOT NULL GROUP BY h3) v
WHERE c.h3 = v.h3 AND (c.last_visit IS NULL OR c.last_visit < v.ts);

DROP TABLE live_fix
"""

_AGE = f"""
UPDATE grid_coverage SET status = s.status, updated_at = now() FROM (
    SELECT grid_id, {_place_status("last_visit", "limit_h", "%(now)s")} AS status FROM grid_coverage) s
WHERE grid_coverage.grid_id = s.grid_id AND grid_coverage.status <> s.status;

UPDATE hex_coverage SET status = s.status, updated_at = now() FROM (
    SELECT h3, {_place_status("last_visit", "limit_h", "%(now)s")} AS status FROM hex_coverage) s
WHERE hex_coverage.h3 = s.h3 AND hex_coverage.status <> s.status;

UPDATE segment_coverage SET status = s.status, updated_at = now() FROM (
    SELECT segment_id, {_segment_status("last_visit", "limit_h", "watched", "%(now)s")} AS status
    FROM segment_coverage) s
WHERE segment_coverage.segment_id = s.segment_id AND segment_coverage.status <> s.status
"""


def refresh_coverage_for(
    conn: psycopg.Connection, fixes: pd.DataFrame, *, settings: Settings, now: datetime | None = None
) -> None:
    """Move coverage forward for a batch of accepted, fused live fixes, in the caller's transaction.

    ``fixes`` has columns ``unit_id``, ``ts`` (tz-aware), ``grid_id``, ``segment_id``
    (-1 or NA when none), ``border_m`` and ``h3``.
    """
    if fixes.empty:
        return

    def ids(column: str) -> list:
        """Integer ids, with -1 and missing as NULL."""
        values = pd.array(fixes[column], dtype="Int64")
        values[(values < 0).fillna(False)] = pd.NA
        return values.to_numpy(dtype=object, na_value=None).tolist()

    params = {
        "unit_id": fixes["unit_id"].astype("int64").tolist(),
        "ts": list(pd.to_datetime(fixes["ts"], utc=True).dt.to_pydatetime()),
        "grid_id": ids("grid_id"),
        "segment_id": ids("segment_id"),
        "border_m": fixes["border_m"].astype("float64").tolist(),
        "h3": ids("h3"),
        "radius": json.dumps(settings.detection_radius_m),
        "now": now or datetime.now(timezone.utc),
    }
    _run(conn, _LIVE_FIXES, params)


def age_coverage(conn: psycopg.Connection, *, now: datetime | None = None) -> None:
    """Re-judge every status against the clock (fresh turns due, due turns overdue)."""
    _run(conn, _AGE, {"now": now or datetime.now(timezone.utc)})
