"""The rules a grid plan must meet, checked together on the faces, and the plan's score.

Every rule is a table operation over the faces (sums with ``bincount``,
components over the shared edges), so checking a township of ~200 grids after
an edit costs a few milliseconds, and a prefecture well under a second.

Hard rules (an edit breaking one is refused):

- ``gap``: ground of a township in no grid;
- ``unknown_grid``: a face given to a grid the plan does not have;
- ``crosses_township`` / ``crosses_police_area``: a grid whose faces lie in more than one;
- ``outside_township`` / ``outside_police_area``: a grid not lying in the unit it belongs to.

Soft rules (warnings):

- ``multipart``: a grid whose faces are not all edge-connected (not contiguous);
- ``sliver``: a grid below ``sliver_area_m2``, or thinner on average (2·area/perimeter) than ``sliver_width_m``;
- ``<measure>_below`` / ``<measure>_above``: households, population or incident workload
  outside ``±balance_tolerance`` of the township's mean per grid;
- ``workers_below``: fewer grid workers per 10,000 residents than ``workers_per_10k``;
- ``compactness``: Polsby-Popper 4πA/P² below ``min_compactness``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridwatch.geo.crs import local_metric_crs
from gridwatch.geo.grid_fusion import _components
from gridwatch.geo.plan import Plan

__all__ = ["Rules", "Problem", "HARD_KINDS", "SOFT_KINDS", "MEASURES", "check_plan", "grid_table", "score", "diff"]

MEASURES = ("households", "population", "workload")
HARD_KINDS = ("gap", "unknown_grid", "crosses_township", "crosses_police_area", "outside_township",
              "outside_police_area")
SOFT_KINDS = ("multipart", "sliver", *(f"{m}_{side}" for m in MEASURES for side in ("below", "above")),
              "workers_below", "compactness")


@dataclass(frozen=True)
class Rules:
    """The thresholds of the soft rules (the hard ones have none)."""

    balance_tolerance: float = 0.25
    workers_per_10k: float = 18.0
    min_compactness: float = 0.2
    sliver_area_m2: float = 2_000.0
    sliver_width_m: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.balance_tolerance < 1:
            raise ValueError(f"balance_tolerance was {self.balance_tolerance!r} but must lie between 0 and 1")
        for name in ("workers_per_10k", "min_compactness", "sliver_area_m2", "sliver_width_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} was {value!r} but must be a number, 0 or more")


@dataclass(frozen=True)
class Problem:
    """One broken rule: its kind, whether it is hard, the grids (or township) and faces it concerns."""

    kind: str
    hard: bool
    codes: tuple[str, ...]
    detail: str
    faces: tuple[int, ...] = ()

    def text(self) -> str:
        return f"{self.kind.replace('_', ' ')} {', '.join(self.codes)}: {self.detail}"

    def as_dict(self) -> dict:
        return asdict(self)


def grid_table(plan: Plan) -> pd.DataFrame:
    """Per grid: faces, area, perimeter, the measures, how many townships and police areas its faces
    lie in (and the first), connected parts and Polsby-Popper, with the grid's attributes; by code."""
    return _grid_table(plan)[0]


def _grid_table(plan: Plan) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """:func:`grid_table`, and the (grid, unit) pairs of its faces' townships and police areas."""
    faces = plan.faces
    assigned = pd.notna(plan.grid)
    codes, group = np.unique(plan.grid[assigned].astype(str), return_inverse=True)
    at = np.flatnonzero(assigned)
    n = len(codes)
    slot = np.full(len(faces), -1, dtype=np.int64)
    slot[at] = group
    i, j, length = plan.blocks.edges
    inside = (slot[i] >= 0) & (slot[i] == slot[j])

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=np.asarray(values, dtype=float)[at], minlength=n)

    columns: dict[str, np.ndarray] = {"faces": np.bincount(group, minlength=n), "area_m2": total(faces["area_m2"])}
    columns["perimeter_m"] = total(faces["perimeter_m"]) - 2 * np.bincount(slot[i[inside]], weights=length[inside],
                                                                           minlength=n)
    for m in MEASURES:
        columns[m] = total(faces[m])
    units = {}
    for level in ("township", "police_area"):
        unit, names = pd.factorize(faces[level].to_numpy()[at])
        keep = unit >= 0
        key = np.unique(group[keep] * (len(names) + 1) + unit[keep])
        g, u = key // (len(names) + 1), key % (len(names) + 1)
        columns[f"{level}_count"] = np.bincount(g, minlength=n)
        first = np.full(n, None, dtype=object)
        lead = np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, bool)
        first[g[lead]] = np.asarray(names, dtype=object)[u[lead]]
        columns[f"face_{level}"] = first
        units[level] = pd.DataFrame({"code": codes[g], "u": np.asarray(names, dtype=object)[u]})
    comp = _components(len(faces), i[inside], j[inside])
    columns["parts"] = np.bincount(np.unique(group * len(faces) + comp[at]) // max(len(faces), 1), minlength=n)
    columns["compactness"] = 4 * math.pi * columns["area_m2"] / np.maximum(columns["perimeter_m"], 1e-9) ** 2
    attrs = plan.grids.reindex(codes)
    for column in plan.grids.columns:
        columns[column] = attrs[column].to_numpy()
    columns["known"] = np.isin(codes, plan.grids.index.to_numpy(dtype=str))
    return pd.DataFrame(columns, index=pd.Index(codes, name="code")), units


def check_plan(plan: Plan, rules: Rules = Rules()) -> list[Problem]:
    """Every problem of the plan, hard first, then by kind and code."""
    table, units = _grid_table(plan)
    faces = plan.faces
    out: list[Problem] = []
    # gaps: faces with no grid, per township
    free = ~pd.notna(plan.grid)
    if free.any():
        gap = pd.DataFrame({"t": faces["township"].to_numpy()[free], "f": faces["face_id"].to_numpy()[free],
                            "a": faces["area_m2"].to_numpy()[free]}).groupby("t").agg(f=("f", tuple), a=("a", "sum"))
        out += [Problem("gap", True, (str(t),), f"{row.a:,.0f} m² of {t} in no grid", tuple(int(x) for x in row.f))
                for t, row in gap.iterrows()]
    for code in table.index[~table["known"].to_numpy()]:
        out.append(Problem("unknown_grid", True, (code,), "faces are given to a grid the plan does not have"))
    known = table[table["known"]]
    for level in ("township", "police_area"):
        many = known.index[known[f"{level}_count"].to_numpy() > 1]
        if len(many):
            pairs = units[level]
            lists = pairs[pairs["code"].isin(many)].groupby("code")["u"].agg(lambda u: ", ".join(sorted(map(str, u))))
            out += [Problem(f"crosses_{level}", True, (c,), f"lies in {lists[c]}") for c in many]
        lies, belongs = known[f"face_{level}"], known[level]
        wrong = (known[f"{level}_count"] == 1) & belongs.notna() & (lies.astype(object) != belongs.astype(object))
        out += [Problem(f"outside_{level}", True, (c,), f"belongs to {b} but lies in {u}")
                for c, b, u in zip(known.index[wrong], belongs[wrong], lies[wrong])]
    codes = known.index.to_numpy()
    parts = known["parts"].to_numpy()
    out += [Problem("multipart", False, (c,), f"{p} separate parts") for c, p in zip(codes[parts > 1], parts[parts > 1])]
    area = known["area_m2"].to_numpy()
    width = 2 * area / np.maximum(known["perimeter_m"].to_numpy(), 1e-9)
    thin = (area < rules.sliver_area_m2) | (width < rules.sliver_width_m)
    out += [Problem("sliver", False, (c,), f"{a:,.0f} m², {w:.1f} m wide on average")
            for c, a, w in zip(codes[thin], area[thin], width[thin])]
    town, _ = pd.factorize(known["township"].to_numpy())
    town = np.where(town < 0, town.max(initial=0) + 1, town)
    per_town = np.bincount(town)
    low, high = 1 - rules.balance_tolerance, 1 + rules.balance_tolerance
    for m in MEASURES:
        value = known[m].to_numpy(dtype=float)
        ref = (np.bincount(town, weights=value) / np.maximum(per_town, 1))[town]
        for side, flag in (("below", value < ref * low), ("above", value > ref * high)):
            flag &= ref > 0
            out += [Problem(f"{m}_{side}", False, (c,), f"{v:,.0f} is {v / r - 1:+.0%} of the township mean {r:,.0f}")
                    for c, v, r in zip(codes[flag], value[flag], ref[flag])]
    population = known["population"].to_numpy(dtype=float)
    workers = pd.to_numeric(known["workers"], errors="coerce").fillna(0).to_numpy(dtype=float)
    ratio = np.divide(workers * 10_000, population, out=np.full(len(known), np.inf), where=population > 0)
    short = ratio < rules.workers_per_10k
    out += [Problem("workers_below", False, (c,), f"{w:g} workers for {p:,.0f} residents ({r:.1f} per 10,000 "
                                                  f"< {rules.workers_per_10k:g})")
            for c, w, p, r in zip(codes[short], workers[short], population[short], ratio[short])]
    compact = known["compactness"].to_numpy()
    loose = compact < rules.min_compactness
    out += [Problem("compactness", False, (c,), f"Polsby-Popper {v:.2f} < {rules.min_compactness:g}")
            for c, v in zip(codes[loose], compact[loose])]
    order = {k: n for n, k in enumerate(HARD_KINDS + SOFT_KINDS)}
    return sorted(out, key=lambda p: (order[p.kind], p.codes))


def score(plan: Plan, problems: list[Problem], rules: Rules = Rules(), *, table: pd.DataFrame | None = None) -> dict:
    """The plan summed up: grids, problems by kind, each measure's spread, compactness."""
    table = grid_table(plan) if table is None else table
    out: dict = {"grids": int(len(table)), "hard": sum(p.hard for p in problems),
                 "soft": sum(not p.hard for p in problems),
                 "by_kind": pd.Series([p.kind for p in problems], dtype=object).value_counts().to_dict()}
    for m in MEASURES:
        mean = table.groupby("township")[m].transform("mean")
        dev = (table[m] / mean.where(mean > 0) - 1).abs()
        out[f"{m}_max_dev"] = float(dev.max()) if dev.notna().any() else 0.0
        out[f"{m}_cv"] = float((table[m].std(ddof=0) / table[m].mean()) if table[m].mean() else 0.0)
    out["compactness_mean"] = float(table["compactness"].mean()) if len(table) else 0.0
    out["compactness_min"] = float(table["compactness"].min()) if len(table) else 0.0
    out["balance_tolerance"] = rules.balance_tolerance
    return out


def diff(before: gpd.GeoDataFrame, after: gpd.GeoDataFrame) -> pd.DataFrame:
    """The grids that differ between two plans' grids (columns ``code``, ``households``,
    ``population`` and polygons, any CRS): one row per changed code, with ``status`` (``new``,
    ``gone`` or ``changed``), the households and population before and after, and ``area_moved_m2``,
    the ground that changed hands (the symmetric difference of the two shapes), in m².
    """
    crs = local_metric_crs(before if len(before) else after)
    a = before.set_index("code").to_crs(crs)
    b = after.set_index("code").to_crs(crs)
    codes = a.index.union(b.index)
    empty = shapely.from_wkt("POLYGON EMPTY")
    ga = a.geometry.reindex(codes).to_numpy()
    gb = b.geometry.reindex(codes).to_numpy()
    ga, gb = np.where(pd.isna(ga), empty, ga), np.where(pd.isna(gb), empty, gb)
    moved = shapely.area(shapely.symmetric_difference(ga, gb, grid_size=0.01))
    table = pd.DataFrame({"status": np.where(~codes.isin(a.index), "new", np.where(~codes.isin(b.index), "gone",
                                                                                      "changed")),
                          "area_moved_m2": moved}, index=pd.Index(codes, name="code"))
    for m in ("households", "population"):
        table[f"{m}_before"] = pd.to_numeric(a[m], errors="coerce").reindex(codes).fillna(0).to_numpy()
        table[f"{m}_after"] = pd.to_numeric(b[m], errors="coerce").reindex(codes).fillna(0).to_numpy()
    changed = (table["area_moved_m2"] > 1.0) | (table["households_before"] != table["households_after"]) | \
        (table["status"] != "changed")
    return table[changed].sort_index()
