"""The CGCS2000 Gauss-Krüger guess: every one of EPSG:4491-4554 is found again from data written in it."""
from __future__ import annotations

import doctest

import pyproj
import pytest

from gridwatch.geo import crs_guess
from gridwatch.geo.crs_guess import gauss_kruger_zones, likely_gauss_kruger, outside_area_of_use

ZONES = gauss_kruger_zones()


def test_pyproj_lists_all_64_and_their_kinds() -> None:
    assert [z.crs.to_epsg() for z in ZONES] == list(range(4491, 4555))
    assert {(z.width, z.zone_number is None) for z in ZONES} == {(6, False), (6, True), (3, False), (3, True)}
    assert sum(z.zone_number is not None for z in ZONES) == 11 + 21


def _written_in(zone: crs_guess.GaussKruger) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A small box near the middle of the zone's area of use: its lon/lat bounds and its bounds in the zone."""
    w, s, e, n = zone.crs.area_of_use.bounds
    lon, lat = zone.central_meridian, (s + n) / 2
    lon = min(max(lon, w + 0.2), e - 0.2)
    region = (lon - 0.1, lat - 0.1, lon + 0.1, lat + 0.1)
    bounds = pyproj.Transformer.from_crs(4326, zone.crs, always_xy=True).transform_bounds(*region)
    return region, bounds


@pytest.mark.parametrize("zone", ZONES, ids=lambda z: z.crs.to_string())
def test_data_written_in_a_zone_is_found_in_it(zone: crs_guess.GaussKruger) -> None:
    region, bounds = _written_in(zone)
    found = [c.to_epsg() for c in likely_gauss_kruger(bounds, region=region)]
    assert found[0] == zone.crs.to_epsg() or zone.crs.to_epsg() in found
    if zone.zone_number is not None:  # the zone number in the eastings names it, region or not
        assert [c.to_epsg() for c in likely_gauss_kruger(bounds)] == [zone.crs.to_epsg()]
    else:  # only the central meridian's CRSs put the data in the region: the 3° and 6° ones, if both exist
        assert all(ZONES[code - 4491].central_meridian == zone.central_meridian for code in found)
    assert not outside_area_of_use(bounds, zone.crs)


@pytest.mark.parametrize("zone", [z for z in ZONES if z.zone_number], ids=lambda z: z.crs.to_string())
def test_a_neighbouring_zone_number_is_outside_where_its_crs_is_used(zone: crs_guess.GaussKruger) -> None:
    _, bounds = _written_in(zone)
    neighbour = next(z for z in ZONES if z.width == zone.width and z.zone_number in
                     (zone.zone_number + 1, zone.zone_number - 1))
    assert outside_area_of_use(bounds, neighbour.crs)


def test_numbers_that_are_no_gauss_kruger_eastings_find_nothing() -> None:
    assert likely_gauss_kruger((98.1, 23.1, 98.2, 23.2 + 1e7)) == []
    assert likely_gauss_kruger((36_400_000, 2_600_000, 37_400_000, 2_650_000)) == []  # two zone numbers


def test_docstring_examples() -> None:
    assert doctest.testmod(crs_guess).failed == 0
