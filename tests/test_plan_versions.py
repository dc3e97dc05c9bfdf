"""Grid plan versions in PostGIS: faces built from the grid layer, save with optimistic locking,
publish with coverage following the published grids, rollback."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import shapely
import sqlalchemy as sa

from gridwatch.etl.plan import PlanConflict, build_faces, publish, save_version
from gridwatch.geo import plan as edits
from gridwatch.geo.plan_rules import check_plan
from gridwatch.layers.plan import township_plan, version_grids, versions
from gridwatch.settings import Settings

from _refdata import WEST, rows, seed_region

AS_OF = datetime(2026, 11, 20, 4, 0, tzinfo=timezone.utc)
SETTINGS = Settings()


@pytest.fixture
def region(clean_db: sa.Engine) -> sa.Engine:
    seed_region(clean_db)
    with clean_db.begin() as conn:
        conn.execute(sa.text("SELECT ensure_position_partitions(:a, :a)"), {"a": AS_OF})
        conn.execute(sa.text("INSERT INTO position (unit_id, ts, geom, source, grid_id) VALUES "
                             "(1, '2026-11-20T02:30:00Z', ST_SetSRID(ST_MakePoint(100.05, 22.05), 4326), 't', 1)"))
    build_faces(clean_db, settings=SETTINGS)
    return clean_db


def _split_west(engine: sa.Engine, version: int) -> edits.Plan:
    plan = township_plan(engine, version, "T")
    outcome = edits.apply(plan, lambda p: edits.split(p, "G-W", shapely.LineString([(100.03, 21.9), (100.03, 22.3)])),
                          check=check_plan)
    assert outcome.refused is None and outcome.changed == ["G-W", "T-001"]
    return outcome.plan


def test_faces_are_built_once_for_the_grid_layer(region):
    assert build_faces(region, settings=SETTINGS) == 0  # already built
    plan = township_plan(region, 1, "T")
    assert sorted(set(plan.grid)) == ["G-E", "G-W"]
    assert not any(p.hard for p in check_plan(plan))
    assert versions(region).loc[0, "current"]


def test_save_refuses_a_stale_base_and_keeps_the_first_save(region):
    first = save_version(region, _split_west(region, 1), township="T", base_version=1, author="ann", message="split")
    with pytest.raises(PlanConflict, match=r"township T was changed in version 2 by ann .* after version 1"):
        save_version(region, township_plan(region, 1, "T"), township="T", base_version=1, author="bob",
                     message="mine")
    assert first == 2
    assert sorted(version_grids(region, 2)["code"]) == ["G-E", "G-W", "T-001"]
    again = save_version(region, township_plan(region, 2, "T"), township="T", base_version=2, author="bob",
                         message="on top")
    assert again == 3


def test_publish_rewrites_changed_grids_and_coverage_follows_then_rolls_back(region):
    version = save_version(region, _split_west(region, 1), township="T", base_version=1, author="ann",
                           message="split the west grid")
    report = publish(region, version, author="ann", settings=SETTINGS, as_of=AS_OF)
    assert (report.added, report.removed, report.changed, report.unchanged) == (1, 0, 1, 1)
    cover = {code: (visit, v) for code, visit, v in rows(
        region, "SELECT g.code, c.last_visit, g.version FROM grid g JOIN grid_coverage c ON c.grid_id = g.id")}
    assert cover["G-W"] == (datetime(2026, 11, 20, 2, 30, tzinfo=timezone.utc), version)
    assert cover["T-001"] == (None, version)
    assert rows(region, "SELECT g.code FROM position p JOIN grid g ON g.id = p.grid_id") == [("G-W",)]
    assert versions(region).set_index("version").loc[version, "current"]

    back = publish(region, 1, author="ann", settings=SETTINGS, as_of=AS_OF)
    assert (back.added, back.removed, back.changed) == (0, 1, 1)
    assert rows(region, f"SELECT ST_Equals(geom, ST_GeomFromText('{WEST}', 4326)) FROM grid WHERE code = 'G-W'") \
        == [(True,)]
    actions = [a for (a,) in rows(region, "SELECT action FROM audit_log WHERE action LIKE 'plan.%' ORDER BY id")]
    assert actions[-3:] == ["plan.save", "plan.publish", "plan.publish"]


def test_publishing_an_unknown_version_is_refused(region):
    with pytest.raises(Exception, match="version 99 is not a saved plan"):
        publish(region, 99, author="ann", settings=SETTINGS)
