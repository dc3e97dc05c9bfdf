"""Grid topology and balance checks: grids must tile their parent units.

Every check collects all problems and returns them as :class:`Violation`
records; :func:`assert_tiling` raises :class:`TopologyError` listing them all.
Areas are computed in a local metric CRS (see :mod:`gridwatch.geo.crs`), and the pair
and containment tests run on a shapely STRtree, never a pairwise loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from gridwatch.geo.crs import _require_columns, _require_number, local_metric_crs, require_crs

__all__ = [
    "Violation",
    "TopologyError",
    "VIOLATION_KINDS",
    "check_tiling",
    "assert_tiling",
    "balance",
]

#: Every ``Violation.kind`` this module produces, in report order.
VIOLATION_KINDS = (
    "empty",
    "invalid",
    "unknown_parent",
    "outside_parent",
    "crosses_parent",
    "overlap",
    "gap",
    "multipart_sliver",
    "households_below",
    "households_above",
)

_POLYGON = 3


@dataclass(frozen=True)
class Violation:
    """One broken rule.

    Attributes
    ----------
    kind : str
        One of :data:`VIOLATION_KINDS`.
    codes : tuple of str
        The grids involved (for ``gap``: the parent's code).
    area_m2 : float
        Area of the offending piece in m² (0 where it has none).
    geometry : shapely geometry or None
        The offending piece, in the CRS of the checked grids.
    detail : str
        A short human-readable explanation.
    """

    kind: str
    codes: tuple[str, ...]
    area_m2: float
    geometry: BaseGeometry | None = field(default=None, repr=False, compare=False)
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {', '.join(self.codes)} ({self.area_m2:,.1f} m²){': ' + self.detail if self.detail else ''}"


class TopologyError(ValueError):
    """Grids do not tile their parents; ``violations`` holds every problem."""

    def __init__(self, violations: Sequence[Violation], *, limit: int = 20) -> None:
        self.violations = list(violations)
        counts = Counter(v.kind for v in self.violations)  # in report order
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        lines = [f"{len(self.violations)} topology violation(s): {summary}"]
        lines += [f"  - {v}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- #
# array helpers (used by geo.grid_fusion too)
# --------------------------------------------------------------------------- #


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep the polygonal parts of each geometry as a MultiPolygon.

    Points and lines (for example left by ``make_valid``) are dropped; a
    geometry without polygonal parts becomes an empty MultiPolygon.
    """
    geoms = np.asarray(geoms, dtype=object)
    parts, index = shapely.get_parts(geoms, return_index=True)
    # a GeometryCollection may hold MultiPolygons: flatten a second level
    parts, index2 = shapely.get_parts(parts, return_index=True)
    index = index[index2]
    keep = (shapely.get_type_id(parts) == _POLYGON) & (shapely.area(parts) > 0)
    out = np.empty(len(geoms), dtype=object)
    shapely.multipolygons(parts[keep], indices=index[keep], out=out)
    missing = shapely.is_missing(out)
    out[missing] = shapely.from_wkt("MULTIPOLYGON EMPTY")
    return out


def _metric_geoms(
    frame: gpd.GeoDataFrame, crs: object, *, name: str
) -> np.ndarray:
    require_crs(frame, name=name)
    return frame.geometry.to_crs(crs).to_numpy()


# --------------------------------------------------------------------------- #
# tiling
# --------------------------------------------------------------------------- #


def check_tiling(
    grids: gpd.GeoDataFrame,
    parents: gpd.GeoDataFrame,
    *,
    parent_key: str = "township_code",
    grid_code: str = "code",
    parent_code: str = "code",
    tolerance_m2: float = 1.0,
    tolerance_m: float = 0.05,
    sliver_area_m2: float = 2_000.0,
) -> list[Violation]:
    """Collect every way in which ``grids`` fail to tile their ``parents``.

    Checks: empty and invalid geometries, grids whose parent code is unknown,
    grids (partly) outside their parent, overlaps between grids, gaps inside
    each parent not covered by its grids, and multipart grids with a part
    smaller than ``sliver_area_m2``.

    Parameters
    ----------
    grids : GeoDataFrame
        Columns ``grid_code``, ``parent_key`` and geometry (any CRS).
    parents : GeoDataFrame
        Columns ``parent_code`` and geometry (any CRS).
    parent_key : str
        Column of ``grids`` naming each grid's parent.
    grid_code, parent_code : str
        Code columns of ``grids`` and ``parents``.
    tolerance_m2 : float
        Overlaps, gaps and outside parts up to this area are ignored.
    tolerance_m : float
        Overlaps, gaps and outside parts thinner than this on average
        (``2·area/perimeter``) are ignored too: they are the trace of
        coordinate precision along long shared edges, not topology errors.
    sliver_area_m2 : float
        A part of a multipart grid smaller than this is a sliver.

    Returns
    -------
    list of Violation
        Sorted by kind (in :data:`VIOLATION_KINDS` order), then codes; empty
        when the grids tile their parents.
    """
    require_crs(grids, name="grids")
    require_crs(parents, name="parents")
    _require_columns(grids, [grid_code, parent_key], name="grids")
    _require_columns(parents, [parent_code], name="parents")
    tol = _require_number(tolerance_m2, name="tolerance_m2", minimum=0)
    width = _require_number(tolerance_m, name="tolerance_m", minimum=0)

    def significant(pieces: np.ndarray) -> np.ndarray:
        """Pieces above both tolerances: area, and mean width."""
        area = shapely.area(pieces)
        perimeter = shapely.length(pieces)
        return (area > tol) & (2 * area > width * np.maximum(perimeter, 1e-12))
    sliver = _require_number(sliver_area_m2, name="sliver_area_m2", minimum=0)

    crs = local_metric_crs(parents if len(parents) else grids)
    g = _metric_geoms(grids, crs, name="grids")
    p = _metric_geoms(parents, crs, name="parents")
    gcode = grids[grid_code].astype(str).to_numpy()
    gparent = grids[parent_key].astype("string").to_numpy(na_value="<null>")
    pcode = parents[parent_code].astype(str).to_numpy()
    out: list[Violation] = []

    # empty / invalid ----------------------------------------------------------
    empty = shapely.is_missing(g) | shapely.is_empty(g)
    out += [Violation("empty", (c,), 0.0, None, "geometry is empty or missing") for c in gcode[empty]]
    valid = shapely.is_valid(g)
    bad = ~empty & ~valid
    reasons = shapely.is_valid_reason(g[bad])
    out += [
        Violation("invalid", (c,), float(a), geom, str(r))
        for c, a, geom, r in zip(gcode[bad], shapely.area(g[bad]), g[bad], reasons)
    ]
    g = _polygonal(np.where(bad, shapely.make_valid(g), g))  # missing -> empty
    ok = ~empty
    pvalid = shapely.make_valid(p)

    # parent containment -----------------------------------------------------
    parent_index = pd.Series(np.arange(len(pcode)), index=pcode)
    parent_index = parent_index[~parent_index.index.duplicated()]
    pidx = parent_index.reindex(gparent).to_numpy()
    unknown = ok & np.isnan(pidx)
    out += [
        Violation("unknown_parent", (c,), float(a), None, f"{parent_key}={k!r} is not among {parent_code} of parents")
        for c, k, a in zip(gcode[unknown], gparent[unknown], shapely.area(g[unknown]))
    ]
    known = ok & ~np.isnan(pidx)
    ki = np.flatnonzero(known)
    kp = pidx[known].astype(np.int64)
    outside = _polygonal(shapely.difference(g[ki], pvalid[kp]))
    pieces, piece_owner = shapely.get_parts(outside, return_index=True)
    kept = significant(pieces)
    out_area = np.bincount(piece_owner[kept], weights=shapely.area(pieces[kept]), minlength=len(ki))
    grid_area = shapely.area(g[ki])
    flag = out_area > tol
    for i, j, geom, a, ga in zip(ki[flag], kp[flag], outside[flag], out_area[flag], grid_area[flag]):
        kind = "outside_parent" if a >= ga - tol else "crosses_parent"
        out.append(Violation(kind, (gcode[i],), float(a), geom, f"{a:,.1f} m² outside {pcode[j]}"))

    # overlaps between grids: none when they form a valid coverage (no two interiors meet and
    # neighbours share their edges vertex for vertex), else the pairs whose interiors meet ------
    coverage = bool(shapely.coverage_is_valid(g[ok]))
    left, right = np.empty((2, 0), dtype=np.intp) if coverage else shapely.STRtree(g).query(g, predicate="intersects")
    keep = (left < right) & ok[left] & ok[right]
    left, right = left[keep], right[keep]
    meet = shapely.relate_pattern(g[left], g[right], "2********")
    left, right = left[meet], right[meet]
    inter = shapely.intersection(g[left], g[right])
    inter = _polygonal(inter)
    ia = shapely.area(inter)
    flag = significant(inter)
    out += [
        Violation("overlap", tuple(sorted((gcode[a], gcode[b]))), float(area), geom, "grids overlap")
        for a, b, area, geom in zip(left[flag], right[flag], ia[flag], inter[flag])
    ]

    # gaps inside each parent ---------------------------------------------------
    covered = np.full(len(pcode), None, dtype=object)
    if len(ki):
        order = np.argsort(kp, kind="stable")
        groups, starts, counts = np.unique(kp[order], return_index=True, return_counts=True)
        matrix = np.full((len(groups), counts.max()), None, dtype=object)
        col = np.arange(len(order)) - np.repeat(starts, counts)
        matrix[np.repeat(np.arange(len(groups)), counts), col] = g[ki][order]
        union = shapely.coverage_union_all if coverage else shapely.union_all
        covered[groups] = union(matrix, axis=1)
    covered = np.where(shapely.is_missing(covered), shapely.from_wkt("POLYGON EMPTY"), covered)
    gaps = _polygonal(shapely.difference(pvalid, covered))
    parts, owner = shapely.get_parts(gaps, return_index=True)
    pa = shapely.area(parts)
    flag = significant(parts)
    out += [
        Violation("gap", (pcode[j],), float(a), geom, f"ground of {pcode[j]} covered by no grid")
        for j, a, geom in zip(owner[flag], pa[flag], parts[flag])
    ]

    # multipart slivers ---------------------------------------------------------
    parts, owner = shapely.get_parts(g, return_index=True)
    nparts = np.bincount(owner, minlength=len(g))
    pa = shapely.area(parts)
    flag = (nparts[owner] > 1) & (pa < sliver)
    out += [
        Violation("multipart_sliver", (gcode[i],), float(a), geom, f"part of {a:,.1f} m² < {sliver:g} m²")
        for i, a, geom in zip(owner[flag], pa[flag], parts[flag])
    ]

    return _sorted_in_crs(out, grids.crs, crs)


def _sorted_in_crs(violations: list[Violation], target: object, metric: object) -> list[Violation]:
    """Sort violations and bring their geometries back to the grids' CRS."""
    order = {k: i for i, k in enumerate(VIOLATION_KINDS)}
    violations = sorted(violations, key=lambda v: (order[v.kind], v.codes, -v.area_m2))
    geoms = np.array([v.geometry for v in violations], dtype=object)
    has = ~shapely.is_missing(geoms) if len(geoms) else np.zeros(0, bool)
    if has.any():
        geoms[has] = gpd.GeoSeries(geoms[has], crs=metric).to_crs(target).to_numpy()
    return [
        Violation(v.kind, v.codes, v.area_m2, geom, v.detail) for v, geom in zip(violations, geoms)
    ]


def assert_tiling(
    grids: gpd.GeoDataFrame,
    parents: gpd.GeoDataFrame,
    *,
    parent_key: str = "township_code",
    grid_code: str = "code",
    parent_code: str = "code",
    tolerance_m2: float = 1.0,
    tolerance_m: float = 0.05,
    sliver_area_m2: float = 2_000.0,
) -> None:
    """Raise :class:`TopologyError` listing every violation of :func:`check_tiling`.

    Parameters are those of :func:`check_tiling`.

    Raises
    ------
    TopologyError
        When there is at least one violation; its ``violations`` holds all.
    """
    violations = check_tiling(
        grids,
        parents,
        parent_key=parent_key,
        grid_code=grid_code,
        parent_code=parent_code,
        tolerance_m2=tolerance_m2,
        tolerance_m=tolerance_m,
        sliver_area_m2=sliver_area_m2,
    )
    if violations:
        raise TopologyError(violations)


# --------------------------------------------------------------------------- #
# balance
# --------------------------------------------------------------------------- #


def balance(
    grids: gpd.GeoDataFrame,
    *,
    households: tuple[float, float] = (300, 500),
    column: str = "households",
    grid_code: str = "code",
) -> list[Violation]:
    """Flag grids whose household count lies outside the band.

    Parameters
    ----------
    grids : GeoDataFrame
        Columns ``grid_code`` and ``column``.
    households : (low, high)
        Inclusive band of acceptable households per grid.
    column, grid_code : str
        The household and code columns.

    Returns
    -------
    list of Violation
        ``households_below`` / ``households_above`` (a missing count counts as
        below), with the grid geometry and ``area_m2`` = 0.
    """
    _require_columns(grids, [grid_code, column], name="grids")
    try:
        low, high = (float(v) for v in households)
    except (TypeError, ValueError):
        raise ValueError(f"`households` was {households!r} but must be a (low, high) pair") from None
    if not (0 <= low <= high):
        raise ValueError(f"`households` was {households!r} but must satisfy 0 <= low <= high")
    values = pd.to_numeric(grids[column], errors="coerce").to_numpy(dtype=float)
    codes = grids[grid_code].astype(str).to_numpy()
    geoms = grids.geometry.to_numpy() if isinstance(grids, gpd.GeoDataFrame) else np.full(len(grids), None)
    below = ~(values >= low)  # NaN counts as below
    above = values > high
    out = [
        Violation("households_below", (c,), 0.0, g, f"{column}={v:g} < {low:g}" if np.isfinite(v) else f"{column} missing")
        for c, v, g in zip(codes[below], values[below], geoms[below])
    ]
    out += [
        Violation("households_above", (c,), 0.0, g, f"{column}={v:g} > {high:g}")
        for c, v, g in zip(codes[above], values[above], geoms[above])
    ]
    return sorted(out, key=lambda v: (v.kind, v.codes))
