"""Fuse points with the reference layers, vectorized: grid, zone, border segment, border distance, H3.

The reference layers are small (~1.5k grids, a few zones, ~400 segments), the
points many; so the points go into one shapely STRtree, queried with the
polygons (the fast direction, see DESIGN.md), and the coordinates of each pair
whose boxes meet are tested against the prepared polygon. The nearest border
segment is found through the nearest of the segments' vertices densified to
:data:`VERTEX_SPACING_M` in the region's metric CRS (a point-to-point search,
~3x faster than nearest-line; a k-d tree is 4x slower here, as the vertices
lie on a line and most fixes are far from it), then ``border_m`` is the exact
distance to that segment: the segment chosen is the nearest one or within
``VERTEX_SPACING_M / 2`` of it. The vertex tree is searched with small nodes
(:data:`VERTEX_NODE_CAPACITY`, ~30 % faster); a fix equidistant from several
vertices (~0.5 %: the shared ends of adjacent segments) takes the one a tree of
shapely's default nodes visits first, so the choice between them does not
depend on the search's tree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
import pyproj
import shapely

from gridwatch.geo.crs import WGS84, local_metric_crs, project_geoms
from gridwatch.geo.h3cells import cells_for_points

__all__ = ["Reference", "REFERENCE_TABLES", "load_reference", "fuse_points", "region_srid", "read_geoms",
           "FUSED_COLUMNS"]

FUSED_COLUMNS = ("grid_id", "zone_id", "segment_id", "border_m", "h3")
# A point in two zones gets the most specific one.
_ZONE_ORDER = "CASE kind WHEN 'port_control' THEN 0 WHEN 'border_closed' THEN 1 ELSE 2 END, id"
REGION_MARGIN_KM = 50.0
# The tables :func:`load_reference` reads (a write to one of them changes the reference).
REFERENCE_TABLES = ("grid", "zone", "border_segment", "command_unit")
VERTEX_SPACING_M = 20.0
VERTEX_NODE_CAPACITY = 4


@dataclass(frozen=True)
class Reference:
    """The layers points are fused with, and the region's extent."""

    grid_ids: np.ndarray
    grids: np.ndarray
    zone_ids: np.ndarray
    zones: np.ndarray
    segment_ids: np.ndarray
    segments: np.ndarray  # grids, zones and segments in the metric CRS of ``to_metric``
    vertex_tree: shapely.STRtree | None  # the segments' vertices, densified, in small nodes
    tie_tree: shapely.STRtree | None  # the same vertices in shapely's default nodes: breaks ties
    vertex_segment: np.ndarray  # segment index of each vertex in the trees
    to_metric: pyproj.Transformer | None
    bbox: tuple[float, float, float, float] | None

    def outer_bbox(self) -> tuple[float, float, float, float] | None:
        """The region's extent grown by :data:`REGION_MARGIN_KM`: farther points are rejected."""
        if self.bbox is None:
            return None
        minx, miny, maxx, maxy = self.bbox
        dlat = REGION_MARGIN_KM / 111.0
        dlon = dlat / max(np.cos(np.radians(max(abs(miny), abs(maxy)))), 0.1)
        return minx - dlon, miny - dlat, maxx + dlon, maxy + dlat


def read_geoms(conn: psycopg.Connection, query: str, params: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ids and shapely geometries of ``query``'s rows (an id, then WKB)."""
    rows = conn.execute(query, params).fetchall()
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
    ids, wkb = zip(*rows)
    return np.asarray(ids, dtype=np.int64), shapely.from_wkb(list(wkb))


def load_reference(conn: psycopg.Connection) -> Reference:
    """Read grids, zones, border segments and the region extent (prefectures, else grids),
    all brought into the region's metric CRS once, so each fix becomes one metric point."""
    grid_ids, grids = read_geoms(conn, "SELECT id, ST_AsBinary(geom) FROM grid ORDER BY id")
    zone_ids, zones = read_geoms(conn, f"SELECT id, ST_AsBinary(geom) FROM zone ORDER BY {_ZONE_ORDER}")
    seg_ids, segs = read_geoms(conn, "SELECT id, ST_AsBinary(geom) FROM border_segment ORDER BY id")
    extent = conn.execute(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM ("
        " SELECT coalesce((SELECT ST_Extent(geom) FROM command_unit WHERE level = 'prefecture'),"
        "                 (SELECT ST_Extent(geom) FROM grid)) AS e) x"
    ).fetchone()
    bbox = tuple(float(v) for v in extent) if extent and extent[0] is not None else None
    everything = np.concatenate([grids, zones, segs])
    to_metric = None
    tree = tie_tree = None
    vertex_segment = np.empty(0, dtype=np.int64)
    if len(everything):
        crs = local_metric_crs(bbox or tuple(shapely.total_bounds(everything)))
        to_metric = pyproj.Transformer.from_crs(WGS84, crs, always_xy=True)
        grids, zones, segs = (project_geoms(g, to_metric) for g in (grids, zones, segs))
    if len(segs):
        xy, vertex_segment = shapely.get_coordinates(shapely.segmentize(segs, VERTEX_SPACING_M), return_index=True)
        vertices = shapely.points(xy)
        tree, tie_tree = shapely.STRtree(vertices, node_capacity=VERTEX_NODE_CAPACITY), shapely.STRtree(vertices)
    for geoms in (grids, zones):
        shapely.prepare(geoms)
    return Reference(grid_ids, grids, zone_ids, zones, seg_ids, segs, tree, tie_tree, vertex_segment, to_metric, bbox)


def _containing(points_tree: shapely.STRtree, x: np.ndarray, y: np.ndarray, polygons: np.ndarray,
                ids: np.ndarray) -> np.ndarray:
    """Id of the first polygon (in ``polygons`` order) holding each point (the tree's, at ``x``, ``y``),
    or -1. The tree gives the pairs whose boxes meet; the coordinates are tested against the
    prepared polygons directly (twice as fast as the tree testing its point geometries)."""
    out = np.full(len(x), -1, dtype=np.int64)
    if len(polygons) == 0 or len(x) == 0:
        return out
    poly_idx, point_idx = points_tree.query(polygons)
    inside = shapely.intersects_xy(polygons[poly_idx], x[point_idx], y[point_idx])
    poly_idx, point_idx = poly_idx[inside], point_idx[inside]
    if point_idx.size == 0:
        return out
    order = np.lexsort((poly_idx, point_idx))
    point_idx, poly_idx = point_idx[order], poly_idx[order]
    first = np.r_[True, point_idx[1:] != point_idx[:-1]]
    out[point_idx[first]] = ids[poly_idx[first]]
    return out


def _nearest_vertex(ref: Reference, points: np.ndarray) -> np.ndarray:
    """Index of the vertex nearest each point (a non-empty one): the only one at the least distance,
    else the one of those the tie tree visits first."""
    point_idx, vertex = ref.vertex_tree.query_nearest(points, all_matches=True)
    count = np.bincount(point_idx, minlength=len(points))
    nearest = vertex[np.r_[0, np.cumsum(count)[:-1]]]
    tied = np.flatnonzero(count > 1)
    if tied.size:
        nearest[tied] = ref.tie_tree.query_nearest(points[tied], all_matches=False)[1]
    return nearest


def fuse_points(ref: Reference, lon: np.ndarray, lat: np.ndarray, *, resolution: int) -> pd.DataFrame:
    """For each lon/lat: ``grid_id``, ``zone_id``, ``segment_id`` (-1 when none), ``border_m`` (NaN), ``h3``."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    n = len(lon)
    segment_id = np.full(n, -1, dtype=np.int64)
    border_m = np.full(n, np.nan)
    grid_id = np.full(n, -1, dtype=np.int64)
    zone_id = np.full(n, -1, dtype=np.int64)
    if ref.to_metric is not None and n:
        x, y = ref.to_metric.transform(lon, lat)
        order = np.lexsort((y // 2000.0, x // 2000.0))  # nearby points together: warmer tree paths
        x, y = x[order], y[order]
        points = shapely.points(x, y)
        tree = shapely.STRtree(points)
        grid_id[order] = _containing(tree, x, y, ref.grids, ref.grid_ids)
        zone_id[order] = _containing(tree, x, y, ref.zones, ref.zone_ids)
        if ref.vertex_tree is not None:
            nearest = ref.vertex_segment[_nearest_vertex(ref, points)]
            segment_id[order] = ref.segment_ids[nearest]
            border_m[order] = shapely.distance(points, ref.segments[nearest])
    return pd.DataFrame(
        {
            "grid_id": grid_id,
            "zone_id": zone_id,
            "segment_id": segment_id,
            "border_m": border_m,
            "h3": cells_for_points(lon, lat, resolution=resolution),
        }
    )


def region_srid(conn: psycopg.Connection) -> int | None:
    """EPSG code of the region's metric CRS (from prefectures, else grids, else segments); None when empty."""
    row = conn.execute(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT coalesce("
        " (SELECT ST_Extent(geom) FROM command_unit WHERE level = 'prefecture'),"
        " (SELECT ST_Extent(geom) FROM grid), (SELECT ST_Extent(geom) FROM border_segment),"
        " (SELECT ST_Extent(geom) FROM road)) AS e) x"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return local_metric_crs(tuple(float(v) for v in row)).to_epsg()
