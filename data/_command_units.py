"""Settlements, true grids and the four-level command units built bottom-up from grids."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ._geometry import WORK_CRS, clip_to, distance_to_line, kmeans, points_in
from ._names import NameMaker
from ._region import Outline
from ._scale import ScaleSpec

__all__ = ["CommandUnits", "build_command_units"]

PREFECTURE_CODE = "5399"
GRID_KIND_SEAT, GRID_KIND_TOWN, GRID_KIND_RURAL = "seat", "town", "rural"


@dataclass(frozen=True)
class CommandUnits:
    """Everything the generator derives from the grid seeds (work CRS)."""

    command_unit: gpd.GeoDataFrame  # code, name, name_en, level, parent_code, is_border
    police_area: gpd.GeoDataFrame  # code, name, name_en, station_code
    grid: gpd.GeoDataFrame  # truth: code, name, township_code, station_code, police_area_code, ...
    settlement: gpd.GeoDataFrame  # code, name, name_en, kind, households, population, township_code


def _coverage_union(geoms: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Union the grid polygons of each label 0..n-1 (grids share exact edges)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n + 1))
    return np.array(
        [shapely.coverage_union_all(geoms[order[bounds[i]:bounds[i + 1]]]) for i in range(n)], dtype=object
    )


def _cluster_center_points(samples: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Spread ``k`` points: the sample nearest to each k-means centroid (always inside)."""
    labels = kmeans(samples, k, rng)
    k = labels.max() + 1
    centroid = np.column_stack([np.bincount(labels, samples[:, i]) / np.bincount(labels) for i in (0, 1)])
    dist = np.hypot(*(samples - centroid[labels]).T)
    order = np.lexsort((dist, labels))
    first = order[np.searchsorted(labels[order], np.arange(k))]
    return samples[first]


def _hex_lattice(polygon: shapely.Polygon, n: int, rng: np.random.Generator) -> np.ndarray:
    """About ``n`` jittered hexagonal-lattice points inside ``polygon``."""
    spacing = np.sqrt(2.0 * polygon.area / (np.sqrt(3.0) * n))
    minx, miny, maxx, maxy = polygon.bounds
    ys = np.arange(miny, maxy, spacing * np.sqrt(3.0) / 2.0)
    xs = np.arange(minx, maxx, spacing)
    gx, gy = np.meshgrid(xs, ys)
    gx = gx + (np.arange(len(ys)) % 2)[:, None] * spacing / 2.0
    pts = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-0.35, 0.35, (gx.size, 2)) * spacing
    return pts[shapely.contains_xy(polygon, pts[:, 0], pts[:, 1])]


def _nearest(targets: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the nearest target point for each query point."""
    tree = shapely.STRtree(shapely.points(targets))
    src, dst = tree.query_nearest(shapely.points(queries), all_matches=False)
    out = np.empty(len(queries), dtype=np.int64)
    out[src] = dst
    return out


def _codes(parent: np.ndarray, seq: np.ndarray, width: int) -> np.ndarray:
    """Child codes: parent code followed by a zero-padded 1-based sequence number."""
    return np.array([f"{p}{s + 1:0{width}d}" for p, s in zip(parent, seq)], dtype=object)


def _seq_within(groups: np.ndarray) -> np.ndarray:
    """0-based running number of each element within its group, in input order."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.searchsorted(sorted_groups, sorted_groups)
    seq = np.empty(len(groups), dtype=np.int64)
    seq[order] = np.arange(len(groups)) - starts
    return seq


def _grid_seeds(spec: ScaleSpec, outline: Outline, towns: np.ndarray, seat: int, rng: np.random.Generator):
    """Seeds of the true grids: dense clusters at the towns, a lattice of villages elsewhere."""
    poly = outline.prefecture
    sizes = np.full(len(towns), spec.town_grids)
    sizes[seat] = spec.seat_grids
    sigma = 300.0 * np.sqrt(sizes)
    town_of = np.repeat(np.arange(len(towns)), sizes)
    town_pts = towns[town_of] + rng.normal(0.0, 1.0, (len(town_of), 2)) * sigma[town_of, None]
    rural = _hex_lattice(poly, spec.rural_grids, rng)
    near = _nearest(towns, rural)
    rural = rural[np.hypot(*(rural - towns[near]).T) > 1.6 * sigma[near]]
    seeds = np.vstack([towns, town_pts, rural])
    kind = np.array([GRID_KIND_TOWN] * (len(towns) + len(town_pts)) + [GRID_KIND_RURAL] * len(rural), dtype=object)
    township = np.concatenate([np.arange(len(towns)), town_of, _nearest(towns, rural)])
    kind[np.isin(township, [seat]) & (kind == GRID_KIND_TOWN)] = GRID_KIND_SEAT
    keep = shapely.contains_xy(poly, seeds[:, 0], seeds[:, 1])
    seeds, kind, township = seeds[keep], kind[keep], township[keep]
    _, first = np.unique(np.round(seeds, 1), axis=0, return_index=True)
    first = np.sort(first)
    return seeds[first], kind[first], township[first]


def build_command_units(
    spec: ScaleSpec, outline: Outline, names: NameMaker, rng: np.random.Generator
) -> CommandUnits:
    """Place towns and grids, then union grids into stations, townships, counties."""
    poly = outline.prefecture
    towns = _cluster_center_points(points_in(poly, 40 * spec.n_townships, rng), spec.n_townships, rng)
    n_town = len(towns)
    seat = int(np.argmin(np.hypot(*(towns - outline.center - [0.25 * outline.radius, 0.05 * outline.radius]).T)))
    county_of_town = kmeans(towns, spec.n_counties, rng)
    n_county = county_of_town.max() + 1

    seeds, grid_kind, township = _grid_seeds(spec, outline, towns, seat, rng)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=shapely.box(*poly.buffer(5000).bounds), ordered=True)
    )
    grid_geom = clip_to(cells, poly)
    n_grid = len(seeds)
    is_town = grid_kind != GRID_KIND_RURAL
    households = np.where(is_town, rng.integers(300, 501, n_grid), rng.integers(40, 261, n_grid))
    population = np.round(households * rng.uniform(2.8, 3.9, n_grid)).astype(np.int64)

    # ---- names and codes of the levels above the grid
    pref_name = names.take(1)[0]
    county_names = names.take(n_county)
    town_names = names.take(n_town)
    xiang = rng.random(n_town) < 0.3
    county_code = np.array([f"{PREFECTURE_CODE}{i + 1:02d}" for i in range(n_county)], dtype=object)
    township_code = _codes(county_code[county_of_town], _seq_within(county_of_town), 3)

    # ---- stations: border stations on the rural grids near the border, police stations elsewhere
    border_dist = distance_to_line(seeds, outline.border)
    band = (grid_kind == GRID_KIND_RURAL) & (border_dist <= max(0.12 * outline.radius, 3000.0))
    band_count = np.bincount(township[band], minlength=n_town)
    border_towns = np.flatnonzero(band_count >= 3)
    quota = np.zeros(n_town, dtype=np.int64)
    if border_towns.size:
        share = band_count[border_towns] / band_count[border_towns].sum() * spec.n_border_stations
        quota[border_towns] = np.maximum(1, np.floor(share)).astype(np.int64)
        extra = spec.n_border_stations - quota.sum()
        if extra > 0:
            quota[border_towns[np.argsort(-(share - np.floor(share)), kind="stable")[:extra]]] += 1
    station_of_grid = np.full(n_grid, -1, dtype=np.int64)
    stations: list[dict] = []
    for t in range(n_town):
        in_town = np.flatnonzero(township == t)
        banded = in_town[band[in_town]] if quota[t] else in_town[:0]
        inner = np.setdiff1d(in_town, banded)
        n_police = 3 if (t == seat and inner.size >= 60) else 1
        for is_border, members, k in ((False, inner, n_police), (True, banded, quota[t])):
            if members.size == 0:
                continue
            labels = kmeans(seeds[members], int(k), rng)
            for j in range(labels.max() + 1):
                station_of_grid[members[labels == j]] = len(stations)
                letter = "B" if is_border else "P"
                if not is_border and j == 0:
                    zh, en = town_names[t][0], town_names[t][1]
                else:
                    zh, en = names.take(1)[0]
                stations.append({
                    "code": f"{township_code[t]}{letter}{j + 1}",
                    "name": f"{zh}{'边境' if is_border else ''}派出所",
                    "name_en": f"{en} {'Border ' if is_border else ''}Police Station",
                    "parent_code": township_code[t],
                    "is_border": bool(is_border),
                })
    station_df = pd.DataFrame(stations)
    n_station = len(station_df)

    # ---- police areas: compact groups of ~5 grids within each station
    area_of_grid = np.full(n_grid, -1, dtype=np.int64)
    areas: list[dict] = []
    for s in range(n_station):
        members = np.flatnonzero(station_of_grid == s)
        labels = kmeans(seeds[members], max(1, round(members.size / 5)), rng)
        st = station_df.iloc[s]
        for j in range(labels.max() + 1):
            area_of_grid[members[labels == j]] = len(areas)
            areas.append({
                "code": f"{st['code']}-{j + 1:02d}",
                "name": f"{st['name']}第{j + 1}警务区",
                "name_en": f"{st['name_en']} Beat {j + 1}",
                "station_code": st["code"],
            })
    area_df = pd.DataFrame(areas)

    # ---- grids, villages, towns
    grid_seq = _seq_within(township)
    grid_code = _codes(township_code[township], grid_seq, 4 if np.bincount(township).max() >= 999 else 3)
    rural_idx = np.flatnonzero(~is_town)
    village_names = names.take(rural_idx.size, syllables=3 if rural_idx.size > 1500 else 2)
    grid_name = np.array([f"{town_names[t][0]}社区第{s + 1}网格" for t, s in zip(township, grid_seq)], dtype=object)
    grid_name[rural_idx] = [f"{zh}村网格" for zh, _ in village_names]
    grid = gpd.GeoDataFrame(
        {
            "code": grid_code,
            "name": grid_name,
            "township_code": township_code[township],
            "station_code": station_df["code"].to_numpy()[station_of_grid],
            "police_area_code": area_df["code"].to_numpy()[area_of_grid],
            "households": households,
            "population": population,
            "kind": grid_kind,
        },
        geometry=grid_geom,
        crs=WORK_CRS,
    )

    town_hh = np.bincount(township[is_town], households[is_town], minlength=n_town).astype(np.int64)
    town_pop = np.bincount(township[is_town], population[is_town], minlength=n_town).astype(np.int64)
    town_kind = np.where(np.arange(n_town) == seat, "seat", "town")
    settlement = gpd.GeoDataFrame(
        {
            "name": [f"{zh}镇" for zh, _ in town_names] + [f"{zh}村" for zh, _ in village_names],
            "name_en": [f"{en} Town" for _, en in town_names] + [f"{en} Village" for _, en in village_names],
            "kind": np.concatenate([town_kind, np.full(rural_idx.size, "village")]),
            "households": np.concatenate([town_hh, households[rural_idx]]),
            "population": np.concatenate([town_pop, population[rural_idx]]),
            "township_code": np.concatenate([township_code, township_code[township[rural_idx]]]),
        },
        geometry=shapely.points(np.vstack([towns, seeds[rural_idx]])),
        crs=WORK_CRS,
    )
    settlement.insert(0, "code", [f"ST{i + 1:05d}" for i in range(len(settlement))])

    # ---- command unit polygons, bottom-up
    station_geom = _coverage_union(grid_geom, station_of_grid, n_station)
    township_geom = _coverage_union(grid_geom, township, n_town)
    county_geom = _coverage_union(grid_geom, county_of_town[township], n_county)
    levels = [
        ("prefecture", [PREFECTURE_CODE], [f"{pref_name[0]}州"], [f"{pref_name[1]} Prefecture"], [None], [poly], [False]),
        ("county", county_code, [f"{zh}县" for zh, _ in county_names], [f"{en} County" for _, en in county_names],
         [PREFECTURE_CODE] * n_county, county_geom, [False] * n_county),
        ("township", township_code,
         [f"{zh}{'乡' if x else '镇'}" for (zh, _), x in zip(town_names, xiang)],
         [f"{en} {'Township' if x else 'Town'}" for (_, en), x in zip(town_names, xiang)],
         county_code[county_of_town], township_geom, [t in border_towns for t in range(n_town)]),
        ("station", station_df["code"], station_df["name"], station_df["name_en"], station_df["parent_code"],
         station_geom, station_df["is_border"]),
    ]
    command_unit = pd.concat(
        [
            gpd.GeoDataFrame(
                {"code": list(code), "name": list(name), "name_en": list(name_en), "level": level,
                 "parent_code": list(parent), "is_border": list(border)},
                geometry=list(geom), crs=WORK_CRS,
            )
            for level, code, name, name_en, parent, geom, border in levels
        ],
        ignore_index=True,
    )
    police_area = gpd.GeoDataFrame(
        area_df, geometry=_coverage_union(grid_geom, area_of_grid, len(area_df)), crs=WORK_CRS
    )
    return CommandUnits(command_unit=command_unit, police_area=police_area, grid=grid, settlement=settlement)
