"""Departmental grid layers that disagree with the true grids the way real deliveries do."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from gridwatch.geo.crs_guess import outside_area_of_use

__all__ = ["DEPARTMENTS", "Department", "department_grids"]

TRUTH_COLUMNS = ("code", "name", "township_code", "households", "population")
# What a department whose projected zone cannot hold the region (a province wider than one
# Gauss-Krüger zone) delivers in instead: CGCS2000 longitude/latitude.
LONLAT_CRS = "EPSG:4490"


@dataclass(frozen=True)
class Department:
    """One department's delivery: file, CRS, encoding and its own column names."""

    name: str
    path: str
    layer: str | None
    crs: str  # what it delivers in, where the region lies in that CRS's area of use (else LONLAT_CRS)
    encoding: str
    columns: dict[str, str]  # target field -> the department's column
    drop: float  # share of grids missing (holes)
    merge: float  # share of grids merged with a neighbour
    split: float  # share of grids cut in two


DEPARTMENTS = (
    Department("civil_affairs", "grids/civil_affairs.shp", None, "EPSG:4542", "gbk",
               {"source_code": "WGBM", "name": "WGMC", "township_code": "XZBM", "households": "HS", "population": "RK"},
               drop=0.01, merge=0.03, split=0.0),
    Department("housing", "grids/housing.geojson", None, "EPSG:4326", "utf-8",
               {"source_code": "grid_id", "name": "grid_name", "township_code": "town_code", "households": "hh",
                "population": "pop"},
               drop=0.015, merge=0.0, split=0.03),
    Department("emergency", "grids/emergency.gpkg", "yj_grid", "EPSG:4490", "utf-8",
               {"source_code": "grid_code", "name": "grid_nm", "township_code": "township",
                "households": "households_n", "population": "pop_total"},
               drop=0.01, merge=0.02, split=0.02),
)


def _merge(grid: gpd.GeoDataFrame, share: float, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """Merge a share of grids with one neighbour in the same township."""
    geoms = grid.geometry.to_numpy()
    picked = np.flatnonzero(rng.random(len(grid)) < share)
    src, dst = shapely.STRtree(geoms).query(geoms[picked], predicate="intersects")
    i, j = picked[src], dst
    town = grid["township_code"].to_numpy()
    keep = (i != j) & (town[i] == town[j])
    i, j = i[keep], j[keep]
    _, first = np.unique(i, return_index=True)
    i, j = i[first], j[first]
    _, first = np.unique(j, return_index=True)  # each neighbour absorbed once
    i, j = i[first], j[first]
    ok = ~np.isin(j, i) & ~np.isin(i, j)
    i, j = i[ok], j[ok]
    out = grid.copy()
    out.loc[out.index[i], "geometry"] = shapely.union(geoms[i], geoms[j])
    for col in ("households", "population"):
        out.loc[out.index[i], col] = grid[col].to_numpy()[i] + grid[col].to_numpy()[j]
    return out.drop(index=out.index[j])


def _split(grid: gpd.GeoDataFrame, share: float, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """Cut a share of grids in two by a line through the centroid."""
    picked = rng.random(len(grid)) < share
    part = grid[picked]
    geoms = part.geometry.to_numpy()
    c = shapely.get_coordinates(shapely.centroid(geoms))
    angle = rng.uniform(0, np.pi, len(part))
    d = np.column_stack([np.cos(angle), np.sin(angle)]) * 1e5
    nrm = np.column_stack([-d[:, 1], d[:, 0]])
    half = shapely.polygons(np.stack([c + d, c + d + nrm, c - d + nrm, c - d, c + d], axis=1))
    a, b = shapely.intersection(geoms, half), shapely.difference(geoms, half)
    ratio = shapely.area(a) / np.maximum(shapely.area(geoms), 1e-9)
    first, second = part.copy(), part.copy()
    first["geometry"], second["geometry"] = a, b
    first["code"] = first["code"] + "A"
    second["code"] = second["code"] + "B"
    for col in ("households", "population"):
        first[col] = np.round(part[col].to_numpy() * ratio).astype(np.int64)
        second[col] = part[col].to_numpy() - first[col].to_numpy()
    pieces = pd.concat([first, second])
    pieces = pieces[~shapely.is_empty(pieces.geometry.to_numpy())]
    return pd.concat([grid[~picked], pieces])


def _move_each(geoms: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Shift every polygon by its own small offset (edges no longer shared)."""
    coords, idx = shapely.get_coordinates(geoms, return_index=True)
    offset = rng.normal(0.0, sigma, (len(geoms), 2))
    return shapely.set_coordinates(geoms.copy(), coords + offset[idx])


def _jitter_vertices(geoms: np.ndarray, spacing: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Densify and wobble each polygon's vertices by its own wave field (shared edges drift apart).

    The offset is a function of the vertex position, so closed rings stay closed.
    """
    dense = shapely.segmentize(geoms, spacing)
    coords, idx = shapely.get_coordinates(dense, return_index=True)
    freq = rng.uniform(-1.0, 1.0, (len(geoms), 2, 2)) / 200.0
    phase = rng.uniform(0.0, 2 * np.pi, (len(geoms), 2))
    wave = np.sin(np.einsum("nij,nj->ni", freq[idx], coords - coords.mean(axis=0)) + phase[idx])
    return shapely.set_coordinates(dense, coords + sigma * wave)


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Valid polygonal geometries (collapsed pieces dropped)."""
    return shapely.make_valid(geoms, method="structure", keep_collapsed=False)


def _delivery_crs(grids: gpd.GeoDataFrame, dept: Department) -> str:
    """``dept.crs``, or :data:`LONLAT_CRS` when ``grids`` reach past where ``dept.crs`` is used."""
    bounds = grids.to_crs(dept.crs).total_bounds
    return LONLAT_CRS if outside_area_of_use(tuple(bounds), pyproj.CRS(dept.crs)) else dept.crs


def department_grids(truth: gpd.GeoDataFrame, dept: Department, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """The grid layer ``dept`` would deliver for the true grids (its own columns, in its CRS:
    ``dept.crs`` where the region lies in that CRS's area of use, else :data:`LONLAT_CRS`)."""
    grid = truth[list(TRUTH_COLUMNS) + ["geometry"]].reset_index(drop=True)
    grid = grid[rng.random(len(grid)) >= dept.drop]
    if dept.name == "emergency":  # one township was never mapped by this department
        towns = np.unique(grid["township_code"])
        grid = grid[grid["township_code"] != towns[rng.integers(len(towns))]]
    if dept.merge:
        grid = _merge(grid.reset_index(drop=True), dept.merge, rng)
    if dept.split:
        grid = _split(grid.reset_index(drop=True), dept.split, rng)
    grid = grid.sort_values("code", kind="stable").reset_index(drop=True)
    geoms = grid.geometry.to_numpy()
    if dept.name == "civil_affairs":
        geoms = shapely.simplify(_move_each(geoms, 12.0, rng), 5.0)
        codes, names = grid["code"], grid["name"]
    elif dept.name == "housing":
        geoms = _jitter_vertices(geoms, 150.0, 8.0, rng)
        codes = pd.Series([f"FJ{i:06d}" for i in rng.permutation(len(grid)) + 1])
        names = grid["name"].str.replace("网格", "片区", regex=False)
        grid["households"] = np.round(grid["households"] * rng.uniform(0.95, 1.05, len(grid))).astype(np.int64)
    else:
        geoms = shapely.set_precision(shapely.transform(geoms, lambda c: c + [30.0, -20.0]), 25.0)  # datum-like shift
        seq = grid.groupby("township_code").cumcount().to_numpy() + 1
        codes = pd.Series("YJ-" + grid["township_code"].to_numpy().astype(str)) + "-" + pd.Series(seq).astype(str).str.zfill(4)
        names = grid["name"].str.replace("网格", "应急网格", regex=False)
    out = gpd.GeoDataFrame(
        {
            dept.columns["source_code"]: codes.to_numpy(),
            dept.columns["name"]: names.to_numpy(),
            dept.columns["township_code"]: grid["township_code"].to_numpy(),
            dept.columns["households"]: grid["households"].astype("Int64").to_numpy(),
            dept.columns["population"]: grid["population"].astype("Int64").to_numpy(),
        },
        geometry=_polygonal(geoms),
        crs=truth.crs,
    )
    if dept.name == "emergency":  # some counts were never filled in
        blank = rng.random(len(out)) < 0.1
        out.loc[blank, [dept.columns["households"], dept.columns["population"]]] = pd.NA
    out = out[~out.geometry.is_empty]
    return out.to_crs(_delivery_crs(out, dept))
