"""What live coverage keeps: the coverage clock and the fixes coverage has not yet counted.

``coverage_clock``: one row, the time
the coverage windows (visits and dwell over 1 h / 4 h / 24 h, last visits over the look-back)
were last moved to; a full rebuild sets it, each upkeep tick moves it on. No row: coverage was
never derived. ``coverage_pending``: the fixes stored but not yet counted by coverage, one row per
fix (its ``position`` key), written in the batch's transaction and deleted by the step that counts
them.

Revision ID: 0010
Revises: 0009
"""
from alembic import op

revision = "0010"
down_revision = "0009"

SCHEMA = r"""
CREATE TABLE coverage_clock (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    windows_at  timestamptz NOT NULL
);

CREATE TABLE coverage_pending (
    unit_id  integer NOT NULL,
    ts       timestamptz NOT NULL,
    PRIMARY KEY (unit_id, ts)
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS coverage_pending")
    op.execute("DROP TABLE IF EXISTS coverage_clock")
