"""Grid plan edits and rules on a hand-made township: 4 grids of 2×2 faces, two police areas."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from gridwatch.geo import plan as edits
from gridwatch.geo.plan_faces import Blocks, township_faces
from gridwatch.geo.plan_rules import Rules, check_plan, diff, grid_table, score

D = 0.01  # ~1 km
TOWN = shapely.box(100, 22, 100 + 4 * D, 22 + 4 * D)


def quadrant(x: int, y: int) -> shapely.Polygon:
    return shapely.box(100 + 2 * x * D, 22 + 2 * y * D, 100 + 2 * (x + 1) * D, 22 + 2 * (y + 1) * D)


@pytest.fixture
def plan() -> edits.Plan:
    grids = gpd.GeoDataFrame({"code": ["T-001", "T-002", "T-003", "T-004"], "households": [400, 400, 400, 400],
                              "population": [1000, 1000, 1000, 1000]},
                             geometry=[quadrant(0, 0), quadrant(1, 0), quadrant(0, 1), quadrant(1, 1)], crs=4326)
    areas = gpd.GeoDataFrame({"code": ["PA1", "PA2"]}, crs=4326, geometry=[
        shapely.box(100, 22, 100 + 2 * D, 22 + 4 * D), shapely.box(100 + 2 * D, 22, 100 + 4 * D, 22 + 4 * D)])
    sources = gpd.GeoDataFrame({"source_id": range(16), "households": [100] * 16, "population": [250] * 16},
                               geometry=[shapely.box(100 + x * D, 22 + y * D, 100 + (x + 1) * D, 22 + (y + 1) * D)
                                         for y in range(4) for x in range(4)], crs=4326)
    faces, edges = township_faces(TOWN, grids, areas, sources, township_code="T")
    faces["face_id"] = np.arange(1, len(faces) + 1)
    faces["workload"] = 1.0
    grid = faces.pop("grid").to_numpy(dtype=object)
    attrs = pd.DataFrame({"township": "T", "police_area": ["PA1", "PA2", "PA1", "PA2"], "workers": 3,
                          "locked": False, "name": None}, index=pd.Index(grids["code"], name="code"))
    return edits.Plan(Blocks(faces, edges), grid, attrs)


def frame(plan: edits.Plan) -> gpd.GeoDataFrame:
    """The plan's grids as polygons with their counts."""
    shapes = edits.grid_geometries(plan)
    table = grid_table(plan).reindex(shapes.index)
    return gpd.GeoDataFrame({"code": shapes.index, "households": table["households"].to_numpy(),
                             "population": table["population"].to_numpy()}, geometry=shapes.values, crs=shapes.crs)


def kinds(problems) -> list[tuple[str, tuple[str, ...]]]:
    return [(p.kind, p.codes) for p in problems]


def face_at(plan: edits.Plan, lon: float, lat: float) -> int:
    hit = shapely.contains(plan.faces.geometry.to_numpy(), shapely.Point(lon, lat))
    return int(plan.faces["face_id"].to_numpy()[hit][0])


def test_faces_tile_the_township_and_keep_the_grids_counts(plan):
    assert len(plan.faces) == 16 and len(plan.blocks.edges[0]) == 24  # a 4 x 4 lattice
    table = grid_table(plan)
    assert table["households"].round().tolist() == [400] * 4
    assert table["area_m2"].sum() == pytest.approx(shapely.area(
        gpd.GeoSeries([TOWN], crs=4326).to_crs(plan.faces.estimate_utm_crs())).iloc[0], rel=1e-3)
    assert set(plan.faces["source"]) == set(range(16))
    assert check_plan(plan) == []


def test_paint_moves_faces_and_balance_warns(plan):
    one = edits.apply(plan, lambda p: edits.paint(p, [face_at(p, 100.015, 22.015)], "T-003"), check=check_plan)
    assert one.refused is None and one.changed == ["T-001", "T-003"]
    assert one.problems == []  # 300 and 500 households: ±25 % of the mean, at the edge of the band
    two = [face_at(plan, 100.015, 22.015), face_at(plan, 100.005, 22.015)]
    out = edits.apply(plan, lambda p: edits.paint(p, two, "T-003"), check=check_plan)
    assert kinds(out.problems) == [(f"{m}_{side}", (code,)) for m in ("households", "population", "workload")
                                   for side, code in (("below", "T-001"), ("above", "T-003"))]
    assert not any(p.hard for p in out.problems)


def test_paint_across_a_police_area_is_refused(plan):
    out = edits.apply(plan, lambda p: edits.paint(p, [face_at(p, 100.025, 22.005)], "T-001"), check=check_plan)
    assert out.plan is plan and out.refused == "crosses police area T-001: lies in PA1, PA2"


def test_merge_keeps_the_first_code_and_adds_workers(plan):
    out = edits.apply(plan, lambda p: edits.merge(p, ["T-001", "T-003"]), check=check_plan)
    assert out.refused is None and list(out.plan.grids.index) == ["T-001", "T-002", "T-004"]
    assert out.plan.grids.at["T-001", "workers"] == 6
    assert grid_table(out.plan).at["T-001", "households"] == pytest.approx(800)


def test_split_by_a_line_cuts_faces_and_a_line_that_misses_is_refused(plan):
    line = shapely.LineString([(100.005, 21.99), (100.005, 22.03)])
    out = edits.apply(plan, lambda p: edits.split(p, "T-001", line), check=check_plan)
    assert out.refused is None and out.changed == ["T-001", "T-005"]
    assert len(out.plan.faces) == 18  # two faces cut in two
    table = grid_table(out.plan)
    assert table.loc[["T-001", "T-005"], "households"].sum() == pytest.approx(400)
    assert table.at["T-005", "area_m2"] < table.at["T-001", "area_m2"]
    assert (out.plan.faces["face_id"] < 0).sum() == 4
    assert table.loc[["T-001", "T-005"], "parts"].tolist() == [1, 1]
    miss = edits.apply(plan, lambda p: edits.split(p, "T-001", shapely.LineString([(100.3, 22.3), (100.4, 22.4)])),
                       check=check_plan)
    assert miss.refused == "the line does not cross grid T-001 from side to side"


def test_reshape_takes_ground_from_neighbours_in_the_same_police_area(plan):
    square = shapely.box(100.015, 22.015, 100.025, 22.025)  # over all four grids
    out = edits.apply(plan, lambda p: edits.reshape(p, "T-001", square), check=check_plan)
    assert out.refused is None and out.changed == ["T-001", "T-003"]  # PA2's grids keep theirs
    assert grid_table(out.plan).at["T-001", "households"] > 400
    outside = edits.apply(plan, lambda p: edits.reshape(p, "T-001", shapely.box(101, 23, 101.1, 23.1)),
                          check=check_plan)
    assert outside.refused == "the polygon lies outside township T"


def test_locked_grids_are_left_alone(plan):
    locked = edits.apply(plan, lambda p: edits.lock(p, ["T-003"]), check=check_plan).plan
    out = edits.apply(locked, lambda p: edits.paint(p, [face_at(p, 100.005, 22.035)], "T-001"), check=check_plan)
    assert out.changed == []  # the face of the locked grid stays
    refused = edits.apply(locked, lambda p: edits.merge(p, ["T-001", "T-003"]), check=check_plan)
    assert refused.refused == "grid(s) ['T-003'] are locked: unlock them to merge them"


def test_reassign_to_a_police_area_the_grid_is_not_in_is_refused(plan):
    out = edits.apply(plan, lambda p: edits.reassign(p, "T-001", police_area="PA2"), check=check_plan)
    assert out.refused == "outside police area T-001: belongs to PA2 but lies in PA1"


def test_soft_rules_multipart_sliver_workers_compactness(plan):
    took = edits.apply(plan, lambda p: edits.set_workers(p, "T-004", 0), check=check_plan)
    assert kinds(took.problems) == [("workers_below", ("T-004",))]
    strict = kinds(check_plan(plan, Rules(min_compactness=0.9, sliver_area_m2=5e6)))  # a square: 4πA/P² = 0.785
    codes = [("T-001",), ("T-002",), ("T-003",), ("T-004",)]
    assert strict == [("sliver", c) for c in codes] + [("compactness", c) for c in codes]
    diagonal = [face_at(plan, 100.005, 22.025), face_at(plan, 100.015, 22.035)]  # two of T-003's, corner to corner
    out = edits.apply(plan, lambda p: edits.paint(p, diagonal, "T-001"), check=check_plan)
    assert out.refused is None
    assert [k for k in kinds(out.problems) if k[0] == "multipart"] == [("multipart", ("T-001",)),
                                                                        ("multipart", ("T-003",))]


def test_gap_is_hard_and_diff_counts_what_moved(plan):
    holed = plan.copy()
    holed.grid[0] = None
    assert kinds(check_plan(holed))[0] == ("gap", ("T",))
    two = [face_at(plan, 100.015, 22.015), face_at(plan, 100.005, 22.015)]
    moved = edits.apply(plan, lambda p: edits.paint(p, two, "T-003"), check=check_plan)
    table = diff(*(frame(p) for p in (plan, moved.plan)))
    assert list(table.index) == ["T-001", "T-003"] and set(table["status"]) == {"changed"}
    assert table.at["T-003", "households_after"] - table.at["T-003", "households_before"] == pytest.approx(200)
    assert table.at["T-001", "area_moved_m2"] == pytest.approx(table.at["T-003", "area_moved_m2"], rel=1e-6)
    faces = plan.faces.set_index("face_id")["area_m2"]
    assert table.at["T-001", "area_moved_m2"] == pytest.approx(faces.loc[two].sum(), rel=1e-3)  # the two faces
    merged = edits.apply(plan, lambda p: edits.merge(p, ["T-001", "T-003"]), check=check_plan).plan
    assert diff(frame(plan), frame(merged)).loc["T-003", "status"] == "gone"
    assert score(moved.plan, moved.problems)["by_kind"]["households_above"] == 1


def test_checking_counts_work_not_geometry(plan, monkeypatch):
    """The rules read sums over faces: checking unions, intersects or differences no geometry."""
    calls = []
    for name in ("union_all", "intersection", "difference", "coverage_union_all"):
        original = getattr(shapely, name)
        monkeypatch.setattr(shapely, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    assert len(check_plan(plan, Rules(min_compactness=0.9))) == 4
    assert calls == []


def test_slivers_of_ground_in_no_grid_join_a_neighbour_and_real_gaps_stay(plan):
    grids = gpd.GeoDataFrame({"code": ["T-001"], "households": [100], "population": [250]}, crs=4326,
                             geometry=[shapely.box(100, 22, 100.02, 22.02)])
    areas = gpd.GeoDataFrame({"code": ["PA1"]}, geometry=[shapely.box(100, 22, 100.03, 22.03)], crs=4326)
    sliver = shapely.box(100, 22, 100.02 + 3e-6, 22.02)  # a strip about 0.3 m wide beside the grid
    faces, _ = township_faces(sliver, grids, areas, township_code="T")
    assert len(faces) == 2 and faces["grid"].tolist() == ["T-001", "T-001"]
    gap = shapely.box(100, 22, 100.03, 22.02)  # a kilometre of ground no grid covers
    faces, _ = township_faces(gap, grids, areas, township_code="T")
    assert sorted(faces["grid"].fillna("-")) == ["-", "T-001"]
    assert faces["households"].sum() == pytest.approx(100)


def test_a_rebalancing_proposal_meets_the_rules_within_police_areas():
    from gridwatch.data.plan_township import plan_township
    from gridwatch.geo.rebalance import rebalance_plan

    township = plan_township(grids=60, faces_per_grid=10, seed=5)
    problems = check_plan(township)
    assert any(p.kind.startswith("households") for p in problems)
    keep = next(c for c in township.grids.index if all(c not in p.codes for p in problems))  # a grid in the band
    locked = edits.lock(township, [keep])[0]
    proposed, proposal, notes = rebalance_plan(locked, time_limit_s=30)
    assert proposal.met and notes == []
    assert check_plan(proposed) == []  # balance, contiguity, compactness, police areas, staffing
    mine = locked.faces_of([keep])
    assert (proposed.grid[mine] == keep).all() and (proposed.grid == keep).sum() == len(mine)  # kept exactly
    assert proposed.grids["workers"].sum() == township.grids["workers"].sum()


def test_a_proposal_names_the_police_areas_it_cannot_balance():
    from gridwatch.data.plan_township import plan_township
    from gridwatch.geo.rebalance import rebalance_plan

    township = plan_township(grids=40, faces_per_grid=8, seed=6)
    east = township.faces["police_area"].to_numpy() == "T0-E"
    township.faces.loc[east, "households"] *= 3  # the east holds most households in as many grids
    _, proposal, notes = rebalance_plan(township, time_limit_s=2)
    assert not proposal.met
    assert any(n.startswith("police area T0-E:") and "households" in n for n in notes)
