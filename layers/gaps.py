"""Dispatch targets: coverage gaps by urgency, and open incidents.

A gap is a border segment, grid or H3 cell whose last visit is older than its
limit (``overdue``), judged at ``now`` from the coverage tables' last visit and
limit (a segment or grid with no coverage row yet counts as never visited);
grids and cells past half their limit follow as ``due``. Segments seen
by a working sensor (``watched``) are no gap. Gaps are sorted by how long they
are overdue (now − last visit − limit), never-visited first.

Each row carries a ``key`` (``kind:id``), a point to route to (a segment's
midpoint, a grid's stored point on surface, a cell's centroid) and its bounds. Filters:
a command unit (by code; places whose point lies in its polygon) and the kind
of zone at the point (the strictest zone there, as in :mod:`gridwatch.etl.coverage`).
"""
from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from gridwatch.settings import ZONE_KINDS, Settings

__all__ = ["gap_list", "open_incidents"]


def _point_and_bounds(pt: str, geom: str) -> str:
    return (f"ST_X({pt}) AS lon, ST_Y({pt}) AS lat, ST_XMin({geom}) AS west, ST_YMin({geom}) AS south, "
            f"ST_XMax({geom}) AS east, ST_YMax({geom}) AS north")


_GAPS = f"""
WITH scope AS (SELECT geom FROM command_unit WHERE code = CAST(:unit AS text)),
limits AS (SELECT key AS kind, value::float8 AS limit_h FROM jsonb_each_text(CAST(:limits AS jsonb))),
coverage AS (
    SELECT 'segment' AS kind, s.id::text AS id, s.km_from, s.km_to, NULL AS code, NULL AS name,
           c.last_visit, c.limit_h, ST_LineInterpolatePoint(s.geom, 0.5) AS pt, s.geom
    FROM border_segment s LEFT JOIN segment_coverage c ON c.segment_id = s.id WHERE NOT coalesce(c.watched, false)
    UNION ALL
    SELECT 'grid', g.id::text, NULL, NULL, g.code, g.name, c.last_visit, c.limit_h, g.label_point, g.geom
    FROM grid g LEFT JOIN grid_coverage c ON c.grid_id = g.id
    UNION ALL
    SELECT 'hex', to_hex(h3), NULL, NULL, NULL, NULL, last_visit, limit_h, ST_Centroid(geom), geom
    FROM hex_coverage
), judged AS (
    SELECT *, extract(epoch FROM CAST(:now AS timestamptz) - last_visit) - limit_h * 3600 AS overdue_s
    FROM coverage
    WHERE (CAST(:unit AS text) IS NULL OR EXISTS (SELECT 1 FROM scope WHERE ST_Intersects(scope.geom, pt)))
), gaps AS (
    SELECT *, CASE WHEN last_visit IS NULL OR overdue_s > 0 THEN 'overdue' ELSE 'due' END AS status
    FROM judged
    WHERE last_visit IS NULL OR overdue_s > 0 OR (kind <> 'segment' AND overdue_s > -limit_h * 1800)
)
SELECT g.kind || ':' || g.id AS key, g.kind, g.id, g.km_from, g.km_to, g.code, g.name, g.status, g.last_visit,
       g.limit_h, g.overdue_s, z.kind AS zone_kind, {_point_and_bounds('g.pt', 'g.geom')}
FROM gaps g
LEFT JOIN LATERAL (
    SELECT z.kind FROM zone z JOIN limits l ON l.kind = z.kind
    WHERE ST_Intersects(z.geom, g.pt) ORDER BY l.limit_h LIMIT 1
) z ON true
WHERE CAST(:zone_kind AS text) IS NULL OR z.kind = CAST(:zone_kind AS text)
ORDER BY g.status = 'overdue' DESC, g.last_visit IS NULL DESC, g.overdue_s DESC, g.kind, g.id
LIMIT :limit
"""


def _check_zone_kind(zone_kind: str | None) -> None:
    if zone_kind is not None and zone_kind not in ZONE_KINDS:
        raise ValueError(f"`zone_kind` was {zone_kind!r} but is expected to be one of {list(ZONE_KINDS)} or None")


def gap_list(
    engine: sa.Engine, settings: Settings, *, now: datetime, unit: str | None = None,
    zone_kind: str | None = None, limit: int = 200,
) -> pd.DataFrame:
    """Gaps at ``now``, most overdue first (overdue before due), optionally in command unit ``unit``.

    Columns: key, kind, id, km_from, km_to, code, name, status, last_visit, limit_h, overdue_s
    (NaN: never visited), zone_kind, lon, lat, west, south, east, north.
    """
    _check_zone_kind(zone_kind)
    params = {"now": now, "unit": unit, "zone_kind": zone_kind, "limit": limit,
              "limits": json.dumps(settings.coverage_limit_h)}
    with engine.connect() as conn:
        result = conn.execute(sa.text(_GAPS), params)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


_INCIDENTS = f"""
WITH scope AS (SELECT geom FROM command_unit WHERE code = CAST(:unit AS text))
SELECT 'incident:' || i.id AS key, i.id, i.source_id, i.kind, i.severity, i.status, i.reported_at,
       {_point_and_bounds("i.geom", "i.geom")}
FROM incident i
WHERE i.status <> 'closed'
  AND (CAST(:unit AS text) IS NULL OR EXISTS (SELECT 1 FROM scope WHERE ST_Intersects(scope.geom, i.geom)))
ORDER BY i.severity DESC, i.reported_at DESC
LIMIT :limit
"""


def open_incidents(engine: sa.Engine, *, unit: str | None = None, limit: int = 200) -> pd.DataFrame:
    """Open incidents, most severe then newest first: key, id, source_id, kind, severity, status,
    reported_at and the point and bounds (a point's) like :func:`gap_list`."""
    with engine.connect() as conn:
        result = conn.execute(sa.text(_INCIDENTS), {"unit": unit, "limit": limit})
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
