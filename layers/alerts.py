"""Dispatcher alerts as they stand, read from ``alert`` (derived by :mod:`gridwatch.etl.alerts`)."""
from __future__ import annotations

from datetime import datetime

import pandas as pd
import sqlalchemy as sa

__all__ = ["alerts_at"]


def alerts_at(engine: sa.Engine, *, at: datetime | None = None, limit: int = 100) -> pd.DataFrame:
    """The alerts open at ``at`` (default: open now), most severe then newest first.

    Columns: id, kind, subject, severity, detail (dict), raised_at, cleared_at, acknowledged_by,
    acknowledged_at.
    """
    sql = """
    SELECT id, kind, subject, severity, detail, raised_at, cleared_at, acknowledged_by, acknowledged_at
    FROM alert
    WHERE CASE WHEN CAST(:at AS timestamptz) IS NULL THEN cleared_at IS NULL
               ELSE raised_at <= CAST(:at AS timestamptz)
                    AND (cleared_at IS NULL OR cleared_at > CAST(:at AS timestamptz)) END
    ORDER BY severity DESC, raised_at DESC, id DESC
    LIMIT :limit
    """
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), {"at": at, "limit": limit})
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
