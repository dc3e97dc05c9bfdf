"""Synthetic grid plans for the planner's benchmarks and tests: irregular faces grouped into grids.

Faces are the Voronoi cells of random points in a square (about 0.05 km² each); each grid holds the
faces nearest one seed point (a jittered lattice), so grids are contiguous, irregular and of
roughly equal size, like drawn ones. With
several townships, the seeds are split into a ``side × side`` block of townships; each township
has two police areas (east and west of its seeds' middle). Households vary by face (20-60), population
is 2.8 per household, workload a Poisson count of incidents (2 a face); each grid has enough grid workers.
"""
from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridwatch.geo.crs import WGS84, local_metric_crs
from gridwatch.geo.grid_fusion import _face_edges
from gridwatch.geo.plan import Plan
from gridwatch.geo.plan_faces import Blocks

__all__ = ["plan_township", "FACE_KM2"]

FACE_KM2 = 0.05


def plan_township(*, grids: int = 200, faces_per_grid: int = 10, townships_per_side: int = 1, seed: int = 0,
                  lon0: float = 100.5, lat0: float = 22.2) -> Plan:
    """A plan of ``grids`` grids of about ``faces_per_grid`` faces, in ``townships_per_side``² townships."""
    rng = np.random.default_rng(seed)
    n_faces = grids * faces_per_grid
    side_m = math.sqrt(n_faces * FACE_KM2) * 1000
    crs = local_metric_crs([lon0, lat0, lon0 + 0.01, lat0 + 0.01])
    centre = gpd.GeoSeries([shapely.Point(lon0, lat0)], crs=WGS84).to_crs(crs).iloc[0]
    box = shapely.box(centre.x, centre.y, centre.x + side_m, centre.y + side_m)
    points = shapely.points(rng.uniform([centre.x, centre.y], [centre.x + side_m, centre.y + side_m], (n_faces, 2)))
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(points), extend_to=box))
    faces = shapely.intersection(cells, box)
    faces = faces[shapely.area(faces) > 0]
    # seeds on a jittered lattice: grids of roughly equal size, as drawn ones are
    ny = max(1, round(math.sqrt(grids)))
    nx = math.ceil(grids / ny)
    gx, gy = np.meshgrid((np.arange(nx) + 0.5) / nx, (np.arange(ny) + 0.5) / ny)
    lattice = np.column_stack([gx.ravel(), gy.ravel()])[:grids] * side_m
    lattice += rng.normal(0, 0.15 * side_m / nx, lattice.shape)
    seeds = shapely.points(np.clip(lattice, 0, side_m) + [centre.x, centre.y])
    grid_of = shapely.STRtree(seeds).query_nearest(shapely.centroid(faces), all_matches=False)[1]
    xy = shapely.get_coordinates(seeds)
    t = townships_per_side
    col = np.minimum(((xy[:, 0] - centre.x) / side_m * t).astype(int), t - 1)
    row = np.minimum(((xy[:, 1] - centre.y) / side_m * t).astype(int), t - 1)
    town = np.char.add("T", (row * t + col).astype(str)).astype(object)
    middle = pd.Series(xy[:, 0]).groupby(town).transform("median").to_numpy()
    police = np.char.add(town.astype(str), np.where(xy[:, 0] < middle, "-W", "-E")).astype(object)
    codes = np.char.add(np.char.add(town.astype(str), "-"), np.char.zfill(np.arange(1, grids + 1).astype(str), 4))

    households = rng.integers(20, 61, len(faces)).astype(float)
    i, j, length, perimeter = _face_edges(faces)
    frame = gpd.GeoDataFrame({
        "face_id": np.arange(1, len(faces) + 1, dtype=np.int64), "township": town[grid_of],
        "police_area": police[grid_of], "source": np.arange(len(faces), dtype=np.int64),
        "households": households, "population": households * 2.8,
        "workload": rng.poisson(2.0, len(faces)).astype(float), "area_m2": shapely.area(faces),
        "perimeter_m": perimeter,
    }, geometry=gpd.GeoSeries(faces, crs=crs).to_crs(WGS84).values, crs=WGS84)
    population = np.bincount(grid_of, weights=frame["population"].to_numpy(), minlength=grids)
    attrs = pd.DataFrame({"township": town, "police_area": police,
                          "workers": np.ceil(population * 20 / 10_000).astype(int), "locked": False, "name": None},
                         index=pd.Index(codes.astype(object), name="code"))
    return Plan(Blocks(frame, (i, j, length)), codes.astype(object)[grid_of], attrs)
