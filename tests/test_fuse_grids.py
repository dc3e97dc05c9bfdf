"""`etl fuse-grids` fuses the counties side by side in several processes, with exactly the grids,
lineage and report of a fusion in one."""
from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from gridwatch.data.synthetic import REGIONS, make_region
from gridwatch.etl.fuse_grids import fuse_grid_sources
from gridwatch.etl.runlog import RunCounts
from gridwatch.settings import Settings

# Two departments: the synthetic grids themselves, and the same grids shifted by a third of a cell
# (so every county has overlaps to settle, slivers to absorb and ground outside its townships).
SOURCES = """
INSERT INTO grid_source (department, source_code, name, households, population, geom)
SELECT 'civil_affairs', code, name, households, population, geom FROM grid
UNION ALL
SELECT 'housing', code, name, households, population, ST_Translate(geom, 0.05 / 3, 0.05 / 3) FROM grid
"""
RESULT = """
SELECT g.code, g.name, t.code, g.households, g.population, g.police_area_id, md5(ST_AsEWKB(g.geom)),
       (SELECT array_agg(s.department || '/' || s.source_code || '/' || l.share ORDER BY s.department, s.source_code)
        FROM grid_lineage l JOIN grid_source s ON s.id = l.source_id WHERE l.grid_id = g.id)
FROM grid g JOIN command_unit t ON t.id = g.township_id ORDER BY g.code
"""


def fused(engine: sa.Engine, processes: int) -> tuple[list[tuple], dict]:
    """The fused grids with their lineage, and the report, of a fusion in ``processes`` processes."""
    report = fuse_grid_sources(engine, settings=Settings(fusion_processes=processes), counts=RunCounts(0),
                               force=True)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(RESULT))], dataclasses.asdict(report)


def test_counties_fused_in_two_processes_equal_a_fusion_in_one(clean_db: sa.Engine) -> None:
    make_region(clean_db, REGIONS["small"])
    with clean_db.begin() as conn:
        conn.execute(sa.text(SOURCES))
        counties, townships = conn.execute(sa.text(
            "SELECT count(*) FILTER (WHERE level = 'county'), count(*) FILTER (WHERE level = 'township') "
            "FROM command_unit")).one()
    assert counties == 4
    one, one_report = fused(clean_db, 1)
    two, two_report = fused(clean_db, 2)
    assert len({row[2] for row in one}) == townships  # every township holds fused grids
    assert one_report["overlaps_resolved"] > 0 and one_report["slivers_absorbed"] > 0
    assert two == one
    assert {k: v for k, v in two_report.items() if k != "seconds"} == \
        {k: v for k, v in one_report.items() if k != "seconds"}

