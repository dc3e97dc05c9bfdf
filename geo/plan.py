"""A grid plan: faces (the building blocks) assigned to grids, and the edits a planner makes.

A :class:`Plan` holds the faces of one or more townships (:class:`~gridwatch.geo.plan_faces.Blocks`),
the grid code of every face, and the grids' own attributes (township, police area,
workers, locked, name). Every edit returns a new plan and the codes it changed;
:func:`apply` runs an edit, checks the rules (:mod:`gridwatch.geo.plan_rules`) and
refuses it when it breaks a hard rule on a grid it touched.

Painting, merging and reassigning change assignments only. Splitting by a line
and reshaping by a polygon cut the faces they cross into new faces (ids below
zero until they are saved; households, population and workload split by area),
and the new faces' shared edges are measured against their neighbours.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from gridwatch.geo.crs import WGS84, local_metric_crs
from gridwatch.geo.plan_faces import Blocks, touching_edges
from gridwatch.geo.topology import _polygonal

__all__ = ["Plan", "EditRefused", "Outcome", "GRID_COLUMNS", "paint", "merge", "split", "reshape", "reassign",
           "lock", "set_workers", "adopt", "apply", "grid_geometries", "new_code"]

#: Columns of :attr:`Plan.grids` (indexed by grid code).
GRID_COLUMNS = ("township", "police_area", "workers", "locked", "name")

_MEASURES = ("households", "population", "workload")


class EditRefused(ValueError):
    """An edit that cannot be made; the message says why."""


@dataclass
class Plan:
    """Faces, the grid each one belongs to (None: no grid), and the grids' attributes."""

    blocks: Blocks
    grid: np.ndarray
    grids: pd.DataFrame

    def copy(self) -> Plan:
        return Plan(self.blocks, self.grid.copy(), self.grids.copy())

    @property
    def faces(self) -> gpd.GeoDataFrame:
        return self.blocks.faces

    def faces_of(self, codes: Iterable[str]) -> np.ndarray:
        """Positions of the faces of the grids ``codes``."""
        return np.flatnonzero(np.isin(self.grid.astype(str), list(codes)) & pd.notna(self.grid))

    def positions(self, face_ids: Iterable[int]) -> np.ndarray:
        """Positions of the faces with these ids (unknown ids are ignored)."""
        return np.flatnonzero(np.isin(self.faces["face_id"].to_numpy(), np.asarray(list(face_ids), dtype=np.int64)))


@dataclass
class Outcome:
    """What :func:`apply` gives back: the plan (the old one when refused), the changed codes, the problems."""

    plan: Plan
    changed: list[str]
    problems: list = field(default_factory=list)
    refused: str | None = None


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def _require_grids(plan: Plan, codes: Sequence[str]) -> None:
    unknown = [c for c in codes if c not in plan.grids.index]
    if unknown:
        raise EditRefused(f"unknown grid(s) {unknown}")


def _unlocked(plan: Plan, codes: Sequence[str], verb: str) -> None:
    locked = [c for c in codes if bool(plan.grids.at[c, "locked"])]
    if locked:
        raise EditRefused(f"grid(s) {locked} are locked: unlock them to {verb}")


def new_code(plan: Plan, township: str, taken: Iterable[str] = ()) -> str:
    """The next free grid code ``TOWNSHIP-NNN`` in a township."""
    used = set(plan.grids.index.astype(str)) | set(taken)
    pattern = re.compile(rf"^{re.escape(township)}-(\d+)$")
    numbers = [int(m.group(1)) for m in map(pattern.match, used) if m]
    width = max([3] + [len(m.group(1)) for m in map(pattern.match, used) if m])
    return f"{township}-{max(numbers, default=0) + 1:0{width}d}"


def grid_geometries(plan: Plan, codes: Sequence[str] | None = None) -> gpd.GeoSeries:
    """The grids' geometries (unions of their faces), lon/lat, indexed by code."""
    codes = list(plan.grids.index if codes is None else codes)
    at = plan.faces_of(codes)
    if len(at) == 0:
        return gpd.GeoSeries([], crs=WGS84, dtype="geometry")
    group, uniques = pd.factorize(plan.grid[at])
    geoms = plan.faces.geometry.to_numpy()[at]
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    matrix = np.full((len(uniques), counts.max()), None, dtype=object)
    matrix[group[order], np.arange(len(order)) - np.repeat(starts, counts)] = geoms[order]
    union = _polygonal(shapely.union_all(matrix, axis=1, grid_size=1e-9))
    return gpd.GeoSeries(union, index=pd.Index(uniques, name="code"), crs=WGS84)


def _metric(plan: Plan) -> object:
    return local_metric_crs(plan.faces)


def _with_faces(plan: Plan, drop: np.ndarray, new: gpd.GeoDataFrame, new_grid: np.ndarray) -> Plan:
    """A plan whose faces ``drop`` (positions) are replaced by ``new`` (lon/lat; ids given below)."""
    faces = plan.faces
    low = min(int(faces["face_id"].min()), 0)
    new = new.assign(face_id=np.arange(low - 1, low - 1 - len(new), -1, dtype=np.int64))
    keep = np.setdiff1d(np.arange(len(faces)), drop)
    remap = np.full(len(faces), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    i, j, length = plan.blocks.edges
    alive = (remap[i] >= 0) & (remap[j] >= 0)
    merged = pd.concat([faces.iloc[keep], new[list(faces.columns)]], ignore_index=True)
    merged = gpd.GeoDataFrame(merged, geometry="geometry", crs=WGS84)
    crs = _metric(plan)
    metric = merged.geometry.to_crs(crs).to_numpy()
    ni, nj, nl = touching_edges(metric, np.arange(len(keep), len(merged)))
    edges = (np.r_[remap[i[alive]], ni], np.r_[remap[j[alive]], nj], np.r_[length[alive], nl])
    grid = np.r_[plan.grid[keep], new_grid].astype(object)
    return Plan(Blocks(merged, edges), grid, plan.grids.copy())


def _cut(plan: Plan, at: np.ndarray, pieces_metric: np.ndarray, piece_of: np.ndarray, crs: object) -> gpd.GeoDataFrame:
    """New face rows for ``pieces_metric`` cut from the faces at positions ``at[piece_of]``: counts by area."""
    parent = plan.faces.iloc[at[piece_of]].reset_index(drop=True)
    area = shapely.area(pieces_metric)
    share = area / np.maximum(parent["area_m2"].to_numpy(dtype=float), 1e-9)
    rows = parent.drop(columns="geometry").copy()
    for column in _MEASURES:
        rows[column] = rows[column].to_numpy(dtype=float) * share
    rows["area_m2"] = area
    rows["perimeter_m"] = shapely.length(pieces_metric)
    return gpd.GeoDataFrame(rows, geometry=gpd.GeoSeries(pieces_metric, crs=crs).to_crs(WGS84).values, crs=WGS84)


def _metric_shape(shape: BaseGeometry, crs: object) -> BaseGeometry:
    return gpd.GeoSeries([shape], crs=WGS84).to_crs(crs).iloc[0]


# --------------------------------------------------------------------------- #
# edits: each returns (plan, changed codes)
# --------------------------------------------------------------------------- #


def paint(plan: Plan, face_ids: Iterable[int], code: str) -> tuple[Plan, list[str]]:
    """Give the faces ``face_ids`` to grid ``code``; faces of locked grids stay where they are."""
    _require_grids(plan, [code])
    _unlocked(plan, [code], "paint into them")
    at = plan.positions(face_ids)
    current = plan.grid[at]
    locked = set(plan.grids.index[plan.grids["locked"].astype(bool)])
    at = at[~pd.Series(current).isin(locked).to_numpy() & (current != code)]
    out = plan.copy()
    changed = sorted({str(c) for c in plan.grid[at] if c is not None} | ({code} if len(at) else set()))
    out.grid[at] = code
    return out, changed


def merge(plan: Plan, codes: Sequence[str]) -> tuple[Plan, list[str]]:
    """Merge the grids ``codes`` into the first; its attributes stay, workers add up."""
    codes = list(dict.fromkeys(codes))
    if len(codes) < 2:
        raise EditRefused("select at least two grids to merge")
    _require_grids(plan, codes)
    _unlocked(plan, codes, "merge them")
    out = plan.copy()
    out.grid[plan.faces_of(codes[1:])] = codes[0]
    out.grids.at[codes[0], "workers"] = int(pd.to_numeric(plan.grids.loc[codes, "workers"]).fillna(0).sum())
    out.grids = out.grids.drop(index=codes[1:])
    return out, codes


def split(plan: Plan, code: str, line: BaseGeometry) -> tuple[Plan, list[str]]:
    """Split grid ``code`` along ``line`` (lon/lat): the largest part keeps the code, the others get new ones."""
    _require_grids(plan, [code])
    _unlocked(plan, [code], "split them")
    if not isinstance(line, BaseGeometry) or line.geom_type not in ("LineString", "MultiLineString") or line.is_empty:
        raise EditRefused("a split needs a line")
    crs = _metric(plan)
    cutter = _metric_shape(line, crs)
    at = plan.faces_of([code])
    metric = plan.faces.geometry.iloc[at].to_crs(crs).to_numpy()
    whole = shapely.union_all(metric, grid_size=0.001)
    parts = shapely.get_parts(shapely.polygonize(shapely.get_parts(
        shapely.union_all([shapely.boundary(whole), cutter], grid_size=0.001))))
    parts = parts[shapely.contains(whole, shapely.point_on_surface(parts)) & (shapely.area(parts) > 0.01)]
    if len(parts) < 2:
        raise EditRefused(f"the line does not cross grid {code} from side to side")
    crossed = shapely.intersects(metric, cutter) & ~shapely.touches(metric, cutter)
    cut_at = at[crossed]
    # cut every crossed face by the line; each piece goes to the part holding it
    pieces, piece_of = [], []
    for k, face in enumerate(metric[crossed]):  # the few faces one line crosses
        bits = shapely.get_parts(shapely.polygonize(shapely.get_parts(
            shapely.union_all([shapely.boundary(face), shapely.intersection(cutter, face)], grid_size=0.001))))
        bits = bits[shapely.contains(face, shapely.point_on_surface(bits))] if len(bits) else bits
        pieces += list(bits if len(bits) else [face])
        piece_of += [k] * max(len(bits), 1)
    pieces = np.array(pieces, dtype=object)
    new = _cut(plan, cut_at, pieces, np.array(piece_of, dtype=np.int64), crs)
    out = _with_faces(plan, cut_at, new, np.full(len(new), code, dtype=object))
    # parts: largest keeps the code
    order = np.argsort(-shapely.area(parts))
    points = shapely.point_on_surface(out.faces.geometry.iloc[out.faces_of([code])].to_crs(crs).to_numpy())
    mine = out.faces_of([code])
    part_of = np.full(len(mine), 0)
    f, p = shapely.STRtree(parts[order]).query(points, predicate="within")
    part_of[f] = p
    township = str(plan.grids.at[code, "township"])
    changed = [code]
    for rank in range(1, len(parts)):
        fresh = new_code(out, township)
        out.grids.loc[fresh] = {**plan.grids.loc[code].to_dict(), "workers": 0, "name": None}
        out.grid[mine[part_of == rank]] = fresh
        changed.append(fresh)
    return out, changed


def reshape(plan: Plan, code: str, polygon: BaseGeometry) -> tuple[Plan, list[str]]:
    """Give the ground of ``polygon`` (lon/lat) inside grid ``code``'s township and police area to it.

    Faces partly inside are cut at the polygon's edge; faces of locked grids stay.
    """
    _require_grids(plan, [code])
    _unlocked(plan, [code], "reshape into them")
    if not isinstance(polygon, BaseGeometry) or polygon.geom_type not in ("Polygon", "MultiPolygon") or polygon.is_empty:
        raise EditRefused("a reshape needs a polygon")
    crs = _metric(plan)
    shape = shapely.make_valid(_metric_shape(polygon, crs))
    row = plan.grids.loc[code]
    faces = plan.faces
    locked = set(plan.grids.index[plan.grids["locked"].astype(bool)])
    free = (faces["township"].to_numpy() == row["township"]) & ~pd.Series(plan.grid).isin(locked | {code}).to_numpy()
    if pd.notna(row["police_area"]):
        free &= faces["police_area"].to_numpy() == row["police_area"]
    candidates = np.flatnonzero(free)
    metric = faces.geometry.iloc[candidates].to_crs(crs).to_numpy()
    overlap = shapely.area(shapely.intersection(metric, shape, grid_size=0.001))
    area = shapely.area(metric)
    if not (overlap > 0.01).any():
        in_town = shapely.intersects(
            shapely.union_all(faces.geometry.iloc[np.flatnonzero(faces["township"].to_numpy() == row["township"])]
                              .to_crs(crs).to_numpy(), grid_size=0.01), shape)
        raise EditRefused(f"the polygon takes no ground from grid {code}'s neighbours" if in_town
                          else f"the polygon lies outside township {row['township']}")
    whole = candidates[overlap >= area - 0.01]
    partial_k = np.flatnonzero((overlap > 0.01) & (overlap < area - 0.01))
    out = plan.copy()
    changed = sorted({str(c) for c in plan.grid[whole] if c is not None} | {code})
    out.grid[whole] = code
    if len(partial_k):
        part = metric[partial_k]
        inside = _polygonal(shapely.intersection(part, shape, grid_size=0.001))
        outside = _polygonal(shapely.difference(part, shape, grid_size=0.001))
        pieces = np.concatenate([inside, outside])
        piece_of = np.r_[np.arange(len(part)), np.arange(len(part))]
        keep = shapely.area(pieces) > 0.01
        at = candidates[partial_k]
        new = _cut(plan, at, pieces[keep], piece_of[keep], crs)
        owner = np.r_[np.full(len(part), code, dtype=object), plan.grid[at]][keep]
        changed = sorted(set(changed) | {str(c) for c in plan.grid[at] if c is not None})
        out = _with_faces(out, at, new, owner)
    return out, changed


def reassign(plan: Plan, code: str, *, township: str | None = None, police_area: str | None = None) -> tuple[Plan, list[str]]:
    """Set the township and/or police area grid ``code`` belongs to."""
    _require_grids(plan, [code])
    _unlocked(plan, [code], "reassign them")
    out = plan.copy()
    if township is not None:
        out.grids.at[code, "township"] = township
    if police_area is not None:
        out.grids.at[code, "police_area"] = police_area
    return out, [code]


def lock(plan: Plan, codes: Sequence[str], locked: bool = True) -> tuple[Plan, list[str]]:
    """Lock (or unlock) grids: painting, merging, splitting and rebalancing leave locked grids alone."""
    _require_grids(plan, codes)
    out = plan.copy()
    out.grids.loc[list(codes), "locked"] = bool(locked)
    return out, list(codes)


def set_workers(plan: Plan, code: str, workers: int) -> tuple[Plan, list[str]]:
    """Set the number of grid workers of grid ``code``."""
    _require_grids(plan, [code])
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 0:
        raise EditRefused(f"workers was {workers!r} but must be a whole number, 0 or more")
    out = plan.copy()
    out.grids.at[code, "workers"] = int(workers)
    return out, [code]


def adopt(plan: Plan, proposed: Plan) -> tuple[Plan, list[str]]:
    """Take a proposed plan of the same faces (a rebalancing): its assignment and its grids' workers."""
    if proposed.blocks is not plan.blocks:
        raise EditRefused("the proposal was made for other faces: propose again")
    changed = sorted({str(c) for c in np.r_[plan.grid[plan.grid != proposed.grid],
                                            proposed.grid[plan.grid != proposed.grid]] if c is not None})
    out = plan.copy()
    out.grid = proposed.grid.copy()
    out.grids["workers"] = proposed.grids["workers"].reindex(out.grids.index).fillna(out.grids["workers"])
    return out, changed


def apply(plan: Plan, edit: Callable[[Plan], tuple[Plan, list[str]]], *, check: Callable,
          before: list | None = None) -> Outcome:
    """Run ``edit`` on ``plan``; refuse it (keeping ``plan``) when ``check`` finds a new hard problem.

    ``check(plan)`` returns the plan's problems (:func:`gridwatch.geo.plan_rules.check_plan`);
    ``before`` are ``plan``'s, when known. A hard problem that stood before the edit does not refuse it.
    """
    before = check(plan) if before is None else before
    try:
        edited, changed = edit(plan)
    except EditRefused as refusal:
        return Outcome(plan, [], before, str(refusal))
    # a grid left with no face is gone
    edited.grids = edited.grids[edited.grids.index.isin(pd.unique(edited.grid[pd.notna(edited.grid)]))]
    problems = check(edited)
    stood = {(p.kind, p.codes) for p in before if p.hard}
    new_hard = [p for p in problems if p.hard and (p.kind, p.codes) not in stood]
    if new_hard:
        return Outcome(plan, [], before, "; ".join(p.text() for p in new_hard[:3]))
    return Outcome(edited, changed, problems)
