"""Devices: one secret token per reporting unit (stored hashed), and a flood limit per device.

A token is 32 random bytes, so a single SHA-256 is enough to store it (no
password stretching is needed for a secret nobody chose). The service keeps
the hashes in memory, refreshed from ``device`` every few seconds, and in a
snapshot file so it can authenticate while the database is down.
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
from pathlib import Path

import psycopg

from gridwatch.errors import InputError

__all__ = ["hash_token", "add_devices", "load_devices", "DeviceRegistry", "RateLimiter"]

log = logging.getLogger(__name__)


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_devices(conn: psycopg.Connection, callsigns: Sequence[str], *, create_units: bool = False) -> dict[str, str]:
    """Give each unit a new token (replacing an old one); return callsign → token, shown only now.

    ``create_units`` first makes a vehicle unit of every callsign that has none (invented
    units of the simulator); otherwise an unknown callsign is an InputError.
    """
    callsigns = list(dict.fromkeys(callsigns))
    if create_units:
        conn.execute("INSERT INTO unit (callsign, kind) SELECT c, 'vehicle' FROM unnest(%s::text[]) c "
                     "ON CONFLICT (callsign) DO NOTHING", (callsigns,))
    known = {r[0] for r in conn.execute("SELECT callsign FROM unit WHERE callsign = ANY(%s)", (callsigns,))}
    missing = [c for c in callsigns if c not in known]
    if missing:
        raise InputError(
            f"there is no unit {', '.join(map(repr, missing[:10]))}{' ...' if len(missing) > 10 else ''}: "
            "load the units first (gridwatch etl run) or check the callsign"
        )
    tokens = {c: secrets.token_urlsafe(32) for c in callsigns}
    conn.execute(
        "INSERT INTO device (callsign, token_hash) SELECT * FROM unnest(%s::text[], %s::text[]) "
        "ON CONFLICT (callsign) DO UPDATE SET token_hash = EXCLUDED.token_hash, created_at = now()",
        (callsigns, [hash_token(t) for t in tokens.values()]),
    )
    return tokens


def load_devices(conn: psycopg.Connection) -> dict[str, str]:
    """Callsign → token hash of every device."""
    return dict(conn.execute("SELECT callsign, token_hash FROM device").fetchall())


@dataclass
class DeviceRegistry:
    """The token hashes the service checks against, with an on-disk snapshot."""

    snapshot: Path
    hashes: dict[str, str] = field(default_factory=dict)
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
        stored = self.hashes.get(callsign)
        if stored is None or not hmac.compare_digest(stored, hash_token(token)):
            return False
        self._verified[callsign] = given
        return True

    def callsign_for(self, token: str | None) -> str | None:
        """The device a token belongs to, if any."""
        return self._by_hash.get(hash_token(token)) if token else None

    def replace(self, hashes: dict[str, str]) -> None:
        """Take a fresh copy from the database and write the snapshot (atomically, mode 600; a full
        disk keeps the old snapshot, the copy in memory is used all the same)."""
        if hashes == self.hashes:
            return
        self._use(hashes)
        tmp = self.snapshot.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(hashes, handle)
            os.replace(tmp, self.snapshot)
        except OSError as exc:
            log.warning("device snapshot %s not written (%s); devices are checked from memory", self.snapshot, exc)

    def load_snapshot(self) -> bool:
        """Read the snapshot of the last run; False when there is none or it is unreadable (the
        database's copy is taken as soon as it answers)."""
        try:
            hashes = json.loads(self.snapshot.read_text())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            log.warning("device snapshot %s is unreadable (%s); waiting for the database's copy", self.snapshot,
                        type(exc).__name__)
            return False
        if not isinstance(hashes, dict):
            return False
        self._use(hashes)
        return True

    def _use(self, hashes: dict[str, str]) -> None:
        self.hashes = hashes
        self._by_hash = {digest: callsign for callsign, digest in hashes.items()}
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
