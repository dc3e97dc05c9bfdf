"""What the live ingest checks instead of re-reading: the reference's version and the coverage clock.

``reference_version``: one row whose ``version`` moves by one in every transaction that writes
``grid``, ``zone``, ``border_segment`` or ``command_unit`` (statement triggers), so the ingest
writer re-reads the reference layers only when they changed. ``coverage_clock``: one row, the time
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

REFERENCE_TABLES = ("grid", "zone", "border_segment", "command_unit")

SCHEMA = r"""
CREATE TABLE reference_version (
    id       smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version  bigint NOT NULL DEFAULT 0
);
INSERT INTO reference_version DEFAULT VALUES;

CREATE FUNCTION reference_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reference_version (id, version) VALUES (1, 1)
    ON CONFLICT (id) DO UPDATE SET version = reference_version.version + 1;
    RETURN NULL;
END $$;

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
    for table in REFERENCE_TABLES:
        op.execute(f"CREATE TRIGGER {table}_reference_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                   f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION reference_changed()")


def downgrade() -> None:
    for table in REFERENCE_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_reference_changed ON {table}")
    op.execute("DROP TABLE IF EXISTS coverage_pending")
    op.execute("DROP TABLE IF EXISTS coverage_clock")
    op.execute("DROP FUNCTION IF EXISTS reference_changed()")
    op.execute("DROP TABLE IF EXISTS reference_version")
