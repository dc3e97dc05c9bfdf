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

Coverage is derived from the fixes of the look-back window (``settings.coverage_lookback_h``,
48 h by default): a place with no visit in it has no last visit.
Hex cells covered: the cells holding a fix in the look-back window plus every
cell of the border_closed and port_control zones (all cells of the whole
region would be too many at resolution 9 for a province).

:func:`derive_coverage` rebuilds all three tables in one transaction; ``etl run``
does that. It reads the window's fixes as whole columns (one packed value per
column, while another thread finds the border zones' cells) and works on them:
the hits found from the prepared places in trees of the fixes' points (every
core at once), the figures by :func:`gridwatch.geo.coverage.place_figures` from
one sorted integer per hit; the cells' GiST index is built after their insert.
A province's 10 M fixes take ~85 s here, where a window function over their
30 M hits in SQL took ten minutes.

The live path never rebuilds: each stored fix (a *hit* at every
place within its radius) adds to a place's figures a dwell term (the gap to
the unit's previous hit there, when within the cap) and a visit term (1 when
it is the last hit of its visit), and the figures over a window are the sums
of the terms of the hits inside it.

Coverage counts every stored fix but those in ``coverage_pending`` (the ingest
writer adds each fix it stores there, in the fix's own transaction). So
:func:`move_pending_coverage` takes every pending fix out of the table and
moves, in the same transaction, only the places they hit (neighbouring grids
and segments within the radius included), by the change of the terms of the
hits within :data:`DWELL_CAP_S` of them; :func:`age_coverage` first does the
same, then moves the windows on by subtracting the terms of the hits that left
each window since ``coverage_clock``, clears last visits older than the
look-back, and re-judges only the statuses that change. Every step, the
rebuild included, reads the fixes without those still pending (a batch may
commit meanwhile), and a full rebuild takes out the pending fixes it counts.
All hold one advisory lock, and the figures equal a rebuild's at the same time.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pyproj
import shapely
import sqlalchemy as sa
from h3.api import basic_int as h3_int

from gridwatch.etl import _pgbinary as pgb
from gridwatch.etl._copy import create_staging, keys_built_after
from gridwatch.etl._fuse_points import read_geoms, region_srid
from gridwatch.etl.database import pg_transaction
from gridwatch.etl.runlog import collector_paused
from gridwatch.geo.coverage import place_figures
from gridwatch.geo.crs import project_geoms
from gridwatch.geo.h3cells import cell_polygons
from gridwatch.settings import Settings

__all__ = ["derive_coverage", "move_pending_coverage", "age_coverage", "CoverageMoves", "DWELL_CAP_S",
           "WINDOWS_H"]

DWELL_CAP_S = 120.0  # 2 x the longest regular report interval (60 s)
WINDOWS_H = (1, 4, 24)
HEX_ZONE_KINDS = ("border_closed", "port_control")
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def derive_coverage(engine: sa.Engine, *, settings: Settings, as_of: datetime | None = None,
                    grid_ids: list[int] | None = None) -> None:
    """Rebuild ``grid_coverage``, ``segment_coverage`` and ``hex_coverage`` as of ``as_of`` (default now)
    and set ``coverage_clock`` to it, counting (and taking out of ``coverage_pending``) every fix stored;
    with ``grid_ids``, the coverage of those grids only (after a publish changed them), its windows at
    the clock's time like every other row's, without the pending fixes (their move counts them there)."""
    if as_of is not None and as_of.tzinfo is None:
        raise ValueError("as_of must carry a time zone")
    as_of = as_of or datetime.now(timezone.utc)
    params = _params(settings, as_of) | {"as_of": as_of, "grid_ids": grid_ids}
    with pg_transaction(engine) as conn:
        srid = region_srid(conn)
        if srid is None:
            return
        params["srid"] = srid
        to_metric = _to_metric(srid)
        conn.execute(_LOCK)
        if grid_ids is None:
            params["windows_at"] = as_of
            conn.execute("DELETE FROM coverage_pending")
        else:
            params["windows_at"] = _clock(conn) or as_of
        zones = _hex_zones(conn) if grid_ids is None else []
        with ThreadPoolExecutor(1) as pool:  # the zones' cells while the server reads the fixes
            zone_cells = pool.submit(_zone_cells, zones, settings.h3_resolution)
            fixes = _read_fixes(conn, params, near="" if grid_ids is None else _NEAR_GRIDS)
        wanted = {"grid": grid_ids} if grid_ids is not None else {
            "grid": None, "segment": None, "hex": np.union1d(fixes["h3"][fixes["h3"] != 0], zone_cells.result())}
        places = _stage_places(conn, settings, to_metric, wanted)
        _stage_figures(conn, places, fixes, to_metric, params["windows_at"])
        if grid_ids is not None:
            conn.execute("DELETE FROM grid_coverage WHERE grid_id = ANY(%(grid_ids)s)", params)
            _run(conn, _WRITE_GRIDS, params)
            return
        conn.execute("TRUNCATE grid_coverage, segment_coverage, hex_coverage")
        with keys_built_after(conn, "grid_coverage"), keys_built_after(conn, "hex_coverage"):
            _run(conn, _WRITE, params)
        _run(conn, _SET_CLOCK, params)


def _params(settings: Settings, now: datetime) -> dict:
    """The bound parameters every coverage statement draws on."""
    return {
        "now": now,
        "lookback_h": settings.coverage_lookback_h,
        "radius": json.dumps(settings.detection_radius_m),
        "max_radius": max(settings.detection_radius_m.values()),
        "cap": DWELL_CAP_S,
    }


def _to_metric(srid: int) -> pyproj.Transformer:
    """Lon/lat to the region's metric CRS."""
    return pyproj.Transformer.from_crs(4326, srid, always_xy=True)


def _clock(conn: psycopg.Connection) -> datetime | None:
    """The time the coverage windows stand at (None: coverage never derived)."""
    row = conn.execute("SELECT windows_at FROM coverage_clock").fetchone()
    return None if row is None else row[0]


def _run(conn: psycopg.Connection, script: str, params: dict) -> None:
    """Execute the statements of ``script`` one by one (bound parameters allow one per call)."""
    for statement in filter(str.strip, script.split(";\n")):
        conn.execute(statement, params if "%(" in statement else None)


def _hex_zones(conn: psycopg.Connection) -> list:
    """The border_closed and port_control zones, whose cells are always in ``hex_coverage``."""
    rows = conn.execute("SELECT ST_AsBinary(geom) FROM zone WHERE kind = ANY(%s)", (list(HEX_ZONE_KINDS),))
    return [shapely.from_wkb(wkb) for (wkb,) in rows.fetchall()]


def _zone_cells(zones: list, resolution: int) -> np.ndarray:
    """The H3 cells of ``zones``, ascending."""
    cells = [np.asarray(h3_int.geo_to_cells(zone, resolution), dtype=np.int64) for zone in zones]
    return np.unique(np.concatenate(cells or [np.empty(0, np.int64)]))


# Each fix's unit's detection radius.
_KIND_RADIUS = "(SELECT key AS kind, value::float8 AS radius_m FROM jsonb_each_text(%(radius)s::jsonb)) r"
_RADIUS = "JOIN unit u ON u.id = p.unit_id\nJOIN " + _KIND_RADIUS + " ON r.kind = u.kind"

# A stored fix coverage counts: one not pending.
_COUNTED = "NOT EXISTS (SELECT 1 FROM coverage_pending q WHERE q.unit_id = p.unit_id AND q.ts = p.ts)"

# The look-back window's fixes, and in the same snapshot the keys of the pending ones (a batch may
# commit meanwhile), which count elsewhere; a join on the pending keys would cost a merge join
# over the whole window's index.
_FIXES = """
SELECT p.unit_id, p.ts, ST_X(p.geom), ST_Y(p.geom), coalesce(p.h3, 0), false
FROM position p
{near}
WHERE p.ts > %(as_of)s::timestamptz - make_interval(secs => %(lookback_h)s::float8 * 3600)
  AND p.ts <= %(as_of)s::timestamptz
UNION ALL
SELECT unit_id, ts, 0, 0, 0, true FROM coverage_pending"""
# Each unit's detection radius (the fixes take it by unit: a join per fix costs the server a third more).
_UNIT_RADII = "SELECT u.id, r.radius_m FROM unit u JOIN " + _KIND_RADIUS + " ON r.kind = u.kind"
_FIX_COLUMNS = (("unit", "int4"), ("ts_us", "timestamptz"), ("lon", "float8"), ("lat", "float8"), ("h3", "int8"),
                ("pending", "bool"))
# After a publish: the fixes near the changed grids (their bounding box grown by ~2 km, past every
# detection radius).
_NEAR_GRIDS = """JOIN (SELECT ST_Expand(ST_Extent(geom), 0.02) AS box FROM grid WHERE id = ANY(%(grid_ids)s)) near
  ON p.geom && near.box"""


def _read_fixes(conn: psycopg.Connection, params: dict, near: str = "") -> dict[str, np.ndarray]:
    """The look-back window's counted fixes as columns (``h3`` 0 when none), in unit and time order
    (``near``: a JOIN narrowing them)."""
    rows = pgb.read_columns(conn, _FIXES.format(near=near), params, _FIX_COLUMNS)
    order = np.lexsort((rows["ts_us"] * 2 + rows["pending"], rows["unit"]))  # a pending key after its fix
    unit, ts, pending = rows["unit"][order], rows["ts_us"][order], rows.pop("pending")[order]
    counted = ~pending
    counted[:-1] &= ~(pending[1:] & (unit[1:] == unit[:-1]) & (ts[1:] == ts[:-1]))
    keep = order[counted]
    units = pgb.read_columns(conn, _UNIT_RADII, params, (("id", "int4"), ("radius_m", "float8")))
    by_id = np.argsort(units["id"])
    at = np.searchsorted(units["id"], unit[counted], sorter=by_id)
    known = at < len(by_id)
    known[known] = units["id"][by_id[at[known]]] == unit[counted][known]  # a kind with no radius sees nothing
    fixes = {name: column[keep[known]] for name, column in rows.items()}
    fixes["radius_m"] = units["radius_m"][by_id[at[known]]]
    return fixes


@dataclass(frozen=True)
class _Places:
    """Places of one kind: their ids and their geometries in metres (None for cells)."""

    ids: np.ndarray
    geoms: np.ndarray | None


# The grids and the segments (cells come from their indexes), and the zone kind whose limit holds for
# a place of each kind away from every zone.
_PLACE_SOURCES = {"grid": "SELECT id, ST_AsBinary(geom) FROM grid",
                  "segment": "SELECT id, ST_AsBinary(geom) FROM border_segment"}
_FALLBACK = {"grid": "social_surface", "segment": "border_closed", "hex": "social_surface"}


def _stage_places(conn: psycopg.Connection, settings: Settings, to_metric: pyproj.Transformer,
                  wanted: dict[str, Iterable[int] | None]) -> dict[str, _Places]:
    """``cov_place``: the places of each kind in ``wanted`` (grids and segments by id, all for None;
    cells by index, their polygons in ``cov_hex``) with their limits, and for segments whether a
    working sensor sees them; returns the places in metres."""
    create_staging(conn, "cov_place", columns="kind text, id bigint, limit_h float8, watched boolean")
    zones, zone_limits = _zones(conn, settings, to_metric)
    places = {}
    for kind, want in wanted.items():
        if kind == "hex":  # cells are hit by the fixes' own cells, not by distance
            ids = np.asarray(want, dtype=np.int64)
            geoms = cell_polygons(ids).geometry.to_numpy()
            _stage_cells(conn, ids, geoms)
        else:
            where = "" if want is None else " WHERE id = ANY(%s)"
            ids, geoms = read_geoms(conn, _PLACE_SOURCES[kind] + where, None if want is None else (list(want),))
        # a segment's midpoint, a grid's or cell's point on surface, taken in lon/lat
        point = shapely.line_interpolate_point(geoms, 0.5, normalized=True) if kind == "segment" \
            else shapely.point_on_surface(geoms)
        metric = None if kind == "hex" else project_geoms(geoms, to_metric)
        limits = _limits(project_geoms(point, to_metric), zones, zone_limits,
                         settings.coverage_limit_h.get(_FALLBACK[kind], np.nan))
        watched = _watched(conn, metric, to_metric) if kind == "segment" else np.zeros(len(ids), dtype=bool)
        pgb.copy_columns(conn, "cov_place", [pgb.text_const("kind", kind, len(ids)), pgb.int8("id", ids),
                                         pgb.float8("limit_h", limits), pgb.boolean("watched", watched)])
        places[kind] = _Places(ids, metric)
    conn.execute("ANALYZE cov_place")
    return places


def _stage_cells(conn: psycopg.Connection, cells: np.ndarray, polygons: np.ndarray) -> None:
    """``cov_hex``: the cells' polygons (lon/lat)."""
    create_staging(conn, "cov_hex", columns="h3 bigint, geom geometry(Polygon, 4326)")
    for rows, geom in pgb.ewkb_batches("geom", polygons, 4326):
        pgb.copy_columns(conn, "cov_hex", [pgb.int8("h3", cells[rows]), geom])


def _zones(conn: psycopg.Connection, settings: Settings, to_metric: pyproj.Transformer) -> tuple[np.ndarray, np.ndarray]:
    """The zones whose kind has a coverage limit, in metres, and their limits."""
    rows = conn.execute("SELECT kind, ST_AsBinary(geom) FROM zone WHERE kind = ANY(%s)",
                        (list(settings.coverage_limit_h),)).fetchall()
    kinds, wkb = zip(*rows) if rows else ((), ())
    limits = np.asarray([settings.coverage_limit_h[k] for k in kinds], dtype=np.float64)
    return project_geoms(shapely.from_wkb(list(wkb)), to_metric), limits


def _limits(points: np.ndarray, zones: np.ndarray, zone_limits: np.ndarray, fallback: float) -> np.ndarray:
    """Each point's limit: the strictest of the zones within 1 m of it, else ``fallback``."""
    strictest = np.full(len(points), np.inf)
    if len(points) and len(zones):
        zone, point = shapely.STRtree(points).query(zones, predicate="dwithin", distance=1.0)
        np.minimum.at(strictest, point, zone_limits[zone])
    return np.where(np.isinf(strictest), fallback, strictest)


def _watched(conn: psycopg.Connection, segments: np.ndarray, to_metric: pyproj.Transformer) -> np.ndarray:
    """Which segments (in metres) a working sensor sees: one within its range."""
    rows = conn.execute("SELECT ST_AsBinary(geom), range_m FROM sensor WHERE up").fetchall()
    watched = np.zeros(len(segments), dtype=bool)
    if rows and len(segments):
        wkb, ranges = zip(*rows)
        sensors = project_geoms(shapely.from_wkb(list(wkb)), to_metric)
        _, seen = shapely.STRtree(segments).query(sensors, predicate="dwithin", distance=np.asarray(ranges))
        watched[seen] = True
    return watched


_FIGURES = "kind text, id bigint, last_ts timestamptz, " + ", ".join(
    f"visits_{w}h int, dwell_s_{w}h float8" for w in WINDOWS_H)
# Fixes per tree of points the places are searched in (a tree of every fix would hold ~2 GB), and
# the side of the squares (in degrees, ~2 km) they are taken by, so that a chunk covers a compact area.
_FIX_CHUNK = 1_000_000
_AREA_DEG = 0.02


def _stage_figures(conn: psycopg.Connection, places: dict[str, _Places], fixes: dict[str, np.ndarray],
                   to_metric: pyproj.Transformer, windows_at: datetime) -> None:
    """``cov_delta``: the figures of every place a fix hit, each window ending at ``windows_at``: grids
    and segments hit by the fixes within their unit's detection radius, cells by the fixes in them."""
    create_staging(conn, "cov_delta", columns=_FIGURES)
    end_us = (windows_at - _UNIX_EPOCH) // timedelta(microseconds=1)
    since = {w: end_us - w * 3_600_000_000 for w in WINDOWS_H}
    metric = [places[k] for k in ("grid", "segment") if k in places]
    place, fix = _hits(np.concatenate([p.geoms for p in metric] or [np.empty(0, dtype=object)]), fixes, to_metric)
    hits = {}
    first = 0
    for kind, p in zip(("grid", "segment"), metric):
        mine = (place >= first) & (place < first + len(p.ids))
        hits[kind] = (place[mine] - first, fix[mine])
        first += len(p.ids)
    if "hex" in places:
        cells = places["hex"].ids
        fix = np.flatnonzero(fixes["h3"] != 0)
        hits["hex"] = (np.searchsorted(cells, fixes["h3"][fix]), fix)
    for kind, (at, fix) in hits.items():
        f = place_figures(at, fix, fixes["unit"], fixes["ts_us"], cap_us=int(DWELL_CAP_S * 1e6), since_us=since)
        pgb.copy_columns(conn, "cov_delta", [
            pgb.text_const("kind", kind, len(f.place)), pgb.int8("id", places[kind].ids[f.place]),
            pgb.timestamptz("last_ts", f.last_us.astype("datetime64[us]")),
            *[c for w in WINDOWS_H for c in (pgb.int4(f"visits_{w}h", f.visits[w]),
                                             pgb.float8(f"dwell_s_{w}h", f.dwell_s[w]))]])
    conn.execute("ANALYZE cov_delta")


def _hits(places: np.ndarray, fixes: dict[str, np.ndarray], to_metric: pyproj.Transformer
          ) -> tuple[np.ndarray, np.ndarray]:
    """(place index, fix index) of every fix within its unit's radius of a place (in metres), driven
    from the places: they are prepared and searched in trees of the fixes' points, one per chunk of
    fixes of one radius and one area (a tree far from a place is left at its root), built side by side
    on every core (GEOS and PROJ work outside the GIL)."""
    shapely.prepare(places)
    radius = fixes["radius_m"]
    area = np.floor(fixes["lon"] / _AREA_DEG) * 1e5 + np.floor(fixes["lat"] / _AREA_DEG)
    order = np.lexsort((area, radius))

    def search(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tree = shapely.STRtree(shapely.points(*to_metric.transform(fixes["lon"][chunk], fixes["lat"][chunk])))
        place, point = tree.query(places, predicate="dwithin", distance=radius[chunk[0]])
        return place, chunk[point]

    bounds = np.flatnonzero(np.diff(radius[order])) + 1  # one radius per chunk
    chunks = [c for group in np.split(order, bounds) if len(places) and len(group)
              for c in np.array_split(group, -(-len(group) // _FIX_CHUNK))]
    with collector_paused(), ThreadPoolExecutor(os.cpu_count()) as pool:
        found = [(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)), *pool.map(search, chunks)]
    return np.concatenate([p for p, _ in found]), np.concatenate([f for _, f in found])


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
_FIGURES_OF = """pl.id, v.last_ts, coalesce(v.visits_1h, 0), coalesce(v.visits_4h, 0), coalesce(v.visits_24h, 0),
       coalesce(v.dwell_s_1h, 0), coalesce(v.dwell_s_4h, 0), coalesce(v.dwell_s_24h, 0), pl.limit_h"""
_FROM = "FROM cov_place pl LEFT JOIN cov_delta v ON v.kind = pl.kind AND v.id = pl.id"
_SELECT = f"""
SELECT {_FIGURES_OF}, {_place_status("v.last_ts", "pl.limit_h", "%(as_of)s")}
{_FROM}
"""
_WRITE_GRIDS = f"""
INSERT INTO grid_coverage (grid_id, {_COLUMNS}, status)
{_SELECT} WHERE pl.kind = 'grid'
"""
_WRITE = _WRITE_GRIDS + f""";

INSERT INTO hex_coverage (h3, {_COLUMNS}, status, geom)
SELECT s.*, h.geom FROM ({_SELECT} WHERE pl.kind = 'hex') s JOIN cov_hex h ON h.h3 = s.id;

INSERT INTO segment_coverage (segment_id, {_COLUMNS}, watched, status)
SELECT {_FIGURES_OF}, pl.watched, {_segment_status("v.last_ts", "pl.limit_h", "pl.watched", "%(as_of)s")}
{_FROM} WHERE pl.kind = 'segment'
"""


_SET_CLOCK = """
INSERT INTO coverage_clock (id, windows_at) VALUES (1, %(windows_at)s)
ON CONFLICT (id) DO UPDATE SET windows_at = EXCLUDED.windows_at
"""
# The rebuild, the live moves and the upkeep take turns on the coverage tables.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('gridwatch.derive.coverage'))"
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('gridwatch.derive.coverage'))"
_TEMPS = ("cov_new", "cov_span", "cov_near", "cov_box", "cov_cand", "cov_hit", "cov_term", "cov_delta", "cov_place",
          "cov_hex")


# A unit's counted fixes near given times (``cov_span(window_h, unit_id, t0, t1)`` names them, ``t_lo``
# and ``t_hi`` bound them all), in metres. Their hits: the grids and segments within the radius, driven
# from the places as the rebuild is (the candidates found by the box of each unit's fixes, grown by
# its radius with 5 % to spare, and brought into metres once), and their cells.
_NEAR = """
CREATE TEMP TABLE cov_near ON COMMIT DROP AS
SELECT s.window_h, p.unit_id, p.ts, p.h3, p.geom, ST_Transform(p.geom, %(srid)s::int) AS g, r.radius_m,
       {marked} AS marked
FROM cov_span s
JOIN position p ON p.unit_id = s.unit_id AND p.ts >= s.t0 - make_interval(secs => %(cap)s)
                AND p.ts <= s.t1 + make_interval(secs => %(cap)s)
                AND p.ts >= %(t_lo)s::timestamptz AND p.ts <= %(t_hi)s::timestamptz
""" + _RADIUS + """
{new}
WHERE """ + _COUNTED + """;
CREATE INDEX ON cov_near USING gist (g);

CREATE TEMP TABLE cov_box ON COMMIT DROP AS
SELECT ST_Expand(e, r / cos(radians(least(greatest(abs(ST_YMin(e)), abs(ST_YMax(e))) + 0.1, 89.0))), r) AS box
FROM (SELECT ST_Extent(geom)::geometry AS e, max(radius_m) * 1.05 / 110574.0 AS r
      FROM cov_near GROUP BY window_h, unit_id) spans;

CREATE TEMP TABLE cov_cand ON COMMIT DROP AS
SELECT 'grid' AS kind, g.id::bigint AS id, ST_Transform(g.geom, %(srid)s::int) AS g FROM grid g
WHERE g.id IN (SELECT c.id FROM cov_box b JOIN grid c ON c.geom && b.box)
UNION ALL
SELECT 'segment', s.id::bigint, ST_Transform(s.geom, %(srid)s::int) FROM border_segment s
WHERE s.id IN (SELECT c.id FROM cov_box b JOIN border_segment c ON c.geom && b.box);

CREATE TEMP TABLE cov_hit ON COMMIT DROP AS
SELECT f.window_h, c.kind, c.id, f.unit_id, f.ts, f.marked
FROM cov_cand c JOIN cov_near f ON ST_DWithin(f.g, c.g, %(max_radius)s) AND ST_DWithin(f.g, c.g, f.radius_m)
UNION ALL
SELECT f.window_h, 'hex', f.h3, f.unit_id, f.ts, f.marked FROM cov_near f WHERE f.h3 IS NOT NULL
"""


def _terms(source: str, sign: int, where: str = "") -> str:
    """SQL of the terms of the hits in ``source`` (a place's hits by one unit form a series): the
    dwell term (the gap to the previous hit, when within the cap) and the visit term (1 when the
    next hit is more than the cap later, or none), signed."""
    gap = "extract(epoch FROM ts - lag(ts) OVER s)"
    return f"""
SELECT window_h, kind, id, ts, marked, {sign} AS sign,
       CASE WHEN {gap} <= %(cap)s THEN {gap} ELSE 0 END AS dwell_s,
       (lead(ts) OVER s IS NULL OR extract(epoch FROM lead(ts) OVER s - ts) > %(cap)s)::int AS ends
FROM {source} {where}
WINDOW s AS (PARTITION BY id, unit_id, kind, window_h ORDER BY ts)"""


# The pending fixes, taken out of ``coverage_pending`` (those past the look-back at the clock's
# time count nowhere).
_TAKE_PENDING = """
CREATE TEMP TABLE cov_new (unit_id int, ts timestamptz) ON COMMIT DROP;
WITH taken AS (DELETE FROM coverage_pending RETURNING unit_id, ts)
INSERT INTO cov_new SELECT unit_id, ts FROM taken
WHERE ts > %(windows_at)s::timestamptz - make_interval(secs => %(lookback_h)s::float8 * 3600)
"""

# The pending fixes: per unit, their span; the terms that can change are those of hits within the
# cap of a new one, so the series of the places a new fix hit are judged over the span grown by
# the cap on each side, with the new hits (+) and without them (-).
_BATCH = """
CREATE TEMP TABLE cov_span ON COMMIT DROP AS
SELECT NULL::int AS window_h, unit_id, min(ts) AS t0, max(ts) AS t1 FROM cov_new GROUP BY unit_id;
""" + _NEAR.format(marked="n.unit_id IS NOT NULL",
                   new="LEFT JOIN cov_new n ON n.unit_id = p.unit_id AND n.ts = p.ts") + """;

CREATE TEMP TABLE cov_term ON COMMIT DROP AS
WITH series AS (
    SELECT h.* FROM cov_hit h JOIN (SELECT DISTINCT kind, id, unit_id FROM cov_hit WHERE marked) t
      USING (kind, id, unit_id)
)
""" + _terms("series", +1) + "\nUNION ALL" + _terms("series", -1, "WHERE NOT marked") + """;

DROP TABLE cov_new
"""


def _leaving(windows_h: tuple[int, ...]) -> str:
    """SQL of the terms, negated, of the hits that left each window since the clock: each window's
    leaving fixes, per unit, judged with the unit's fixes within the cap around them."""
    spans = "\nUNION ALL\n".join(
        f"SELECT {w} AS window_h, unit_id, min(ts) AS t0, max(ts) AS t1 FROM position "
        f"WHERE ts > %(windows_at)s::timestamptz - interval '{w} hours' "
        f"AND ts <= %(now)s::timestamptz - interval '{w} hours' GROUP BY unit_id"
        for w in windows_h)
    leaving = ("p.ts > %(windows_at)s::timestamptz - make_interval(hours => s.window_h) "
               "AND p.ts <= %(now)s::timestamptz - make_interval(hours => s.window_h)")
    return f"""
CREATE TEMP TABLE cov_span ON COMMIT DROP AS
{spans};
""" + _NEAR.format(marked=leaving, new="") + """;

CREATE TEMP TABLE cov_term ON COMMIT DROP AS
SELECT * FROM (""" + _terms("cov_hit", -1) + """) t WHERE marked
"""


def _in_window(hours: int) -> str:
    """A term counts in the ``hours`` window: a leaving hit in its own window, a new hit in every
    window it lies in at the clock's time."""
    return f"coalesce(window_h = {hours}, ts > %(windows_at)s::timestamptz - interval '{hours} hours')"


def _delta(source: str) -> str:
    """SQL of each place's figures from the terms in ``source``: the last hit added, and per window
    the visits and the dwell."""
    return "SELECT kind, id, max(ts) FILTER (WHERE sign > 0) AS last_ts" + "".join(
        f",\n       coalesce(sum(sign * ends) FILTER (WHERE {_in_window(w)}), 0)::int AS visits_{w}h"
        f",\n       coalesce(sum(sign * dwell_s) FILTER (WHERE {_in_window(w)}), 0)::float8 AS dwell_s_{w}h"
        for w in WINDOWS_H) + f"\nFROM {source} GROUP BY kind, id"


_DELTA = "CREATE TEMP TABLE cov_delta ON COMMIT DROP AS\n" + _delta("cov_term")


def _apply(table: str, key: str, kind: str, status: str) -> str:
    """SQL adding the deltas to ``table``'s rows, moving the last visit and the status."""
    figures = ", ".join(f"visits_{w}h = c.visits_{w}h + d.visits_{w}h, dwell_s_{w}h = c.dwell_s_{w}h + d.dwell_s_{w}h"
                        for w in WINDOWS_H)
    changed = " OR ".join(f"d.visits_{w}h <> 0 OR d.dwell_s_{w}h <> 0" for w in WINDOWS_H)
    return f"""
UPDATE {table} c SET last_visit = greatest(c.last_visit, d.last_ts), {figures}, status = {status}, updated_at = now()
FROM cov_delta d WHERE d.kind = '{kind}' AND c.{key} = d.id
  AND (d.last_ts > c.last_visit OR (d.last_ts IS NOT NULL AND c.last_visit IS NULL) OR {changed})"""


_LAST = "greatest(c.last_visit, d.last_ts)"
_APPLY = {
    "grids": _apply("grid_coverage", "grid_id", "grid", _place_status(_LAST, "c.limit_h", "%(now)s")),
    "segments": _apply("segment_coverage", "segment_id", "segment",
                       _segment_status(_LAST, "c.limit_h", "c.watched", "%(now)s")),
    "cells": _apply("hex_coverage", "h3", "hex", _place_status(_LAST, "c.limit_h", "%(now)s")),
}

# Places a new fix hit that have no row yet (a new cell, a grid added since the rebuild).
_MISSING = """
SELECT DISTINCT d.kind, d.id FROM cov_delta d
WHERE d.last_ts IS NOT NULL AND NOT CASE d.kind
    WHEN 'grid' THEN EXISTS (SELECT 1 FROM grid_coverage c WHERE c.grid_id = d.id)
    WHEN 'segment' THEN EXISTS (SELECT 1 FROM segment_coverage c WHERE c.segment_id = d.id)
    ELSE EXISTS (SELECT 1 FROM hex_coverage c WHERE c.h3 = d.id) END
"""
_ADD_MISSING = """
INSERT INTO grid_coverage (grid_id, limit_h, status) SELECT id, limit_h, 'overdue' FROM cov_place WHERE kind = 'grid';
INSERT INTO segment_coverage (segment_id, limit_h, watched, status)
SELECT id, limit_h, watched, 'overdue' FROM cov_place WHERE kind = 'segment';
INSERT INTO hex_coverage (h3, limit_h, status, geom)
SELECT pl.id, pl.limit_h, 'overdue', h.geom FROM cov_place pl JOIN cov_hex h ON h.h3 = pl.id WHERE pl.kind = 'hex'
"""

# Last visits older than the look-back are no visits (a rebuild would not see them).
_EXPIRE = {
    "grids": "UPDATE grid_coverage SET last_visit = NULL, updated_at = now() "
             "WHERE last_visit <= %(now)s::timestamptz - make_interval(secs => %(lookback_h)s::float8 * 3600)",
    "segments": "UPDATE segment_coverage SET last_visit = NULL, updated_at = now() "
                "WHERE last_visit <= %(now)s::timestamptz - make_interval(secs => %(lookback_h)s::float8 * 3600)",
    "cells": "UPDATE hex_coverage SET last_visit = NULL, updated_at = now() "
             "WHERE last_visit <= %(now)s::timestamptz - make_interval(secs => %(lookback_h)s::float8 * 3600) RETURNING h3",
}

_AGE = {
    "grids": f"""UPDATE grid_coverage SET status = s.status, updated_at = now() FROM (
    SELECT grid_id, {_place_status("last_visit", "limit_h", "%(now)s")} AS status FROM grid_coverage) s
WHERE grid_coverage.grid_id = s.grid_id AND grid_coverage.status <> s.status""",
    "cells": f"""UPDATE hex_coverage SET status = s.status, updated_at = now() FROM (
    SELECT h3, {_place_status("last_visit", "limit_h", "%(now)s")} AS status FROM hex_coverage) s
WHERE hex_coverage.h3 = s.h3 AND hex_coverage.status <> s.status""",
    "segments": f"""UPDATE segment_coverage SET status = s.status, updated_at = now() FROM (
    SELECT segment_id, {_segment_status("last_visit", "limit_h", "watched", "%(now)s")} AS status
    FROM segment_coverage) s
WHERE segment_coverage.segment_id = s.segment_id AND segment_coverage.status <> s.status""",
}


@dataclass
class CoverageMoves:
    """What one live step did: pending fixes counted, and rows of each coverage table changed: figures
    moved (``grids``, ``segments``, ``cells``), rows added, last visits cleared, cells dropped,
    statuses re-judged."""

    pending: int = 0
    grids: int = 0
    segments: int = 0
    cells: int = 0
    added: int = 0
    expired: int = 0
    dropped: int = 0
    aged: int = 0

    @property
    def rows(self) -> int:
        """Every coverage row written."""
        return self.grids + self.segments + self.cells + self.added + self.expired + self.dropped + self.aged


def move_pending_coverage(
    conn: psycopg.Connection, *, settings: Settings, now: datetime | None = None, wait: bool = True
) -> CoverageMoves | None:
    """Count every fix in ``coverage_pending`` and take it out, in the caller's transaction: only the
    places they hit, within each unit's radius, move. Waits for the coverage lock, or, with
    ``wait=False``, returns None at once while a rebuild or the upkeep holds it (the fixes stay
    pending). Before coverage was first derived it does nothing (the first rebuild counts them)."""
    moves = CoverageMoves()
    now = now or datetime.now(timezone.utc)
    if not _lock(conn, wait=wait):
        return None
    if (params := _live_params(conn, settings, now)) is not None:
        _move_pending(conn, settings, params, moves)
    return moves


def age_coverage(conn: psycopg.Connection, *, settings: Settings, now: datetime | None = None) -> CoverageMoves:
    """Move the coverage windows from ``coverage_clock`` to ``now``, in the caller's transaction, under
    the coverage lock: count the pending fixes (as :func:`move_pending_coverage`), take out of each
    window the hits that left it, clear last visits older than the look-back (dropping cells no
    border zone holds), re-judge the statuses that change against the clock."""
    moves = CoverageMoves()
    now = now or datetime.now(timezone.utc)
    _lock(conn, wait=True)
    if (params := _live_params(conn, settings, now)) is None:
        return moves
    _move_pending(conn, settings, params, moves)  # the leaving hits are judged with every stored fix counted
    if now > params["windows_at"]:
        cap = timedelta(seconds=DWELL_CAP_S)
        params |= {"t_lo": params["windows_at"] - timedelta(hours=max(WINDOWS_H)) - cap,
                   "t_hi": now - timedelta(hours=min(WINDOWS_H)) + cap}
        _run(conn, _leaving(WINDOWS_H), params)
        _run(conn, _DELTA, params)
        _move(conn, params, moves)
        moves.expired, cleared = 0, []
        for table, statement in _EXPIRE.items():
            cur = conn.execute(statement, params)
            moves.expired += cur.rowcount
            if table == "cells":
                cleared = [r[0] for r in cur.fetchall()]
        if cleared:
            kept = _zone_cells(_hex_zones(conn), settings.h3_resolution)
            gone = np.setdiff1d(np.asarray(cleared, dtype=np.int64), kept)
            moves.dropped = conn.execute("DELETE FROM hex_coverage WHERE h3 = ANY(%s)", (gone.tolist(),)).rowcount
        params["windows_at"] = now
        _run(conn, _SET_CLOCK, params)
    moves.aged = sum(conn.execute(statement, params).rowcount for statement in _AGE.values())
    _drop_temps(conn)
    return moves


def _lock(conn: psycopg.Connection, *, wait: bool) -> bool:
    """Take the coverage lock until the transaction ends (``wait=False``: only if free); whether taken."""
    if wait:
        conn.execute(_LOCK)
        return True
    return bool(conn.execute(_TRY_LOCK).fetchone()[0])


def _live_params(conn: psycopg.Connection, settings: Settings, now: datetime) -> dict | None:
    """The parameters of a live step, or None before coverage was first derived."""
    windows_at = _clock(conn)
    srid = region_srid(conn) if windows_at is not None else None
    if srid is None:
        return None
    return _params(settings, now) | {"windows_at": windows_at, "srid": srid}


def _move_pending(conn: psycopg.Connection, settings: Settings, params: dict, moves: CoverageMoves) -> None:
    """Take the pending fixes out of ``coverage_pending`` and move the places they hit by them."""
    _run(conn, _TAKE_PENDING, params)
    moves.pending, t_lo, t_hi = conn.execute("SELECT count(*), min(ts), max(ts) FROM cov_new").fetchone()
    if moves.pending:
        cap = timedelta(seconds=DWELL_CAP_S)
        params = params | {"t_lo": t_lo - cap, "t_hi": t_hi + cap}
        _run(conn, _BATCH, params)
        _run(conn, _DELTA, params)
        moves.added += _add_missing(conn, settings, params)
        _move(conn, params, moves)
    _drop_temps(conn)


def _add_missing(conn: psycopg.Connection, settings: Settings, params: dict) -> int:
    """Rows, with their limits and no figures yet, for the places a new fix hit that have none."""
    missing = pd.DataFrame(conn.execute(_MISSING).fetchall(), columns=["kind", "id"])
    if missing.empty:
        return 0
    wanted = {kind: missing.loc[missing["kind"] == kind, "id"].to_numpy(dtype=np.int64)
              for kind in ("grid", "segment", "hex")}
    _stage_places(conn, settings, _to_metric(params["srid"]), wanted)
    _run(conn, _ADD_MISSING, params)
    return len(missing)


def _move(conn: psycopg.Connection, params: dict, moves: CoverageMoves) -> None:
    """Add ``cov_delta`` to the coverage rows, counting the rows moved per table (a step may move twice)."""
    for table, statement in _APPLY.items():
        setattr(moves, table, getattr(moves, table) + conn.execute(statement, params).rowcount)


def _drop_temps(conn: psycopg.Connection) -> None:
    """Drop a live step's staging tables (several steps may share one transaction)."""
    conn.execute(f"DROP TABLE IF EXISTS {', '.join(_TEMPS)}")
