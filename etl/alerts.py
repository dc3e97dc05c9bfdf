"""Dispatcher alerts, the writes: derived set-based in SQL, upserted while they hold, cleared when they
end, and acknowledged. :mod:`gridwatch.layers.alerts` reads them.

Kinds (and severity, 4 the most severe):

- ``segment_overdue`` (3): a border segment neither patrolled within its limit nor watched;
- ``unit_silent`` (2): a unit on duty or responding with no fix for ``settings.unit_silent_after_s``;
- ``unit_out_of_area`` (2): a unit's latest fix further outside its assigned area than its accuracy;
- ``incident_in_gap`` (the incident's severity): an open incident whose grid or H3 cell is overdue;
- ``checkpoint_unstaffed`` (3): a checkpoint marked unstaffed;
- ``leak_route`` (4): a road path past a defence line with no staffed checkpoint (subject: line and a
  hash of the route's geometry, since ``leak_route`` ids restart on every derivation).

Coverage is judged at ``now`` from ``segment_coverage``/``grid_coverage``/``hex_coverage``
(last visit and limit), so a refresh between two coverage derivations is still right.
Each alert's ``detail`` carries what the panel shows and the point to centre the map on.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from gridwatch.settings import Settings

__all__ = ["RefreshResult", "refresh_alerts", "acknowledge", "acknowledge_all", "AlertNotFound"]

REFRESH_LOCK = "gridwatch.alerts.refresh"


class AlertNotFound(LookupError):
    """An alert id that does not exist (or is already acknowledged)."""


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh did: alerts raised, updated (detail changed) and cleared; skipped if another ran."""

    raised: int
    updated: int
    cleared: int
    skipped: bool = False


def _point(geom: str) -> str:
    return f"'lon', round(ST_X({geom})::numeric, 5), 'lat', round(ST_Y({geom})::numeric, 5)"


_OVERDUE = "(c.last_visit IS NULL OR c.last_visit < CAST(:now AS timestamptz) - make_interval(secs => c.limit_h * 3600))"

_CONDITIONS = f"""
SELECT 'segment_overdue' AS kind, s.id::text AS subject, 3 AS severity,
       jsonb_build_object('km_from', round(s.km_from::numeric, 1), 'km_to', round(s.km_to::numeric, 1),
                          'last_visit', c.last_visit, 'limit_h', c.limit_h,
                          {_point("ST_LineInterpolatePoint(s.geom, 0.5)")}) AS detail
FROM border_segment s JOIN segment_coverage c ON c.segment_id = s.id
WHERE NOT c.watched AND {_OVERDUE}
UNION ALL
SELECT 'unit_silent', u.id::text, 2,
       jsonb_build_object('callsign', u.callsign, 'last_fix', l.ts, {_point("l.geom")})
FROM unit u LEFT JOIN unit_latest l ON l.unit_id = u.id
WHERE u.status <> 'off_duty'
  AND (l.ts IS NULL OR l.ts < CAST(:now AS timestamptz) - make_interval(secs => :silent_s))
UNION ALL
SELECT 'unit_out_of_area', u.id::text, 2,
       jsonb_build_object('callsign', u.callsign, 'distance_m', round(x.distance_m), {_point("l.geom")})
FROM unit u JOIN unit_latest l ON l.unit_id = u.id,
     LATERAL (SELECT ST_Distance(u.area_geom::geography, l.geom::geography) AS distance_m) x
WHERE u.status <> 'off_duty' AND u.area_geom IS NOT NULL AND x.distance_m > coalesce(l.accuracy, 0)
UNION ALL
SELECT 'incident_in_gap', i.id::text, i.severity,
       jsonb_build_object('source_id', i.source_id, 'incident_kind', i.kind, 'severity', i.severity,
                          'grid', g.code, 'cell', CASE WHEN hc.h3 IS NOT NULL THEN to_hex(hc.h3) END,
                          {_point("i.geom")})
FROM incident i
LEFT JOIN grid_coverage c ON c.grid_id = i.grid_id AND {_OVERDUE}
LEFT JOIN grid g ON g.id = c.grid_id
LEFT JOIN hex_coverage hc ON hc.h3 = i.h3
     AND (hc.last_visit IS NULL OR hc.last_visit < CAST(:now AS timestamptz) - make_interval(secs => hc.limit_h * 3600))
WHERE i.status <> 'closed' AND (c.grid_id IS NOT NULL OR hc.h3 IS NOT NULL)
UNION ALL
SELECT 'checkpoint_unstaffed', k.id::text, 3,
       jsonb_build_object('code', k.code, 'name', k.name, 'line_no', k.line_no, {_point("k.geom")})
FROM checkpoint k WHERE NOT k.staffed
UNION ALL
SELECT 'leak_route', r.line_no || ':' || left(md5(ST_AsEWKB(r.geom)), 12), 4,
       jsonb_build_object('route_id', r.id, 'line_no', r.line_no, 'length_m', round(r.length_m::numeric),
                          {_point("ST_ClosestPoint(r.geom, ST_Centroid(r.geom))")})
FROM leak_route r
"""

_REFRESH = f"""
WITH current AS ({_CONDITIONS}),
upserted AS (
    INSERT INTO alert (kind, subject, severity, detail, raised_at)
    SELECT kind, subject, severity, detail, CAST(:now AS timestamptz) FROM current
    ON CONFLICT (kind, subject) WHERE cleared_at IS NULL DO UPDATE
        SET detail = EXCLUDED.detail, severity = EXCLUDED.severity
        WHERE alert.detail IS DISTINCT FROM EXCLUDED.detail OR alert.severity <> EXCLUDED.severity
    RETURNING (xmax = 0) AS inserted
),
cleared AS (
    UPDATE alert a SET cleared_at = greatest(CAST(:now AS timestamptz), a.raised_at)
    WHERE a.cleared_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM current c WHERE c.kind = a.kind AND c.subject = a.subject)
    RETURNING 1
)
SELECT count(*) FILTER (WHERE inserted) AS raised, count(*) FILTER (WHERE NOT inserted) AS updated,
       (SELECT count(*) FROM cleared) AS cleared
FROM upserted
"""


def refresh_alerts(conn: sa.Connection, settings: Settings, now: datetime) -> RefreshResult:
    """Raise the alerts whose condition holds at ``now``, update their detail, clear the others.

    Runs in the caller's transaction under a transaction-scoped advisory lock; when another
    refresh holds it, this one is skipped (the other gives the same answer). Idempotent.
    """
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    locked = conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"), {"key": REFRESH_LOCK}).scalar()
    if not locked:
        return RefreshResult(0, 0, 0, skipped=True)
    row = conn.execute(sa.text(_REFRESH), {"now": now, "silent_s": settings.unit_silent_after_s}).one()
    return RefreshResult(row.raised, row.updated, row.cleared)


_ACKNOWLEDGE = """
WITH done AS (
    UPDATE alert SET acknowledged_by = :who, acknowledged_at = now()
    WHERE id = ANY(CAST(:ids AS bigint[])) AND acknowledged_at IS NULL RETURNING id, acknowledged_at
), audited AS (
    INSERT INTO audit_log (actor, action, address, detail)
    SELECT :who, 'alert_acknowledged', :address, jsonb_build_object('alert', id) FROM done
)
SELECT id, acknowledged_at FROM done ORDER BY id
"""


def acknowledge_all(conn: sa.Connection, alert_ids: list[int], who: str, *, address: str | None = None
                    ) -> list[int]:
    """Record that the signed-in account ``who`` acknowledged each of the alerts (one audit row each); returns
    the ids acknowledged now (not those unknown or already done)."""
    rows = conn.execute(sa.text(_ACKNOWLEDGE), {"ids": [int(i) for i in alert_ids], "who": who, "address": address})
    return [row.id for row in rows]


def acknowledge(conn: sa.Connection, alert_id: int, who: str, *, address: str | None = None) -> datetime:
    """Record that the signed-in account ``who`` acknowledged the alert (and audit it); returns when.
    :class:`AlertNotFound` if unknown or done."""
    if not acknowledge_all(conn, [alert_id], who, address=address):
        raise AlertNotFound(f"alert {alert_id} does not exist or is already acknowledged")
    return conn.execute(sa.text("SELECT acknowledged_at FROM alert WHERE id = :id"), {"id": alert_id}).scalar()
