"""Automatic rebalancing of one township's grids: a proposed new assignment of faces to grids.

The faces of the planar arrangement (see :mod:`gridwatch.geo.grid_fusion`) are the building
blocks; a plan assigns each face to one grid. :func:`propose` moves faces between the township's
unlocked grids until every grid is contiguous, every measure (households, population, workload)
of every grid lies within ``±tolerance`` of the township's mean per grid, and every grid's
Polsby-Popper compactness ``4πA/P²`` is at least ``min_compactness``; or until the time limit.

Method: ReCom (recombination, DeFord, Duchin and Solomon 2021) from gerrychain, the MGGG
redistricting library, on the face adjacency graph of the unlocked faces. One step merges two
adjacent grids, draws a random spanning tree of the merged faces and cuts one tree edge that
leaves two halves of about equal *combined* measure (each measure divided by its mean per grid,
averaged over the measures), so both new grids are contiguous by construction. A step is kept
only if it does not raise the plan's penalty: for every grid and measure the relative deviation
beyond the tolerance (weighted heavily) plus the squared deviation (which pulls neighbours toward
each other and so moves a surplus across the township), plus the shortfall below the
compactness threshold. Each measure is therefore balanced on its own in the acceptance, not only
through the combined measure. Areas and perimeters of grids come from the face areas, face
perimeters and shared edge lengths (the perimeter of a union is the sum of the face perimeters
less twice the internal shared lengths), evaluated with ``numpy.bincount`` over the whole plan
at every step (about 0.1 ms for 2,000 faces): no geometry is unioned.

Why gerrychain and not spopt: spopt's regionalisation (max-p, SKATER, AZP) builds regions from
scratch: max-p chooses the number of regions itself and bounds one variable from below only;
SKATER takes a region count and a floor on one variable; neither starts from the current plan,
keeps grid codes, leaves locked grids alone, balances several measures within a band both ways,
or stops at a time limit. ReCom starts from the current plan, works on any subgraph (the locked
grids' faces are simply left out), takes the acceptance rule as a plain function and is run one
step at a time, so the time limit, the cancel check and the progress calls sit in our loop.
gerrychain also pulls in less (rustworkx and scipy beyond what gridwatch has; spopt brings
scikit-learn, matplotlib, PuLP, libpysal and more).

Locked grids keep their faces and take none. The township mean per grid counts every grid,
locked ones included, so a locked grid out of range makes ``met`` false whatever is proposed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import rustworkx as rx
from gerrychain import Graph, Partition
from gerrychain.tree import ReselectException, bipartition_tree
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from gridwatch.geo.crs import _require_columns, _require_number

__all__ = ["Proposal", "propose", "plan_score", "rebalance_plan"]

#: Weight of a relative deviation beyond the tolerance, against the squared deviation.
_OUT_OF_RANGE_WEIGHT = 100.0
#: Weight of a Polsby-Popper shortfall below the threshold.
_COMPACTNESS_WEIGHT = 100.0
#: Weight of ``1 - Polsby-Popper`` of every grid: a slight pull toward round grids, so that
#: shapes keep room for later moves.
_ROUNDNESS_WEIGHT = 0.05
#: Spanning trees tried on one merged pair before another pair is drawn.
_TREES_PER_PAIR = 4
#: Balanced cuts: each half's combined measure within this share of half the pair's.
_CUT_EPSILON = 0.5
#: Share of steps that recombine along a path from a grid out of range to one out the other way.
_PATH_SHARE = 0.3
#: Share of steps whose pair is drawn at a grid that breaks a rule (the rest: at any cut edge).
_FOCUS_SHARE = 0.35
#: Longest such path, in grids, and how far below (above) the mean its last grid must be.
_PATH_DEPTH = 20
_PATH_END_DEVIATION = 0.05
#: Seconds between two calls of ``progress``, at most.
_PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True)
class Proposal:
    """A proposed assignment of a township's faces to its grids.

    Attributes
    ----------
    grid : numpy.ndarray
        The grid code of each face, in the order of the input rows. Equals the input assignment
        when ``cancelled``.
    met : bool
        Whether ``grid`` meets every rule asked for (every grid, locked ones included).
    score : dict
        ``max_deviation`` and ``out_of_range``: per measure, the largest relative deviation of a
        grid from the township's mean per grid and the number of grids beyond the tolerance;
        ``min_polsby_popper`` and ``mean_polsby_popper`` over the grids; ``non_contiguous``: the
        number of grids whose faces form more than one edge-connected component. Of ``grid``.
    steps : int
        ReCom steps proposed (kept or not).
    seconds : float
        Wall time spent.
    cancelled : bool
        Whether ``cancel()`` stopped the run.
    """

    grid: np.ndarray
    met: bool
    score: dict = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    cancelled: bool = False


@dataclass(frozen=True)
class _Township:
    """The validated arrays of one township: faces, edges and the targets."""

    codes: np.ndarray  # the grid codes, one per grid
    assign: np.ndarray  # grid index of each face
    locked_grid: np.ndarray  # bool per grid
    values: np.ndarray  # (faces, measures), each measure divided by its mean per grid
    area: np.ndarray
    perimeter: np.ndarray
    ei: np.ndarray
    ej: np.ndarray
    elen: np.ndarray
    tolerance: float
    min_compactness: float

    @property
    def n_grids(self) -> int:
        return len(self.codes)


def _validate(
    faces: pd.DataFrame,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray],
    measures: Sequence[str],
    tolerance: float,
    min_compactness: float,
    time_limit_s: float,
) -> _Township:
    """Check every input at the entry point; raise ValueError naming the bad value."""
    if not isinstance(faces, pd.DataFrame):
        raise ValueError(f"`faces` must be a pandas DataFrame, not {type(faces).__name__}")
    if isinstance(measures, str) or len(measures) == 0:
        raise ValueError(f"`measures` was {measures!r} but must be a non-empty sequence of column names")
    measures = list(measures)
    _require_columns(faces, ["grid", "locked", *measures, "area_m2", "perimeter_m"], name="faces")
    tolerance = _require_number(tolerance, name="tolerance")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"`tolerance` was {tolerance!r} but must lie in (0, 1)")
    min_compactness = _require_number(min_compactness, name="min_compactness", minimum=0.0)
    if min_compactness > 1.0:
        raise ValueError(f"`min_compactness` was {min_compactness!r} but must lie in [0, 1]")
    _require_number(time_limit_s, name="time_limit_s", minimum=0.0)
    n = len(faces)
    if n == 0:
        raise ValueError("`faces` has no rows; a township needs at least one face")
    if faces["grid"].isna().any():
        rows = np.flatnonzero(faces["grid"].isna().to_numpy())[:5].tolist()
        raise ValueError(f"`faces.grid` is empty in row(s) {rows} (positions); every face needs a grid")

    numeric = {}
    for column in [*measures, "area_m2", "perimeter_m"]:
        try:
            array = faces[column].to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"`faces.{column}` must be numeric; it has dtype {faces[column].dtype}") from None
        bad = ~np.isfinite(array) | (array < 0)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(
                f"`faces.{column}` must be finite and >= 0; rows (positions) {rows} have {array[rows].tolist()}"
            )
        numeric[column] = array
    if (numeric["perimeter_m"] <= 0).any():
        rows = np.flatnonzero(numeric["perimeter_m"] <= 0)[:5].tolist()
        raise ValueError(f"`faces.perimeter_m` must be > 0; rows (positions) {rows} are not")

    try:
        locked = faces["locked"].to_numpy(dtype=bool)
    except (TypeError, ValueError):
        raise ValueError(f"`faces.locked` must be boolean; it has dtype {faces['locked'].dtype}") from None
    codes, assign = np.unique(faces["grid"].to_numpy(), return_inverse=True)
    n_grids = len(codes)
    locked_any = np.bincount(assign, weights=locked, minlength=n_grids) > 0
    locked_all = np.bincount(assign, weights=~locked, minlength=n_grids) == 0
    mixed = locked_any & ~locked_all
    if mixed.any():
        raise ValueError(
            f"grid(s) {codes[mixed][:5].tolist()} have locked and unlocked faces; `locked` tells whether the "
            "face's grid is locked, so it must be the same for all faces of a grid"
        )

    if not isinstance(edges, tuple | list) or len(edges) != 3:
        raise ValueError("`edges` must be a tuple (i, j, length_m) of three arrays")
    ei, ej, elen = (np.asarray(a) for a in edges)
    if not (ei.ndim == ej.ndim == elen.ndim == 1 and len(ei) == len(ej) == len(elen)):
        raise ValueError(
            f"`edges` arrays must be one-dimensional and of one length; got shapes {ei.shape}, {ej.shape}, "
            f"{elen.shape}"
        )
    if len(ei) and not (np.issubdtype(ei.dtype, np.integer) and np.issubdtype(ej.dtype, np.integer)):
        raise ValueError(f"`edges` i and j must be integer face positions; got {ei.dtype} and {ej.dtype}")
    ei, ej = ei.astype(np.int64), ej.astype(np.int64)
    out = (ei < 0) | (ei >= n) | (ej < 0) | (ej >= n)
    if out.any():
        k = int(np.flatnonzero(out)[0])
        raise ValueError(
            f"`edges` has {int(out.sum())} pair(s) out of range, e.g. ({ei[k]}, {ej[k]}) at {k}; face positions "
            f"run 0..{n - 1}"
        )
    if (ei == ej).any():
        k = int(np.flatnonzero(ei == ej)[0])
        raise ValueError(f"`edges` pairs a face with itself, e.g. ({ei[k]}, {ej[k]}) at {k}")
    elen = elen.astype(float)
    if (~np.isfinite(elen) | (elen <= 0)).any():
        k = int(np.flatnonzero(~np.isfinite(elen) | (elen <= 0))[0])
        raise ValueError(f"`edges` lengths must be finite and > 0, e.g. {elen[k]!r} at {k}")

    raw = np.column_stack([numeric[m] for m in measures])
    mean = raw.sum(axis=0) / n_grids
    values = np.divide(raw, mean, out=np.ones_like(raw), where=mean > 0)  # an all-zero measure is balanced
    return _Township(
        codes=codes, assign=assign, locked_grid=locked_any, values=values,
        area=numeric["area_m2"], perimeter=numeric["perimeter_m"],
        ei=np.minimum(ei, ej), ej=np.maximum(ei, ej), elen=elen,
        tolerance=tolerance, min_compactness=min_compactness,
    )


# --------------------------------------------------------------------------- #
# evaluation of a plan: vectorized over faces and edges
# --------------------------------------------------------------------------- #


def _grid_sums(t: _Township, assign: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measure sums (grids × measures, in means per grid), areas and perimeters of a plan's grids."""
    g = t.n_grids
    sums = np.column_stack(
        [np.bincount(assign, weights=t.values[:, k], minlength=g) for k in range(t.values.shape[1])]
    )
    area = np.bincount(assign, weights=t.area, minlength=g)
    ga, gb = assign[t.ei], assign[t.ej]
    same = ga == gb
    internal = np.bincount(ga[same], weights=t.elen[same], minlength=g)
    perimeter = np.bincount(assign, weights=t.perimeter, minlength=g) - 2.0 * internal
    return sums, area, perimeter


def _polsby_popper(area: np.ndarray, perimeter: np.ndarray) -> np.ndarray:
    return 4.0 * math.pi * area / np.maximum(perimeter, 1e-9) ** 2


def _grid_cost(
    sums: np.ndarray, area: np.ndarray, perimeter: np.ndarray, tolerance: float, min_compactness: float
) -> tuple[np.ndarray, np.ndarray]:
    """(rules penalty, total penalty) of grids (leading axes) from their sums, areas, perimeters.

    The rules penalty is zero exactly when the grid is in range in every measure and compact
    enough; the total adds the squared deviations and the pull toward round shapes.
    """
    dev = np.abs(sums - 1.0)
    pp = _polsby_popper(area, perimeter)
    rules = _OUT_OF_RANGE_WEIGHT * np.maximum(dev - tolerance, 0.0).sum(axis=-1) + _COMPACTNESS_WEIGHT * np.maximum(
        min_compactness - pp, 0.0
    )
    return rules, rules + np.square(dev).sum(axis=-1) + _ROUNDNESS_WEIGHT * (1.0 - pp)


def _pieces(t: _Township, assign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge-connected pieces of the grids: ``(piece of each face, True per face off its grid's
    largest piece)``."""
    n = len(assign)
    same = assign[t.ei] == assign[t.ej]
    adjacency = coo_array((np.ones(int(same.sum())), (t.ei[same], t.ej[same])), shape=(n, n))
    _, piece = connected_components(adjacency, directed=False)
    size = np.bincount(piece)
    order = np.lexsort((-size[piece], assign))  # per grid, faces of its largest piece first
    first = np.ones(n, dtype=bool)
    first[1:] = assign[order][1:] != assign[order][:-1]
    main = np.empty(t.n_grids, dtype=np.int64)
    main[assign[order][first]] = piece[order][first]
    return piece, piece != main[assign]


def _non_contiguous(t: _Township, assign: np.ndarray) -> np.ndarray:
    """Bool per grid: its faces form more than one edge-connected component."""
    _, stray = _pieces(t, assign)
    return np.bincount(assign[stray], minlength=t.n_grids) > 0


def _mend(t: _Township, assign: np.ndarray) -> np.ndarray:
    """Hand every stray piece of an unlocked grid (all but its largest) to the unlocked grid it
    shares the longest boundary with; a grid in pieces has no spanning tree for ReCom to cut."""
    assign = assign.copy()
    for _ in range(8):
        piece, stray = _pieces(t, assign)
        stray &= ~t.locked_grid[assign]
        if not stray.any():
            break
        a = np.concatenate([t.ei, t.ej])
        b = np.concatenate([t.ej, t.ei])
        length = np.concatenate([t.elen, t.elen])
        take = stray[a] & (piece[a] != piece[b]) & ~t.locked_grid[assign[b]] & ~stray[b]
        if not take.any():
            break
        shared = pd.DataFrame({"piece": piece[a[take]], "grid": assign[b[take]], "length": length[take]})
        shared = shared.groupby(["piece", "grid"], as_index=False)["length"].sum()
        best = shared.sort_values("length", ascending=False).drop_duplicates("piece")
        to = np.full(piece.max() + 1, -1, dtype=np.int64)
        to[best["piece"].to_numpy()] = best["grid"].to_numpy()
        moved = stray & (to[piece] >= 0)
        assign[moved] = to[piece[moved]]
    return assign


def _score(t: _Township, assign: np.ndarray, measures: Sequence[str]) -> tuple[dict, bool]:
    sums, area, perimeter = _grid_sums(t, assign)
    pp = _polsby_popper(area, perimeter)
    absdev = np.abs(sums - 1.0)
    out = absdev > t.tolerance + 1e-12
    split = _non_contiguous(t, assign)
    score = {
        "max_deviation": {m: float(absdev[:, k].max()) for k, m in enumerate(measures)},
        "out_of_range": {m: int(out[:, k].sum()) for k, m in enumerate(measures)},
        "min_polsby_popper": float(pp.min()),
        "mean_polsby_popper": float(pp.mean()),
        "non_contiguous": int(split.sum()),
    }
    met = not out.any() and bool((pp >= t.min_compactness).all()) and not split.any()
    return score, met


def plan_score(
    faces: pd.DataFrame,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    tolerance: float = 0.25,
    min_compactness: float = 0.2,
    measures: Sequence[str] = ("households", "population", "workload"),
) -> tuple[dict, bool]:
    """Score the plan in ``faces.grid`` by the rules of :func:`propose`: ``(score, met)``.

    Examples
    --------
    >>> faces = pd.DataFrame({"grid": ["a", "b"], "locked": False, "households": [10, 12],
    ...                       "area_m2": 1e4, "perimeter_m": 400.0})
    >>> edges = (np.array([0]), np.array([1]), np.array([100.0]))
    >>> score, met = plan_score(faces, edges, measures=["households"])
    >>> round(score["max_deviation"]["households"], 3), met
    (0.091, True)
    """
    t = _validate(faces, edges, measures, tolerance, min_compactness, 0.0)
    return _score(t, t.assign, list(measures))


# --------------------------------------------------------------------------- #
# ReCom on the unlocked faces
# --------------------------------------------------------------------------- #


class _Chain:
    """ReCom over the unlocked faces of one township, one step at a time.

    Node ``k`` of the gerrychain graph is unlocked face ``faces[k]``; parts are grid indices.
    Per grid it keeps the measure sums, area, perimeter and penalties, updated for the two grids
    a step changes.
    """

    def __init__(self, t: _Township, seed: int, assign: np.ndarray) -> None:
        self.t = t
        self.faces = np.flatnonzero(~t.locked_grid[t.assign])
        local = np.full(len(t.assign), -1, dtype=np.int64)
        local[self.faces] = np.arange(len(self.faces))
        keep = (local[t.ei] >= 0) & (local[t.ej] >= 0)
        self.u, self.v, self.length = local[t.ei[keep]], local[t.ej[keep]], t.elen[keep]
        self.values = t.values[self.faces]
        self.area = t.area[self.faces]
        self.perimeter = t.perimeter[self.faces]
        self.position = np.full(len(self.faces), -1, dtype=np.int64)  # scratch: face -> row in a region

        pyg: rx.PyGraph = rx.PyGraph(multigraph=False)
        combined = self.values.mean(axis=1)
        pyg.add_nodes_from([{"w": float(w), "__networkx_node__": k} for k, w in enumerate(combined)])
        pyg.add_edges_from([(int(a), int(b), {}) for a, b in zip(self.u, self.v)])
        self.partition = Partition(
            Graph.from_rustworkx(pyg), dict(enumerate(assign[self.faces].tolist()))
        )
        self.rng = random.Random(seed)
        self.start = assign
        self.sums, self.g_area, self.g_perimeter = _grid_sums(t, assign)
        self.rules, self.cost = _grid_cost(self.sums, self.g_area, self.g_perimeter, t.tolerance, t.min_compactness)
        # a grid in pieces breaks a rule too; any split that involves it mends it (both halves of a
        # tree cut are connected)
        split = _non_contiguous(t, assign)
        self.rules[split] += _OUT_OF_RANGE_WEIGHT
        self.cost[split] += _OUT_OF_RANGE_WEIGHT
        self.rules[t.locked_grid] = 0.0  # nothing to gain there: locked grids never change
        self.cost[t.locked_grid] = 0.0
        self._adjacent: dict[int, list[int]] | None = None

    @property
    def rules_broken(self) -> bool:
        return bool(self.rules.sum() > 0.0)

    def assignment(self) -> np.ndarray:
        """Grid index of every face of the township (locked faces as they were)."""
        assign = self.start.copy()
        assign[self.faces] = self.partition.assignment_vector
        return assign

    # -- moves ----------------------------------------------------------------

    def step(self) -> bool:
        """Propose one move and keep it if the penalty does not rise. True if kept.

        A move is a path of adjacent grids recombined pair by pair along it: two grids (plain
        ReCom) or, in a share of the steps, a path from a grid out of range to the nearest grid
        out on the other side, each grid on the way keeping a fair share and handing the rest on,
        so a surplus crosses the township in one move instead of diffusing grid by grid.
        """
        if not self.partition["cut_edges"]:
            return False
        draw = self.rng.random()
        path = None
        if draw < _PATH_SHARE:
            path = self._path_to_opposite()
        if path is None:
            path = self._draw_pair(focus=draw < _PATH_SHARE + _FOCUS_SHARE)
        partition, stats = self.partition, {}
        for k in range(len(path) - 1):
            done = self._recombine(partition, path[k], path[k + 1], hand_on=k < len(path) - 2)
            if done is None:
                return False
            partition, (sums, area, perimeter) = done
            stats[path[k]], stats[path[k + 1]] = (sums[0], area[0], perimeter[0]), (sums[1], area[1], perimeter[1])
        grids = list(stats)
        sums, area, perimeter = (np.array([stats[g][i] for g in grids]) for i in range(3))
        rules, cost = _grid_cost(sums, area, perimeter, self.t.tolerance, self.t.min_compactness)
        if cost.sum() > self.cost[grids].sum():
            return False
        partition.parent = None
        self.partition, self._adjacent = partition, None
        self.sums[grids], self.g_area[grids], self.g_perimeter[grids] = sums, area, perimeter
        self.rules[grids], self.cost[grids] = rules, cost
        return True

    def _draw_pair(self, *, focus: bool) -> list[int]:
        """Two adjacent grids: with ``focus``, a grid that breaks a rule and a random neighbour;
        otherwise the two grids of a random cut edge."""
        rng = self.rng
        bad = np.flatnonzero(self.rules > 0.0)
        if focus and len(bad):
            grid = int(bad[rng.randrange(len(bad))])
            near = self.adjacent().get(grid)
            if near:
                return [grid, near[rng.randrange(len(near))]]
        mapping = self.partition.assignment.mapping
        a, b = rng.choice(tuple(self.partition["cut_edges"]))
        return [mapping[a], mapping[b]]

    def adjacent(self) -> dict[int, list[int]]:
        """The grids next to each unlocked grid, in the current plan (cached until a move is kept)."""
        if self._adjacent is None:
            mapping = self.partition.assignment.mapping
            pairs = {(mapping[a], mapping[b]) for a, b in self.partition["cut_edges"]}
            adjacent: dict[int, set[int]] = {}
            for a, b in pairs:
                adjacent.setdefault(a, set()).add(b)
                adjacent.setdefault(b, set()).add(a)
            self._adjacent = {g: sorted(n) for g, n in adjacent.items()}
        return self._adjacent

    def _path_to_opposite(self) -> list[int] | None:
        """A shortest path of adjacent grids from a random grid out of range in some measure to the
        nearest grid on the other side of the mean in that measure, or None."""
        dev = self.sums - 1.0
        out = np.abs(dev) > self.t.tolerance
        out[self.t.locked_grid] = False
        bad = np.flatnonzero(out.any(axis=1))
        if not len(bad):
            return None
        rng = self.rng
        start = int(bad[rng.randrange(len(bad))])
        measure = int(np.argmax(np.abs(dev[start])))
        sign = np.sign(dev[start, measure])
        adjacent = self.adjacent()
        parent = {start: start}
        frontier = [start]
        for _ in range(_PATH_DEPTH):
            following = []
            for grid in frontier:
                near = list(adjacent.get(grid, ()))
                rng.shuffle(near)
                for n in near:
                    if n in parent:
                        continue
                    parent[n] = grid
                    if sign * dev[n, measure] < -_PATH_END_DEVIATION:
                        path = [n]
                        while path[-1] != start:
                            path.append(parent[path[-1]])
                        return path[::-1]
                    following.append(n)
            frontier = following
        return None

    def _recombine(self, partition: Partition, pa: int, pb: int, *, hand_on: bool) -> tuple | None:
        """Merge grids ``pa`` and ``pb`` of ``partition`` and split them along the best balanced
        cut of a random spanning tree (gerrychain's ``bipartition_tree``).

        The best cut brings both halves closest to the rules, or, with ``hand_on``, only the half
        that ``pa`` keeps: ``pa`` takes a fair share and ``pb`` the rest. Returns the child
        partition and the measure sums, areas and perimeters of ``(pa, pb)``, or None when the
        pair is not connected or no balanced cut was found.
        """
        region = partition.parts[pa] | partition.parts[pb]
        sub = partition.graph.subgraph(region)
        if not rx.is_connected(sub.get_rx_graph()):
            return None  # a grid in pieces: no spanning tree of the pair
        nodes = np.fromiter(region, dtype=np.int64, count=len(region))
        position = self.position
        position[nodes] = np.arange(len(nodes))
        inside = (position[self.u] >= 0) & (position[self.v] >= 0)
        ru, rv, rlen = position[self.u[inside]], position[self.v[inside]], self.length[inside]
        values, area, perimeter = self.values[nodes], self.area[nodes], self.perimeter[nodes]
        total = values.sum(axis=0), area.sum(), perimeter.sum()
        t = self.t
        found: dict = {}

        def best_cut(cuts, *, populated_graph, region_surcharge, rng):  # gerrychain's cut_choice_fn
            tree = populated_graph.graph
            member = np.zeros((len(cuts), len(nodes)), dtype=bool)
            for row, cut in enumerate(cuts):
                face = np.fromiter((tree.node_data(x)["__networkx_node__"] for x in cut.subset), dtype=np.int64)
                member[row, position[face]] = True
            s_perimeter = member @ perimeter
            halves = (  # (cuts, 2 halves, ...): the subset, the rest
                np.stack([member @ values, total[0] - member @ values], axis=1),
                np.stack([member @ area, total[1] - member @ area], axis=1),
                np.stack([
                    s_perimeter - 2.0 * ((member[:, ru] & member[:, rv]) @ rlen),
                    total[2] - s_perimeter - 2.0 * ((~member[:, ru] & ~member[:, rv]) @ rlen),
                ], axis=1),
            )
            cost = _grid_cost(*halves, t.tolerance, t.min_compactness)[1]
            if hand_on:  # pa keeps the better half, whichever side of the cut it is
                flat = int(np.argmin(cost))
                best, side = divmod(flat, 2)
            else:
                best = int(np.argmin(cost.sum(axis=1)))
                side = None
            found["halves"] = tuple(x[best] for x in halves)
            found["side"] = side
            return cuts[best]

        target = float(values.mean(axis=1).sum()) / 2.0
        try:
            if hand_on:  # one side near one mean per grid (the combined measure's unit), the rest on
                half = bipartition_tree(
                    sub, pop_col="w", pop_target=1.0, epsilon=_CUT_EPSILON, single_district_cut=True,
                    max_attempts=_TREES_PER_PAIR, allow_pair_reselection=True, cut_choice_fn=best_cut, rng=self.rng,
                )
            else:
                half = bipartition_tree(
                    sub, pop_col="w", pop_target=target, epsilon=_CUT_EPSILON,
                    max_attempts=_TREES_PER_PAIR, allow_pair_reselection=True, cut_choice_fn=best_cut, rng=self.rng,
                )
        except ReselectException:
            return None
        finally:
            position[nodes] = -1
        sums, areas, perimeters = found["halves"]
        other = region - half
        if found["side"] is None:  # the half that shares more faces with pa keeps its code
            flip_sides = len(partition.parts[pa] & half) < len(partition.parts[pa] & other)
        else:
            flip_sides = found["side"] == 1
        if flip_sides:
            half, other = other, half
            sums, areas, perimeters = sums[::-1], areas[::-1], perimeters[::-1]
        flips = dict.fromkeys(half, pa)
        flips.update(dict.fromkeys(other, pb))
        child = partition.flip(flips)
        child["cut_edges"]  # updated from the parent's while the parent is known
        return child, (sums, areas, perimeters)


def propose(
    faces: pd.DataFrame,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    tolerance: float = 0.25,
    min_compactness: float = 0.2,
    measures: Sequence[str] = ("households", "population", "workload"),
    time_limit_s: float = 15.0,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Proposal:
    """Propose a new assignment of one township's faces to its grids.

    Parameters
    ----------
    faces : DataFrame
        One row per face: ``grid`` (the grid code now), ``locked`` (bool: the face's grid is
        locked), the ``measures`` columns, ``area_m2`` and ``perimeter_m`` (metres).
    edges : tuple of arrays
        ``(i, j, length_m)``: positional face pairs sharing an edge and the shared length.
    tolerance : float
        Allowed relative deviation of each measure from the township's mean per grid, in (0, 1).
    min_compactness : float
        Lowest Polsby-Popper ``4πA/P²`` allowed for a grid.
    measures : sequence of str
        The columns to balance.
    time_limit_s : float
        Stop after this many seconds with the best plan seen.
    seed : int
        Seed of the random spanning trees and pair draws; the same inputs and seed give the same
        proposal when the run ends by meeting the rules (a time limit cuts it where it stands).
    progress : callable, optional
        Called with the fraction of the time limit used, at least every second, and with 1.0 at
        the end.
    cancel : callable, optional
        Polled every step; when it returns True the run stops and the input plan is returned.

    Returns
    -------
    Proposal

    Raises
    ------
    ValueError
        On a missing column, an edge out of range, a tolerance outside (0, 1), a grid with both
        locked and unlocked faces, or a negative or non-finite value.
    """
    start = time.perf_counter()
    t = _validate(faces, edges, measures, tolerance, min_compactness, time_limit_s)
    measures = list(measures)
    original = t.codes[t.assign]

    def elapsed() -> float:
        return time.perf_counter() - start

    def report(fraction: float) -> None:
        if progress is not None:
            progress(min(max(fraction, 0.0), 1.0))

    def finish(assign: np.ndarray, steps: int, cancelled: bool) -> Proposal:
        score, met = _score(t, assign, measures)
        report(1.0)
        return Proposal(
            grid=original if cancelled else t.codes[assign], met=met, score=score,
            steps=steps, seconds=elapsed(), cancelled=cancelled,
        )

    report(0.0)
    if cancel is not None and cancel():
        return finish(t.assign, 0, True)
    free_grids = np.unique(t.assign[~t.locked_grid[t.assign]])
    if len(free_grids) < 2:
        return finish(t.assign, 0, False)
    chain = _Chain(t, seed, _mend(t, t.assign))
    steps, last_report = 0, elapsed()
    while chain.rules_broken:
        now = elapsed()
        if now >= time_limit_s:
            break
        if cancel is not None and cancel():
            return finish(t.assign, steps, True)
        if now - last_report >= _PROGRESS_EVERY_S:
            report(now / time_limit_s if time_limit_s > 0 else 1.0)
            last_report = now
        steps += 1
        chain.step()
    return finish(chain.assignment(), steps, False)


def rebalance_plan(plan, *, tolerance: float = 0.25, min_compactness: float = 0.2, time_limit_s: float = 15.0,
                   seed: int = 0, progress: Callable[[float], None] | None = None,
                   cancel: Callable[[], bool] | None = None):
    """:func:`propose` for a :class:`gridwatch.geo.plan.Plan` of one township: (the proposed plan, the
    proposal, and why the balance cannot be met where it cannot).

    Faces move only between grids of one police area: edges across a police-area boundary are left out
    of the adjacency graph, so no grid is cut across one (a grid that was is split along it, and each
    grid then belongs to the police area its faces lie in). So a police area whose grids hold on average
    more or less than the band around the township's mean cannot be balanced without changing its
    number of grids; those are named. Faces in no grid keep none; the proposed plan shares the plan's faces.
    """
    from gridwatch.geo.plan import Plan

    assigned = np.flatnonzero(pd.notna(plan.grid))
    if len(pd.unique(plan.faces["township"].to_numpy()[assigned])) > 1:
        raise ValueError("rebalance one township at a time")
    locked = set(plan.grids.index[plan.grids["locked"].astype(bool)])
    faces = plan.faces.iloc[assigned]
    frame = pd.DataFrame({"grid": plan.grid[assigned].astype(str), "locked": np.isin(plan.grid[assigned].astype(str),
                                                                                      list(locked)),
                          **{c: faces[c].to_numpy(dtype=float) for c in ("households", "population", "workload",
                                                                          "area_m2", "perimeter_m")}})
    slot = np.full(len(plan.faces), -1)
    slot[assigned] = np.arange(len(assigned))
    i, j, length = plan.blocks.edges
    area = plan.faces["police_area"].to_numpy()
    both = (slot[i] >= 0) & (slot[j] >= 0) & (pd.Series(area[i]).fillna("").to_numpy()
                                               == pd.Series(area[j]).fillna("").to_numpy())
    measures = [m for m in ("households", "population", "workload") if frame[m].sum() > 0]  # none: no band
    proposal = propose(frame, (slot[i][both], slot[j][both], length[both]), tolerance=tolerance,
                       min_compactness=min_compactness, measures=measures, time_limit_s=time_limit_s, seed=seed,
                       progress=progress, cancel=cancel)
    grid = plan.grid.copy()
    grid[assigned] = proposal.grid
    grids = plan.grids.copy()
    grids["workers"] = _workers_by_population(plan, grid, locked)
    lies = pd.DataFrame({"grid": grid[assigned].astype(str), "area": area[assigned]}).dropna()
    one = lies.groupby("grid")["area"].agg(["nunique", "first"])
    one = one[one["nunique"] == 1]["first"]
    grids.loc[one.index.intersection(grids.index), "police_area"] = one
    return Plan(plan.blocks, grid, grids), proposal, _unreachable(frame, area[assigned], measures, tolerance)


def _unreachable(frame: pd.DataFrame, area: np.ndarray, measures: Sequence[str], tolerance: float) -> list[str]:
    """The police areas whose mean per grid lies outside the band of the township's mean, per measure."""
    notes = []
    grids = frame["grid"].nunique()
    by_area = pd.DataFrame({"area": pd.Series(area).fillna("(none)").to_numpy(), "grid": frame["grid"].to_numpy(),
                            **{m: frame[m].to_numpy() for m in measures}}).groupby("area")
    count = by_area["grid"].nunique()
    for m in measures:
        mean = frame[m].sum() / max(grids, 1)
        ratio = by_area[m].sum() / count / mean - 1 if mean > 0 else count * 0.0
        for name in ratio.index[ratio.abs() > tolerance]:
            notes.append(f"police area {name}: its {count[name]} grid(s) hold {ratio[name]:+.0%} {m} against the "
                         f"township's mean; change its number of grids (merge or split) to balance it")
    return notes


def _workers_by_population(plan, grid: np.ndarray, locked: set[str]) -> np.ndarray:
    """The unlocked grids' workers shared out anew in proportion to their population (largest
    remainder; the total kept), so the staffing ratio follows the redrawn grids."""
    codes = plan.grids.index.to_numpy(dtype=str)
    workers = pd.to_numeric(plan.grids["workers"], errors="coerce").fillna(0).to_numpy(dtype=float)
    free = ~np.isin(codes, list(locked))
    assigned = pd.notna(grid)
    population = pd.Series(plan.faces["population"].to_numpy(dtype=float)[assigned]).groupby(
        grid[assigned].astype(str)).sum().reindex(codes).fillna(0).to_numpy()
    total, people = workers[free].sum(), population[free].sum()
    if people <= 0 or total <= 0:
        return workers.astype(int)
    share = population[free] * total / people
    out = np.floor(share)
    extra = int(round(total - out.sum()))
    out[np.argsort(-(share - out), kind="stable")[:extra]] += 1
    result = workers.copy()
    result[free] = out
    return result.astype(int)
