"""Border segments: line 1 (the border) cut into fixed lengths in metres.

Lengths are measured in the local metric CRS of the line (see
:mod:`gridwatch.geo.crs`); the cut points are interpolated there and the segments are
returned in EPSG:4326. The whole cut is one vectorized pass over the
vertices (``numpy.interp`` on the cumulative distance), no loop per segment.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from shapely.geometry import LineString, MultiLineString

from gridwatch.geo.crs import WGS84, _require_number, local_metric_crs

__all__ = ["segment_line"]

#: A last piece shorter than this (float noise) is merged into the one before.
_MIN_LAST_M = 1e-3


def _as_linestring(line: object) -> LineString:
    if isinstance(line, MultiLineString):
        merged = shapely.line_merge(line)
        if isinstance(merged, MultiLineString):
            raise ValueError(
                f"line is a MultiLineString of {len(merged.geoms)} disconnected parts; "
                "segment each part on its own or join them first"
            )
        line = merged
    if not isinstance(line, LineString):
        raise TypeError(f"line must be a shapely LineString, got {type(line).__name__}")
    if line.is_empty:
        raise ValueError("line is empty: there is no border to segment")
    return line


def segment_line(
    line: LineString, *, length_m: float = 1000.0, crs: object = WGS84
) -> gpd.GeoDataFrame:
    """Cut a line into consecutive pieces of ``length_m`` metres.

    Parameters
    ----------
    line : LineString
        The border (a MultiLineString that merges into one line is accepted).
    length_m : float
        Segment length in metres; the last segment takes the remainder.
    crs : CRS-like
        CRS of ``line``'s coordinates (default EPSG:4326, lon/lat).

    Returns
    -------
    GeoDataFrame
        One row per segment in line order: ``km_from``, ``km_to``,
        ``length_m`` and LineString geometry, in EPSG:4326.

    Examples
    --------
    >>> from shapely import LineString
    >>> seg = segment_line(LineString([(100.0, 22.0), (100.05, 22.0)]), length_m=2000)
    >>> seg["km_to"].round(3).tolist()
    [2.0, 4.0, 5.164]
    """
    line = _as_linestring(line)
    step = _require_number(length_m, name="length_m", minimum=0, strict=True)
    source = pyproj.CRS(crs)
    lonlat = line if source.equals(WGS84) else gpd.GeoSeries([line], crs=source).to_crs(WGS84).iloc[0]
    metric = local_metric_crs(lonlat.bounds)
    forward = pyproj.Transformer.from_crs(WGS84, metric, always_xy=True)
    back = pyproj.Transformer.from_crs(metric, WGS84, always_xy=True)

    lon, lat = shapely.get_coordinates(lonlat).T
    x, y = forward.transform(lon, lat)
    step_len = np.hypot(np.diff(x), np.diff(y))
    keep = np.r_[True, step_len > 0]  # drop repeated vertices
    x, y = x[keep], y[keep]
    cum = np.r_[0.0, np.cumsum(step_len[step_len > 0])]
    total = float(cum[-1])
    if total <= 0:
        raise ValueError("line has zero length: all its vertices coincide")

    bounds = np.r_[np.arange(0.0, total, step), total]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < _MIN_LAST_M:
        bounds = np.delete(bounds, -2)
    n = len(bounds) - 1
    seg_of_vertex = np.searchsorted(bounds, cum, side="right") - 1
    interior = (seg_of_vertex >= 0) & (seg_of_vertex < n)
    interior &= (cum > bounds[np.clip(seg_of_vertex, 0, n)]) & (cum < bounds[np.clip(seg_of_vertex + 1, 0, n)])

    seg = np.r_[np.arange(n), np.arange(n), seg_of_vertex[interior]]
    dist = np.r_[bounds[:-1], bounds[1:], cum[interior]]
    rank = np.r_[np.zeros(n), np.full(n, 2), np.ones(interior.sum())]
    order = np.lexsort((rank, dist, seg))
    seg, dist = seg[order], dist[order]
    px, py = np.interp(dist, cum, x), np.interp(dist, cum, y)
    plon, plat = back.transform(px, py)
    geoms = shapely.linestrings(np.column_stack([plon, plat]), indices=seg)
    return gpd.GeoDataFrame(
        {"km_from": bounds[:-1] / 1000.0, "km_to": bounds[1:] / 1000.0, "length_m": np.diff(bounds)},
        geometry=geoms,
        crs=WGS84,
    )
