"""Helpers for the live-ingest tests: a tiny region, device tokens, and the service as a subprocess."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests

from gridwatch.etl.ingest.devices import add_devices

# lon 100.0-100.2, lat 22.0-22.2; two grids split at lon 100.1; a border strip along lat 22.0, inland beyond.
REGION_SQL = """
INSERT INTO command_unit (id, level, parent_id, code, name, geom) VALUES
 (1, 'prefecture', NULL, 'P', 'Pref', ST_GeomFromText('MULTIPOLYGON(((100 22,100.2 22,100.2 22.2,100 22.2,100 22)))', 4326)),
 (2, 'county', 1, 'C', 'County', ST_GeomFromText('MULTIPOLYGON(((100 22,100.2 22,100.2 22.2,100 22.2,100 22)))', 4326)),
 (3, 'township', 2, 'T', 'Town', ST_GeomFromText('MULTIPOLYGON(((100 22,100.2 22,100.2 22.2,100 22.2,100 22)))', 4326));
INSERT INTO grid (id, code, township_id, geom) VALUES
 (1, 'G-W', 3, ST_GeomFromText('MULTIPOLYGON(((100 22,100.1 22,100.1 22.2,100 22.2,100 22)))', 4326)),
 (2, 'G-E', 3, ST_GeomFromText('MULTIPOLYGON(((100.1 22,100.2 22,100.2 22.2,100.1 22.2,100.1 22)))', 4326));
INSERT INTO zone (id, kind, name, geom) VALUES
 (1, 'border_closed', 'strip', ST_GeomFromText('MULTIPOLYGON(((100 22,100.2 22,100.2 22.02,100 22.02,100 22)))', 4326)),
 (2, 'social_surface', 'inland', ST_GeomFromText('MULTIPOLYGON(((100 22.02,100.2 22.02,100.2 22.2,100 22.2,100 22.02)))', 4326));
INSERT INTO border_segment (id, km_from, km_to, geom) VALUES
 (1, 0, 20.6, ST_GeomFromText('LINESTRING(100 22, 100.2 22)', 4326));
"""
CENTRE = (100.05, 22.1)


def seed(url: str, units: dict[str, str], *, region: bool = True) -> dict[str, str]:
    """Insert the region (once) and ``units`` (callsign → kind); return a device token per unit."""
    with psycopg.connect(url) as conn:
        if region:
            conn.execute(REGION_SQL)
        conn.execute(
            "INSERT INTO unit (callsign, kind) SELECT * FROM unnest(%s::text[], %s::text[])",
            (list(units), list(units.values())),
        )
        return add_devices(conn, list(units))


def provision(url: str, callsigns: list[str], *, create_units: bool = False) -> dict[str, str]:
    """New device tokens for ``callsigns`` (making vehicle units of unknown ones when asked)."""
    with psycopg.connect(url) as conn:
        return add_devices(conn, callsigns, create_units=create_units)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rows(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


class IngestProcess:
    """``gridwatch ingest`` in a subprocess with its spool under ``home``, against ``url`` (None: the
    embedded server of ``home``), with settings ``env`` (``GRIDWATCH_*``) and its command run by
    ``wrap`` (e.g. in a mount namespace of its own)."""

    def __init__(self, url: str | None, home: Path, *args: str, env: dict[str, str] | None = None,
                 wrap: tuple[str, ...] = ()) -> None:
        self.url, self.home, self.args, self.env, self.wrap = url, home, args, env or {}, wrap
        self.http_port, self.cot_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.log = home / "ingest.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> IngestProcess:
        env = {k: v for k, v in os.environ.items() if k != "GRIDWATCH_DATABASE_URL"}
        env.update({"GRIDWATCH_HOME": str(self.home)}, **({"GRIDWATCH_DATABASE_URL": self.url} if self.url else {}),
                   **self.env)
        cmd = [*self.wrap, sys.executable, "-m", "gridwatch.cli", "ingest",
               "--http-port", str(self.http_port), "--cot-port", str(self.cot_port), *self.args]
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingest exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.base}/api/ingest/stats", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("ingest did not come up within 30 s")

    def stats(self) -> dict:
        return requests.get(f"{self.base}/api/ingest/stats", timeout=5).json()

    def wait_drained(self, *, timeout: float = 60.0) -> dict:
        """Wait until the writer has committed everything spooled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if stats["spool"]["backlog"] == 0 and stats["db_up"]:
                return stats
            time.sleep(0.1)
        raise AssertionError(f"backlog not drained in {timeout} s: {self.stats()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, *, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
