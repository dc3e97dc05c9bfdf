"""Travel time by unit kind: a routing graph built from road lines, and units ranked by ETA to a target.

The graph is built in the roads' local metric CRS: the lines are noded at every
crossing (vertices snapped to :data:`SNAP_M`), cut into pieces of at most
:data:`SEGMENT_M` so that every point of a road is near a node, and each piece
becomes an edge weighted by its travel time at the speed of its road class
(:data:`SPEED_KMH`). Roads are two-way, so the graph is undirected and one
Dijkstra from the target ranks every unit (the reverse search of a
multi-source, single-target problem), over a sparse matrix of the edges
(``scipy.sparse.csgraph``).

How a unit travels follows its kind (:data:`TRAVEL`), at the speeds of
``settings.unit_speed_kmh`` (keys :data:`SPEED_KEYS`):

- ``road`` (vehicles): along the roads at their class speeds, the legs from the unit to
  its nearest node and from the target's node at ``vehicle_offroad``; or straight
  across country at that speed.
- ``foot`` (foot patrols, posts, checkpoint crews): along the shortest road path at
  ``foot`` (walking speed), the legs at ``foot_offroad``; or straight across
  country at ``foot_offroad``, whichever is quicker.
- ``flight`` (drones): a straight line at ``drone``, whatever lies under it.

Legs off the roads longer than :data:`MAX_OFF_ROAD_M` are not taken (flights
excepted): a unit with no other way is unreachable (ETA infinite) and never ranked.
Each ranked unit says how it goes (``via``): ``road``, ``foot``, ``cross_country`` or ``flight``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import networkx as nx
import numpy as np
import pandas as pd
import pyproj
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from gridwatch.geo.crs import WGS84, local_metric_crs

__all__ = ["SPEED_KMH", "TRAVEL", "SPEED_KEYS", "MAX_OFF_ROAD_M", "RoadGraph", "build_road_graph",
           "rank_units"]

SPEED_KMH = {"trunk": 80.0, "secondary": 60.0, "track": 30.0, "patrol": 40.0}
TRAVEL = {"vehicle": "road", "foot": "foot", "post": "foot", "checkpoint": "foot", "drone": "flight"}
SPEED_KEYS = ("foot", "foot_offroad", "vehicle_offroad", "drone")  # of ``speeds`` in :func:`rank_units`
MAX_OFF_ROAD_M = 5_000.0
SNAP_M = 1.0
SEGMENT_M = 500.0


@dataclass(frozen=True)
class RoadGraph:
    """The routing graph: nodes ``0..n-1`` with coordinates, edges with ``time_s``, ``length_m`` and
    ``piece`` (the noded road piece they lie on); the same edges as sparse matrices for Dijkstra."""

    graph: nx.Graph
    time_s: csr_matrix  # (n, n) the quickest edge's travel time by road class, seconds
    length_m: csr_matrix  # (n, n) the shortest edge's length, metres
    xy: np.ndarray  # (n, 2) node coordinates in metres (``crs``)
    lonlat: np.ndarray  # (n, 2) the same in degrees
    crs: pyproj.CRS
    tree: shapely.STRtree  # over the node points in metres
    forward: pyproj.Transformer  # degrees to ``crs`` (made once: making one costs ~100 ms)
    pieces: np.ndarray  # the roads noded at every crossing, in metres
    piece_ends: np.ndarray  # (pieces, 2) the node at each end of each piece: the junctions and dead ends

    def to_metric(self, lonlat: np.ndarray) -> np.ndarray:
        """(m, 2) lon/lat degrees as (m, 2) metres in the graph's CRS."""
        if not len(lonlat):
            return np.empty((0, 2))
        return np.column_stack(self.forward.transform(lonlat[:, 0], lonlat[:, 1]))

    def project(self, geoms: np.ndarray) -> np.ndarray:
        """Shapely geometries in lon/lat degrees, in the graph's metric CRS."""
        return shapely.transform(geoms, lambda xy: self.to_metric(xy))


def _unknown_classes(classes: np.ndarray, speeds: dict[str, float]) -> None:
    unknown = sorted(set(classes.tolist()) - set(speeds))
    if unknown:
        raise ValueError(f"road classes {unknown} have no speed; expected one of {sorted(speeds)}")


def build_road_graph(lines: np.ndarray, classes: np.ndarray, *, speeds: dict[str, float] = SPEED_KMH,
                     cut_by: np.ndarray | None = None) -> RoadGraph:
    """The routing graph of road ``lines`` (shapely (multi)lines, lon/lat degrees) of the given ``classes``.

    ``cut_by`` are lines that are not roads but split the roads where they cross them (a
    defence line, so a route can end where its road enters the ring).

    >>> g = build_road_graph(np.array([shapely.LineString([(100, 22), (100.01, 22)])]), np.array(["trunk"]))
    >>> g.graph.number_of_nodes(), round(g.graph.size(weight="length_m")), g.piece_ends.tolist()
    (4, 1033, [[0, 3]])
    """
    lines, line = shapely.get_parts(np.asarray(lines, dtype=object), return_index=True)
    classes = np.asarray(classes, dtype=object)[line]
    _unknown_classes(classes, speeds)
    crs = local_metric_crs(tuple(shapely.total_bounds(lines)))
    fwd = pyproj.Transformer.from_crs(WGS84, crs, always_xy=True)
    to_metric = partial(shapely.transform, transformation=lambda xy: np.column_stack(fwd.transform(*xy.T)))
    metric = to_metric(lines)
    cuts = to_metric(shapely.get_parts(cut_by)) if cut_by is not None and len(cut_by) else np.empty(0, dtype=object)
    pieces = shapely.get_parts(shapely.union_all(np.append(metric, cuts), grid_size=SNAP_M))
    pieces = pieces[shapely.get_type_id(pieces) == shapely.GeometryType.LINESTRING]
    if len(cuts):
        pieces = pieces[~shapely.covered_by(pieces, shapely.union_all(cuts).buffer(SNAP_M))]
    # each noded piece takes the class of the road it came from (nearest to its middle)
    _, source = shapely.STRtree(metric).query_nearest(shapely.line_interpolate_point(pieces, 0.5, normalized=True),
                                                      all_matches=False)
    speed_ms = pd.Series(classes[source]).map(speeds).to_numpy(dtype=float) / 3.6
    xy, piece = shapely.get_coordinates(shapely.segmentize(pieces, SEGMENT_M), return_index=True)
    inner = np.flatnonzero(piece[1:] == piece[:-1])  # vertex i -> i + 1 is an edge of one piece
    keys, node = np.unique(np.round(xy / SNAP_M).astype(np.int64), axis=0, return_inverse=True)
    node = node.ravel()
    a, b = node[inner], node[inner + 1]
    length = np.hypot(*(xy[inner + 1] - xy[inner]).T)
    time_s = length / speed_ms[piece[inner]]
    order = np.argsort(-time_s)  # parallel edges: the quickest is added last and wins
    graph = nx.Graph()
    graph.add_nodes_from(range(len(keys)))
    graph.add_edges_from(
        (int(u), int(v), {"time_s": float(t), "length_m": float(m), "piece": int(k)})
        for u, v, t, m, k in zip(a[order], b[order], time_s[order], length[order], piece[inner][order])
        if u != v
    )
    real = a != b
    time_csr = _matrix(a[real], b[real], time_s[real], len(keys))
    length_csr = _matrix(a[real], b[real], length[real], len(keys))
    first = np.r_[0, np.flatnonzero(piece[1:] != piece[:-1]) + 1]
    last = np.r_[first[1:] - 1, len(piece) - 1]
    node_xy = keys * SNAP_M
    back = pyproj.Transformer.from_crs(crs, WGS84, always_xy=True)
    lonlat = np.column_stack(back.transform(node_xy[:, 0], node_xy[:, 1]))
    return RoadGraph(graph, time_csr, length_csr, node_xy, lonlat, crs, shapely.STRtree(shapely.points(node_xy)),
                     fwd, pieces,
                     np.column_stack([node[first], node[last]]))


def _matrix(a: np.ndarray, b: np.ndarray, weight: np.ndarray, n: int) -> csr_matrix:
    """The (n, n) upper-triangular matrix of undirected edges a-b: the least weight of parallel edges."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    frame = pd.DataFrame({"lo": lo, "hi": hi, "w": weight}).groupby(["lo", "hi"], sort=False)["w"].min()
    return csr_matrix((frame.to_numpy(), (frame.index.get_level_values(0), frame.index.get_level_values(1))),
                      shape=(n, n))


def _snap(road: RoadGraph, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest node and the distance to it (metres) of each point."""
    (_, nodes), dist = road.tree.query_nearest(shapely.points(xy), all_matches=False, return_distance=True)
    return nodes, dist


def _path(pred: np.ndarray, start: int) -> list[int]:
    """Nodes from ``start`` back to the Dijkstra's source, following the predecessors."""
    path = [start]
    while pred[path[-1]] >= 0:
        path.append(int(pred[path[-1]]))
    return path


def _speeds(speeds: dict[str, float]) -> dict[str, float]:
    missing = sorted(set(SPEED_KEYS) - set(speeds))
    if missing:
        raise ValueError(f"unit speeds {missing} are missing; expected all of {list(SPEED_KEYS)}")
    return {key: speeds[key] / 3.6 for key in SPEED_KEYS}


def rank_units(road: RoadGraph, target: tuple[float, float], units: pd.DataFrame, *, speeds: dict[str, float],
               k: int = 5) -> pd.DataFrame:
    """The ``k`` quickest of ``units`` (columns lon, lat, kind, ...) to reach ``target`` (lon, lat).

    ``speeds`` are km/h by :data:`SPEED_KEYS` (``settings.unit_speed_kmh``). Returns the chosen rows, quickest
    first, with ``eta_s``, ``via`` (``road``, ``foot``, ``cross_country`` or ``flight``), ``route_m``
    and ``route`` (a list of [lon, lat] from the unit to the target). Unreachable units are left out.
    """
    unknown = sorted(set(units["kind"]) - set(TRAVEL))
    if unknown:
        raise ValueError(f"unit kinds {unknown} have no way to travel; expected one of {sorted(TRAVEL)}")
    ms = _speeds(speeds)
    travel = units["kind"].map(TRAVEL).to_numpy(dtype=object)
    target_ll = np.array([target], dtype=float)
    units_ll = units[["lon", "lat"]].to_numpy(dtype=float)
    target_xy, units_xy = road.to_metric(target_ll), road.to_metric(units_ll)
    (target_node,), (target_off,) = _snap(road, target_xy)
    unit_node, unit_off = _snap(road, units_xy)
    direct_m = np.hypot(*(units_xy - target_xy).T)
    legs_m = np.where((unit_off <= MAX_OFF_ROAD_M) & (target_off <= MAX_OFF_ROAD_M), unit_off + target_off, np.inf)
    inf = np.full(len(units), np.inf)
    on_road, road_pred = inf, None  # by vehicle along the quickest roads, or on foot along the shortest
    driving, walking = travel == "road", travel == "foot"
    if driving.any():
        road_s, road_pred = dijkstra(road.time_s, directed=False, indices=int(target_node), return_predecessors=True)
        on_road = np.where(driving, road_s[unit_node] + legs_m / ms["vehicle_offroad"], on_road)
    walk_pred = None
    if walking.any():
        walk_m, walk_pred = dijkstra(road.length_m, directed=False, indices=int(target_node),
                                     return_predecessors=True)
        on_road = np.where(walking, walk_m[unit_node] / ms["foot"] + legs_m / ms["foot_offroad"], on_road)
    straight_ms = np.select([driving, walking], [ms["vehicle_offroad"], ms["foot_offroad"]], ms["drone"])
    straight = np.where((direct_m <= MAX_OFF_ROAD_M) | (travel == "flight"), direct_m / straight_ms, np.inf)
    eta = np.minimum(on_road, straight)
    best = np.argsort(eta, kind="stable")[:k]
    best = best[np.isfinite(eta[best])]
    chosen = units.iloc[best].copy()
    chosen["eta_s"] = eta[best]
    along = on_road[best] < straight[best]
    chosen["via"] = np.where(along, travel[best], np.where(travel[best] == "flight", "flight", "cross_country"))
    routes, lengths = [], []
    for i, by_road in zip(best, along):  # at most k routes, each a walk along a Dijkstra tree
        if not by_road:
            routes.append([units_ll[i].tolist(), target_ll[0].tolist()])
            lengths.append(float(direct_m[i]))
            continue
        nodes = _path(road_pred if driving[i] else walk_pred, int(unit_node[i]))
        routes.append([units_ll[i].tolist(), *road.lonlat[nodes].tolist(), target_ll[0].tolist()])
        lengths.append(float(unit_off[i] + target_off + np.hypot(*np.diff(road.xy[nodes], axis=0).T).sum()))
    chosen["route_m"] = lengths
    chosen["route"] = routes
    return chosen.reset_index(drop=True)
