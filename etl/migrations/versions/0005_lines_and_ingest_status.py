"""Where a quarantined record stood in its file, and how the live ingest's writer is doing.

``quarantine.line``: the line of a CSV record (1 = the header) or the number of a vector
file's feature (1 = the first), so a person finds the bad record in the file.
``ingest_status``: one row per spool, written by the ingest service's writer every few
seconds in a transaction of its own: whether it is storing, the fixes it holds that are not
yet in ``position`` and how old the oldest of them is, when it last stored a batch, and its
last error. The wall says when the row is old or the writer is not storing.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"

SCHEMA = r"""
ALTER TABLE quarantine ADD COLUMN line bigint CHECK (line >= 1);

CREATE TABLE ingest_status (
    spool_id           text PRIMARY KEY,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    state              text NOT NULL CHECK (state IN ('storing', 'retrying', 'stopped')),
    backlog            bigint NOT NULL DEFAULT 0 CHECK (backlog >= 0),
    oldest_unstored_at timestamptz,
    last_stored_at     timestamptz,
    last_error         text
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ingest_status")
    op.execute("ALTER TABLE quarantine DROP COLUMN IF EXISTS line")
