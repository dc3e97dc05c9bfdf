"""geo.topology: tiling checks collect every violation; balance flags grids."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely

from gridwatch.geo import TopologyError, Violation, assert_tiling, balance, check_tiling

METRIC = "EPSG:4543"
X0, Y0 = 500_000.0, 2_770_000.0
KM = 1_000.0


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


T1 = box(0, 0, KM, KM)
T2 = box(KM, 0, 2 * KM, KM)
LEFT = box(0, 0, 500, KM)
RIGHT = box(500, 0, KM, KM)
BOWTIE = shapely.Polygon([(X0, Y0), (X0 + KM, Y0 + KM), (X0 + KM, Y0), (X0, Y0 + KM)])
PARENTS = gpd.GeoDataFrame({"code": ["T1", "T2"]}, geometry=[T1, T2], crs=METRIC)


def grids(*rows: tuple, crs: str = METRIC) -> gpd.GeoDataFrame:
    """Rows of (code, township_code, geometry[, households])."""
    return gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "township_code": [r[1] for r in rows],
            "households": [r[3] if len(r) > 3 else 400 for r in rows],
        },
        geometry=[r[2] for r in rows],
        crs=crs,
    )


GOOD = (("g1", "T1", LEFT), ("g2", "T1", RIGHT), ("g3", "T2", T2))


@pytest.mark.parametrize("crs", [METRIC, "EPSG:4326"])
def test_a_clean_tiling_has_no_violation(crs):
    good = grids(*GOOD).to_crs(crs)
    assert check_tiling(good, PARENTS.to_crs(crs)) == []
    assert_tiling(good, PARENTS)  # does not raise, whatever the CRS of each


def test_overlap_and_gap_are_both_reported():
    bad = grids(("g1", "T1", box(0, 0, 600, KM)), ("g2", "T1", box(500, 0, 900, KM)), ("g3", "T2", T2))
    found = check_tiling(bad, PARENTS)
    assert [(v.kind, v.codes) for v in found] == [("overlap", ("g1", "g2")), ("gap", ("T1",))]
    assert found[0].area_m2 == pytest.approx(100 * KM)
    assert found[1].area_m2 == pytest.approx(100 * KM)
    assert found[1].geometry.equals(box(900, 0, KM, KM))


@pytest.mark.parametrize(
    ("rows", "kind", "codes"),
    [
        ((("g1", "T1", box(0, 0, 500, 1200)), ("g2", "T1", RIGHT), ("g3", "T2", T2)), "crosses_parent", ("g1",)),
        ((("g1", "T1", LEFT), ("g2", "T1", RIGHT), ("g3", "T1", T2)), "outside_parent", ("g3",)),
        ((("g1", "T1", LEFT), ("g2", "T1", RIGHT), ("g3", "T9", T2)), "unknown_parent", ("g3",)),
        ((("g1", "T1", BOWTIE), ("g3", "T2", T2)), "invalid", ("g1",)),
        ((("g1", "T1", T1), ("g2", "T1", shapely.Polygon()), ("g3", "T2", T2)), "empty", ("g2",)),
        (
            (
                ("g1", "T1", shapely.MultiPolygon([LEFT, box(600, 0, 601, 10)])),
                ("g2", "T1", RIGHT.difference(box(600, 0, 601, 10))),
                ("g3", "T2", T2),
            ),
            "multipart_sliver",
            ("g1",),
        ),
    ],
)
def test_each_kind_of_violation_is_found(rows, kind, codes):
    found = check_tiling(grids(*rows), PARENTS)
    assert (kind, codes) in [(v.kind, v.codes) for v in found]


def test_tolerance_ignores_tiny_overlaps():
    rows = (("g1", "T1", box(0, 0, 500.0005, KM)), ("g2", "T1", RIGHT), ("g3", "T2", T2))
    assert check_tiling(grids(*rows), PARENTS, tolerance_m2=1.0) == []
    assert [v.kind for v in check_tiling(grids(*rows), PARENTS, tolerance_m2=0.1, tolerance_m=0)] == ["overlap"]


def test_width_tolerance_ignores_precision_strips_along_long_edges():
    """A 1 cm strip along a 1 km edge is 10 m²: coordinate precision, not a gap."""
    rows = (("g1", "T1", box(0, 0, 499.99, KM)), ("g2", "T1", RIGHT), ("g3", "T2", T2))
    assert check_tiling(grids(*rows), PARENTS) == []
    assert [v.kind for v in check_tiling(grids(*rows), PARENTS, tolerance_m=0)] == ["gap"]


def test_assert_tiling_raises_listing_every_violation():
    bad = grids(("g1", "T1", box(0, 0, 600, KM)), ("g2", "T1", box(500, 0, 900, KM)))
    with pytest.raises(TopologyError, match=r"3 topology violation\(s\): 1 overlap, 2 gap") as info:
        assert_tiling(bad, PARENTS)
    assert isinstance(info.value, ValueError)
    assert {v.kind for v in info.value.violations} == {"overlap", "gap"}
    assert "gap T2" in str(info.value)


def test_violation_geometry_is_in_the_grids_crs():
    bad = grids(("g1", "T1", box(0, 0, 600, KM)), ("g2", "T1", RIGHT), ("g3", "T2", T2)).to_crs(4326)
    (overlap,) = check_tiling(bad, PARENTS)
    assert overlap.kind == "overlap"
    assert -180 <= overlap.geometry.centroid.x <= 180  # degrees, not metres


@pytest.mark.parametrize(
    ("frame", "kwargs", "match"),
    [
        (grids(*GOOD).set_crs(None, allow_override=True), {}, "grids has no CRS"),
        (grids(*GOOD), {"parent_key": "county"}, r"grids lacks column\(s\) \['county'\]"),
        (grids(*GOOD), {"tolerance_m2": -1}, r"`tolerance_m2` was -1 but must be a finite number >= 0"),
    ],
)
def test_check_tiling_refuses_bad_input(frame, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_tiling(frame, PARENTS, **kwargs)


@pytest.mark.parametrize(
    ("households", "kind"),
    [(299, "households_below"), (300, None), (500, None), (501, "households_above"), (None, "households_below")],
)
def test_balance_flags_households_outside_the_band(households, kind):
    found = balance(grids(("g1", "T1", T1, households)))
    assert [v.kind for v in found] == ([kind] if kind else [])
    assert all(isinstance(v, Violation) and v.codes == ("g1",) for v in found)


@pytest.mark.parametrize("band", [(500, 300), (-1, 10), ("a", 3), (1,)])
def test_balance_refuses_a_bad_band(band):
    with pytest.raises(ValueError, match=r"`households` was .* but must"):
        balance(grids(*GOOD), households=band)
