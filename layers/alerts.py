"""Dispatcher alerts as they stand, read from ``alert`` (derived by :mod:`gridwatch.etl.alerts`).

A ``scope`` (a command unit's id) keeps the alerts of that unit's jurisdiction: an alert about a
unit when the unit is of the command unit or below it, any other when its point lies in the
command unit's polygon. ``None`` keeps every alert.
"""
from __future__ import annotations

from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from gridwatch.layers.queries import SCOPE, UNIT_IN_SCOPE

__all__ = ["alerts_at", "alerts_in_scope", "ALERT_IN_SCOPE"]

# Whether alert ``a`` is of the jurisdiction ``scope`` (a CTE from SCOPE; :scope None: every alert).
ALERT_IN_SCOPE = f"""(CAST(:scope AS integer) IS NULL OR CASE
    WHEN a.kind IN ('unit_silent', 'unit_out_of_area')
    THEN EXISTS (SELECT 1 FROM unit u WHERE u.id = a.subject::bigint AND {UNIT_IN_SCOPE})
    ELSE EXISTS (SELECT 1 FROM scope WHERE ST_Intersects(scope.geom, ST_SetSRID(ST_MakePoint(
        (a.detail->>'lon')::float8, (a.detail->>'lat')::float8), 4326))) END)"""


# Open now: read from the partial index of open alerts, in its order; open at a past time: by raised_at.
_OPEN_NOW = "a.cleared_at IS NULL"
_OPEN_AT = ("a.raised_at <= CAST(:at AS timestamptz) "
            "AND (a.cleared_at IS NULL OR a.cleared_at > CAST(:at AS timestamptz))")


def alerts_at(engine: sa.Engine, *, at: datetime | None = None, limit: int = 500, scope: int | None = None
              ) -> pd.DataFrame:
    """The alerts open at ``at`` (default: open now) in ``scope``, most severe then newest first.

    Columns: id, kind, subject, severity, detail (dict), raised_at, cleared_at, acknowledged_by,
    acknowledged_at; ``place`` and ``place_en``, the township the alert's point lies in (for a unit
    with no fix, its command unit; None if neither); ``at_start``, whether it was raised by the very
    first refresh, so already true when alerting began.
    """
    sql = SCOPE + f"""
    SELECT a.id, a.kind, a.subject, a.severity, a.detail, a.raised_at, a.cleared_at, a.acknowledged_by,
           a.acknowledged_at, p.name AS place, coalesce(p.name_en, p.name) AS place_en,
           a.raised_at = (SELECT min(raised_at) FROM alert) AS at_start
    FROM alert a
    LEFT JOIN LATERAL (
        SELECT c.name, c.name_en FROM command_unit c
        WHERE c.level = 'township' AND ST_Intersects(c.geom, ST_SetSRID(ST_MakePoint(
            (a.detail->>'lon')::float8, (a.detail->>'lat')::float8), 4326))
        UNION ALL
        SELECT c.name, c.name_en FROM unit u JOIN command_unit c ON c.id = u.command_unit_id
        WHERE a.kind IN ('unit_silent', 'unit_out_of_area') AND u.id = a.subject::bigint
        LIMIT 1
    ) p ON true
    WHERE {_OPEN_NOW if at is None else _OPEN_AT} AND {ALERT_IN_SCOPE}
    ORDER BY a.severity DESC, a.raised_at DESC, a.id DESC
    LIMIT :limit
    """
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), {"at": at, "limit": limit, "scope": scope})
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def alerts_in_scope(engine: sa.Engine, alert_ids: list[int], *, scope: int | None) -> list[int]:
    """Those of the alerts that exist and lie in ``scope``."""
    sql = SCOPE + f"SELECT a.id FROM alert a WHERE a.id = ANY(CAST(:ids AS bigint[])) AND {ALERT_IN_SCOPE} ORDER BY a.id"
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), {"ids": [int(i) for i in alert_ids], "scope": scope}).scalars())
