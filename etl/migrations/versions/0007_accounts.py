"""Accounts, kiosk links and an append-only audit log.

``account``: a person who signs in, with one role and the code of the command unit they
see (a code, not an id, so reloading the command units keeps the accounts; checked when
the account is added or signs in). ``kiosk``: a wall's sign-in link, its token stored hashed,
bound to the viewer role and one command unit, revocable. ``audit_log`` gains the address a
change came from, and refuses UPDATE, DELETE and TRUNCATE: rows are only ever added.

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = "0007"
down_revision = "0006"

SCHEMA = r"""
CREATE TABLE account (
    id                  serial PRIMARY KEY,
    name                text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._@-]{1,64}$'),
    role                text NOT NULL CHECK (role IN ('viewer', 'dispatcher', 'planner', 'admin')),
    command_unit_code   text NOT NULL,
    password_hash       text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE kiosk (
    id                serial PRIMARY KEY,
    name              text NOT NULL CHECK (name ~ '^[A-Za-z0-9._@-]{1,64}$'),
    command_unit_code text NOT NULL,
    token_hash        text NOT NULL UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz
);
CREATE UNIQUE INDEX kiosk_name_in_use ON kiosk (name) WHERE revoked_at IS NULL;

ALTER TABLE audit_log ADD COLUMN address text;
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log")
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.execute("DROP INDEX IF EXISTS audit_log_at")
    op.execute("ALTER TABLE audit_log DROP COLUMN IF EXISTS address")
    op.execute("DROP TABLE IF EXISTS kiosk")
    op.execute("DROP TABLE IF EXISTS account")
