"""Coverage of grids, border segments and H3 cells on the tiny hand-made region."""
from __future__ import annotations

from datetime import datetime, timezone

import h3
import pytest
import sqlalchemy as sa

from gridwatch.etl.coverage import derive_coverage
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


def insert_fixes(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT ensure_position_partitions(:a, :b)"), {"a": AS_OF, "b": AS_OF})
        for unit, ts, lon, lat in FIXES:
            conn.execute(
                sa.text("INSERT INTO position (unit_id, ts, geom, source, h3) "
                        "VALUES (:u, :t, ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'test', :h)"),
                {"u": unit, "t": ts, "x": lon, "y": lat, "h": h3.str_to_int(h3.latlng_to_cell(lat, lon, 9))},
            )


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


def test_rebuild_is_idempotent(region):
    derive_coverage(region, settings=Settings(), as_of=AS_OF)
    first = rows(region, "SELECT * FROM grid_coverage ORDER BY 1")
    derive_coverage(region, settings=Settings(), as_of=AS_OF)
    assert [r[:-1] for r in rows(region, "SELECT * FROM grid_coverage ORDER BY 1")] == [r[:-1] for r in first]


def test_as_of_must_carry_a_zone(region):
    with pytest.raises(ValueError, match="as_of must carry a time zone"):
        derive_coverage(region, settings=Settings(), as_of=datetime(2026, 11, 20))


def test_live_fixes_move_coverage_at_once_and_statuses_age(region):
    """A live fix updates last visit and status without a rebuild; the clock ages statuses."""
    import pandas as pd

    from gridwatch.etl.coverage import age_coverage, refresh_coverage_for

    derive_coverage(region, settings=Settings(), as_of=AS_OF)
    live_at = datetime(2026, 11, 20, 3, 59, tzinfo=timezone.utc)
    fixes = pd.DataFrame({  # the vehicle drives into the east grid, 220 m from segment 2 (as fused)
        "unit_id": [2], "ts": [live_at], "grid_id": [2], "segment_id": [2], "border_m": [220.0],
        "h3": [h3.str_to_int(h3.latlng_to_cell(22.002, 100.15, 9))],
    })
    with region.begin() as sa_conn:
        refresh_coverage_for(sa_conn.connection.driver_connection, fixes, settings=Settings(), now=AS_OF)
    assert rows(region, "SELECT grid_id, last_visit, status FROM grid_coverage ORDER BY 1")[1] == (2, live_at, "fresh")
    assert rows(region, "SELECT segment_id, status FROM segment_coverage ORDER BY 1") == [(1, "patrolled"), (2, "patrolled")]
    assert rows(region, f"SELECT status FROM hex_coverage WHERE h3 = {fixes.h3[0]}") == [("fresh",)]

    later = datetime(2026, 11, 21, 4, 0, tzinfo=timezone.utc)  # a day on, nobody came back
    with region.begin() as sa_conn:
        age_coverage(sa_conn.connection.driver_connection, now=later)
    assert rows(region, "SELECT DISTINCT status FROM grid_coverage") == [("overdue",)]
    assert rows(region, "SELECT DISTINCT status FROM segment_coverage") == [("overdue",)]
