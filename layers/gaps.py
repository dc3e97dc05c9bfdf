"""Dispatch targets: coverage gaps by urgency, and open incidents.

A gap is a border segment, grid or H3 cell whose last visit is older than its
limit (``overdue``), judged at ``now`` from the coverage tables' last visit and
limit; grids and cells past half their limit follow as ``due``. Segments seen
by a working sensor (``watched``) are no gap. Coverage is derived from the
look-back window (``settings.coverage_lookback_h``): a place with no visit in it
(or no coverage row yet, judged by the limit of its zone) counts as last visited
at the window's start, so it is overdue by at least (look-back − limit).

Gaps are ranked by urgency, how far past its limit a place is relative to that
limit: (now − last visit − limit) / limit, so a border segment 2 h past its 4 h
limit outranks a grid 6 h past its 24 h one. At equal urgency, border segments
and places of the border_closed zone come first.

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
           c.last_visit, c.limit_h, 'border_closed' AS fallback, ST_LineInterpolatePoint(s.geom, 0.5) AS pt, s.geom
    FROM border_segment s LEFT JOIN segment_coverage c ON c.segment_id = s.id WHERE NOT coalesce(c.watched, false)
    UNION ALL
    SELECT 'grid', g.id::text, NULL, NULL, g.code, g.name, c.last_visit, c.limit_h, 'social_surface', g.label_point,
           g.geom
    FROM grid g LEFT JOIN grid_coverage c ON c.grid_id = g.id
    UNION ALL
    SELECT 'hex', to_hex(h3), NULL, NULL, NULL, NULL, last_visit, limit_h, 'social_surface', ST_Centroid(geom), geom
    FROM hex_coverage
), zone_at AS (  -- driven from the few zones, so each zone's polygon is prepared once for every point
    SELECT DISTINCT ON (kind, id) kind, id, zone_kind, limit_h FROM (
        SELECT c.kind, c.id, z.kind AS zone_kind, l.limit_h
        FROM zone z JOIN limits l ON l.kind = z.kind
        CROSS JOIN LATERAL (SELECT kind, id FROM coverage c WHERE ST_Intersects(z.geom, c.pt) OFFSET 0) c
        UNION ALL
        SELECT kind, id, NULL, NULL FROM coverage
    ) pairs
    ORDER BY kind, id, zone_kind IS NULL, limit_h
), zoned AS (
    SELECT c.*, z.zone_kind, coalesce(c.limit_h, z.limit_h, f.limit_h) AS limit_s_h
    FROM coverage c
    LEFT JOIN zone_at z ON z.kind = c.kind AND z.id = c.id
    LEFT JOIN limits f ON f.kind = c.fallback
    WHERE (CAST(:unit AS text) IS NULL OR EXISTS (SELECT 1 FROM scope WHERE ST_Intersects(scope.geom, c.pt)))
      AND (CAST(:zone_kind AS text) IS NULL OR z.zone_kind = CAST(:zone_kind AS text))
), judged AS (
    SELECT *, coalesce(extract(epoch FROM CAST(:now AS timestamptz) - last_visit), :lookback_h * 3600)
              - limit_s_h * 3600 AS overdue_s
    FROM zoned
)
SELECT kind || ':' || id AS key, kind, id, km_from, km_to, code, name,
       CASE WHEN overdue_s > 0 THEN 'overdue' ELSE 'due' END AS status, last_visit, limit_s_h AS limit_h,
       overdue_s, overdue_s / (limit_s_h * 3600) AS urgency, zone_kind, {_point_and_bounds('pt', 'geom')}
FROM judged
WHERE overdue_s > 0 OR (kind <> 'segment' AND overdue_s > -limit_s_h * 1800)
ORDER BY urgency DESC, (kind = 'segment' OR zone_kind = 'border_closed') DESC, kind, id
LIMIT :limit
"""


def _check_zone_kind(zone_kind: str | None) -> None:
    if zone_kind is not None and zone_kind not in ZONE_KINDS:
        raise ValueError(f"`zone_kind` was {zone_kind!r} but is expected to be one of {list(ZONE_KINDS)} or None")


def gap_list(
    engine: sa.Engine, settings: Settings, *, now: datetime, unit: str | None = None,
    zone_kind: str | None = None, limit: int = 200,
) -> pd.DataFrame:
    """Gaps at ``now``, most urgent first (overdue before due), optionally in command unit ``unit``.

    Columns: key, kind, id, km_from, km_to, code, name, status, last_visit (None: no visit in the
    look-back window), limit_h, overdue_s, urgency (overdue_s / limit), zone_kind, lon, lat, west,
    south, east, north.
    """
    _check_zone_kind(zone_kind)
    params = {"now": now, "unit": unit, "zone_kind": zone_kind, "limit": limit,
              "limits": json.dumps(settings.coverage_limit_h), "lookback_h": settings.coverage_lookback_h}
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
