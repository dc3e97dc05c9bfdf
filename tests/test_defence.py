"""Defence lines: road crossings matched to checkpoints, and leak routes around unstaffed ones."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from gridwatch.etl.defence import derive_defence
from gridwatch.settings import Settings

from _refdata import rows, seed_region

# A road from the border (lat 22.0) north into the core ring (lat 22.10-22.14), crossing line 2 at
# lat 22.05 and line 3 at lat 22.10; a side road crossing it at lat 22.07.
DEFENCE_SQL = """
INSERT INTO defence_line (line_no, geom) VALUES
 (1, ST_GeomFromText('MULTILINESTRING((100 22, 100.2 22))', 4326)),
 (2, ST_GeomFromText('MULTILINESTRING((100 22.05, 100.2 22.05))', 4326)),
 (3, ST_GeomFromText('MULTILINESTRING((100.08 22.1, 100.12 22.1, 100.12 22.14, 100.08 22.14, 100.08 22.1))', 4326));
INSERT INTO road (id, class, geom) VALUES
 (1, 'trunk', ST_GeomFromText('MULTILINESTRING((100.1 22, 100.1 22.12))', 4326)),
 (2, 'track', ST_GeomFromText('MULTILINESTRING((100.05 22.07, 100.15 22.07))', 4326));
INSERT INTO checkpoint (id, code, line_no, staffed, geom) VALUES
 (1, 'CP2', 2, :staffed, ST_SetSRID(ST_MakePoint(100.1005, 22.05), 4326)),
 (2, 'CP3', 3, true, ST_SetSRID(ST_MakePoint(100.1, 22.1), 4326));
"""


def build(engine: sa.Engine, *, staffed: bool) -> None:
    seed_region(engine)
    with engine.begin() as conn:
        for statement in filter(str.strip, DEFENCE_SQL.split(";")):
            conn.execute(sa.text(statement), {"staffed": staffed} if ":staffed" in statement else {})
    derive_defence(engine, settings=Settings())


def test_crossings_are_matched_to_the_nearest_checkpoint_of_their_line(clean_db):
    build(clean_db, staffed=False)
    got = rows(clean_db, "SELECT line_no, road_id, checkpoint_id, staffed, ST_AsText(geom) FROM line_crossing ORDER BY 1")
    assert got == [(2, 1, 1, False, "POINT(100.1 22.05)"), (3, 1, 2, True, "POINT(100.1 22.1)")]


def test_leak_route_appears_when_the_checkpoint_is_unstaffed(clean_db):
    build(clean_db, staffed=False)
    got = rows(clean_db, "SELECT line_no, length_m, ST_Distance(ST_StartPoint(ST_GeometryN(geom, 1))::geography, "
                         "ST_MakePoint(100.1, 22)::geography) FROM leak_route")
    assert [line for line, _, _ in got] == [2]
    assert got[0][2] < 2.0  # starts at the border (vertices snapped to 1 m)
    assert got[0][1] == pytest.approx(11_070, rel=0.01)  # 22.00 -> 22.10, where the road enters the core


def test_no_leak_route_when_the_checkpoint_is_staffed(clean_db):
    build(clean_db, staffed=True)
    assert rows(clean_db, "SELECT count(*) FROM leak_route") == [(0,)]
    derive_defence(clean_db, settings=Settings())  # a rebuild keeps the tables as they were
    assert rows(clean_db, "SELECT count(*) FROM line_crossing") == [(2,)]
