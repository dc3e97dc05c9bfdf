"""Coverage of grids, border segments and H3 cells on the tiny hand-made region."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import h3
import psycopg
import pytest
import sqlalchemy as sa

from gridwatch.etl.coverage import CoverageMoves, age_coverage, derive_coverage, move_pending_coverage
from gridwatch.settings import Settings

from _refdata import rows, seed_region

AS_OF = datetime(2026, 11, 20, 4, 0, tzinfo=timezone.utc)
FIXES = [  # unit, time (UTC), lon, lat
    (1, "2026-11-20T02:00:00Z", 100.05, 22.05),  # foot, west grid, inland: one visit of 60 s ...
    (1, "2026-11-20T02:00:30Z", 100.05, 22.05),
    (1, "2026-11-20T02:01:00Z", 100.05, 22.05),
    (1, "2026-11-20T02:30:00Z", 100.05, 22.05),  # ... and a second visit after a long gap
    (2, "2026-11-20T01:30:00Z", 100.05, 22.002),  # vehicle 220 m from segment 1, in the border strip
]


def insert_fixes(engine: sa.Engine, fixes: list[tuple] = FIXES, *, pending: bool = False) -> None:
    """Store ``fixes`` in one transaction (``pending``: with their keys in ``coverage_pending``, as the
    ingest writer stores a batch)."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT ensure_position_partitions(:a, :b)"),
                     {"a": min(f[1] for f in fixes), "b": max(f[1] for f in fixes)})
        for unit, ts, lon, lat in fixes:
            conn.execute(
                sa.text("INSERT INTO position (unit_id, ts, geom, source, h3) "
                        "VALUES (:u, :t, ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'test', :h)"),
                {"u": unit, "t": ts, "x": lon, "y": lat, "h": h3.str_to_int(h3.latlng_to_cell(lat, lon, 9))},
            )
            if pending:
                conn.execute(sa.text("INSERT INTO coverage_pending (unit_id, ts) VALUES (:u, :t)"),
                             {"u": unit, "t": ts})


@pytest.fixture
def region(clean_db: sa.Engine) -> sa.Engine:
    seed_region(clean_db)
    insert_fixes(clean_db)
    return clean_db


def test_grid_coverage_counts_visits_dwell_and_status(region):
    derive_coverage(region, settings=Settings(), as_of=AS_OF)
    got = rows(region, "SELECT grid_id, last_visit, visits_1h, visits_4h, dwell_s_4h, limit_h, status "
                       "FROM grid_coverage ORDER BY grid_id")
    assert got == [
        (1, datetime(2026, 11, 20, 2, 30, tzinfo=timezone.utc), 0, 3, 60.0, 24.0, "fresh"),
        (2, None, 0, 0, 0.0, 24.0, "overdue"),
    ]


def test_segments_patrolled_watched_overdue(region):
    with region.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO sensor (code, kind, range_m, up, geom) "
            "VALUES ('S1', 'camera', 2000, true, ST_SetSRID(ST_MakePoint(100.15, 22.01), 4326))"
        ))
    derive_coverage(region, settings=Settings(), as_of=AS_OF)
    assert rows(region, "SELECT segment_id, visits_24h, watched, limit_h, status FROM segment_coverage ORDER BY 1") == [
        (1, 1, False, 4.0, "patrolled"),
        (2, 0, True, 4.0, "watched"),
    ]
    with region.begin() as conn:
        conn.execute(sa.text("UPDATE sensor SET up = false"))
    derive_coverage(region, settings=Settings(), as_of=AS_OF)
    assert rows(region, "SELECT status FROM segment_coverage ORDER BY segment_id") == [("patrolled",), ("overdue",)]


def test_hex_cells_cover_visits_and_border_zone(region):
    derive_coverage(region, settings=Settings(), as_of=AS_OF)
    inland = h3.str_to_int(h3.latlng_to_cell(22.05, 100.05, 9))
    strip = h3.str_to_int(h3.latlng_to_cell(22.002, 100.05, 9))
    got = dict(rows(region, f"SELECT h3, status FROM hex_coverage WHERE h3 IN ({inland}, {strip})"))
    assert got == {inland: "fresh", strip: "due"}  # 2.5 h ago: past half of the strip's 4 h limit
    # every cell of the border strip is listed, most never visited
    assert rows(region, "SELECT count(*) > 300, bool_or(status = 'overdue') FROM hex_coverage") == [(True, True)]
    # the cells' spatial index, built after the insert, is there again and serves a box search
    assert rows(region, "SELECT indexdef LIKE '%USING gist (geom)' FROM pg_indexes "
                        "WHERE indexname = 'hex_coverage_geom_gist'") == [(True,)]
    with region.begin() as conn:
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = conn.execute(sa.text("EXPLAIN SELECT h3 FROM hex_coverage "
                                    "WHERE geom && ST_MakeEnvelope(100, 22, 100.1, 22.1, 4326)")).scalars().all()
    assert any("hex_coverage_geom_gist" in line for line in plan)


def test_rebuild_is_idempotent(region):
    derive_coverage(region, settings=Settings(), as_of=AS_OF)
    first = rows(region, "SELECT * FROM grid_coverage ORDER BY 1")
    derive_coverage(region, settings=Settings(), as_of=AS_OF)
    assert [r[:-1] for r in rows(region, "SELECT * FROM grid_coverage ORDER BY 1")] == [r[:-1] for r in first]


def test_as_of_must_carry_a_zone(region):
    with pytest.raises(ValueError, match="as_of must carry a time zone"):
        derive_coverage(region, settings=Settings(), as_of=datetime(2026, 11, 20))


def move(engine: sa.Engine, *, now: datetime, wait: bool = True) -> CoverageMoves | None:
    """Count the pending fixes, in a transaction of its own."""
    with engine.begin() as conn:
        return move_pending_coverage(conn.connection.driver_connection, settings=Settings(), now=now, wait=wait)


def store(engine: sa.Engine, fixes: list[tuple], *, now: datetime) -> CoverageMoves:
    """Store ``fixes`` as pending, then move coverage by them, as the live writer does (two transactions)."""
    insert_fixes(engine, fixes, pending=True)
    moves = move(engine, now=now)
    assert moves.pending == len(fixes) and pending(engine) == 0
    return moves


def pending(engine: sa.Engine) -> int:
    return rows(engine, "SELECT count(*) FROM coverage_pending")[0][0]


def age(engine: sa.Engine, now: datetime) -> CoverageMoves:
    with engine.begin() as conn:
        return age_coverage(conn.connection.driver_connection, settings=Settings(), now=now)


COVERAGE = {  # every column but updated_at, dwell rounded past float noise
    "grid_coverage": "grid_id",
    "segment_coverage": "segment_id, watched",
    "hex_coverage": "h3, ST_AsText(geom)",
}


def coverage(engine: sa.Engine) -> dict[str, list[tuple]]:
    figures = ("last_visit, visits_1h, visits_4h, visits_24h, round(dwell_s_1h::numeric, 6), "
               "round(dwell_s_4h::numeric, 6), round(dwell_s_24h::numeric, 6), limit_h, status")
    return {table: rows(engine, f"SELECT {key}, {figures} FROM {table} ORDER BY 1") for table, key in COVERAGE.items()}


def assert_as_rebuilt(engine: sa.Engine, at: datetime) -> None:
    """The coverage moved live equals a full rebuild as of ``at`` over the same fixes."""
    live = coverage(engine)
    derive_coverage(engine, settings=Settings(), as_of=at)
    rebuilt = coverage(engine)
    assert {t: sorted(set(live[t]) ^ set(rebuilt[t])) for t in COVERAGE} == dict.fromkeys(COVERAGE, [])


T0 = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


INLAND = (100.05, 22.05)  # west grid, social_surface
FAR_INLAND = (100.05, 22.15)
NEAR_BOTH = (100.099, 22.001)  # west grid, ~100 m from the east grid, within 300 m of both segments
EAST_STRIP = (100.15, 22.002)


def test_live_batches_and_windows_equal_a_rebuild(clean_db):
    """Batches moved live (neighbours within the radius included, a late fix merging visits) and
    windows moved on by the clock give exactly the figures a full rebuild gives, touching only the
    places the fixes hit."""
    seed_region(clean_db)
    derive_coverage(clean_db, settings=Settings(), as_of=T0)
    cells = rows(clean_db, "SELECT count(*) FROM hex_coverage")[0][0]

    first = store(clean_db, [(1, at(1), *INLAND), (1, at(1.5), *INLAND), (1, at(2), *INLAND),
                             (2, at(3), *NEAR_BOTH), (2, at(6), *NEAR_BOTH)], now=at(7))
    # the vehicle near the corner moves both grids and both segments; one cell each, the inland one new
    assert (first.grids, first.segments, first.cells, first.added) == (2, 2, 2, 1)
    assert first.rows < cells
    assert_as_rebuilt(clean_db, at(7))

    late = store(clean_db, [(2, at(4.5), *NEAR_BOTH), (2, at(8), *EAST_STRIP), (1, at(9), *FAR_INLAND)], now=at(10))
    assert late.grids == 2 and late.segments == 2  # the late fix joins the corner visits: gaps of 90 s
    assert_as_rebuilt(clean_db, at(10))

    # an hour on: the first fixes leave the 1 h window
    leaving = age(clean_db, at(62.5))
    assert leaving.grids == 1 and leaving.segments == 0
    assert_as_rebuilt(clean_db, at(62.5))

    store(clean_db, [(1, at(64), *INLAND), (1, at(2.5), *INLAND)], now=at(65))
    age(clean_db, at(65))  # the corner visits' 90 s gap at 00:04:30 leaves the 1 h window
    assert_as_rebuilt(clean_db, at(65))
    for minutes in (4 * 60 + 5, 24 * 60 + 7, 48 * 60 + 9):  # past 4 h, 24 h, and the east grid past the look-back
        age(clean_db, at(minutes))
        assert_as_rebuilt(clean_db, at(minutes))
    assert rows(clean_db, "SELECT last_visit IS NULL FROM grid_coverage ORDER BY grid_id") == [(False,), (True,)]


def test_the_clock_drops_cells_past_the_look_back_and_ages_only_changed_statuses(clean_db):
    seed_region(clean_db)
    derive_coverage(clean_db, settings=Settings(), as_of=T0)
    store(clean_db, [(1, at(1), *FAR_INLAND)], now=at(2))
    inland = h3.str_to_int(h3.latlng_to_cell(FAR_INLAND[1], FAR_INLAND[0], 9))
    assert rows(clean_db, f"SELECT status FROM hex_coverage WHERE h3 = {inland}") == [("fresh",)]
    half_day = age(clean_db, at(13 * 60))  # past half the 24 h limit: the grid and the cell turn due
    assert half_day.rows == 2
    assert rows(clean_db, "SELECT status FROM grid_coverage ORDER BY 1") == [("due",), ("overdue",)]
    assert age(clean_db, at(13 * 60 + 1)).rows == 0  # nothing changed
    gone = age(clean_db, at(49 * 60))
    assert gone.dropped == 1 and rows(clean_db, f"SELECT count(*) FROM hex_coverage WHERE h3 = {inland}") == [(0,)]
    assert_as_rebuilt(clean_db, at(49 * 60))


def test_live_steps_wait_for_a_first_derivation(clean_db):
    seed_region(clean_db)
    insert_fixes(clean_db, [(1, at(1), *INLAND)], pending=True)
    assert move(clean_db, now=at(2)) == CoverageMoves()
    assert age(clean_db, at(3)) == CoverageMoves()
    assert rows(clean_db, "SELECT count(*) FROM grid_coverage") == [(0,)] and pending(clean_db) == 1
    derive_coverage(clean_db, settings=Settings(), as_of=at(4))  # the first derivation counts the fix
    assert pending(clean_db) == 0
    assert rows(clean_db, "SELECT grid_id, visits_1h FROM grid_coverage ORDER BY 1") == [(1, 1), (2, 0)]


def test_pending_fixes_are_counted_once_whoever_counts_them(clean_db, db_url):
    """Fixes stored with their pending keys but not yet counted (a crash between the batch and its
    move, a rebuild holding the coverage lock while batches arrive) are counted exactly once: by the
    next move, by the upkeep's window move, or by a full rebuild; a partial rebuild leaves them."""
    seed_region(clean_db)
    derive_coverage(clean_db, settings=Settings(), as_of=T0)
    untouched = coverage(clean_db)

    # a crash between the two transactions: stored, not counted, nothing moved
    insert_fixes(clean_db, [(1, at(1), *INLAND), (2, at(3), *NEAR_BOTH)], pending=True)
    assert pending(clean_db) == 2 and coverage(clean_db) == untouched
    # the writer's next start counts them, with its own new batch
    insert_fixes(clean_db, [(1, at(1.5), *INLAND), (2, at(4.5), *NEAR_BOTH)], pending=True)
    first = move(clean_db, now=at(5))
    assert (first.pending, first.grids, first.segments) == (4, 2, 2) and pending(clean_db) == 0
    assert_as_rebuilt(clean_db, at(5))

    # a full rebuild holds the lock while two batches arrive: they are stored, and wait
    with psycopg.connect(db_url) as rebuild:
        rebuild.execute("SELECT pg_advisory_xact_lock(hashtext('gridwatch.derive.coverage'))")
        insert_fixes(clean_db, [(2, at(6), *NEAR_BOTH)], pending=True)
        assert move(clean_db, now=at(7), wait=False) is None
        insert_fixes(clean_db, [(1, at(2), *INLAND), (2, at(8), *EAST_STRIP)], pending=True)
        assert move(clean_db, now=at(8), wait=False) is None
        assert pending(clean_db) == 3 and rows(clean_db, "SELECT count(*) FROM position") == [(7,)]
    late = move(clean_db, now=at(9), wait=False)
    assert late.pending == 3 and pending(clean_db) == 0
    assert_as_rebuilt(clean_db, at(9))

    # the upkeep counts what is pending before it moves the windows
    insert_fixes(clean_db, [(1, at(61), *INLAND), (1, at(2.5), *INLAND)], pending=True)
    aged = age(clean_db, at(62.5))
    assert aged.pending == 2 and pending(clean_db) == 0
    assert_as_rebuilt(clean_db, at(62.5))

    # a partial rebuild (after a publish) leaves them pending, and their move stays exact
    insert_fixes(clean_db, [(1, at(63), *INLAND), (2, at(63.5), *NEAR_BOTH)], pending=True)
    derive_coverage(clean_db, settings=Settings(), as_of=at(64), grid_ids=[1])
    assert pending(clean_db) == 2
    assert move(clean_db, now=at(64)).pending == 2
    assert_as_rebuilt(clean_db, at(64))

    # a full rebuild counts them and takes them out: the next move finds nothing to count
    insert_fixes(clean_db, [(1, at(65), *FAR_INLAND)], pending=True)
    derive_coverage(clean_db, settings=Settings(), as_of=at(66))
    assert pending(clean_db) == 0 and move(clean_db, now=at(66)) == CoverageMoves()
    assert rows(clean_db, "SELECT last_visit FROM grid_coverage WHERE grid_id = 1") == [(at(65),)]
    assert_as_rebuilt(clean_db, at(66))
