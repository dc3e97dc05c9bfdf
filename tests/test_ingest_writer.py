"""The ingest writer: it reads the reference layers again only when they changed, and counts coverage
beside the batches, in transactions of its own."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import sqlalchemy as sa

from gridwatch.etl.coverage import derive_coverage
from gridwatch.etl.ingest._fix import Fix
from gridwatch.etl.ingest.spool import Spool, now_us, to_records
from gridwatch.etl.ingest.writer import ReferenceCache, SpoolWriter
from gridwatch.settings import Settings

from _refdata import rows, seed_region

NORTH = "MULTIPOLYGON(((100 22.2, 100.2 22.2, 100.2 22.3, 100 22.3, 100 22.2)))"


def test_reference_is_read_again_only_when_it_changed(clean_db: sa.Engine, db_url: str) -> None:
    seed_region(clean_db)
    with psycopg.connect(db_url, autocommit=True) as conn:
        cache = ReferenceCache()
        first = cache.get(conn)
        assert cache.get(conn) is first and cache.loads == 1 and len(first.grid_ids) == 2
        conn.execute("INSERT INTO sensor (code, kind, range_m, up, geom) "
                     "VALUES ('S1', 'camera', 500, true, ST_SetSRID(ST_MakePoint(100.1, 22.01), 4326))")
        assert cache.get(conn) is first and cache.loads == 1  # not a reference layer
        conn.execute(f"INSERT INTO grid (id, code, township_id, geom) "
                     f"VALUES (3, 'G-N', 3, ST_GeomFromText('{NORTH}', 4326))")
        assert len(cache.get(conn).grid_ids) == 3 and cache.loads == 2
        conn.execute("UPDATE zone SET name = 'strip 2' WHERE kind = 'border_closed'")
        cache.get(conn)
        cache.get(conn)
        assert cache.loads == 3


def wait_for(check, what: str, *, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_fixes_stored_while_coverage_is_held_wait_and_are_counted_once(
    clean_db: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """While a full rebuild holds the coverage lock, the writer stores the batch (visible at once) and
    its fixes wait in coverage_pending; when the lock is let go, the writer counts them, once."""
    seed_region(clean_db)
    now = datetime.now(timezone.utc)
    derive_coverage(clean_db, settings=Settings(), as_of=now)
    fixes = [Fix("F1", now - timedelta(seconds=s), 100.05, 22.05, source="osmand") for s in (40, 30, 20)]
    spool = Spool(tmp_path)
    spool.open()

    async def append() -> None:
        await spool.start()
        await spool.append(to_records(fixes, received_us=now_us()))
        await spool.close()

    asyncio.run(append())
    writer = SpoolWriter(spool, lambda: db_url, settings=Settings(), interval_s=0.05)
    with psycopg.connect(db_url) as rebuild:
        rebuild.execute("SELECT pg_advisory_xact_lock(hashtext('gridwatch.derive.coverage'))")
        writer.start()
        wait_for(lambda: writer.stats.written == 3, "the batch was not stored while coverage was held")
        assert rows(clean_db, "SELECT count(*) FROM unit_latest") == [(1,)]
        waits = writer.stats.coverage_waits
        wait_for(lambda: writer.stats.coverage_waits >= waits + 2, "the writer never tried to count the fixes")
        assert rows(clean_db, "SELECT count(*) FROM coverage_pending") == [(3,)]
        assert rows(clean_db, "SELECT last_visit FROM grid_coverage WHERE grid_id = 1") == [(None,)]
    wait_for(lambda: rows(clean_db, "SELECT count(*) FROM coverage_pending") == [(0,)], "the fixes stayed pending")
    writer.stop()
    assert rows(clean_db, "SELECT visits_1h, dwell_s_1h, last_visit FROM grid_coverage WHERE grid_id = 1") == [
        (1, 20.0, fixes[-1].ts)]
