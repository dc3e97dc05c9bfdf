"""H3 cells for points and cell polygons, vectorized.

``h3`` 4 offers only scalar functions, so the arrays go through ``h3ronpy``
(Rust, vectorized) when it is installed — about 2.3 M points/s here, against
about 1.3 M/s for ``h3.latlng_to_cell`` in a Python loop, which is the
fallback. Cells are H3 indexes as ``int64`` (the high bit of an H3 index is
always 0), the form stored in the ``position.h3`` column.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from h3.api import basic_int as _h3int

from gridwatch.geo.crs import WGS84

try:  # optional accelerator
    from h3ronpy import vector as _h3v
except ImportError:  # pragma: no cover - exercised only without h3ronpy
    _h3v = None

__all__ = ["cells_for_points", "cell_polygons", "H3_RESOLUTIONS"]

H3_RESOLUTIONS = range(0, 16)


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or int(resolution) not in H3_RESOLUTIONS:
        raise ValueError(f"`resolution` was {resolution!r} but must be an integer in 0..15")
    return int(resolution)


def _check_lonlat(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.shape != lat.shape:
        raise ValueError(f"lon and lat must have the same shape, got {lon.shape} and {lat.shape}")
    bad = ~(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90))
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"{int(bad.sum())} point(s) are not lon/lat in degrees, first at index {i}: "
            f"lon={float(lon.ravel()[i])!r}, lat={float(lat.ravel()[i])!r} (allowed: finite, |lon| <= 180, |lat| <= 90)"
        )
    return lon, lat


def cells_for_points(lon: np.ndarray, lat: np.ndarray, *, resolution: int = 9) -> np.ndarray:
    """H3 cell of each point.

    Parameters
    ----------
    lon, lat : array_like
        Longitudes and latitudes in degrees (EPSG:4326), same shape.
    resolution : int
        H3 resolution 0..15 (9: cells of ~0.1 km²).

    Returns
    -------
    numpy.ndarray of int64
        Same shape as ``lon``.

    Examples
    --------
    >>> import h3
    >>> cell = cells_for_points([102.7], [25.0])[0]
    >>> h3.int_to_str(int(cell)) == h3.latlng_to_cell(25.0, 102.7, 9)
    True
    """
    res = _check_resolution(resolution)
    lon, lat = _check_lonlat(lon, lat)
    flat_lon, flat_lat = lon.ravel(), lat.ravel()
    if flat_lon.size == 0:
        return np.zeros(lon.shape, dtype=np.int64)
    if _h3v is not None:
        cells = np.asarray(_h3v.coordinates_to_cells(flat_lat, flat_lon, res)).view(np.int64)
    else:
        cells = np.fromiter(
            (_h3int.latlng_to_cell(a, b, res) for a, b in zip(flat_lat.tolist(), flat_lon.tolist())),
            dtype=np.int64,
            count=flat_lon.size,
        )
    return cells.reshape(lon.shape)


def cell_polygons(cells: np.ndarray) -> gpd.GeoDataFrame:
    """Hexagon (or pentagon) polygon of each H3 cell.

    Parameters
    ----------
    cells : array_like of int
        H3 cell indexes (``int64``/``uint64``) as from :func:`cells_for_points`.

    Returns
    -------
    GeoDataFrame
        Columns ``h3`` (int64) and Polygon geometry, in EPSG:4326, in input order.
    """
    arr = np.asarray(cells)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"cells must be integer H3 indexes, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False).ravel()
    if arr.size and (arr <= 0).any():
        i = int(np.flatnonzero(arr <= 0)[0])
        raise ValueError(f"cells[{i}] = {arr[i]} is not an H3 cell index")
    if _h3v is not None:
        try:
            wkb = np.asarray(_h3v.cells_to_wkb_polygons(arr.view(np.uint64)))
        except ValueError as err:
            raise ValueError(f"cells hold an invalid H3 cell index: {err}") from None
        geoms = shapely.from_wkb(wkb) if arr.size else np.empty(0, dtype=object)
    else:
        cell_list = arr.tolist()
        bad = [c for c in cell_list if not _h3int.is_valid_cell(c)]
        if bad:
            raise ValueError(f"cells hold {len(bad)} invalid H3 cell index(es), e.g. {bad[:5]}")
        rings = [[(lng, lat) for lat, lng in _h3int.cell_to_boundary(c)] for c in cell_list]
        geoms = np.array([shapely.Polygon(r) for r in rings], dtype=object)
    return gpd.GeoDataFrame({"h3": arr}, geometry=geoms, crs=WGS84)
