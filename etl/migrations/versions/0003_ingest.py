"""The live ingest service: device tokens, and how far each spool is written.

``device`` holds one token hash per unit that reports live (the token itself
is shown once, when it is made). ``ingest_offset`` is the position in a
spool up to which fixes are in ``position``; it is moved in the same
transaction as the rows, so a replay after a crash starts exactly there.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"

SCHEMA = r"""
CREATE TABLE device (
    callsign   text PRIMARY KEY REFERENCES unit (callsign) ON DELETE CASCADE ON UPDATE CASCADE,
    token_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ingest_offset (
    spool_id   text PRIMARY KEY,
    segment    bigint NOT NULL,
    pos        bigint NOT NULL CHECK (pos >= 0),
    fixes      bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ingest_offset")
    op.execute("DROP TABLE IF EXISTS device")
