"""CRS policy: every frame has a CRS, metres are computed in a projected CRS.

The metric CRS for a piece of data is the CGCS2000 3-degree Gauss-Krüger zone
(EPSG:4534-4554, central meridians 75°E ... 135°E) whose central meridian is
nearest the data's centre when the centre lies inside China's longitude band
(73.5°E-136.5°E, latitude 0°-56°N); elsewhere the WGS 84 UTM zone of the
centre. Degrees are never used for lengths, areas or buffers.

This module also holds the small entry-point validators shared by ``geo``
(``_require_columns``, ``_require_number``), which show the bad value and what
is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Union

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyproj
import shapely

__all__ = ["local_metric_crs", "to_metric", "project_geoms", "require_crs", "WGS84", "EXPORT_CRSS", "export_crs",
           "to_export_crs", "export_points_wkb"]

WGS84 = pyproj.CRS.from_epsg(4326)
#: The CRSs files are written in, by the names the commands take: China's geodetic CRS or WGS 84.
EXPORT_CRSS = {"cgcs2000": "EPSG:4490", "wgs84": "EPSG:4326"}

#: CGCS2000 3-degree Gauss-Krüger "CM" zones: EPSG:4534 is CM 75°E, +1 per 3°.
_GK_FIRST_EPSG = 4534
_GK_FIRST_CM = 75
_GK_ZONES = 21
_CHINA_LON = (73.5, 136.5)
_CHINA_LAT = (0.0, 56.0)

Bounds = Sequence[float]
FrameOrBounds = Union[gpd.GeoDataFrame, gpd.GeoSeries, Bounds]


def require_crs(gdf: gpd.GeoDataFrame | gpd.GeoSeries, *, name: str) -> pyproj.CRS:
    """Return the CRS of ``gdf`` or raise a ValueError naming the frame.

    Parameters
    ----------
    gdf : GeoDataFrame or GeoSeries
        The frame to check.
    name : str
        How to call the frame in the message (``"sources"``, ``"townships"``).

    Returns
    -------
    pyproj.CRS

    Examples
    --------
    >>> import geopandas as gpd, shapely
    >>> require_crs(gpd.GeoSeries([shapely.Point(0, 0)]), name="points")
    Traceback (most recent call last):
    ...
    ValueError: points has no CRS; set the one its coordinates are in, e.g. .set_crs("EPSG:4326") for lon/lat
    """
    if not isinstance(gdf, (gpd.GeoDataFrame, gpd.GeoSeries)):
        raise TypeError(f"{name} must be a GeoDataFrame or GeoSeries, got {type(gdf).__name__}")
    if gdf.crs is None:
        raise ValueError(
            f"{name} has no CRS; set the one its coordinates are in, "
            'e.g. .set_crs("EPSG:4326") for lon/lat'
        )
    return pyproj.CRS(gdf.crs)


def _lonlat_bounds(data: FrameOrBounds) -> tuple[float, float, float, float]:
    if isinstance(data, (gpd.GeoDataFrame, gpd.GeoSeries)):
        crs = require_crs(data, name="data")
        geoms = data.geometry if isinstance(data, gpd.GeoDataFrame) else data
        geoms = geoms[~(geoms.isna() | geoms.is_empty)]
        if len(geoms) == 0:
            raise ValueError("data has no non-empty geometry to choose a metric CRS from")
        if not crs.equals(WGS84):
            geoms = geoms.to_crs(WGS84)
        minx, miny, maxx, maxy = (float(v) for v in geoms.total_bounds)
    else:
        values = tuple(float(v) for v in data)
        if len(values) != 4:
            raise ValueError(
                f"bounds must be (minlon, minlat, maxlon, maxlat), got {tuple(data)!r}"
            )
        minx, miny, maxx, maxy = values
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise ValueError(f"bounds must be finite, got {(minx, miny, maxx, maxy)}")
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise ValueError(
            f"bounds {(minx, miny, maxx, maxy)} are not lon/lat in degrees "
            "(expected -180 <= minlon <= maxlon <= 180, -90 <= minlat <= maxlat <= 90)"
        )
    return minx, miny, maxx, maxy


def local_metric_crs(data: FrameOrBounds) -> pyproj.CRS:
    """Choose a projected (metre) CRS suited to the data's centre.

    Parameters
    ----------
    data : GeoDataFrame, GeoSeries or (minlon, minlat, maxlon, maxlat)
        A frame with a CRS, or lon/lat bounds in degrees.

    Returns
    -------
    pyproj.CRS
        The CGCS2000 3-degree Gauss-Krüger zone (EPSG:4534-4554) nearest the
        centre when it lies in lon 73.5-136.5, lat 0-56; else the UTM zone.

    Examples
    --------
    >>> local_metric_crs((99.0, 22.0, 100.2, 23.0)).to_epsg()
    4542
    >>> local_metric_crs((2.2, 48.8, 2.4, 48.9)).to_epsg()
    32631
    """
    minx, miny, maxx, maxy = _lonlat_bounds(data)
    lon, lat = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    if _CHINA_LON[0] <= lon <= _CHINA_LON[1] and _CHINA_LAT[0] <= lat <= _CHINA_LAT[1]:
        k = int(np.clip(np.floor((lon - _GK_FIRST_CM) / 3.0 + 0.5), 0, _GK_ZONES - 1))
        return pyproj.CRS.from_epsg(_GK_FIRST_EPSG + k)
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return pyproj.CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def to_metric(
    gdf: gpd.GeoDataFrame | gpd.GeoSeries, *, crs: pyproj.CRS | None = None, name: str = "frame"
) -> gpd.GeoDataFrame | gpd.GeoSeries:
    """Reproject ``gdf`` to ``crs`` (default: :func:`local_metric_crs` of it).

    Parameters
    ----------
    gdf : GeoDataFrame or GeoSeries
        Data with a CRS.
    crs : pyproj.CRS, optional
        Target projected CRS; it must use metres.
    name : str
        Name of the frame for error messages.

    Returns
    -------
    GeoDataFrame or GeoSeries
        A copy in the metric CRS (the same object if it is already there).
    """
    source = require_crs(gdf, name=name)
    target = local_metric_crs(gdf) if crs is None else pyproj.CRS(crs)
    if not target.is_projected or target.axis_info[0].unit_name not in ("metre", "meter"):
        raise ValueError(f"crs {target.to_string()} is not a projected CRS in metres")
    return gdf if source.equals(target) else gdf.to_crs(target)


def project_geoms(geoms: np.ndarray, transformer: pyproj.Transformer) -> np.ndarray:
    """Shapely geometries with every coordinate passed through ``transformer`` (x = lon, y = lat)."""
    return shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(*xy.T)))


def export_crs(name: str) -> str:
    """The CRS (``EPSG:...``) of an export CRS name; a ValueError names the allowed ones.

    >>> export_crs("cgcs2000")
    'EPSG:4490'
    """
    if name not in EXPORT_CRSS:
        raise ValueError(f"CRS {name!r} is not one of {', '.join(EXPORT_CRSS)}")
    return EXPORT_CRSS[name]


def to_export_crs(gdf: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    """``gdf`` (with a CRS) in the export CRS called ``name`` (:data:`EXPORT_CRSS`)."""
    require_crs(gdf, name="export")
    return gdf.to_crs(export_crs(name))


# OGC WKB of a 2D point: byte order (1, little-endian), geometry type (1, Point), x, y.
_WKB_POINT = np.dtype([("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])


def export_points_wkb(lon: np.ndarray, lat: np.ndarray, name: str) -> pa.FixedSizeBinaryArray:
    """WGS 84 points as WKB in the export CRS called ``name``, one 21-byte value each.

    Written as one numpy buffer: for half a million fixes ~10x faster than
    ``shapely.to_wkb(shapely.points(x, y))``, which builds a GEOS object per point first.

    >>> import shapely
    >>> wkb = export_points_wkb(np.array([100.5]), np.array([22.25]), "wgs84")
    >>> shapely.from_wkb(wkb[0].as_py()).wkt
    'POINT (100.5 22.25)'
    """
    transformer = pyproj.Transformer.from_crs(WGS84, export_crs(name), always_xy=True)
    x, y = transformer.transform(np.asarray(lon, dtype="f8"), np.asarray(lat, dtype="f8"))
    points = np.empty(len(x), dtype=_WKB_POINT)
    points["order"], points["type"], points["x"], points["y"] = 1, 1, x, y
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(_WKB_POINT.itemsize), len(points),
                                                [None, pa.py_buffer(points.tobytes())])


# --------------------------------------------------------------------------- #
# entry-point validation shared by geo/ (private)
# --------------------------------------------------------------------------- #


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], *, name: str) -> None:
    """Raise a ValueError listing every missing column and the ones present."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{name} lacks column(s) {missing}; it has {list(map(str, frame.columns))}"
        )


def _require_number(
    value: float, *, name: str, minimum: float | None = None, strict: bool = False
) -> float:
    """Return ``value`` as float or raise showing it and the allowed range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` was {value!r} but must be a number") from None
    low_ok = True
    if minimum is not None:
        low_ok = number > minimum if strict else number >= minimum
    if not math.isfinite(number) or not low_ok:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"`{name}` was {value!r} but must be a finite number{bound}")
    return number
