"""Device certificates and revocation.

A device may hold a token, a certificate or both: ``token_hash`` becomes optional, and
``cert_fingerprint`` (SHA-256 of the device's current certificate, issued by the installation's
CA) with ``cert_expires_at`` names the one certificate the CoT TLS port accepts for it; issuing a
new one supersedes the old. ``revoked_at``: when the device was revoked; revoking withdraws every
credential (the CHECK holds it), and a new token or certificate clears it.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = "0006"
down_revision = "0005"

SCHEMA = r"""
ALTER TABLE device
    ALTER COLUMN token_hash DROP NOT NULL,
    ADD COLUMN cert_fingerprint text,
    ADD COLUMN cert_expires_at  timestamptz,
    ADD COLUMN revoked_at       timestamptz,
    ADD CONSTRAINT device_cert_expiry CHECK ((cert_fingerprint IS NULL) = (cert_expires_at IS NULL)),
    ADD CONSTRAINT device_revoked_has_no_credentials
        CHECK (revoked_at IS NULL OR (token_hash IS NULL AND cert_fingerprint IS NULL));
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DELETE FROM device WHERE token_hash IS NULL")
    op.execute("ALTER TABLE device DROP CONSTRAINT device_revoked_has_no_credentials, "
               "DROP CONSTRAINT device_cert_expiry, DROP COLUMN revoked_at, DROP COLUMN cert_expires_at, "
               "DROP COLUMN cert_fingerprint, ALTER COLUMN token_hash SET NOT NULL")
