"""geo.border segments and geo.crs choices: metres, never degrees."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiLineString, Point

from gridwatch.geo import local_metric_crs, require_crs, segment_line, to_metric

# a zig-zag border near 23N 99E (~25 km) and a straight east-west one
ZIGZAG = LineString([(99.00, 23.00), (99.05, 23.03), (99.11, 23.01), (99.16, 23.06), (99.20, 23.04), (99.23, 23.10)])
STRAIGHT = LineString([(100.0, 22.0), (100.05, 22.0)])
SHORT = LineString([(100.0, 22.0), (100.003, 22.0)])  # ~310 m


def metric_length(line: LineString) -> float:
    return float(gpd.GeoSeries([line], crs=4326).to_crs(local_metric_crs(line.bounds)).length.iloc[0])


@pytest.mark.parametrize("line", [ZIGZAG, STRAIGHT], ids=["zigzag", "straight"])
@pytest.mark.parametrize("length_m", [1000.0, 300.0, 2500.0])
def test_segments_are_fixed_length_and_sum_to_the_line(line, length_m):
    seg = segment_line(line, length_m=length_m)
    crs = local_metric_crs(line.bounds)
    lengths = seg.to_crs(crs).length.to_numpy()
    total = metric_length(line)
    assert len(seg) == int(np.ceil(total / length_m))
    assert lengths[:-1] == pytest.approx(length_m, abs=1e-3)
    assert 0 < lengths[-1] <= length_m + 1e-3
    assert lengths.sum() == pytest.approx(total, abs=1e-3)
    assert seg["length_m"].to_numpy() == pytest.approx(lengths, abs=1e-3)
    assert seg["km_from"].iloc[0] == 0 and seg["km_to"].iloc[-1] == pytest.approx(total / 1000)
    assert (seg["km_from"].to_numpy()[1:] == seg["km_to"].to_numpy()[:-1]).all()
    assert seg.crs.to_epsg() == 4326
    # contiguous, from the line's start to its end, on the line (a straight edge
    # in metres bows by < 1 m against the same edge drawn straight in degrees)
    coords = [np.asarray(g.coords) for g in seg.geometry]
    assert np.allclose(coords[0][0], line.coords[0]) and np.allclose(coords[-1][-1], line.coords[-1])
    assert all(np.array_equal(a[-1], b[0]) for a, b in zip(coords[:-1], coords[1:]))
    assert shapely.hausdorff_distance(shapely.line_merge(shapely.union_all(seg.geometry.to_numpy())), line) < 1e-5


@pytest.mark.parametrize(
    ("line", "length_m", "count"),
    [(SHORT, 1000.0, 1), (STRAIGHT, None, None)],
    ids=["shorter-than-one-segment", "exact-multiple-has-no-empty-tail"],
)
def test_edge_lengths(line, length_m, count):
    if length_m is None:  # choose a length that divides the line exactly
        length_m = metric_length(line) / 4
        count = 4
    seg = segment_line(line, length_m=length_m)
    assert len(seg) == count
    assert (seg["length_m"] > 1).all()


def test_multilinestring_that_merges_is_accepted():
    parts = MultiLineString([ZIGZAG.coords[:3], ZIGZAG.coords[2:]])
    assert len(segment_line(parts)) == len(segment_line(ZIGZAG))


@pytest.mark.parametrize(
    ("line", "kwargs", "error", "match"),
    [
        (ZIGZAG, {"length_m": 0}, ValueError, r"`length_m` was 0 but must be a finite number > 0"),
        (ZIGZAG, {"length_m": float("nan")}, ValueError, r"`length_m` was nan"),
        (Point(99, 23), {}, TypeError, "line must be a shapely LineString, got Point"),
        (LineString(), {}, ValueError, "line is empty"),
        (LineString([(99, 23), (99, 23)]), {}, ValueError, "zero length"),
        (MultiLineString([[(99, 23), (99.1, 23)], [(99.5, 23), (99.6, 23)]]), {}, ValueError, "2 disconnected parts"),
    ],
)
def test_bad_input_is_refused(line, kwargs, error, match):
    with pytest.raises(error, match=match):
        segment_line(line, **kwargs)


# --------------------------------------------------------------------------- #
# geo.crs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("bounds", "epsg"),
    [
        ((99.0, 22.0, 100.2, 23.0), 4542),  # centre 99.6E -> CM 99E
        ((73.6, 39.0, 74.0, 39.5), 4534),  # west end of China -> CM 75E
        ((134.0, 47.0, 136.4, 48.0), 4554),  # east end -> CM 135E
        ((101.4, 25.0, 101.6, 25.1), 4543),  # 101.5E is nearer CM 102E than 99E
        ((2.2, 48.8, 2.4, 48.9), 32631),  # Paris: UTM 31N
        ((151.1, -33.9, 151.3, -33.8), 32756),  # Sydney: UTM 56S
    ],
)
def test_local_metric_crs(bounds, epsg):
    assert local_metric_crs(bounds).to_epsg() == epsg


def test_local_metric_crs_of_a_frame_uses_its_lonlat_centre():
    frame = gpd.GeoDataFrame(geometry=[Point(99.6, 22.5)], crs=4326).to_crs(3857)
    assert local_metric_crs(frame).to_epsg() == 4542
    assert to_metric(frame).crs.to_epsg() == 4542


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ((1, 2, 3), r"bounds must be \(minlon, minlat, maxlon, maxlat\)"),
        ((500000, 2700000, 510000, 2710000), "are not lon/lat in degrees"),
        (gpd.GeoDataFrame(geometry=[Point(1, 2)]), "data has no CRS"),
    ],
)
def test_local_metric_crs_refuses_bad_input(data, match):
    with pytest.raises(ValueError, match=match):
        local_metric_crs(data)


def test_require_crs_names_the_frame():
    with pytest.raises(ValueError, match=r'positions has no CRS; .*set_crs\("EPSG:4326"\)'):
        require_crs(gpd.GeoDataFrame(geometry=[Point(1, 2)]), name="positions")
    assert require_crs(gpd.GeoDataFrame(geometry=[Point(1, 2)], crs=4326), name="p").to_epsg() == 4326


def test_to_metric_refuses_a_geographic_target():
    frame = gpd.GeoDataFrame(geometry=[Point(99.6, 22.5)], crs=4326)
    with pytest.raises(ValueError, match="is not a projected CRS in metres"):
        to_metric(frame, crs="EPSG:4326")
