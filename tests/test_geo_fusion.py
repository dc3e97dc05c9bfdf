"""geo.grid_fusion: overlaps, slivers, holes, township splits, repair, scale."""

from __future__ import annotations

import time

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from gridwatch.geo import FusionError, check_tiling, fuse_grids

# --------------------------------------------------------------------------- #
# shared geometry: a local frame in CGCS2000 / 3-degree GK CM 102E, ~25N
# --------------------------------------------------------------------------- #
METRIC = "EPSG:4543"
X0, Y0 = 500_000.0, 2_770_000.0
KM = 1_000.0


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    """A rectangle in metres relative to the local origin."""
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def poly(*xy: tuple[float, float]) -> shapely.Polygon:
    return shapely.Polygon([(X0 + x, Y0 + y) for x, y in xy])


T1 = box(0, 0, KM, KM)
T2 = box(KM, 0, 2 * KM, KM)
BOWTIE = poly((0, 0), (KM, KM), (KM, 0), (0, KM), (0, 0))  # self-intersecting


def townships(*geoms: shapely.Polygon) -> gpd.GeoDataFrame:
    codes = [f"T{i + 1}" for i in range(len(geoms))]
    return gpd.GeoDataFrame({"code": codes}, geometry=list(geoms), crs=METRIC)


def sources(*rows: tuple) -> gpd.GeoDataFrame:
    """Rows of (department, name, geometry[, households]); name is also the code."""
    rows = [r if len(r) == 4 else (*r, 400) for r in rows]
    return gpd.GeoDataFrame(
        {
            "department": [r[0] for r in rows],
            "source_code": [r[1] for r in rows],
            "name": [r[1] for r in rows],
            "township_code": None,
            "households": [r[3] for r in rows],
            "population": [2 * r[3] for r in rows],
        },
        geometry=[r[2] for r in rows],
        crs=METRIC,
    )


def areas_by_name(result) -> dict[str, float]:
    metric = result.grids.to_crs(METRIC)
    return metric.assign(a=metric.area).groupby("name")["a"].sum().round(0).to_dict()


def assert_tiles(result, towns: gpd.GeoDataFrame) -> None:
    violations = check_tiling(result.grids, towns)
    assert violations == [], "\n".join(map(str, violations))


# --------------------------------------------------------------------------- #
# overlap: the priority department wins; without priority the base (larger
# covered share); inside one department the source the piece is the larger
# share of
# --------------------------------------------------------------------------- #
OVERLAP_A = ("A", "a1", box(0, 0, 700, KM))
OVERLAP_B = ("B", "b1", box(400, 0, KM, KM))


@pytest.mark.parametrize(
    ("rows", "priority", "expected", "overlap_m2"),
    [
        ((OVERLAP_A, OVERLAP_B), ("B",), {"a1": 400_000, "b1": 600_000}, 300_000),
        ((OVERLAP_A, OVERLAP_B), ("A",), {"a1": 700_000, "b1": 300_000}, 300_000),
        ((OVERLAP_A, OVERLAP_B), (), {"a1": 700_000, "b1": 300_000}, 300_000),  # A covers more
        ((OVERLAP_A, OVERLAP_B), ("B", "A"), {"a1": 400_000, "b1": 600_000}, 300_000),
        # one department: the overlap is a larger share of a2 (500 m wide) than of a1
        (
            (("A", "a1", box(0, 0, 600, KM)), ("A", "a2", box(500, 0, KM, KM))),
            (),
            {"a1": 500_000, "a2": 500_000},
            100_000,
        ),
    ],
    ids=["priority-B", "priority-A", "no-priority-larger-share", "both-listed", "same-department"],
)
def test_overlap_goes_to_priority_then_larger_share(rows, priority, expected, overlap_m2):
    towns = townships(T1)
    result = fuse_grids(sources(*rows), towns, priority=priority)
    assert areas_by_name(result) == pytest.approx(expected, abs=1)
    assert result.report.overlaps_resolved == 1
    assert result.report.overlap_area_m2 == pytest.approx(overlap_m2, rel=1e-6)
    assert_tiles(result, towns)


def test_lineage_shares_of_overlap():
    result = fuse_grids(sources(OVERLAP_A, OVERLAP_B), townships(T1), priority=("B",))
    lin = result.lineage.set_index(["grid_code", "source_code"])["share"]
    codes = result.grids.set_index("name")["code"]
    assert lin[(codes["b1"], "b1")] == pytest.approx(1.0)
    assert lin[(codes["b1"], "a1")] == pytest.approx(0.5)  # 300 m of b1's 600 m
    assert lin[(codes["a1"], "a1")] == pytest.approx(1.0)
    assert (codes["a1"], "b1") not in lin.index
    assert result.lineage.loc[result.lineage["primary"], "source_code"].tolist() == sorted(
        ["a1", "b1"], key=lambda s: codes[s]
    )


# --------------------------------------------------------------------------- #
# slivers from a shifted shared edge
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("strip_m", "sliver_width_m", "min_piece_share", "grids", "absorbed"),
    [
        (1.0, 5.0, 0.0, 2, 1),  # 1,000 m² < 2,000 m²: absorbed by area
        (3.0, 5.0, 0.0, 2, 1),  # 3,000 m² but 3 m wide: absorbed by width
        (3.0, 0.0, 0.0, 3, 0),  # width and share rules off: kept as its own grid
        (50.0, 5.0, 0.0, 3, 0),  # share rule off: a 50 m strip only B covers is kept
        (50.0, 5.0, 0.3, 2, 1),  # 10 % of b2: a strip between shifted edges, absorbed
    ],
)
def test_shifted_edge_sliver_is_absorbed(strip_m, sliver_width_m, min_piece_share, grids, absorbed):
    towns = townships(T1)
    rows = (
        ("A", "a1", box(0, 0, 500, KM)),
        ("A", "a2", box(500, 0, KM - strip_m, KM)),
        ("B", "b1", box(0, 0, 503, KM)),  # B's inner edge shifted by 3 m
        ("B", "b2", box(503, 0, KM, KM)),
    )
    result = fuse_grids(sources(*rows), towns, priority=("A",), sliver_width_m=sliver_width_m,
                        min_piece_share=min_piece_share)
    assert len(result.grids) == grids
    assert result.report.slivers_absorbed == absorbed
    if absorbed:
        assert areas_by_name(result) == pytest.approx({"a1": 500_000, "a2": 500_000}, abs=1)
        assert result.report.sliver_area_m2 == pytest.approx(strip_m * KM, rel=1e-6)
    assert_tiles(result, towns)


# --------------------------------------------------------------------------- #
# holes
# --------------------------------------------------------------------------- #
HOLE_ROWS = (
    ("A", "bottom", box(0, 0, KM, 400)),
    ("A", "left", box(0, 400, 300, KM)),  # 500 m edge with the hole: longest
    ("A", "right-top", box(650, 600, KM, KM)),  # 300 m
    ("A", "right-low", box(650, 400, KM, 600)),  # 200 m
    ("A", "top", box(300, 900, 650, KM)),  # 350 m
)  # hole: [300, 650] x [400, 900]


def test_hole_is_filled_into_neighbour_with_longest_edge():
    towns = townships(T1)
    result = fuse_grids(sources(*HOLE_ROWS), towns)
    areas = areas_by_name(result)
    assert areas["left"] == pytest.approx(300 * 600 + 350 * 500, abs=1)
    assert areas["bottom"] == pytest.approx(400_000, abs=1)
    assert result.report.holes_filled == 1
    assert result.report.hole_area_m2 == pytest.approx(350 * 500, rel=1e-6)
    assert result.report.unassigned == 0
    assert_tiles(result, towns)


def test_township_without_any_grid_becomes_unassigned_grid():
    towns = townships(T1, T2)
    result = fuse_grids(sources(("A", "a1", T1)), towns)
    assert result.grids["township_code"].tolist() == ["T1", "T2"]
    empty = result.grids.iloc[1]
    assert pd.isna(empty["name"]) and empty["households"] == 0
    assert result.report.unassigned == 1
    assert_tiles(result, towns)


# --------------------------------------------------------------------------- #
# township boundaries split grids
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("cross_to", "expected"),
    [
        (1400.0, {("T1", "a1"), ("T1", "a2"), ("T2", "a2"), ("T2", "a3")}),  # split
        (1001.0, {("T1", "a1"), ("T1", "a2"), ("T2", "a3")}),  # 1,000 m² part absorbed
    ],
)
def test_grid_crossing_township_is_split(cross_to, expected):
    towns = townships(T1, T2)
    rows = (
        ("A", "a1", box(0, 0, 600, KM), 600),
        ("A", "a2", box(600, 0, cross_to, KM), 800),
        ("A", "a3", box(cross_to, 0, 2 * KM, KM), 300),
    )
    result = fuse_grids(sources(*rows), towns)
    grids = result.grids
    assert set(zip(grids["township_code"], grids["name"])) == expected
    assert all(code.startswith(f"{town}-") for code, town in zip(grids["code"], grids["township_code"]))
    assert grids["households"].sum() == pytest.approx(1700, abs=1)  # nothing lost
    if cross_to == 1400.0:
        a2 = grids[grids["name"] == "a2"].set_index("township_code")["households"]
        assert a2.to_dict() == {"T1": 400, "T2": 400}  # area-weighted: 400 m + 400 m
        assert result.report.split_by_township == 1
    else:
        assert result.report.slivers_absorbed == 1
    assert_tiles(result, towns)


def test_codes_are_deterministic_in_reading_order():
    towns = townships(T1)
    rows = [("A", f"s{i}", box(x, y, x + 500, y + 500)) for i, (x, y) in enumerate([(500, 0), (0, 0), (500, 500), (0, 500)])]
    first = fuse_grids(sources(*rows), towns).grids
    again = fuse_grids(sources(*rows[::-1]), towns).grids
    # north-west first, then north-east, then the southern row
    assert first["code"].tolist() == ["T1-001", "T1-002", "T1-003", "T1-004"]
    assert first["name"].tolist() == ["s3", "s2", "s1", "s0"]
    assert again[["code", "name"]].equals(first[["code", "name"]])


# --------------------------------------------------------------------------- #
# repair
# --------------------------------------------------------------------------- #
def test_bowtie_source_is_repaired_before_fusion():
    towns = townships(T1)
    rows = (
        ("A", "bowtie", BOWTIE),  # left and right triangles
        ("A", "top", poly((0, KM), (500, 500), (KM, KM))),
        ("A", "bottom", poly((0, 0), (KM, 0), (500, 500))),
    )
    result = fuse_grids(sources(*rows), towns)
    assert result.report.repaired == 1
    assert areas_by_name(result) == pytest.approx({"bowtie": 500_000, "top": 250_000, "bottom": 250_000}, abs=1)
    assert result.grids.geom_type.eq("MultiPolygon").all()
    assert_tiles(result, towns)


def test_output_is_wgs84_and_input_crs_does_not_matter():
    towns = townships(T1)
    rows = (OVERLAP_A, OVERLAP_B)
    metric = fuse_grids(sources(*rows), towns)
    lonlat = fuse_grids(sources(*rows).to_crs(4326), towns.to_crs(4326))
    assert metric.grids.crs.to_epsg() == 4326
    assert areas_by_name(metric) == pytest.approx(areas_by_name(lonlat), abs=2)


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (lambda s: s.drop(columns="households"), {}, ValueError, r"sources lacks column\(s\) \['households'\]"),
        (lambda s: s.set_crs(None, allow_override=True), {}, ValueError, "sources has no CRS"),
        (lambda s: s, {"priority": ("X",)}, FusionError, r"unknown department\(s\) \['X'\]; allowed: \['A', 'B'\]"),
        (lambda s: s, {"priority": "A"}, FusionError, "must be a sequence of department names"),
        (lambda s: s, {"priority": ("A", "A")}, FusionError, "names a department twice"),
        (lambda s: s, {"sliver_area_m2": -1}, ValueError, r"`sliver_area_m2` was -1 but must be a finite number >= 0"),
        (lambda s: s.iloc[:0], {}, FusionError, "sources is empty"),
        (lambda s: pd.concat([s, s.iloc[:1]]), {}, FusionError, r"duplicate \(department, source_code\)"),
    ],
    ids=["missing-column", "no-crs", "unknown-priority", "priority-str", "priority-twice", "negative-sliver", "empty", "duplicate"],
)
def test_bad_input_is_refused_with_a_clear_message(change, kwargs, error, match):
    with pytest.raises(error, match=match):
        fuse_grids(change(sources(OVERLAP_A, OVERLAP_B)), townships(T1), **kwargs)


def test_duplicate_township_codes_are_refused():
    towns = townships(T1, T2).assign(code="T1")
    with pytest.raises(FusionError, match=r"townships has duplicate codes \['T1'\]"):
        fuse_grids(sources(OVERLAP_A), towns)


# --------------------------------------------------------------------------- #
# scale: ~1,500 grids per department x 3 departments
# --------------------------------------------------------------------------- #
def jittered_lattice(nx: int, ny: int, cell: float, jitter: float, seed: int) -> np.ndarray:
    """Quads of a square lattice whose every vertex is jittered (an exact tiling)."""
    rng = np.random.default_rng(seed)
    xx, yy = np.meshgrid(X0 + np.arange(nx + 1) * cell, Y0 + np.arange(ny + 1) * cell)
    v = np.stack([xx, yy], axis=-1) + rng.uniform(-jitter, jitter, (ny + 1, nx + 1, 2))
    ring = np.stack([v[:-1, :-1], v[:-1, 1:], v[1:, 1:], v[1:, :-1], v[:-1, :-1]], axis=2)
    return shapely.polygons(ring.reshape(-1, 5, 2))


def synthetic_region(nx: int = 40, ny: int = 38, cell: float = 300.0):
    frames = []
    for k, dept in enumerate(("civil_affairs", "housing", "emergency")):
        geoms = jittered_lattice(nx, ny, cell, 25.0, seed=k)
        frames.append(
            gpd.GeoDataFrame(
                {
                    "department": dept,
                    "source_code": [f"{dept[:2]}{i:05d}" for i in range(len(geoms))],
                    "name": [f"{dept} {i}" for i in range(len(geoms))],
                    "township_code": None,
                    "households": 400,
                    "population": 1_100,
                },
                geometry=geoms,
                crs=METRIC,
            )
        )
    src = pd.concat(frames, ignore_index=True).to_crs(4326)
    xs, ys = [0, 4_100, 8_050, nx * cell], [0, 5_730, ny * cell]  # not on lattice lines
    towns = [
        (f"5301{i}{j}", box(xs[i], ys[j], xs[i + 1], ys[j + 1])) for i in range(3) for j in range(2)
    ]
    towns = gpd.GeoDataFrame({"code": [c for c, _ in towns]}, geometry=[g for _, g in towns], crs=METRIC)
    return src, towns.to_crs(4326)


def test_fuses_4500_grids_of_three_departments_into_a_tiling():
    src, towns = synthetic_region()
    assert len(src) == 3 * 40 * 38
    started = time.perf_counter()
    result = fuse_grids(src, towns)
    seconds = time.perf_counter() - started
    print(f"\nfused {len(src)} source grids into {len(result.grids)} in {seconds:.2f} s: {result.report}")
    assert seconds < 30
    assert_tiles(result, towns)
    # every township is covered exactly by its grids
    metric = result.grids.to_crs(METRIC)
    got = metric.assign(a=metric.area).groupby("township_code")["a"].sum()
    want = towns.to_crs(METRIC).set_index("code").area
    assert np.allclose(got.sort_index(), want.sort_index(), atol=len(metric))
    assert result.grids["code"].is_unique
    assert result.report.base in {"civil_affairs", "housing", "emergency"}
    assert result.report.slivers_absorbed > 0 and result.report.holes_filled > 0
    shares = result.lineage.groupby(["grid_code", "department"])["share"].sum()
    assert (shares <= 1 + 1e-9).all()
