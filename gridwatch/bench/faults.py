"""``gridwatch bench faults``: the faults a watch floor meets, on the small sample, one row each.

Every scenario runs the real programs (``gridwatch etl run``, ``gridwatch ingest``, the
dashboard in headless Chromium, the embedded PostgreSQL) and counts what was acknowledged,
stored, quarantined, lost and duplicated, and how many seconds it took to recover:

- ``etl run`` killed (SIGKILL) at random moments, then run again, against a clean run;
- ``gridwatch ingest`` killed under a load of JSON batches, restarted, and sent part of its
  acknowledged fixes again;
- the wall open in Chromium while its embedded database is stopped and started;
- poison fixes (no clock, refused by the database, of 1970 and the year 1 in the spool);
- slow-loris connections, each sending a header byte every few seconds, beside real phones;
- the spool on a small tmpfs that fills up, then has room again (mounting needs root).

Each runs in databases and folders of its own and leaves nothing behind.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa

from gridwatch.bench import Scenario
from gridwatch.bench._harness import (
    INTERACTIVE,
    IngestProcess,
    SmallDisk,
    bench_engine,
    bench_sample,
    new_account,
    offline_browser,
    offline_page,
    serving,
)
from gridwatch.bench.ingest import REFERENCE_SQL, UNITS, start_service
from gridwatch.bench.poison import poison_fixes
from gridwatch.etl.database import scratch_database
from gridwatch.etl.ingest.devices import add_devices
from gridwatch.settings import Settings

__all__ = ["bench_faults", "TABLE_CHECKS", "table_checks", "etl_kills", "ingest_kill", "wall_restart",
           "slow_loris", "full_spool"]

GRIDWATCH = [sys.executable, "-m", "gridwatch.cli"]
KILLS = 5
WALL_RECOVERY_GOAL_S = 10.0
SLOW_LORIS_GOAL_S = 30.0
LOAD_FIXES = 20_000
BATCH = 200

# What a run leaves behind, compared between runs (etl_run is a log, not state).
TABLE_CHECKS = {
    "command_unit": "SELECT count(*) FROM command_unit",
    "police_area": "SELECT count(*) FROM police_area",
    "grid_source": "SELECT count(*) FROM grid_source",
    "grid": "SELECT count(*) FROM grid",
    "grid_codes": "SELECT md5(string_agg(code || ST_AsText(ST_SnapToGrid(geom, 1e-7)), ',' ORDER BY code)) FROM grid",
    "grid_version": "SELECT count(*) FROM grid_version",
    "zone": "SELECT count(*) FROM zone",
    "border_segment": "SELECT count(*) FROM border_segment",
    "unit": "SELECT count(*) FROM unit",
    "position": "SELECT count(*) FROM position",
    "position_distinct": "SELECT count(DISTINCT (unit_id, ts)) FROM position",
    "position_fused": "SELECT count(*) FROM position WHERE grid_id IS NOT NULL",
    "unit_latest": "SELECT md5(string_agg(unit_id || '@' || ts, ',' ORDER BY unit_id)) FROM unit_latest",
    "incident": "SELECT count(*) FROM incident",
    "quarantine": "SELECT count(*) FROM quarantine",
    "quarantine_reasons": "SELECT md5(string_agg(reason || coalesce(line, 0), ',' ORDER BY reason, line, record::text)) "
                          "FROM quarantine",
    "grid_coverage": "SELECT count(*) FROM grid_coverage",
    "segment_coverage": "SELECT count(*) FROM segment_coverage",
    "hex_coverage": "SELECT count(*) FROM hex_coverage",
}


def table_checks(engine: sa.Engine) -> dict[str, object]:
    """The counts and checksums of :data:`TABLE_CHECKS`: equal for equal results of a run."""
    with engine.connect() as conn:
        return {name: conn.execute(sa.text(query)).scalar() for name, query in TABLE_CHECKS.items()}


def _positions(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT unit_id, ts FROM position")).fetchall()
    return pd.DataFrame(rows, columns=["unit_id", "ts"])


def _etl_run(folder: Path, url: str) -> subprocess.Popen:
    env = {**os.environ, "GRIDWATCH_DATABASE_URL": url}
    return subprocess.Popen([*GRIDWATCH, "etl", "run", "--input", str(folder)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def etl_kills(settings: Settings, *, kills: int = KILLS, seed: int = 1) -> Scenario:
    """``etl run`` killed at ``kills`` random moments, then run to the end, against a clean run."""
    folder = bench_sample(settings, "small")
    rng = np.random.default_rng(seed)
    with bench_engine(settings) as clean, bench_engine(settings) as killed:
        started = time.perf_counter()
        if _etl_run(folder, clean.url.render_as_string(hide_password=False)).wait() != 0:
            raise RuntimeError("the clean etl run failed")
        duration = time.perf_counter() - started
        url = killed.url.render_as_string(hide_password=False)
        for moment in rng.uniform(0.1, 0.9, kills) * duration:
            process = _etl_run(folder, url)
            time.sleep(moment)
            process.send_signal(signal.SIGKILL)
            process.wait()
        started = time.perf_counter()
        final = _etl_run(folder, url)
        if final.wait() != 0:
            raise RuntimeError(f"the rerun after the kills failed: {final.stderr.read().strip()[-300:]}")
        recover_s = time.perf_counter() - started
        expected, got = table_checks(clean), table_checks(killed)
        keys = _positions(clean).merge(_positions(killed), how="outer", indicator=True)["_merge"]
    same = expected == got
    lost, extra = int((keys == "left_only").sum()), int((keys == "right_only").sum())
    return Scenario(f"etl run killed {kills}x at random, then rerun", None, int(got["position"]),
                    int(got["quarantine"]), lost, extra + int(got["position"]) - int(got["position_distinct"]),
                    recover_s, "tables = a clean run's" + ("" if same else f" (differ: {_differing(expected, got)})"),
                    same and lost == 0 and extra == 0)


def _differing(expected: dict[str, object], got: dict[str, object]) -> str:
    return ", ".join(k for k in expected if expected[k] != got[k])


@contextmanager
def _own_database(settings: Settings) -> Iterator[Settings]:
    """An embedded cluster of its own (so it may be stopped), with the small synthetic region loaded."""
    from gridwatch.data.synthetic import REGIONS, make_region
    from gridwatch.etl.database import database_engine, ensure_database
    from gridwatch.etl.server import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="gridwatch-faults-") as home:
        Path(home).chmod(0o755)
        own = settings.model_copy(update={"home": Path(home), "database_url": None, "db_port": None,
                                          "live_refresh_s": 1.0, "refresh_s": 5.0})
        server = EmbeddedServer(own)
        try:
            ensure_database(own).dispose()
            engine = database_engine(own)
            make_region(engine, REGIONS["small"])
            engine.dispose()
            yield own
        finally:
            server.stop()


def wall_restart(settings: Settings) -> Scenario:
    """The wall open in Chromium while its database is stopped and started: seconds from the start
    until a unit's new position is drawn."""
    from gridwatch.dashboard.app import create_app
    from gridwatch.etl.database import database_engine
    from gridwatch.etl.server import EmbeddedServer

    with _own_database(settings) as own, offline_browser() as browser:
        app = create_app(settings=own)
        engine = database_engine(own)
        with serving(app.server) as base:
            context, page, refused = offline_page(browser, base, account=new_account(engine))
            page.goto(f"{base}/wall")
            with engine.connect() as conn:
                bounds = list(conn.execute(sa.text(
                    "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                    "(SELECT ST_Extent(geom) e FROM command_unit) x")).one())
            page.wait_for_function(INTERACTIVE, arg=bounds, timeout=120_000)
            server = EmbeddedServer(own)
            server.stop()
            page.wait_for_function("() => (document.querySelector('#wall-banner')?.textContent || '')"
                                   ".includes('showing the picture of')", timeout=60_000)
            server.start()
            started = time.perf_counter()
            lon = bounds[0] + 0.61 * (bounds[2] - bounds[0])
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE unit_latest SET geom = ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), "
                                     "ts = now() WHERE unit_id = 1"), {"lon": lon, "lat": (bounds[1] + bounds[3]) / 2})
            page.wait_for_function(
                "(x) => document.querySelector('#wall-map .js-plotly-plot').data"
                ".some(t => (t.lon || []).some(v => v !== null && Math.abs(v - x) < 1e-6))",
                arg=lon, timeout=120_000, polling=100)
            recover_s = time.perf_counter() - started
            context.close()
        engine.dispose()
    return Scenario("database stopped and started, wall open", None, None, None, None, None, recover_s,
                    f"live units drawn <= {WALL_RECOVERY_GOAL_S:g} s after the start" + (
                        f" (asked other origins: {refused[:2]})" if refused else ""),
                    recover_s <= WALL_RECOVERY_GOAL_S and not refused)


@contextmanager
def _ingest_database(settings: Settings) -> Iterator[tuple[str, dict[str, str]]]:
    """A scratch database with the ingest benchmark's reference and units, and a token per unit."""
    with scratch_database(settings, prefix="gridwatch_bench") as url:
        with psycopg.connect(url) as conn:
            conn.execute(REFERENCE_SQL.replace("%(units)s", str(UNITS)))
            tokens = add_devices(conn, [f"B{n}" for n in range(1, UNITS + 1)])
        yield url, tokens


class _Batches:
    """Distinct fixes of every unit in JSON batches (each unit standing at a place of its own, one
    fix a second); remembers which were acknowledged."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens
        self.callsigns = sorted(tokens)
        self.sent = 0
        self.acknowledged: list[tuple[str, int]] = []
        self.t0 = int(time.time()) - 2 * 86400

    def _fix(self, unit: int, ts: int) -> dict:
        callsign = self.callsigns[unit]
        return {"callsign": callsign, "token": self.tokens[callsign], "ts": ts, "speed_kmh": 0.0,
                "lon": 98.05 + (unit % 20) * 0.09, "lat": 22.01 + (unit // 20) * 0.09}

    def send(self, base: str, n: int = BATCH) -> int:
        """One batch of ``n`` new fixes: the HTTP status (0 when the service is unreachable)."""
        k = self.sent + np.arange(n)
        units, ts = (k % len(self.callsigns)).tolist(), (self.t0 + k // len(self.callsigns)).tolist()
        self.sent += n
        status = _post(base, [self._fix(u, t) for u, t in zip(units, ts)])
        if status == 200:
            self.acknowledged += [(self.callsigns[u], t) for u, t in zip(units, ts)]
        return status

    def resend(self, base: str, n: int) -> int:
        """``n`` acknowledged fixes again, as a phone that missed the answer would."""
        index = {c: i for i, c in enumerate(self.callsigns)}
        return _post(base, [self._fix(index[c], t) for c, t in self.acknowledged[:n]])


def _post(base: str, fixes: list[dict]) -> int:
    request = urllib.request.Request(f"{base}/api/positions", data=json.dumps({"positions": fixes}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _stored(url: str, acknowledged: list[tuple[str, int]]) -> tuple[int, int, int]:
    """(acknowledged fixes not in ``position``, rows in ``position``, rows beyond one per fix)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT u.callsign, extract(epoch FROM p.ts)::bigint FROM position p "
                            "JOIN unit u ON u.id = p.unit_id").fetchall()
    stored = pd.DataFrame(rows, columns=["callsign", "ts"])
    acked = pd.DataFrame(acknowledged, columns=["callsign", "ts"]).drop_duplicates()
    found = acked.merge(stored.drop_duplicates(), how="left", indicator=True)["_merge"]
    return int((found == "left_only").sum()), len(stored), len(stored) - len(stored.drop_duplicates())


def ingest_kill(settings: Settings, *, fixes: int = LOAD_FIXES) -> Scenario:
    """The ingest service killed (SIGKILL) halfway through a load of JSON batches, restarted, sent a
    tenth of its acknowledged fixes again; seconds from the restart until all is stored."""
    with _ingest_database(settings) as (url, tokens), tempfile.TemporaryDirectory(prefix="gridwatch-faults-") as home:
        load = _Batches(tokens)
        service = start_service(url, Path(home))
        try:
            while load.sent < fixes // 2:
                load.send(service.base)
            service.kill()
            refused = sum(load.send(service.base) == 0 for _ in range(3))  # nobody answers: nothing acknowledged
            service = start_service(url, Path(home))
            started = time.perf_counter()
            service.wait_drained()
            recover_s = time.perf_counter() - started
            while load.sent < fixes:
                load.send(service.base)
            load.resend(service.base, len(load.acknowledged) // 10)
            service.wait_drained()
        finally:
            service.stop()
        lost, stored, duplicated = _stored(url, load.acknowledged)
    return Scenario("ingest killed under load, restarted, a tenth resent", len(load.acknowledged), stored, 0, lost,
                    duplicated, recover_s, f"0 lost, 0 duplicated ({refused} batches unanswered while down)",
                    lost == 0 and duplicated == 0 and stored == len(set(load.acknowledged)))


def slow_loris(settings: Settings, *, connections: int = 50, byte_every_s: float = 2.0) -> Scenario:
    """``connections`` slow-loris connections (a header byte every ``byte_every_s``) while phones go on
    sending: seconds until the service has closed the last of them."""
    with _ingest_database(settings) as (url, tokens), tempfile.TemporaryDirectory(prefix="gridwatch-faults-") as home:
        service = start_service(url, Path(home))
        load = _Batches(tokens)
        try:
            closed_after = asyncio.run(_slow_loris(service, load, connections, byte_every_s))
            service.wait_drained()
        finally:
            service.stop()
        lost, stored, duplicated = _stored(url, load.acknowledged)
    worst = max(closed_after)
    return Scenario(f"{connections} slow-loris connections beside phones", len(load.acknowledged), stored, 0, lost,
                    duplicated, worst, f"each closed <= {SLOW_LORIS_GOAL_S:g} s, phones served",
                    worst <= SLOW_LORIS_GOAL_S and lost == 0 and len(load.acknowledged) > 0)


async def _slow_loris(service, load: _Batches, connections: int, byte_every_s: float) -> list[float]:
    host, port = "127.0.0.1", service.http_port

    async def attack() -> float:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /?id=")
        try:
            while time.monotonic() - started < 3 * SLOW_LORIS_GOAL_S:
                await asyncio.sleep(byte_every_s)
                writer.write(b"A")
                await writer.drain()
                if reader.at_eof() or await _closed(reader):
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()
        return time.monotonic() - started

    async def phones() -> None:
        while not done.is_set():
            await asyncio.to_thread(load.send, service.base, 20)
            await asyncio.sleep(0.2)

    done = asyncio.Event()
    phone = asyncio.create_task(phones())
    closed = await asyncio.gather(*(attack() for _ in range(connections)))
    done.set()
    await phone
    return list(closed)


async def _closed(reader: asyncio.StreamReader) -> bool:
    """True when the peer has closed (or answered and then closed) the connection."""
    try:
        data = await asyncio.wait_for(reader.read(4096), timeout=0.01)
    except asyncio.TimeoutError:
        return False
    return not data or reader.at_eof()


def full_spool(settings: Settings) -> Scenario:
    """The spool on a 1 MiB tmpfs, filled up while phones send; then room again: 503s while full,
    nothing acknowledged lost, and it goes on without a restart (seconds from the room coming back
    to the next acknowledged batch)."""
    if os.geteuid() != 0:
        return Scenario("spool disk full (needs root to mount a tmpfs)", None, None, None, None, None, None,
                        "not run", False)
    with _ingest_database(settings) as (url, tokens), tempfile.TemporaryDirectory(prefix="gridwatch-faults-") as home:
        disk = SmallDisk(Path(home) / "spool")
        service = IngestProcess(url, Path(home), "--rate", "100000", "--burst", "100000",
                                env={"GRIDWATCH_INGEST_SEGMENT_BYTES": str(128 * 1024)}, wrap=disk.wrap).start()

        load = _Batches(tokens)
        try:
            disk.fill(service)
            statuses = [load.send(service.base, 100) for _ in range(30)]
            disk.free(service)
            started = time.perf_counter()
            while load.send(service.base, 100) != 200:
                if time.perf_counter() - started > 60:
                    raise RuntimeError("the service took no fix 60 s after the disk had room again")
                time.sleep(0.1)
            recover_s = time.perf_counter() - started
            service.wait_drained()
        finally:
            service.stop()
        lost, stored, duplicated = _stored(url, load.acknowledged)
    full = statuses.count(503)
    return Scenario("spool disk full, then room again", len(load.acknowledged), stored, 0, lost, duplicated,
                    recover_s, f"503 while full ({full} of {len(statuses)} batches), 0 lost, no restart",
                    full > 0 and set(statuses) <= {200, 503} and lost == 0 and duplicated == 0)


def bench_faults(settings: Settings, *, scale: str) -> list[Scenario]:
    """Every scenario on the small sample (the scale is always small: faults, not volume)."""
    return [etl_kills(settings), ingest_kill(settings), wall_restart(settings), poison_fixes(settings),
            slow_loris(settings), full_spool(settings)]
