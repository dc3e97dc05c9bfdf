"""The planner's building blocks: the faces of a township's planar arrangement.

The rings of a township, of the grids in it, of the police areas and of the
departments' source grids are noded together in lon/lat, where their edges are
straight (snap-rounded to 1e-7°, about 1 cm), and polygonized. Each face then lies in one
grid, one police area and (at most) one smallest source polygon, so a grid is a
union of faces and every planner edit is a change of the faces' assignment.

A grid's households and population are spread over its faces by the density of
the smallest source polygon holding each face (the grid's own density where
none does), scaled so that the faces of a grid sum to the grid's counts exactly.
The shared edges between faces and each face's perimeter are read from the
arrangement itself (identical noded segments), in metres.
"""
from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridwatch.geo.crs import WGS84, _require_columns, local_metric_crs, require_crs
from gridwatch.geo.grid_fusion import GRID_SIZE_M, _face_edges, _first_per_group
from gridwatch.geo.topology import _polygonal

__all__ = ["Blocks", "township_faces", "touching_edges", "FACE_COLUMNS", "GRID_SIZE_DEG"]

#: Precision grid of the arrangement in degrees (about 1 cm).
GRID_SIZE_DEG = 1e-7

#: Columns of :attr:`Blocks.faces`, besides ``geometry``.
FACE_COLUMNS = ("face_id", "township", "police_area", "source", "households", "population", "workload",
                "area_m2", "perimeter_m")


@dataclass
class Blocks:
    """Faces of one or more townships and the edges they share.

    ``faces`` has :data:`FACE_COLUMNS` and an EPSG:4326 geometry; ``edges`` are
    positional face pairs ``(i, j, length_m)`` with ``i < j``.
    """

    faces: gpd.GeoDataFrame
    edges: tuple[np.ndarray, np.ndarray, np.ndarray]

    def __len__(self) -> int:
        return len(self.faces)


def township_faces(
    township: shapely.Geometry,
    grids: gpd.GeoDataFrame,
    police_areas: gpd.GeoDataFrame,
    sources: gpd.GeoDataFrame | None = None,
    *,
    township_code: str,
    sliver_area_m2: float = 2_000.0,
) -> tuple[gpd.GeoDataFrame, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The faces of one township (EPSG:4326 in and out) and their shared edges.

    Parameters
    ----------
    township : shapely geometry
        The township's polygon, lon/lat.
    grids : GeoDataFrame
        Columns ``code``, ``households``, ``population``; the township's grids.
    police_areas : GeoDataFrame
        Column ``code``; the police areas touching the township.
    sources : GeoDataFrame, optional
        Columns ``source_id``, ``households``; departmental source grids touching it.
    township_code : str
        The township's code, written to every face.
    sliver_area_m2 : float
        A face in no grid smaller than this (a sliver left where a grid's edge and the township's
        nearly meet) joins the neighbouring grid it shares the longest edge with; larger ones stay
        ground in no grid (a gap).

    Returns
    -------
    (faces, edges)
        ``faces`` with columns ``grid`` (the code of the grid holding it, None
        for ground no grid covers) and :data:`FACE_COLUMNS` but ``face_id`` and
        ``workload``; ``edges`` as in :class:`Blocks`.
    """
    for frame, name in ((grids, "grids"), (police_areas, "police_areas")):
        require_crs(frame, name=name)
    _require_columns(grids, ["code", "households", "population"], name="grids")
    _require_columns(police_areas, ["code"], name="police_areas")
    # noded in lon/lat, where the inputs' edges are straight; measured in metres
    crs = local_metric_crs(gpd.GeoSeries([township], crs=WGS84))
    town = _polygonal(shapely.make_valid(np.array([township], dtype=object)))[0]
    g = _polygonal(shapely.make_valid(grids.geometry.to_crs(WGS84).to_numpy()))
    p = _polygonal(shapely.make_valid(police_areas.geometry.to_crs(WGS84).to_numpy()))
    s = (_polygonal(shapely.make_valid(sources.geometry.to_crs(WGS84).to_numpy()))
         if sources is not None and len(sources) else np.empty(0, dtype=object))
    rings = np.concatenate([[town], g, p, shapely.intersection(s, shapely.buffer(town, GRID_SIZE_DEG * 100))])
    noded = shapely.union_all(shapely.boundary(_polygonal(rings)), grid_size=GRID_SIZE_DEG)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    inner = shapely.point_on_surface(faces)
    keep = shapely.contains(town, inner)
    faces, inner = faces[keep], inner[keep]
    metric = gpd.GeoSeries(faces, crs=WGS84).to_crs(crs).to_numpy()
    area = shapely.area(metric)
    faces, inner, metric, area = faces[area > 0], inner[area > 0], metric[area > 0], area[area > 0]

    def first_holder(polygons: np.ndarray, *, smallest: bool = False) -> np.ndarray:
        """Index of the polygon holding each face's inner point (the smallest one), -1 for none."""
        out = np.full(len(faces), -1, dtype=np.int64)
        if len(polygons) == 0:
            return out
        f, k = shapely.STRtree(polygons).query(inner, predicate="within")
        if len(f):
            key = shapely.area(polygons)[k] if smallest else k.astype(float)
            pick = _first_per_group(f, key, k)
            out[f[pick]] = k[pick]
        return out

    gi, pi, si = first_holder(g), first_holder(p), first_holder(s, smallest=True)
    i, j, length, perimeter = _face_edges(metric)  # shared vertices are identical after the transform too
    gi = _absorbed(gi, area, (i, j, length), sliver_area_m2)
    codes = grids["code"].astype(str).to_numpy(dtype=object)
    frame = pd.DataFrame({
        "grid": np.where(gi >= 0, codes[np.maximum(gi, 0)], None),
        "township": township_code,
        "police_area": np.where(pi >= 0, police_areas["code"].astype(str).to_numpy(dtype=object)[np.maximum(pi, 0)],
                                None),
        "source": np.where(si >= 0, sources["source_id"].to_numpy()[np.maximum(si, 0)], -1) if len(s) else -1,
        "area_m2": area,
    })
    frame["source"] = frame["source"].astype(np.int64)
    # counts: grid totals spread by the density of the source holding each face
    g_area = shapely.area(gpd.GeoSeries(g, crs=WGS84).to_crs(crs).to_numpy())
    for column in ("households", "population"):
        total = pd.to_numeric(grids[column], errors="coerce").fillna(0).to_numpy(dtype=float)
        own = np.divide(total, g_area, out=np.zeros_like(total), where=g_area > 0)
        density = own[np.maximum(gi, 0)]
        if len(s) and column in sources:
            s_value = pd.to_numeric(sources[column], errors="coerce").fillna(0).to_numpy(dtype=float)
            s_density = s_value / np.maximum(shapely.area(gpd.GeoSeries(s, crs=WGS84).to_crs(crs).to_numpy()), 1e-9)
            density = np.where(si >= 0, s_density[np.maximum(si, 0)], density)
        weight = np.where(gi >= 0, area * density, 0.0)
        per_grid = np.bincount(np.maximum(gi, 0), weights=weight, minlength=len(g))
        scale = np.divide(total, per_grid, out=np.zeros_like(total), where=per_grid > 0)
        spread = weight * scale[np.maximum(gi, 0)]
        # a grid whose faces all weigh 0 (no density anywhere) spreads by area
        flat = (per_grid <= 0) & (total > 0)
        by_area = np.bincount(np.maximum(gi, 0), weights=np.where(gi >= 0, area, 0.0), minlength=len(g))
        spread = np.where((gi >= 0) & flat[np.maximum(gi, 0)],
                          area * np.divide(total, by_area, out=np.zeros_like(total), where=by_area > 0)[np.maximum(gi, 0)],
                          spread)
        frame[column] = spread
    frame["perimeter_m"] = perimeter
    out = gpd.GeoDataFrame(frame, geometry=faces, crs=WGS84)
    return out, (i, j, length)


def _absorbed(grid: np.ndarray, area: np.ndarray, edges: tuple[np.ndarray, np.ndarray, np.ndarray],
              sliver_area_m2: float) -> np.ndarray:
    """``grid`` (holder index per face, -1 none) with small ungridded faces given to the neighbour
    grid of the longest shared edge, pass by pass (a sliver may touch a grid only through another)."""
    grid = grid.copy()
    i, j, length = edges
    a, b, w = np.r_[i, j], np.r_[j, i], np.r_[length, length]
    for _ in range(20):
        free = (grid[a] < 0) & (area[a] < sliver_area_m2) & (grid[b] >= 0)
        if not free.any():
            break
        cand = pd.DataFrame({"face": a[free], "grid": grid[b[free]], "length": w[free]})
        cand = cand.groupby(["face", "grid"], as_index=False)["length"].sum()
        best = cand.loc[cand.groupby("face")["length"].idxmax()]
        grid[best["face"].to_numpy()] = best["grid"].to_numpy()
    return grid


def touching_edges(
    geoms: np.ndarray, among: np.ndarray, *, tolerance_m: float = GRID_SIZE_M
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared edges between the faces ``among`` (positions) and all ``geoms`` (metric CRS).

    For faces made by an edit, whose vertices need not match their neighbours'
    exactly: two faces share an edge where their boundaries overlap, measured
    on the ``tolerance_m`` precision grid. Returns ``(i, j, length_m)``, ``i < j``.
    """
    if len(among) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms[among], predicate="intersects")
    a = among[a]
    keep = a != b
    a, b = a[keep], b[keep]
    i, j = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(np.column_stack([i, j]), axis=0) if len(i) else np.empty((0, 2), np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    shared = shapely.intersection(shapely.boundary(geoms[i]), shapely.boundary(geoms[j]), grid_size=tolerance_m)
    length = shapely.length(shared)
    keep = length > tolerance_m
    return i[keep].astype(np.int64), j[keep].astype(np.int64), length[keep]
