"""Accounts, kiosk links and the audit log: who may sign in, as what, scoped to which command unit,
and what each of them did.

Passwords are hashed with argon2id at argon2-cffi's recommended cost (RFC 9106, low memory).
A kiosk token is 32 random bytes, so one SHA-256 stores it (as device tokens). Every change and
every sign-in, failed or not, adds an ``audit_log`` row (who, what, from which address) in the
same transaction as the change; the table refuses UPDATE, DELETE and TRUNCATE.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime

import psycopg
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gridwatch.errors import InputError
from gridwatch.etl.ingest.devices import hash_token
from gridwatch.settings import ROLES

__all__ = [
    "Account", "Kiosk", "audit", "add_account", "remove_account", "set_password", "set_role", "accounts",
    "account_by_id", "sign_in", "add_kiosk", "revoke_kiosk", "kiosks", "kiosk_by_id", "kiosk_for",
    "MIN_PASSWORD", "HASHER",
]

HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory profile: t=3, m=64 MiB, p=4
# Password checks at once: each takes 64 MiB and a core for a while, so a burst of sign-ins queues
# here instead of starving the pages.
_CHECKING = threading.BoundedSemaphore(os.cpu_count() or 2)
MIN_PASSWORD = 12
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
# Verified when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Account:
    """A person who signs in: a role, the code of the command unit they see, when the password was set."""

    id: int
    name: str
    role: str
    unit: str
    password_changed_at: datetime


@dataclass(frozen=True)
class Kiosk:
    """A wall's sign-in link: viewer of one command unit until revoked."""

    id: int
    name: str
    unit: str
    created_at: datetime
    revoked_at: datetime | None


_AUDIT = ("INSERT INTO audit_log (actor, action, address, detail) "
          "VALUES (%(actor)s, %(action)s, %(address)s, %(detail)s::jsonb)")


def audit(conn: sa.Connection | psycopg.Connection, actor: str, action: str, *, address: str | None = None,
          **detail: object) -> None:
    """Add one row to the audit log in the caller's transaction (a SQLAlchemy or a psycopg connection)."""
    params = {"actor": actor, "action": action, "address": address, "detail": json.dumps(detail, default=str)}
    (conn.exec_driver_sql if isinstance(conn, sa.Connection) else conn.execute)(_AUDIT, params)


def _check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise InputError(f"name {name!r} must be 1-64 letters, digits or . _ @ -")
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"a password must have at least {MIN_PASSWORD} characters")
    return password


def _check_unit(conn: sa.Connection, unit: str | None) -> str:
    """The command unit code, checked; the top command unit when ``unit`` is None and there is one."""
    if unit is None:
        tops = conn.execute(sa.text("SELECT code FROM command_unit WHERE parent_id IS NULL ORDER BY code")).scalars().all()
        if len(tops) != 1:
            raise InputError("name the command unit (--unit CODE): "
                             + ("no command units are loaded yet" if not tops else f"there are {len(tops)} top units"))
        return tops[0]
    if conn.execute(sa.text("SELECT 1 FROM command_unit WHERE code = :code"), {"code": unit}).first() is None:
        raise InputError(f"there is no command unit {unit!r}")
    return unit


_ACCOUNT_COLUMNS = "id, name, role, command_unit_code, password_changed_at"


def add_account(conn: sa.Connection, name: str, role: str, password: str, *, unit: str | None = None,
                actor: str, address: str | None = None) -> Account:
    """A new account (an InputError when the name is taken or anything is malformed)."""
    values = {"name": _check_name(name), "role": _check_role(role), "unit": _check_unit(conn, unit),
              "hash": HASHER.hash(_check_password(password))}
    row = conn.execute(sa.text(
        "INSERT INTO account (name, role, command_unit_code, password_hash) VALUES (:name, :role, :unit, :hash) "
        f"ON CONFLICT (name) DO NOTHING RETURNING {_ACCOUNT_COLUMNS}"), values).first()
    if row is None:
        raise InputError(f"there is already an account {name!r}")
    audit(conn, actor, "account_added", address=address, account=name, role=role, unit=values["unit"])
    return Account(*row)


def _changed(conn: sa.Connection, sql: str, params: dict[str, object]) -> Account:
    row = conn.execute(sa.text(sql + f" RETURNING {_ACCOUNT_COLUMNS}"), params).first()
    if row is None:
        raise InputError(f"there is no account {params['name']!r}")
    return Account(*row)


def remove_account(conn: sa.Connection, name: str, *, actor: str, address: str | None = None) -> None:
    """Remove an account: its sessions end at their next request."""
    _changed(conn, "DELETE FROM account WHERE name = :name", {"name": name})
    audit(conn, actor, "account_removed", address=address, account=name)


def set_password(conn: sa.Connection, name: str, password: str, *, actor: str, address: str | None = None) -> None:
    """Set a new password: the account's sessions signed in before it end."""
    _changed(conn, "UPDATE account SET password_hash = :hash, password_changed_at = clock_timestamp() WHERE name = :name",
             {"name": name, "hash": HASHER.hash(_check_password(password))})
    audit(conn, actor, "password_set", address=address, account=name)


def set_role(conn: sa.Connection, name: str, role: str, *, unit: str | None = None, actor: str,
             address: str | None = None) -> Account:
    """Give an account another role (and, with ``unit``, another command unit)."""
    params = {"name": name, "role": _check_role(role), "unit": None if unit is None else _check_unit(conn, unit)}
    account = _changed(conn, "UPDATE account SET role = :role, command_unit_code = coalesce(:unit, command_unit_code) "
                             "WHERE name = :name", params)
    audit(conn, actor, "role_set", address=address, account=name, role=role, unit=account.unit)
    return account


def accounts(conn: sa.Connection) -> list[Account]:
    """Every account, by name."""
    return [Account(*row) for row in conn.execute(sa.text(f"SELECT {_ACCOUNT_COLUMNS} FROM account ORDER BY name"))]


def account_by_id(conn: sa.Connection, account_id: int) -> Account | None:
    """The account with this id, if it still exists."""
    row = conn.execute(sa.text(f"SELECT {_ACCOUNT_COLUMNS} FROM account WHERE id = :id"), {"id": account_id}).first()
    return None if row is None else Account(*row)


def sign_in(conn: sa.Connection, name: str, password: str, *, address: str | None) -> Account | None:
    """The account when ``password`` is its password, else None; both outcomes are audited.

    A hash made at an older cost is replaced by one at today's cost.
    """
    row = conn.execute(sa.text(f"SELECT {_ACCOUNT_COLUMNS}, password_hash FROM account WHERE name = :name"),
                       {"name": name}).first()
    try:
        with _CHECKING:
            HASHER.verify(row.password_hash if row else _DUMMY_HASH, password)
        good = row is not None
    except (VerificationError, InvalidHashError):
        good = False
    if not good:
        audit(conn, name[:64], "sign_in_failed", address=address)
        return None
    if HASHER.check_needs_rehash(row.password_hash):
        conn.execute(sa.text("UPDATE account SET password_hash = :hash WHERE id = :id"),
                     {"hash": HASHER.hash(password), "id": row.id})
    audit(conn, row.name, "signed_in", address=address)
    return Account(*row[:5])


_KIOSK_COLUMNS = "id, name, command_unit_code, created_at, revoked_at"


def add_kiosk(conn: sa.Connection, name: str, *, unit: str | None = None, actor: str,
              address: str | None = None) -> str:
    """A new kiosk link for a wall; returns its token, shown only now."""
    token = secrets.token_urlsafe(32)
    values = {"name": _check_name(name), "unit": _check_unit(conn, unit), "hash": hash_token(token)}
    done = conn.execute(sa.text("INSERT INTO kiosk (name, command_unit_code, token_hash) VALUES (:name, :unit, :hash) "
                                "ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING RETURNING id"), values).first()
    if done is None:
        raise InputError(f"there is already a kiosk {name!r} (revoke it, or choose another name)")
    audit(conn, actor, "kiosk_added", address=address, kiosk=name, unit=values["unit"])
    return token


def revoke_kiosk(conn: sa.Connection, name: str, *, actor: str, address: str | None = None) -> None:
    """Revoke a kiosk link: its wall is signed out at its next request."""
    done = conn.execute(sa.text("UPDATE kiosk SET revoked_at = now() WHERE name = :name AND revoked_at IS NULL "
                                "RETURNING id"), {"name": name}).first()
    if done is None:
        raise InputError(f"there is no kiosk {name!r} in use")
    audit(conn, actor, "kiosk_revoked", address=address, kiosk=name)


def kiosks(conn: sa.Connection) -> list[Kiosk]:
    """Every kiosk link, revoked ones included, by name."""
    return [Kiosk(*row) for row in conn.execute(sa.text(f"SELECT {_KIOSK_COLUMNS} FROM kiosk ORDER BY revoked_at NULLS FIRST, name"))]


def kiosk_by_id(conn: sa.Connection, kiosk_id: int) -> Kiosk | None:
    """The kiosk with this id, unless revoked."""
    row = conn.execute(sa.text(f"SELECT {_KIOSK_COLUMNS} FROM kiosk WHERE id = :id AND revoked_at IS NULL"),
                       {"id": kiosk_id}).first()
    return None if row is None else Kiosk(*row)


def kiosk_for(conn: sa.Connection, token: str, *, address: str | None) -> Kiosk | None:
    """The kiosk whose link carries ``token``, unless revoked; a wall opening it is audited."""
    row = None if not (token.isascii() and len(token) <= 128) else conn.execute(
        sa.text(f"SELECT {_KIOSK_COLUMNS} FROM kiosk WHERE token_hash = :hash AND revoked_at IS NULL"),
        {"hash": hash_token(token)}).first()
    audit(conn, row.name if row else "(unknown kiosk)", "kiosk_signed_in" if row else "kiosk_refused", address=address)
    return None if row is None else Kiosk(*row)
