"""Devices: a secret token and/or a certificate per reporting unit, and a flood limit per device.

A token is 32 random bytes, so a single SHA-256 is enough to store it (no
password stretching is needed for a secret nobody chose). A certificate is
issued by the installation's CA (:mod:`gridwatch.etl.ingest.pki`) and stored as
its SHA-256 fingerprint: only the device's current one is taken. Revoking a
device withdraws both. The service keeps the credentials in memory, refreshed
from ``device`` every few seconds, and in a snapshot file so it can
authenticate while the database is down.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg

from gridwatch.errors import InputError

__all__ = ["hash_token", "add_devices", "set_certificate", "revoke_devices", "list_devices", "load_devices",
           "Credentials", "DeviceRecord", "DeviceRegistry", "RateLimiter"]

log = logging.getLogger(__name__)


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _names(callsigns: Sequence[str]) -> str:
    return f"{', '.join(map(repr, callsigns[:10]))}{' ...' if len(callsigns) > 10 else ''}"


def _require_units(conn: psycopg.Connection, callsigns: list[str]) -> None:
    """Raise :class:`InputError` naming every callsign that is no unit."""
    known = {r[0] for r in conn.execute("SELECT callsign FROM unit WHERE callsign = ANY(%s)", (callsigns,))}
    missing = [c for c in callsigns if c not in known]
    if missing:
        raise InputError(f"there is no unit {_names(missing)}: load the units first (gridwatch etl run) "
                         "or check the callsign")


def add_devices(conn: psycopg.Connection, callsigns: Sequence[str], *, create_units: bool = False) -> dict[str, str]:
    """Give each unit a new token (replacing an old one, lifting a revocation); return callsign → token,
    shown only now.

    ``create_units`` first makes a vehicle unit of every callsign that has none (invented
    units of the simulator); otherwise an unknown callsign is an InputError.
    """
    callsigns = list(dict.fromkeys(callsigns))
    if create_units:
        conn.execute("INSERT INTO unit (callsign, kind) SELECT c, 'vehicle' FROM unnest(%s::text[]) c "
                     "ON CONFLICT (callsign) DO NOTHING", (callsigns,))
    _require_units(conn, callsigns)
    tokens = {c: secrets.token_urlsafe(32) for c in callsigns}
    conn.execute(
        "INSERT INTO device (callsign, token_hash) SELECT * FROM unnest(%s::text[], %s::text[]) "
        "ON CONFLICT (callsign) DO UPDATE SET token_hash = EXCLUDED.token_hash, created_at = now(), revoked_at = NULL",
        (callsigns, [hash_token(t) for t in tokens.values()]),
    )
    return tokens


def set_certificate(conn: psycopg.Connection, callsign: str, fingerprint: str, expires_at: datetime) -> None:
    """Make the certificate of ``fingerprint`` the device's current one (superseding any other, lifting a
    revocation); an unknown unit is an InputError."""
    _require_units(conn, [callsign])
    conn.execute(
        "INSERT INTO device (callsign, cert_fingerprint, cert_expires_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (callsign) DO UPDATE SET cert_fingerprint = EXCLUDED.cert_fingerprint, "
        "cert_expires_at = EXCLUDED.cert_expires_at, revoked_at = NULL",
        (callsign, fingerprint, expires_at),
    )


def revoke_devices(conn: psycopg.Connection, callsigns: Sequence[str]) -> None:
    """Withdraw the token and certificate of each device; a callsign that is no device is an InputError
    (and nothing is revoked)."""
    callsigns = list(dict.fromkeys(callsigns))
    revoked = {r[0] for r in conn.execute(
        "UPDATE device SET token_hash = NULL, cert_fingerprint = NULL, cert_expires_at = NULL, "
        "revoked_at = coalesce(revoked_at, now()) WHERE callsign = ANY(%s) RETURNING callsign", (callsigns,))}
    missing = [c for c in callsigns if c not in revoked]
    if missing:
        raise InputError(f"there is no device {_names(missing)}: see gridwatch devices list")


@dataclass(frozen=True)
class DeviceRecord:
    """One row of ``gridwatch devices list``."""

    callsign: str
    created_at: datetime
    has_token: bool
    cert_fingerprint: str | None
    cert_expires_at: datetime | None
    revoked_at: datetime | None


def list_devices(conn: psycopg.Connection) -> list[DeviceRecord]:
    """Every device, by callsign."""
    rows = conn.execute("SELECT callsign, created_at, token_hash IS NOT NULL, cert_fingerprint, cert_expires_at, "
                        "revoked_at FROM device ORDER BY callsign").fetchall()
    return [DeviceRecord(*row) for row in rows]


@dataclass(frozen=True)
class Credentials:
    """What authenticates one device: its token's hash, its current certificate's fingerprint."""

    token_hash: str | None = None
    cert_fingerprint: str | None = None


def load_devices(conn: psycopg.Connection) -> dict[str, Credentials]:
    """Callsign → credentials of every device that has any."""
    rows = conn.execute("SELECT callsign, token_hash, cert_fingerprint FROM device WHERE revoked_at IS NULL "
                        "AND (token_hash IS NOT NULL OR cert_fingerprint IS NOT NULL)").fetchall()
    return {callsign: Credentials(token, cert) for callsign, token, cert in rows}


def _from_json(data: object) -> dict[str, Credentials] | None:
    """The snapshot's devices; a snapshot of an older version (callsign → token hash) is read too."""
    if not isinstance(data, dict):
        return None
    devices = {}
    for callsign, value in data.items():
        if isinstance(value, str):
            value = {"token": value}
        if not isinstance(value, dict):
            return None
        devices[callsign] = Credentials(value.get("token"), value.get("cert"))
    return devices


@dataclass
class DeviceRegistry:
    """The credentials the service checks against, with an on-disk snapshot."""

    snapshot: Path
    devices: dict[str, Credentials] = field(default_factory=dict)
    _by_hash: dict[str, str] = field(default_factory=dict, repr=False)
    _verified: dict[str, bytes] = field(default_factory=dict, repr=False)

    def check(self, callsign: str, token: str | None) -> bool:
        """True when ``token`` is the device's token (a token already verified is not hashed again)."""
        if not token:
            return False
        given = token.encode("utf-8")
        verified = self._verified.get(callsign)
        if verified is not None and hmac.compare_digest(verified, given):
            return True
        stored = self.devices.get(callsign, Credentials()).token_hash
        if stored is None or not hmac.compare_digest(stored, hash_token(token)):
            return False
        self._verified[callsign] = given
        return True

    def check_cert(self, callsign: str, fingerprint: str) -> bool:
        """True when the certificate of ``fingerprint`` is the device's current one."""
        stored = self.devices.get(callsign, Credentials()).cert_fingerprint
        return stored is not None and hmac.compare_digest(stored, fingerprint)

    def callsign_for(self, token: str | None) -> str | None:
        """The device a token belongs to, if any."""
        return self._by_hash.get(hash_token(token)) if token else None

    def replace(self, devices: dict[str, Credentials]) -> None:
        """Take a fresh copy from the database and write the snapshot (atomically, mode 600; a full
        disk keeps the old snapshot, the copy in memory is used all the same)."""
        if devices == self.devices:
            return
        self._use(devices)
        tmp = self.snapshot.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({c: {"token": d.token_hash, "cert": d.cert_fingerprint} for c, d in devices.items()}, handle)
            os.replace(tmp, self.snapshot)
        except OSError as exc:
            log.warning("device snapshot %s not written (%s); devices are checked from memory", self.snapshot, exc)

    def load_snapshot(self) -> bool:
        """Read the snapshot of the last run; False when there is none or it is unreadable (the
        database's copy is taken as soon as it answers)."""
        try:
            devices = _from_json(json.loads(self.snapshot.read_text()))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            log.warning("device snapshot %s is unreadable (%s); waiting for the database's copy", self.snapshot,
                        type(exc).__name__)
            return False
        if devices is None:
            return False
        self._use(devices)
        return True

    def _use(self, devices: dict[str, Credentials]) -> None:
        self.devices = devices
        self._by_hash = {d.token_hash: callsign for callsign, d in devices.items() if d.token_hash}
        self._verified = {}


class RateLimiter:
    """A token bucket per device: ``rate`` fixes a second on average, bursts up to ``burst``."""

    def __init__(self, *, rate: float = 20.0, burst: float = 100.0) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, wanted: int = 1, *, now: float | None = None) -> int:
        """How many of ``wanted`` fixes ``key`` may send now (and take them from its bucket)."""
        now = time.monotonic() if now is None else now
        level, last = self._buckets.get(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        granted = min(wanted, int(level))
        self._buckets[key] = (level - granted, now)
        return granted
