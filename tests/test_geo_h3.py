"""geo.h3cells: vectorized cells match h3's scalar function."""

from __future__ import annotations

import time

import h3
import numpy as np
import pytest
import shapely

from gridwatch.geo import cell_polygons, cells_for_points, h3cells

POINTS = [(102.7, 25.04), (99.17, 22.02), (121.47, 31.23), (-0.13, 51.5), (151.2, -33.87), (0.0, 0.0)]
LON = np.array([p[0] for p in POINTS])
LAT = np.array([p[1] for p in POINTS])


@pytest.fixture(params=["h3ronpy", "loop"])
def backend(request, monkeypatch):
    if request.param == "loop":
        monkeypatch.setattr(h3cells, "_h3v", None)
    else:
        assert h3cells._h3v is not None, "h3ronpy is a dependency: the vectorized path must be there"
    return request.param


@pytest.mark.parametrize("resolution", [0, 7, 9, 15])
def test_cells_match_h3_latlng_to_cell(backend, resolution):
    cells = cells_for_points(LON, LAT, resolution=resolution)
    assert cells.dtype == np.int64
    expected = [h3.str_to_int(h3.latlng_to_cell(lat, lon, resolution)) for lon, lat in POINTS]
    assert cells.tolist() == expected


def test_shape_is_kept(backend):
    cells = cells_for_points(LON.reshape(2, 3), LAT.reshape(2, 3))
    assert cells.shape == (2, 3)
    assert cells_for_points(np.array([]), np.array([])).shape == (0,)


def test_polygons_contain_their_points(backend):
    cells = cells_for_points(LON, LAT)
    polys = cell_polygons(cells)
    assert polys.crs.to_epsg() == 4326
    assert polys["h3"].tolist() == cells.tolist()
    assert shapely.contains_xy(polys.geometry.to_numpy(), LON, LAT).all()
    assert (polys.geometry.geom_type == "Polygon").all()


@pytest.mark.parametrize(
    ("lon", "lat", "kwargs", "match"),
    [
        ([100.0, np.nan], [20.0, 20.0], {}, r"1 point\(s\) are not lon/lat in degrees, first at index 1"),
        ([100.0], [95.0], {}, "lat=95.0"),
        ([100.0, 1.0], [20.0], {}, "same shape"),
        ([100.0], [20.0], {"resolution": 16}, r"`resolution` was 16 but must be an integer in 0..15"),
        ([100.0], [20.0], {"resolution": 9.5}, r"`resolution` was 9.5"),
    ],
)
def test_bad_points_are_refused(lon, lat, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cells_for_points(np.array(lon), np.array(lat), **kwargs)


@pytest.mark.parametrize(("cells", "match"), [([0], r"cells\[0\] = 0 is not an H3 cell index"), ([1.5], "integer H3")])
def test_bad_cells_are_refused(cells, match):
    with pytest.raises(ValueError, match=match):
        cell_polygons(np.array(cells))


def test_rate_for_a_million_points():
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(97, 106, 1_000_000), rng.uniform(21, 29, 1_000_000)
    started = time.perf_counter()
    cells = cells_for_points(lon, lat)
    rate = len(cells) / (time.perf_counter() - started)
    print(f"\nh3 cells: {rate / 1e6:.2f} M points/s ({'h3ronpy' if h3cells._h3v else 'loop'})")
    assert rate > 200_000
