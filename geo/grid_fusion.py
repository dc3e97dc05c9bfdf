"""Fuse the grids of several departments into one full-element grid layer.

The fusion works on the *planar arrangement* of all inputs: every source ring
and every township ring is noded together (snap-rounded to a 1 cm grid) and
polygonized into faces. Each face lies in exactly one township (or outside
all, and is dropped) and is covered by a known set of sources, so every rule
below is a vectorized table operation on faces, and the fused grids are
coverage unions of faces: neighbouring grids share identical edges by
construction.

Rules
-----
1. **Department rank.** Departments named in ``priority`` come first, in that
   order; the others follow by the area their grids cover inside the
   townships, largest first. The first department is the *base*.
2. **Claim.** A face covered by several sources goes to the source of the
   best-ranked department covering it (so where departments overlap the
   priority department, else the base, wins). Between overlapping sources of
   one department it goes to the source of which it is the largest share
   (face area / source area), then the lower source row.
3. **Pieces.** The claimed faces of one source inside one township form
   pieces (edge-connected). A piece smaller than ``sliver_area_m2``, whose
   mean width ``2·area/perimeter`` is below ``sliver_width_m``, or that holds
   less than ``min_piece_share`` of its source's area, is a sliver: a strip a
   lower-ranked department fills between the base's shifted edges, or the
   corner of a grid drawn across a township boundary, is not a grid.
   A source cut by a township boundary thus becomes one grid per township,
   and a tiny part across the boundary is a sliver.
4. **Absorption.** Slivers and holes (township ground no source covers) are
   absorbed, in passes, into the neighbouring non-sliver piece *of the same
   township* with the longest shared edge. Ground with no such neighbour at
   all (e.g. a township no department covers) becomes its own grid with no
   source (``name`` null, 0 households).
5. **Grids.** The pieces of one source in one township, with what they
   absorbed, form one fused grid (a MultiPolygon). Codes are the township
   code, ``-`` and a sequence number in reading order (north to south, then
   west to east, by centroid), zero-padded to at least 3 digits.
6. **Counts.** A source's households and population are spread evenly over
   its area; a fused grid sums the share of every face it holds *from the
   source that claimed that face*, so each piece of ground is counted once
   and absorbed slivers bring their people along; holes bring none. Values
   are rounded to integers; missing counts count as 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridwatch.geo.crs import (
    WGS84,
    _require_columns,
    _require_number,
    local_metric_crs,
    require_crs,
)
from gridwatch.geo.topology import _polygonal

__all__ = ["FusionError", "FusionReport", "FusionResult", "fuse_grids", "SOURCE_COLUMNS"]

#: Columns ``fuse_grids`` needs in ``sources``.
SOURCE_COLUMNS = ("department", "source_code", "name", "township_code", "households", "population")

#: Precision grid in metres: coordinates are snap-rounded to it so that shared
#: edges are identical.
GRID_SIZE_M = 0.01

_NO_SOURCE = -1


class FusionError(ValueError):
    """The inputs cannot be fused (bad options or no usable geometry)."""


@dataclass
class FusionReport:
    """What :func:`fuse_grids` did; areas in m² of the metric CRS ``crs``.

    Attributes
    ----------
    departments : list of str
        Department rank used for claims, base first.
    base : str
        The base department.
    sources, fused : int
        Number of source rows and of fused grids.
    overlaps_resolved, overlap_area_m2
        Faces (pieces of the arrangement) covered by more than one source.
    slivers_absorbed, sliver_area_m2
        Sliver pieces absorbed into a neighbour.
    holes_filled, hole_area_m2
        Uncovered pieces of townships absorbed into a neighbour.
    unassigned, unassigned_area_m2
        Grids made of uncovered ground that had no neighbour to join.
    repaired, dropped
        Sources repaired by ``make_valid``; sources left with no area.
    outside_area_m2
        Source ground outside every township (not fused).
    split_by_township
        Sources that became grids in more than one township.
    township_mismatches
        Sources whose ``township_code`` is not the township holding most of
        the ground they won.
    faces, crs, seconds
        Arrangement size, metric CRS used, wall time.
    department_area_m2 : dict
        Ground inside the townships each department covers.
    """

    departments: list[str]
    base: str
    sources: int
    fused: int
    overlaps_resolved: int = 0
    overlap_area_m2: float = 0.0
    slivers_absorbed: int = 0
    sliver_area_m2: float = 0.0
    holes_filled: int = 0
    hole_area_m2: float = 0.0
    unassigned: int = 0
    unassigned_area_m2: float = 0.0
    repaired: int = 0
    dropped: int = 0
    outside_area_m2: float = 0.0
    split_by_township: int = 0
    township_mismatches: int = 0
    faces: int = 0
    crs: str = ""
    seconds: float = 0.0
    department_area_m2: dict[str, float] = field(default_factory=dict)


@dataclass
class FusionResult:
    """Fused grids (EPSG:4326), their lineage and the report."""

    grids: gpd.GeoDataFrame
    lineage: pd.DataFrame
    report: FusionReport


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #


def _validate(
    sources: gpd.GeoDataFrame, townships: gpd.GeoDataFrame, priority: Sequence[str]
) -> list[str]:
    require_crs(sources, name="sources")
    require_crs(townships, name="townships")
    _require_columns(sources, SOURCE_COLUMNS, name="sources")
    _require_columns(townships, ["code"], name="townships")
    if len(sources) == 0:
        raise FusionError("sources is empty: there is nothing to fuse")
    if len(townships) == 0:
        raise FusionError("townships is empty: fused grids need townships to tile")
    if townships["code"].isna().any():
        raise FusionError("townships has rows with a null code")
    dup = townships["code"][townships["code"].duplicated()].astype(str).unique().tolist()
    if dup:
        raise FusionError(f"townships has duplicate codes {dup}; each code must be unique")
    if sources["department"].isna().any() or sources["source_code"].isna().any():
        raise FusionError("sources has rows with a null department or source_code")
    dup = sources[sources.duplicated(["department", "source_code"])]
    if len(dup):
        pairs = list(dup[["department", "source_code"]].astype(str).itertuples(index=False, name=None))
        raise FusionError(f"sources has duplicate (department, source_code) pairs {pairs[:10]}")
    if isinstance(priority, str):
        raise FusionError(
            f"`priority` was the string {priority!r} but must be a sequence of department names, "
            f"e.g. ({priority!r},)"
        )
    allowed = sorted(sources["department"].astype(str).unique())
    priority = [str(d) for d in priority]
    unknown = [d for d in priority if d not in allowed]
    if unknown:
        raise FusionError(f"`priority` names unknown department(s) {unknown}; allowed: {allowed}")
    if len(set(priority)) != len(priority):
        raise FusionError(f"`priority` was {priority} but names a department twice")
    return priority


# --------------------------------------------------------------------------- #
# array helpers
# --------------------------------------------------------------------------- #


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of an undirected graph, as labels 0..k-1.

    Vectorized min-label hooking with pointer jumping (a few passes).
    """
    label = np.arange(n)
    while True:
        la, lb = label[a], label[b]
        low = np.minimum(la, lb)
        new = label.copy()
        np.minimum.at(new, la, low)
        np.minimum.at(new, lb, low)
        while True:  # pointer jumping
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            break
        label = new
    return np.unique(label, return_inverse=True)[1]


def _group_union(geoms: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Coverage-union ``geoms`` per ``group`` (0..n_groups-1) in one C call."""
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(order)) - np.repeat(starts, counts)
    matrix = np.full((n_groups, max(int(counts.max()), 1)), None, dtype=object)
    matrix[group[order], col] = geoms[order]
    return shapely.coverage_union_all(matrix, axis=1)


def _face_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared edges between faces of one noded arrangement.

    Returns ``(i, j, length, perimeter)``: face pairs ``i < j`` sharing an
    edge, the summed length of their shared edges, and each face's perimeter.
    Faces of a polygonized arrangement share identical segments, so matching
    segments by their (snapped) end points finds every shared edge.
    """
    rings, ring_face = shapely.get_rings(faces, return_index=True)
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    same = ring_of[:-1] == ring_of[1:]
    p0, p1 = coords[:-1][same], coords[1:][same]
    seg_face = ring_face[ring_of[:-1][same]]
    seg_len = np.hypot(*(p1 - p0).T)
    perimeter = np.bincount(seg_face, weights=seg_len, minlength=len(faces))
    # each snapped point as one integer, in (x, y) order (a county spans far fewer than 3e9 steps)
    q = np.rint(coords / GRID_SIZE_M).astype(np.int64)
    q -= q.min(axis=0) if len(q) else 0
    point = q[:, 0] * (q[:, 1].max(initial=0) + 1) + q[:, 1]
    a, b = point[:-1][same], point[1:][same]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((seg_face, hi, lo))
    lo, hi = lo[order], hi[order]
    twin = np.flatnonzero((lo[1:] == lo[:-1]) & (hi[1:] == hi[:-1]))
    fa, fb = seg_face[order][twin], seg_face[order][twin + 1]
    length = seg_len[order][twin]
    keep = fa != fb
    i, j = np.minimum(fa, fb)[keep], np.maximum(fa, fb)[keep]
    n = len(faces)
    pair = pd.Series(length[keep]).groupby(i * n + j, sort=True).sum()
    key = pair.index.to_numpy()
    return key // n, key % n, pair.to_numpy(), perimeter


def _first_per_group(group: np.ndarray, *sort_keys: np.ndarray) -> np.ndarray:
    """Index of the first row of each group after sorting by ``sort_keys``."""
    order = np.lexsort(tuple(reversed(sort_keys)) + (group,))
    first = np.ones(len(order), dtype=bool)
    first[1:] = group[order][1:] != group[order][:-1]
    return order[first]


# --------------------------------------------------------------------------- #
# fusion
# --------------------------------------------------------------------------- #


def fuse_grids(
    sources: gpd.GeoDataFrame,
    townships: gpd.GeoDataFrame,
    *,
    priority: Sequence[str] = (),
    sliver_area_m2: float = 2_000.0,
    sliver_width_m: float = 5.0,
    min_piece_share: float = 0.3,
) -> FusionResult:
    """Fuse departmental grids into one grid layer tiling every township.

    See the module docstring for the rules (rank, claim, slivers, holes,
    codes, household weighting).

    Parameters
    ----------
    sources : GeoDataFrame
        All departments' grids: columns ``department``, ``source_code``,
        ``name``, ``township_code`` (may be null; only checked),
        ``households``, ``population``, polygon geometry, any CRS. Invalid
        geometries are repaired with ``shapely.make_valid``.
    townships : GeoDataFrame
        Columns ``code`` and polygon geometry, any CRS.
    priority : sequence of str
        Departments that win overlaps, strongest first.
    sliver_area_m2 : float
        Pieces smaller than this are absorbed into a neighbour.
    sliver_width_m : float
        Pieces whose mean width ``2·area/perimeter`` is below this are
        absorbed too (long thin strips left by shifted edges); 0 disables.
    min_piece_share : float
        Pieces holding less than this fraction of their source grid's area
        are absorbed too; 0 disables.

    Returns
    -------
    FusionResult
        ``grids`` (EPSG:4326; code, name, township_code, households,
        population, MultiPolygon geometry), ``lineage`` (grid_code,
        department, source_code, share, area_m2, primary) and ``report``.
    """
    started = time.perf_counter()
    priority = _validate(sources, townships, priority)
    sliver_area = _require_number(sliver_area_m2, name="sliver_area_m2", minimum=0)
    sliver_width = _require_number(sliver_width_m, name="sliver_width_m", minimum=0)
    min_share = _require_number(min_piece_share, name="min_piece_share", minimum=0)

    crs = local_metric_crs(townships)
    src = sources.reset_index(drop=True)
    dept = src["department"].astype(str).to_numpy()
    scode = src["source_code"].astype(str).to_numpy()

    # 1. clean geometry: repair, keep polygons, snap to the precision grid ----
    sg = src.geometry.to_crs(crs).to_numpy()
    invalid = ~shapely.is_valid(sg) & ~shapely.is_missing(sg)
    sg = np.where(invalid, shapely.make_valid(sg), sg)
    sg = shapely.set_precision(_polygonal(sg), GRID_SIZE_M)
    tg = townships.geometry.to_crs(crs).to_numpy()
    tg = shapely.set_precision(_polygonal(shapely.make_valid(tg)), GRID_SIZE_M)
    tcode = townships["code"].astype(str).to_numpy()
    s_area = shapely.area(sg)
    usable = s_area > 0

    # 2. planar arrangement --------------------------------------------------
    lines = shapely.boundary(np.concatenate([sg[usable], tg[shapely.area(tg) > 0]]))
    noded = shapely.union_all(lines, grid_size=GRID_SIZE_M)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    points = shapely.point_on_surface(faces)

    # each face to one township (faces outside every township are dropped)
    f_idx, t_idx = shapely.STRtree(tg).query(points, predicate="intersects")
    first = _first_per_group(f_idx, t_idx)
    inside = f_idx[first]
    face_t = t_idx[first]
    faces, points = faces[inside], points[inside]
    f_area = shapely.area(faces)
    n_faces = len(faces)

    if n_faces == 0:
        raise FusionError("townships have no area: there is no ground to tile")

    # sources covering each face (index pairs)
    pf, ps = shapely.STRtree(sg).query(points, predicate="intersects")
    pf_area = f_area[pf]

    # 3. rank departments and claim faces ---------------------------------------
    pair_dept, dept_names = pd.factorize(dept[ps], sort=True)
    n_dept = max(len(dept_names), 1)
    dept_face = np.unique(pf * n_dept + pair_dept)
    dept_area = np.bincount(dept_face % n_dept, weights=f_area[dept_face // n_dept], minlength=len(dept_names))
    area_of = dict(zip(dept_names.tolist(), dept_area.tolist()))
    for name in np.unique(dept):
        area_of.setdefault(str(name), 0.0)
    rest = sorted((d for d in area_of if d not in priority), key=lambda d: (-area_of[d], d))
    ranking = list(priority) + rest
    rank_of = {d: r for r, d in enumerate(ranking)}
    pair_rank = np.array([rank_of[d] for d in dept_names], dtype=np.int64)[pair_dept]
    share = pf_area / s_area[ps]
    winner = _first_per_group(pf, pair_rank, -share, ps)
    claim = np.full(n_faces, _NO_SOURCE, dtype=np.int64)
    claim[pf[winner]] = ps[winner]
    n_cover = np.bincount(pf, minlength=n_faces)

    # 4. pieces: edge-connected faces with the same (township, claim) ------------
    ei, ej, elen, f_perim = _face_edges(faces)
    label = face_t * (len(sg) + 1) + (claim + 1)
    same = label[ei] == label[ej]
    comp = _components(n_faces, ei[same], ej[same])
    n_comp = int(comp.max()) + 1 if n_faces else 0
    c_area = np.bincount(comp, weights=f_area, minlength=n_comp)
    inner = np.bincount(comp[ei[same]], weights=elen[same], minlength=n_comp)
    c_perim = np.bincount(comp, weights=f_perim, minlength=n_comp) - 2 * inner
    c_claim = np.full(n_comp, _NO_SOURCE, dtype=np.int64)
    c_claim[comp] = claim
    c_town = np.zeros(n_comp, dtype=np.int64)
    c_town[comp] = face_t
    hole = c_claim == _NO_SOURCE
    width = 2 * c_area / np.maximum(c_perim, 1e-9)
    c_share = c_area / s_area[np.maximum(c_claim, 0)]
    sliver = ~hole & ((c_area < sliver_area) | (width < sliver_width) | (c_share < min_share))

    # 5. absorb slivers and holes into the neighbour with the longest edge ------
    ca, cb = comp[ei[~same]], comp[ej[~same]]
    adjacent = c_town[ca] == c_town[cb]
    adj = pd.DataFrame({"a": ca[adjacent], "b": cb[adjacent], "length": elen[~same][adjacent]})
    adj = pd.concat([adj, adj.rename(columns={"a": "b", "b": "a"})], ignore_index=True)
    adj = adj.groupby(["a", "b"], as_index=False)["length"].sum()
    a_, b_, l_ = adj["a"].to_numpy(), adj["b"].to_numpy(), adj["length"].to_numpy()
    owner = np.where(hole | sliver, -1, np.arange(n_comp))
    while True:
        open_ = (owner[a_] < 0) & (owner[b_] >= 0)
        if not open_.any():
            break
        cand = pd.DataFrame({"a": a_[open_], "o": owner[b_[open_]], "length": l_[open_]})
        cand = cand.groupby(["a", "o"], as_index=False)["length"].sum()
        best = _first_per_group(cand["a"].to_numpy(), -cand["length"].to_numpy(), cand["o"].to_numpy())
        owner[cand["a"].to_numpy()[best]] = cand["o"].to_numpy()[best]
    # leftovers with no non-sliver neighbour: connected leftovers form a grid
    left = owner < 0
    absorbed = (owner >= 0) & (owner != np.arange(n_comp))
    link = left[a_] & left[b_]
    sub = _components(n_comp, a_[link], b_[link])
    lead = np.full(n_comp, n_comp, dtype=np.int64)
    np.minimum.at(lead, sub, np.arange(n_comp))
    owner[left] = lead[sub[left]]

    # 6. fused grids: one per (township, claimed source) of the owners ------
    o_claim, o_town = c_claim[owner], c_town[owner]
    o_key = np.where(o_claim >= 0, o_claim, -1 - owner)  # leftovers keep their own key
    grid_key = o_town[comp] * (2 * n_comp + len(sg) + 2) + (o_key[comp] + n_comp + 1)
    uniq, grid_of_face = np.unique(grid_key, return_inverse=True)
    n_grids = len(uniq)
    g_geom = _group_union(faces, grid_of_face, n_grids)
    g_town = np.zeros(n_grids, dtype=np.int64)
    g_town[grid_of_face] = o_town[comp]
    g_claim = np.full(n_grids, _NO_SOURCE, dtype=np.int64)
    g_claim[grid_of_face] = o_claim[comp]

    # households / population from the claiming source of each face
    claimed = claim >= 0
    weight = np.where(claimed, f_area / s_area[np.maximum(claim, 0)], 0.0)
    counts = {}
    for col in ("households", "population"):
        values = pd.to_numeric(src[col], errors="coerce").fillna(0).to_numpy(dtype=float)
        per_face = np.where(claimed, values[np.maximum(claim, 0)], 0.0) * weight
        counts[col] = np.rint(np.bincount(grid_of_face, weights=per_face, minlength=n_grids)).astype(np.int64)

    # codes in reading order inside each township
    centroid = shapely.get_coordinates(shapely.centroid(g_geom))
    order = np.lexsort((np.rint(centroid[:, 0]), -np.rint(centroid[:, 1]), tcode[g_town]))
    seq = np.empty(n_grids, dtype=np.int64)
    town_sorted = g_town[order]
    start = np.r_[0, np.flatnonzero(town_sorted[1:] != town_sorted[:-1]) + 1]
    seq[order] = np.arange(n_grids) - np.repeat(start, np.diff(np.r_[start, n_grids])) + 1
    digits = max(3, len(str(int(seq.max())))) if n_grids else 3
    codes = np.char.add(np.char.add(tcode[g_town].astype(str), "-"), np.char.zfill(seq.astype(str), digits))
    names = np.where(g_claim >= 0, src["name"].to_numpy(dtype=object)[np.maximum(g_claim, 0)], None)

    geometry = gpd.GeoSeries(_polygonal(g_geom), crs=crs).to_crs(WGS84)
    grids = gpd.GeoDataFrame(
        {
            "code": codes.astype(object),
            "name": names,
            "township_code": tcode[g_town].astype(object),
            "households": counts["households"],
            "population": counts["population"],
        },
        geometry=geometry.values,
        crs=WGS84,
    )
    grids = grids.iloc[np.argsort(codes, kind="stable")].reset_index(drop=True)

    # 7. lineage: area of each fused grid covered by each source ---------------
    lin = pd.DataFrame({"grid": grid_of_face[pf], "source": ps, "area_m2": pf_area})
    lin = lin.groupby(["grid", "source"], as_index=False)["area_m2"].sum()
    g_area = np.bincount(grid_of_face, weights=f_area, minlength=n_grids)
    lin = lin[lin["area_m2"] >= 1.0]
    g = lin["grid"].to_numpy()
    s = lin["source"].to_numpy()
    lineage = pd.DataFrame(
        {
            "grid_code": codes[g].astype(object),
            "department": dept[s].astype(object),
            "source_code": scode[s].astype(object),
            "share": lin["area_m2"].to_numpy() / g_area[g],
            "area_m2": lin["area_m2"].to_numpy(),
            "primary": g_claim[g] == s,
        }
    ).sort_values(["grid_code", "share"], ascending=[True, False], ignore_index=True)

    # 8. report -----------------------------------------------------------------
    overlap_faces = np.flatnonzero(n_cover > 1)
    src_towns = pd.DataFrame({"s": claim[claimed], "t": face_t[claimed], "a": f_area[claimed]})
    main_town = (
        src_towns.groupby(["s", "t"], as_index=False)["a"].sum()
        .sort_values(["s", "a", "t"], ascending=[True, False, True])
        .drop_duplicates("s")
    )
    stated = src["township_code"].astype("string").fillna("").to_numpy(dtype=object)
    stated = stated[main_town["s"].to_numpy()]
    mismatch = (stated != "") & (stated != tcode[main_town["t"].to_numpy()])
    grids_per_source = np.bincount(g_claim[g_claim >= 0], minlength=len(sg))
    report = FusionReport(
        departments=ranking,
        base=ranking[0],
        sources=len(src),
        fused=n_grids,
        overlaps_resolved=int(len(overlap_faces)),
        overlap_area_m2=float(f_area[overlap_faces].sum()),
        slivers_absorbed=int((sliver & absorbed).sum()),
        sliver_area_m2=float(c_area[sliver & absorbed].sum()),
        holes_filled=int((hole & absorbed).sum()),
        hole_area_m2=float(c_area[hole & absorbed].sum()),
        unassigned=int((g_claim < 0).sum()),
        unassigned_area_m2=float(g_area[g_claim < 0].sum()),
        repaired=int(invalid.sum()),
        dropped=int((~usable).sum()),
        outside_area_m2=float(max(s_area.sum() - np.bincount(ps, weights=pf_area, minlength=len(sg)).sum(), 0.0)),
        split_by_township=int((grids_per_source > 1).sum()),
        township_mismatches=int(np.sum(mismatch)),
        faces=n_faces,
        crs=crs.to_string(),
        seconds=time.perf_counter() - started,
        department_area_m2={d: area_of[d] for d in ranking},
    )
    return FusionResult(grids=grids, lineage=lineage, report=report)
