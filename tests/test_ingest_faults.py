"""The live ingest when things go wrong: a fix that can never be stored, a fix the database refuses,
a crash while a batch is split, a writer that cannot store, a restart, a damaged spool segment, a
full spool disk. Each against the real service (``gridwatch ingest`` in a subprocess) on a database
of this module's own (its tests change constraints of ``position``).
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import psycopg
import pytest
import requests

from gridwatch.etl._position_rows import ensure_partitions
from gridwatch.etl.database import scratch_database
from gridwatch.etl.ingest.spool import FIX_DTYPE
from gridwatch.settings import Settings

from _ingest import CENTRE, IngestProcess, SmallDisk, rows, seed

ROOT = Path(__file__).resolve().parents[1]
UNITS = {f"{p}{n}": "vehicle" for p in "NBSCKDE" for n in (1, 2, 3)}
FAST = ("--rate", "100000", "--burst", "100000")


@pytest.fixture(scope="module")
def url(server_url: str) -> Iterator[str]:
    """A database of this module's own, with the tiny region and the units of ``UNITS``."""
    with scratch_database(Settings(home=ROOT / ".gridwatch", database_url=server_url), prefix="gridwatch_faults") as url:
        yield url


@pytest.fixture(scope="module")
def tokens(url: str) -> dict[str, str]:
    return seed(url, UNITS)


@pytest.fixture(scope="module")
def live(url: str, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestProcess]:
    service = IngestProcess(url, tmp_path_factory.mktemp("faults"), *FAST).start()
    yield service
    service.stop()


def wait_until(predicate, *, timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; return the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"{what} not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def latest(url: str, callsign: str) -> datetime | None:
    found = rows(url, "SELECT l.ts FROM unit_latest l JOIN unit u ON u.id = l.unit_id WHERE u.callsign = %s",
                 (callsign,))
    return found[0][0] if found else None


def stored(url: str, callsign: str) -> list[datetime]:
    return [r[0] for r in rows(url, "SELECT p.ts FROM position p JOIN unit u ON u.id = p.unit_id "
                                    "WHERE u.callsign = %s ORDER BY p.ts", (callsign,))]


def osmand(service: IngestProcess, tokens: dict[str, str], callsign: str, timestamp: str | int,
           **fields: object) -> requests.Response:
    params = {"id": callsign, "lat": CENTRE[1], "lon": CENTRE[0], "timestamp": timestamp, "token": tokens[callsign],
              **fields}
    return requests.get(f"{service.base}/", params=params, timeout=10)


def fix(tokens: dict[str, str], callsign: str, ts: datetime, **fields: object) -> dict:
    """One fix of a gateway's JSON batch (each fix with its unit's token)."""
    return {"callsign": callsign, "token": tokens[callsign], "ts": ts.isoformat(), "lon": CENTRE[0],
            "lat": CENTRE[1], **fields}


def batch(service: IngestProcess, fixes: list[dict]) -> requests.Response:
    return requests.post(f"{service.base}/api/positions", json={"positions": fixes}, timeout=30)


def good_fix_becomes_visible(service: IngestProcess, tokens: dict[str, str], url: str, callsign: str) -> float:
    """Send a current fix of ``callsign`` and return how long until ``unit_latest`` shows it."""
    at_ms = int(time.time() * 1000)
    assert osmand(service, tokens, callsign, at_ms).status_code == 200
    expected = datetime.fromtimestamp(at_ms / 1000, timezone.utc)
    return wait_until(lambda: latest(url, callsign) == expected, timeout=10, what=f"{callsign}'s fix in unit_latest")


@contextlib.contextmanager
def position_refusing(url: str, check: str, *, setup: str = "") -> Iterator[None]:
    """``position`` with a CHECK constraint ``check`` for the length of the block."""
    with psycopg.connect(url, autocommit=True) as conn:
        if setup:
            conn.execute(setup)
        conn.execute(f"ALTER TABLE position ADD CONSTRAINT poison CHECK ({check})")
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE position DROP CONSTRAINT poison")


# -- a fix that can never be stored ------------------------------------------------
@pytest.mark.parametrize("timestamp", ["0", "0001-01-01T00:00:00", "1970-01-01 00:00:00", "eight days ago"])
def test_a_fix_without_a_clock_is_refused_and_the_next_fix_is_stored(
    live: IngestProcess, tokens: dict[str, str], url: str, timestamp: str
) -> None:
    if timestamp == "eight days ago":
        timestamp = str(int(time.time()) - 8 * 86400)
    before = live.stats()["rejected"].get("time too old", 0)
    refused = osmand(live, tokens, "N1", timestamp)
    assert refused.status_code == 400 and "time too old" in refused.text and "clock" in refused.text
    assert live.stats()["rejected"]["time too old"] == before + 1
    good_fix_becomes_visible(live, tokens, url, "N2")
    assert stored(url, "N1") == []
    days = [r[0] for r in rows(url, "SELECT relname FROM pg_class WHERE relname ~ '^position_[0-9]{8}$'")]
    assert all(datetime.strptime(d[9:], "%Y%m%d").replace(tzinfo=timezone.utc)
               > datetime.now(timezone.utc) - timedelta(days=3) for d in days), days


def test_a_batch_refuses_only_its_fix_without_a_clock(live: IngestProcess, tokens: dict[str, str], url: str) -> None:
    now = datetime.now(timezone.utc)
    response = batch(live, [{**fix(tokens, "N3", now), "ts": 0}, fix(tokens, "N3", now - timedelta(seconds=2))])
    assert response.status_code == 200 and response.json()["accepted"] == 1
    (refusal,) = response.json()["rejected"]
    assert refusal["index"] == 0 and refusal["status"] == 400 and "time too old" in refusal["reason"]
    live.wait_drained()
    assert len(stored(url, "N3")) == 1


def test_partitions_are_made_only_for_the_days_fixes_fall_on(url: str) -> None:
    ts = np.array(["0001-01-01T00:00", "1970-01-01T00:00", "2026-11-20T00:00", "2026-11-20T23:59:59.999999"],
                  dtype="datetime64[us]")
    with psycopg.connect(url) as conn:
        assert ensure_partitions(conn, ts) == 3
        assert ensure_partitions(conn, ts) == 0
        made = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'position\\_%'")}
        assert {"position_00010101", "position_19700101", "position_20261120"} <= made
        assert "position_20261121" not in made and "position_19700102" not in made
        conn.rollback()


# -- a fix the database refuses ----------------------------------------------------
def test_a_fix_the_database_refuses_is_quarantined_and_the_rest_of_its_batch_stored(
    live: IngestProcess, tokens: dict[str, str], url: str
) -> None:
    """The database refuses one fix of a batch (here: a constraint on reported speed): the batch is
    split until that fix stands alone, it goes to quarantine with the database's reason, the other
    fixes are stored, the offset moves on, and the stream goes on."""
    now = datetime.now(timezone.utc)
    times = [now - timedelta(seconds=s) for s in (40, 30, 20, 10)]
    before = live.stats()["writer_rejected"].get("refused by the database", 0)
    with position_refusing(url, "speed IS NULL OR speed < 1000"):
        response = batch(live, [fix(tokens, "B1", times[0], speed_kmh=10), fix(tokens, "B1", times[1], speed_kmh=5000),
                                fix(tokens, "B2", times[2]), fix(tokens, "B1", times[3])])
        assert response.status_code == 200 and response.json()["accepted"] == 4
        stats = live.wait_drained()
        assert stored(url, "B1") == [times[0], times[3]] and stored(url, "B2") == [times[2]]
        (reason,) = [r[0] for r in rows(url, "SELECT reason FROM quarantine WHERE source = 'ingest' "
                                             "AND record->>'callsign' = 'B1'")]
        assert reason.startswith("refused by the database: new row for relation \"position_")
        assert 'violates check constraint "poison"' in reason
        assert stats["writer_rejected"]["refused by the database"] == before + 1
        assert stats["writer"]["state"] == "storing" and stats["writer"]["last_error"] == ""
        good_fix_becomes_visible(live, tokens, url, "B3")


def quarantined(url: str) -> list[tuple]:
    return rows(url, "SELECT record->>'callsign', record->>'speed_kmh', reason FROM quarantine "
                     "WHERE source = 'ingest' AND record->>'callsign' IN ('S1', 'S2', 'S3')")


def test_a_crash_while_a_batch_is_split_stores_each_fix_once(
    url: str, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A refused fix whose check takes a second makes every try that holds it slow; the service is
    killed after the split has begun, and the restarted one stores the batch exactly once."""
    home = tmp_path_factory.mktemp("split-crash")
    slow = ("CREATE FUNCTION slow_poison(speed real) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
            "IF speed >= 1000 THEN PERFORM pg_sleep(1); RETURN false; END IF; RETURN true; END $$")
    now = datetime.now(timezone.utc)
    fixes = [fix(tokens, f"S{1 + i % 3}", now - timedelta(seconds=60 - i), speed_kmh=5000 if i == 5 else 10)
             for i in range(16)]
    service = IngestProcess(url, home, *FAST).start()
    try:
        with position_refusing(url, "slow_poison(speed)", setup=slow):
            assert batch(service, fixes).json()["accepted"] == 16
            tries: set[datetime] = set()

            def split_begun() -> bool:
                tries.update(r[0] for r in rows(url, "SELECT query_start FROM pg_stat_activity "
                                                     "WHERE datname = current_database() AND wait_event = 'PgSleep'"))
                return len(tries) >= 2
            wait_until(split_begun, timeout=30, what="the second try of the split batch")
            service.kill()
            assert stored(url, "S1") == [] and quarantined(url) == []
            service = IngestProcess(url, home, *FAST).start()
            service.wait_drained(timeout=60)
        found = [ts for c in ("S1", "S2", "S3") for ts in stored(url, c)]
        assert sorted(found) == sorted(datetime.fromisoformat(f["ts"]) for i, f in enumerate(fixes) if i != 5)
        assert [(c, float(speed)) for c, speed, _ in quarantined(url)] == [("S3", 5000.0)]
        assert 'violates check constraint "poison"' in quarantined(url)[0][2]
    finally:
        service.stop()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP FUNCTION IF EXISTS slow_poison(real)")


# -- a writer that cannot store -----------------------------------------------------
def status_row(url: str, spool_id: str) -> tuple | None:
    found = rows(url, "SELECT state, backlog, oldest_unstored_at, last_stored_at, last_error, updated_at "
                      "FROM ingest_status WHERE spool_id = %s", (spool_id,))
    return found[0] if found else None


def test_a_writer_that_cannot_store_says_so_and_goes_on_when_it_can(
    live: IngestProcess, tokens: dict[str, str], url: str
) -> None:
    """Another session holds ``unit_latest``: the writer's statements time out; the stats and the
    ``ingest_status`` row say 'retrying' with the error, the backlog and the oldest fix waiting;
    once the lock goes, everything is stored and both say 'storing'."""
    spool_id = (live.home / "spool" / "spool_id").read_text().strip()
    wait_until(lambda: (status_row(url, spool_id) or ("",))[0] == "storing", timeout=10, what="a 'storing' status")
    locker = psycopg.connect(url)
    try:
        locker.execute("LOCK TABLE unit_latest IN ACCESS EXCLUSIVE MODE")
        sent_at = datetime.now(timezone.utc)
        assert osmand(live, tokens, "C1", int(time.time() * 1000)).status_code == 200
        wait_until(lambda: live.stats()["writer"]["state"] == "retrying", timeout=15, what="'retrying' in the stats")
        writer = live.stats()["writer"]
        assert "lock timeout" in writer["last_error"] and live.stats()["spool"]["backlog"] >= 1
        oldest = datetime.fromisoformat(writer["oldest_unstored_at"])
        assert sent_at - timedelta(seconds=1) < oldest < sent_at + timedelta(seconds=1)
        assert writer["oldest_unstored_age_s"] >= 0
        wait_until(lambda: (status_row(url, spool_id) or ("",))[0] == "retrying", timeout=10,
                   what="'retrying' in ingest_status")
        state, backlog, oldest_at, _, last_error, _ = status_row(url, spool_id)
        assert backlog >= 1 and oldest_at == oldest and "lock timeout" in last_error
    finally:
        locker.close()
    live.wait_drained(timeout=30)
    wait_until(lambda: (status_row(url, spool_id) or ("",))[0] == "storing", timeout=10, what="'storing' again")
    state, backlog, oldest_at, last_stored_at, last_error, updated_at = status_row(url, spool_id)
    assert (backlog, oldest_at, last_error) == (0, None, None) and last_stored_at > sent_at
    assert len(stored(url, "C1")) == 1
    time.sleep(2.5)
    assert status_row(url, spool_id)[5] > updated_at, "ingest_status is not kept fresh"


# -- restarts ---------------------------------------------------------------------
def test_counters_are_carried_across_restarts_and_say_since_when(
    url: str, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("counts")
    service = IngestProcess(url, home, *FAST).start()
    try:
        first = service.stats()
        now = datetime.now(timezone.utc)
        assert batch(service, [fix(tokens, "K1", now - timedelta(seconds=s)) for s in range(1, 6)]).status_code == 200
        assert osmand(service, tokens, "K1", "0").status_code == 400
        service.wait_drained()
        assert service.terminate() == 0  # a clean stop saves the counts
        service = IngestProcess(url, home, *FAST).start()
        again = service.stats()
        assert again["since"] == first["since"] and again["started_at"] > first["started_at"]
        assert (again["accepted"], again["spooled"], again["written"]) == (5, 5, 5)
        assert again["rejected"] == {"time too old": 1}
        assert osmand(service, tokens, "K1", int(time.time() * 1000)).status_code == 200
        service.wait_drained()
        time.sleep(2.5)  # the counts are saved every 2 s: a kill -9 loses at most that
        service.kill()
        service = IngestProcess(url, home, *FAST).start()
        assert (service.stats()["accepted"], service.stats()["written"]) == (6, 6)
    finally:
        service.stop()


# -- a damaged spool segment ----------------------------------------------------------
NO_DATABASE = "postgresql://gridwatch@127.0.0.1:1/gridwatch?connect_timeout=1"


def test_a_damaged_spool_segment_is_set_aside_and_the_service_starts(
    url: str, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Fixes spooled while the database was away fill several small segments; a byte of one in the
    middle goes bad. The service starts, says so in one line, and stores every fix but those after
    the damage in that segment, which it counts as lost."""
    home = tmp_path_factory.mktemp("damaged")
    small = {"GRIDWATCH_INGEST_SEGMENT_BYTES": str(64 * 1024)}
    IngestProcess(url, home, *FAST, env=small).start().terminate()  # takes the devices' snapshot
    away = IngestProcess(NO_DATABASE, home, *FAST, env=small).start()
    now = datetime.now(timezone.utc)
    sent = [now - timedelta(seconds=3000 - i) for i in range(2000)]
    try:
        for start in range(0, len(sent), 100):  # one spool record per batch
            part = [fix(tokens, "D1", ts) for ts in sent[start:start + 100]]
            assert batch(away, part).json()["accepted"] == 100
        assert away.terminate() == 0
    finally:
        away.stop()
    segments = sorted((home / "spool").glob("*.seg"))
    assert len(segments) >= 3
    record = 20 + 100 * FIX_DTYPE.itemsize
    data = bytearray(segments[1].read_bytes())
    data[16 + 2 * record + 1000] ^= 0xFF  # the third record of the second segment
    segments[1].write_bytes(bytes(data))
    lost = (len(data) - 16) // record - 2
    assert (len(data) - 16) % record == 0

    service = IngestProcess(url, home, *FAST, env=small).start()
    try:
        stats = service.wait_drained(timeout=60)
        assert len(stored(url, "D1")) == 2000 - 100 * lost
        assert stats["writer"]["lost"] == 100 * lost and stats["writer"]["state"] == "storing", stats["writer"]
        (damage,) = stats["spool"]["damaged"]
        assert f"{segments[1].name} is damaged" in damage and f"{100 * lost} acknowledged fixes" in damage
        log = service.log.read_text()
        assert len([line for line in log.splitlines() if "is damaged" in line]) == 1
        assert "Traceback" not in log
        assert [p.name.split(".")[0] for p in (home / "spool" / "damaged").iterdir()] == [segments[1].stem]
    finally:
        service.stop()


# -- a full spool disk (mounting a small tmpfs needs root) -------------------------------
if os.geteuid() == 0:

    def test_a_full_spool_disk_answers_503_and_goes_on_when_space_returns(
        url: str, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        home = tmp_path_factory.mktemp("full-disk")
        disk = SmallDisk(home / "spool")
        service = IngestProcess(url, home, *FAST, env={"GRIDWATCH_INGEST_SEGMENT_BYTES": str(128 * 1024)},
                                wrap=disk.wrap).start()

        now = datetime.now(timezone.utc)
        times = iter(now - timedelta(seconds=s) for s in range(10_000, 0, -1))
        acknowledged: list[datetime] = []
        try:
            disk.fill(service)
            codes: list[int] = []
            while 503 not in codes:
                part = [fix(tokens, "E1", next(times)) for _ in range(100)]
                response = batch(service, part)
                codes.append(response.status_code)
                if response.status_code == 200:
                    acknowledged += [datetime.fromisoformat(f["ts"]) for f in part]
                assert len(codes) < 50, "the disk never filled"
            assert codes[-1] == 503 and "No space left on device" in response.json()["error"]
            assert len(acknowledged) > 0
            assert batch(service, [fix(tokens, "E1", next(times)) for _ in range(100)]).status_code == 503
            stats = service.wait_drained()
            assert stats["spool"]["refused_fixes"] == 200 and stats["spooled"] == len(acknowledged)
            disk.free(service)
            part = [fix(tokens, "E1", next(times)) for _ in range(100)]
            assert batch(service, part).status_code == 200  # space is back: no restart needed
            acknowledged += [datetime.fromisoformat(f["ts"]) for f in part]
            service.wait_drained()
            assert stored(url, "E1") == acknowledged
        finally:
            service.stop()
