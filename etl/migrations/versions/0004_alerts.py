"""Dispatcher alerts: one row per condition while it holds, kept after it clears.

``alert`` rows are derived by :func:`gridwatch.etl.alerts.refresh_alerts`: at most one
open row (``cleared_at IS NULL``) per ``(kind, subject)``; an acknowledgement
records who (a typed name; there is no login yet) and when.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"

SCHEMA = r"""
CREATE TABLE alert (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('segment_overdue', 'unit_silent', 'unit_out_of_area',
                                                  'incident_in_gap', 'checkpoint_unstaffed', 'leak_route')),
    subject         text NOT NULL,
    severity        smallint NOT NULL CHECK (severity BETWEEN 1 AND 4),
    detail          jsonb NOT NULL DEFAULT '{}',
    raised_at       timestamptz NOT NULL,
    cleared_at      timestamptz,
    acknowledged_by text,
    acknowledged_at timestamptz,
    CHECK (cleared_at IS NULL OR cleared_at >= raised_at),
    CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL))
);
CREATE UNIQUE INDEX alert_open_key ON alert (kind, subject) WHERE cleared_at IS NULL;
CREATE INDEX alert_raised ON alert (raised_at);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS alert")
