"""The poison-fix scenario of ``gridwatch bench faults``: after a fix that can never be stored, how
soon the next good fix is visible, and that no acknowledged fix is lost or stored twice.

Runs ``gridwatch ingest`` as a subprocess on a throwaway database with the
reference and units of ``gridwatch bench ingest``, and times three poisons,
each from the moment it is sent to the moment the next good fix of another
unit is in ``unit_latest`` (polled every 10 ms):

* at the door: an OsmAnd fix of ``timestamp=0`` (a phone without a clock),
  then the good fix;
* in the database: a JSON batch of good fixes holding one the database
  refuses (a CHECK constraint on ``position`` added for the run), then the good
  fix; the batch is split until the refused fix stands alone;
* in the spool: fixes of 1970 and of the year 1 left in the spool by a version
  that took them, ahead of a good fix, timed from the restarted service's first
  answer (so the writer's start is in it), and the partitions they made.

The first two are timed on a service whose writer has stored a fix already;
the figure to reach is 2 s. What the old writer did is no baseline: it never
stored the good fix.
"""
from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from gridwatch.bench import Scenario
from gridwatch.bench.ingest import REFERENCE_SQL, UNITS, start_service
from gridwatch.etl.database import scratch_database
from gridwatch.etl.ingest._fix import Fix
from gridwatch.etl.ingest.devices import add_devices
from gridwatch.etl.ingest.spool import Spool, now_us, to_records
from gridwatch.settings import Settings

__all__ = ["poison_fixes", "GOAL_S"]

TRIALS = 5
GOAL_S = 2.0
BATCH = 50
_POLL_S = 0.01
_WHERE = (99.0, 22.5)


def poison_fixes(settings: Settings, *, trials: int = TRIALS) -> Scenario:
    """Poisons at the door, in the database and in the spool; the worst time to the next good fix."""
    with scratch_database(settings, prefix="gridwatch_bench") as url, \
            tempfile.TemporaryDirectory(prefix="gridwatch-bench-") as home:
        with psycopg.connect(url) as conn:
            conn.execute(REFERENCE_SQL.replace("%(units)s", str(UNITS)))
            conn.execute("ALTER TABLE position ADD CONSTRAINT bench_poison CHECK (speed IS NULL OR speed < 1000)")
            tokens = add_devices(conn, [f"B{n}" for n in range(1, UNITS + 1)])
        callsigns = iter(sorted(tokens))
        service = start_service(url, Path(home))
        try:
            _good_fix(service.base, url, tokens, next(callsigns), time.monotonic())  # the writer has its reference
            door = [_door(service.base, url, tokens, next(callsigns), next(callsigns)) for _ in range(trials)]
            database = [_database(service.base, url, tokens, [next(callsigns) for _ in range(4)]) for _ in range(trials)]
        finally:
            service.terminate()
        spool, partitions = _spool(url, Path(home), next(callsigns))
        with psycopg.connect(url) as conn:
            stored, quarantined = conn.execute(
                "SELECT (SELECT count(*) FROM position), (SELECT count(*) FROM quarantine)").fetchone()
    # acknowledged: the first good fix, per trial a good fix at the door and a batch with its good fix,
    # and the three spooled fixes; of the batches' fixes the refused one of each is quarantined
    acknowledged = 1 + trials + trials * (BATCH + 1) + 3
    expected = acknowledged - trials
    worst = max(*door, *database)
    return Scenario(f"poison fixes (timestamp=0, refused by the database, 1970 and year 1 spooled; {trials}x)",
                    acknowledged, stored, quarantined, max(0, expected - stored), max(0, stored - expected),
                    worst, f"next good fix visible <= {GOAL_S:g} s (spool: {spool:.1f} s from restart, "
                    f"{partitions} partitions)", worst <= GOAL_S and stored == expected and partitions <= 3)


def _get(base: str, params: dict) -> int:
    try:
        with urllib.request.urlopen(f"{base}/?{urllib.parse.urlencode(params)}", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _visible(url: str, callsign: str, ts: datetime, started: float) -> float:
    """Seconds from ``started`` until ``callsign``'s latest fix is ``ts``."""
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT l.ts FROM unit_latest l JOIN unit u ON u.id = l.unit_id "
                               "WHERE u.callsign = %s", (callsign,)).fetchone()
            if row and row[0] == ts:
                return time.monotonic() - started
            if time.monotonic() - started > 60:
                raise RuntimeError(f"{callsign}'s good fix is not in unit_latest after 60 s")
            time.sleep(_POLL_S)


def _good_fix(base: str, url: str, tokens: dict[str, str], callsign: str, started: float) -> float:
    at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    status = _get(base, {"id": callsign, "lat": _WHERE[1], "lon": _WHERE[0], "timestamp": int(at.timestamp()),
                         "token": tokens[callsign]})
    if status != 200:
        raise RuntimeError(f"the good fix was answered {status}")
    return _visible(url, callsign, at, started)


def _door(base: str, url: str, tokens: dict[str, str], poisoned: str, good: str) -> float:
    started = time.monotonic()
    status = _get(base, {"id": poisoned, "lat": _WHERE[1], "lon": _WHERE[0], "timestamp": 0,
                         "token": tokens[poisoned]})
    if status != 400:
        raise RuntimeError(f"the fix of timestamp=0 was answered {status}, not 400")
    return _good_fix(base, url, tokens, good, started)


def _database(base: str, url: str, tokens: dict[str, str], units: list[str]) -> float:
    *senders, good = units
    now = datetime.now(timezone.utc)
    fixes = [{"callsign": senders[i % len(senders)], "token": tokens[senders[i % len(senders)]],
              "ts": (now - timedelta(seconds=BATCH + 10 - i)).isoformat(), "lon": _WHERE[0], "lat": _WHERE[1],
              "speed_kmh": 5000 if i == BATCH // 2 else 20} for i in range(BATCH)]
    request = urllib.request.Request(f"{base}/api/positions", data=json.dumps({"positions": fixes}).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:
        if json.loads(response.read())["accepted"] != BATCH:
            raise RuntimeError("the batch was not taken whole")
    return _good_fix(base, url, tokens, good, started)


def _spool(url: str, home: Path, callsign: str) -> tuple[float, int]:
    """Leave fixes of 1970 and year 1 and a good one in the (stopped) service's spool, restart it,
    and time the good fix from its first answer; also count the partitions it made."""
    good = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    old = [datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(1, 1, 1, tzinfo=timezone.utc), good]
    spool = Spool(home / "spool")
    spool.open()

    async def append() -> None:
        await spool.start()
        await spool.append(to_records([Fix(callsign, ts, *_WHERE, source="osmand") for ts in old],
                                      received_us=now_us()))
        await spool.close()
    asyncio.run(append())
    query = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'position'::regclass"
    with psycopg.connect(url) as conn:
        before = conn.execute(query).fetchone()[0]
    service = start_service(url, home)
    try:
        seconds = _visible(url, callsign, good, time.monotonic())
    finally:
        service.terminate()
    with psycopg.connect(url) as conn:
        return seconds, conn.execute(query).fetchone()[0] - before
