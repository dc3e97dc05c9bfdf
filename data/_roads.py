"""Road network (trunk, secondary, track, patrol), its routing graph, and rivers."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import networkx as nx
import numpy as np
import shapely

from ._geometry import WORK_CRS, smooth_noise
from ._names import NameMaker
from ._region import Outline
from ._scale import ScaleSpec

__all__ = ["RoadNetwork", "build_rivers", "build_roads"]

ROAD_CLASSES = ("trunk", "secondary", "track", "patrol")
SPEED_KMH = {"trunk": (50.0, 70.0), "secondary": (40.0, 55.0), "track": (20.0, 35.0), "patrol": (20.0, 30.0)}
_WIGGLE_VERTICES = 10


@dataclass(frozen=True)
class RoadNetwork:
    """Roads as lines plus a routing graph whose edges carry the road geometry."""

    road: gpd.GeoDataFrame  # code, class, name
    graph: nx.Graph  # edge attrs: length, road (row in ``road``), start (node the geometry starts at)
    node_xy: np.ndarray  # (n, 2)
    patrol_nodes: np.ndarray  # node ids on the patrol road


def _delaunay_pairs(xy: np.ndarray) -> np.ndarray:
    """(m, 2) index pairs of the Delaunay edges of points ``xy``."""
    if len(xy) < 2:
        return np.empty((0, 2), dtype=np.int64)
    if len(xy) == 2:
        return np.array([[0, 1]])
    edges = shapely.get_parts(shapely.delaunay_triangles(shapely.multipoints(xy), only_edges=True))
    ends = shapely.get_coordinates(edges).reshape(-1, 2)
    tree = shapely.STRtree(shapely.points(xy))
    _, idx = tree.query_nearest(shapely.points(ends), all_matches=False)
    pairs = np.sort(idx.reshape(-1, 2), axis=1)
    return np.unique(pairs, axis=0)


def _inside(pairs: np.ndarray, xy: np.ndarray, area: shapely.Geometry) -> np.ndarray:
    """Mask of the straight segments between ``pairs`` that lie inside ``area``."""
    lines = shapely.linestrings(np.stack([xy[pairs[:, 0]], xy[pairs[:, 1]]], axis=1))
    return shapely.contains(area, lines)


def _mst(pairs: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Minimum spanning forest of the candidate ``pairs`` (Euclidean length)."""
    g = nx.Graph()
    length = np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T)
    g.add_weighted_edges_from(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), length.tolist()))
    mst = sorted(tuple(sorted(e)) for e in nx.minimum_spanning_edges(g, data=False))
    return np.array(mst, dtype=np.int64).reshape(-1, 2)


def _pair_in(pairs: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Mask of the (sorted) index ``pairs`` that also occur in ``table``."""
    width = int(max(pairs.max(initial=0), table.max(initial=0))) + 1
    return np.isin(pairs[:, 0] * width + pairs[:, 1], table[:, 0] * width + table[:, 1])


def _wiggle(a: np.ndarray, b: np.ndarray, area: shapely.Geometry, rng: np.random.Generator) -> np.ndarray:
    """Curved road shapes (m, k, 2) from a to b; straight where the curve would leave ``area``."""
    t = np.linspace(0.0, 1.0, _WIGGLE_VERTICES)
    d = b - a
    length = np.hypot(d[:, 0], d[:, 1])[:, None]
    normal = np.column_stack([-d[:, 1], d[:, 0]]) / np.maximum(length, 1e-9)
    k = np.arange(1, 4)
    amp = rng.normal(0.0, 0.05, (len(a), 3)) / k * length
    offset = amp @ np.sin(np.pi * np.outer(k, t))
    straight = a[:, None, :] + t[None, :, None] * d[:, None, :]
    curved = straight + offset[:, :, None] * normal[:, None, :]
    ok = shapely.contains(area, shapely.linestrings(curved))
    return np.where(ok[:, None, None], curved, straight)


def build_roads(
    spec: ScaleSpec,
    outline: Outline,
    settlement: gpd.GeoDataFrame,
    township_county: dict[str, str],
    patrol: shapely.LineString,
    rng: np.random.Generator,
) -> RoadNetwork:
    """Connect seat, county seats, towns, villages and ports; join the patrol road to them."""
    area = outline.prefecture.buffer(20.0)
    shapely.prepare(area)
    sxy = shapely.get_coordinates(settlement.geometry.to_numpy())
    node_xy = np.vstack([sxy, outline.ports])
    n_set = len(sxy)
    kind = np.concatenate([settlement["kind"].to_numpy(), np.full(len(outline.ports), "port")])
    town_idx = np.flatnonzero(np.isin(kind, ["seat", "town"]))
    county = np.array([township_county[c] for c in settlement["township_code"].to_numpy()[town_idx]])
    seat_county = county[kind[town_idx] == "seat"][0]
    county_seats = []
    for c in sorted(set(county)):
        members = town_idx[county == c]
        if c == seat_county:
            county_seats.append(int(np.flatnonzero(kind == "seat")[0]))
            continue
        centroid = node_xy[members].mean(axis=0)
        county_seats.append(int(members[np.argmin(np.hypot(*(node_xy[members] - centroid).T))]))
    trunk_nodes = np.unique(np.concatenate([county_seats, np.arange(n_set, len(node_xy))]))

    def class_edges(nodes: np.ndarray) -> np.ndarray:
        pairs = nodes[_delaunay_pairs(node_xy[nodes])]
        pairs = pairs[_inside(pairs, node_xy, area)] if len(pairs) else pairs
        return _mst(pairs, node_xy) if len(pairs) else pairs

    trunk = class_edges(trunk_nodes)
    secondary = class_edges(np.union1d(town_idx, county_seats))
    all_pairs = _delaunay_pairs(node_xy)
    all_pairs = all_pairs[_inside(all_pairs, node_xy, area)]
    mst = _mst(all_pairs, node_xy)
    is_village = kind == "village"
    track = mst[~_pair_in(mst, np.vstack([trunk, secondary]))]
    spare = all_pairs[~_pair_in(all_pairs, np.vstack([trunk, secondary, mst]))]
    spare_len = np.hypot(*(node_xy[spare[:, 0]] - node_xy[spare[:, 1]]).T)
    median = np.median(np.hypot(*(node_xy[mst[:, 0]] - node_xy[mst[:, 1]]).T)) if len(mst) else 0.0
    loops = spare[(is_village[spare].any(axis=1)) & (spare_len < 1.2 * median) & (rng.random(len(spare)) < 0.1)]
    track = np.vstack([track, loops])

    # patrol road: cut at connection vertices (both ends included) that tracks and ports reach
    pcoords = shapely.get_coordinates(patrol)
    n_conn = max(2, int(patrol.length // (12000.0 if spec.radius_km > 30 else 4000.0)))
    conn = np.unique(np.linspace(0, len(pcoords) - 1, n_conn + 2).round().astype(int))
    port_conn = shapely.STRtree(shapely.points(pcoords)).query_nearest(shapely.points(outline.ports), all_matches=False)[1]
    conn = np.unique(np.concatenate([conn, port_conn]))
    patrol_nodes = len(node_xy) + np.arange(len(conn))
    node_xy = np.vstack([node_xy, pcoords[conn]])
    near_set = shapely.STRtree(shapely.points(sxy)).query_nearest(shapely.points(pcoords[conn]), all_matches=False)[1]
    connectors = np.column_stack([near_set, patrol_nodes])
    connectors = connectors[_inside(connectors, node_xy, area)]
    port_links = np.column_stack([np.arange(n_set, n_set + len(outline.ports)),
                                  patrol_nodes[np.searchsorted(conn, port_conn)]])

    # geometries: curved ordinary roads, patrol pieces along the patrol line
    classes = (["trunk"] * len(trunk) + ["secondary"] * len(secondary) + ["track"] * (len(track) + len(connectors)))
    pairs = np.vstack([trunk, secondary, track, connectors]).astype(np.int64)
    shapes = list(_wiggle(node_xy[pairs[:, 0]], node_xy[pairs[:, 1]], area, rng))
    for a, b in port_links:
        shapes.append(np.vstack([node_xy[a], node_xy[b]]))
        classes.append("patrol")
    pairs = np.vstack([pairs, port_links])
    piece_pairs = np.column_stack([patrol_nodes[:-1], patrol_nodes[1:]])
    for (a, b), i, j in zip(piece_pairs, conn[:-1], conn[1:]):
        shapes.append(pcoords[i:j + 1])
        classes.append("patrol")
    pairs = np.vstack([pairs, piece_pairs])
    cls = np.array(classes, dtype=object)
    names = np.full(len(cls), None, dtype=object)
    for c, fmt in (("trunk", "S{}线"), ("secondary", "X{}线")):
        idx = np.flatnonzero(cls == c)
        names[idx] = [fmt.format((301 if c == "trunk" else 101) + i) for i in range(len(idx))]
    names[cls == "patrol"] = "边境巡逻道"
    road = gpd.GeoDataFrame(
        {"code": [f"R{i + 1:05d}" for i in range(len(cls))], "class": cls, "name": names},
        geometry=[shapely.LineString(shape) for shape in shapes],
        crs=WORK_CRS,
    )
    graph = nx.Graph()
    graph.add_nodes_from(range(len(node_xy)))
    lengths = road.geometry.length.to_numpy()
    for i, (a, b) in enumerate(pairs.tolist()):
        if a != b and not graph.has_edge(a, b):
            graph.add_edge(a, b, length=float(lengths[i]), road=i, start=a)
    return RoadNetwork(road=road, graph=graph, node_xy=node_xy, patrol_nodes=patrol_nodes)


def build_rivers(spec: ScaleSpec, outline: Outline, names: NameMaker, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """Rivers that rise inland and flow out across the border."""
    lines, labels = [], names.take(spec.n_rivers)
    for _ in range(spec.n_rivers):
        theta = rng.uniform(-np.pi / 3, np.pi / 2)
        start = outline.center + 0.6 * outline.radius * np.array([np.cos(theta), np.sin(theta)])
        end_i = rng.integers(len(outline.arc_theta) // 8, 7 * len(outline.arc_theta) // 8)
        end = shapely.get_coordinates(outline.border)[end_i]
        end = end + (end - outline.center) / np.linalg.norm(end - outline.center) * 3000.0
        t = np.linspace(0.0, 1.0, 400)
        d = end - start
        normal = np.array([-d[1], d[0]]) / np.linalg.norm(d)
        offset = smooth_noise(t, rng, k_min=1, k_max=60, slope=1.1) * 0.04 * np.linalg.norm(d) * np.sin(np.pi * t)
        xy = start + t[:, None] * d + offset[:, None] * normal
        clipped = shapely.intersection(shapely.LineString(xy), outline.prefecture)
        lines.append(max(shapely.get_parts(clipped), key=lambda g: g.length))
    return gpd.GeoDataFrame(
        {"name": [f"{zh}河" for zh, _ in labels], "name_en": [f"{en} River" for _, en in labels]},
        geometry=lines, crs=WORK_CRS,
    )
