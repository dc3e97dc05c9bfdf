"""Whether coordinates can be in the CRS they were read with, and which CRS they were likely written in.

China's CGCS2000 Gauss-Krüger CRSs (EPSG:4491-4554) differ only by zone width
(6° or 3°), central meridian and whether the easting carries the zone number
(3° zone 36: 36 500 000 at the central meridian) or not (500 000 at every
central meridian). An easting with a zone number names its CRS; without one,
the central meridian is the one that puts the data in the region, when the
region is known.

>>> [c.to_string() for c in likely_gauss_kruger((36_400_000, 2_600_000, 36_450_000, 2_650_000))]
['EPSG:4524']
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyproj

__all__ = ["GaussKruger", "gauss_kruger_zones", "lonlat_bounds", "outside_area_of_use", "likely_gauss_kruger"]

Bounds = Sequence[float]  # (minx, miny, maxx, maxy)

#: How far (degrees) data may reach past a CRS's area of use, or past the region, and still be plausible.
MARGIN_DEG = 1.0
_FIRST, _LAST = 4491, 4554
_ZONE_NUMBER = 1_000_000  # easting = zone number x 1 000 000 + 500 000 in the zone-numbered CRSs


@dataclass(frozen=True)
class GaussKruger:
    """One CGCS2000 Gauss-Krüger CRS: its EPSG code, zone width, central meridian and false easting."""

    crs: pyproj.CRS
    width: int
    central_meridian: float
    false_easting: float

    @property
    def zone_number(self) -> int | None:
        """The zone number the eastings carry, or None for the CRSs whose eastings carry none."""
        return int(self.false_easting // _ZONE_NUMBER) or None


@cache
def gauss_kruger_zones() -> tuple[GaussKruger, ...]:
    """Every CGCS2000 Gauss-Krüger CRS, EPSG:4491-4554, from PROJ's database."""
    zones = []
    for code in range(_FIRST, _LAST + 1):
        crs = pyproj.CRS.from_epsg(code)
        params = {p.name: p.value for p in crs.coordinate_operation.params}
        zones.append(GaussKruger(crs, 3 if "3-degree" in crs.name else 6,
                                 params["Longitude of natural origin"], params["False easting"]))
    return tuple(zones)


@cache
def _to_degrees(crs: pyproj.CRS) -> pyproj.Transformer:
    """The inverse projection to the CRS's own lon/lat: no datum change, which would cost a search
    of PROJ's database per CRS and move the data by metres at most."""
    return pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)


def lonlat_bounds(bounds: Bounds, crs: pyproj.CRS) -> tuple[float, float, float, float] | None:
    """``bounds`` in ``crs`` as lon/lat bounds (on the CRS's own datum), or None where they do not
    transform to finite degrees."""
    if crs.is_geographic:
        return tuple(float(v) for v in bounds)
    out = _to_degrees(crs).transform_bounds(*bounds, errcheck=False)
    if not np.isfinite(out).all() or abs(out[0]) > 180 or abs(out[2]) > 180 or abs(out[1]) > 90 or abs(out[3]) > 90:
        return None
    return tuple(float(v) for v in out)


def _near(lonlat: Bounds | None, area: Bounds) -> bool:
    """Whether lon/lat bounds lie inside ``area`` widened by the margin."""
    if lonlat is None:
        return False
    w, s, e, n = area
    return (lonlat[0] >= w - MARGIN_DEG and lonlat[2] <= e + MARGIN_DEG
            and lonlat[1] >= s - MARGIN_DEG and lonlat[3] <= n + MARGIN_DEG)


def _touches(lonlat: Bounds | None, region: Bounds) -> bool:
    """Whether lon/lat bounds meet ``region`` widened by the margin."""
    if lonlat is None:
        return False
    w, s, e, n = region
    return not (lonlat[2] < w - MARGIN_DEG or lonlat[0] > e + MARGIN_DEG
                or lonlat[3] < s - MARGIN_DEG or lonlat[1] > n + MARGIN_DEG)


def outside_area_of_use(bounds: Bounds, crs: pyproj.CRS) -> bool:
    """Whether data with ``bounds`` (in ``crs``'s numbers) lies outside where ``crs`` is used."""
    area = crs.area_of_use
    if area is None:
        return False
    return not _near(lonlat_bounds(bounds, crs), area.bounds)


def likely_gauss_kruger(bounds: Bounds, *, region: Bounds | None = None) -> list[pyproj.CRS]:
    """The CGCS2000 Gauss-Krüger CRSs that data with ``bounds`` (projected metres) can be in.

    A zone number in the eastings picks the CRS of that zone; without one,
    every CRS whose central meridian puts the data inside its area of use
    fits, and ``region`` (lon/lat bounds, when known) keeps those that put it
    in the region. Without a zone number and without a region there are many:
    the caller says so rather than pick one.
    """
    minx, miny, maxx, maxy = bounds
    zone = int(minx // _ZONE_NUMBER)
    if zone != int(maxx // _ZONE_NUMBER) or not (0 <= miny and maxy <= 10_000_000):
        return []
    found = []
    for gk in gauss_kruger_zones():
        if (gk.zone_number or 0) != zone:
            continue
        lonlat = lonlat_bounds(bounds, gk.crs)
        if _near(lonlat, gk.crs.area_of_use.bounds) and (region is None or _touches(lonlat, region)):
            found.append(gk.crs)
    return found
