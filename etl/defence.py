"""The state of the three defence lines: road crossings of lines 2 and 3, and leak routes.

Line 1 (the border) is measured per segment in ``segment_coverage``. For lines
2 and 3, ``line_crossing`` holds every point where a road crosses the line,
matched to the nearest checkpoint of that line within :data:`CHECKPOINT_REACH_M`.
``leak_route`` holds, per line, the shortest road paths from the border belt
(the border_closed zone, else :data:`BORDER_BELT_M` around line 1) into the
interior core (inside line 3's ring) that pass no staffed checkpoint of that
line: one route per road entering the core.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
import psycopg
import pyproj
import shapely
import sqlalchemy as sa

from etl._copy import copy_rows
from etl._feeds import pg_transaction
from etl._fuse_points import region_srid
from gridwatch.settings import Settings

__all__ = ["derive_defence", "CHECKPOINT_REACH_M", "BLOCK_RADIUS_M", "BORDER_BELT_M", "SNAP_M"]

CHECKPOINT_REACH_M = 200.0  # a crossing is manned by the nearest checkpoint of its line this close
BLOCK_RADIUS_M = CHECKPOINT_REACH_M  # a staffed checkpoint closes the road edges this close to it
BORDER_BELT_M = 500.0  # without a border_closed zone, the belt along line 1 where leaks start
SNAP_M = 1.0  # road vertices are snapped to this grid, so near-touching roads connect
EDGE_TOLERANCE_M = 25.0  # a road end this close to the belt (e.g. at the border itself) starts in it

_CROSSINGS = """
INSERT INTO line_crossing (line_no, road_id, checkpoint_id, staffed, geom)
SELECT x.line_no, x.road_id, c.id, coalesce(c.staffed, false), x.geom
FROM (
    SELECT l.line_no, r.id AS road_id,
           (ST_Dump(ST_CollectionExtract(ST_Intersection(r.geom, l.geom), 1))).geom AS geom
    FROM road r JOIN defence_line l ON l.line_no IN (2, 3) AND ST_Intersects(r.geom, l.geom)
) x
LEFT JOIN LATERAL (
    SELECT c.id, c.staffed FROM checkpoint c
    WHERE c.line_no = x.line_no AND ST_DWithin(c.geom::geography, x.geom::geography, %(reach)s)
    ORDER BY ST_Distance(c.geom::geography, x.geom::geography) LIMIT 1
) c ON true
"""


def derive_defence(engine: sa.Engine, *, settings: Settings) -> None:
    """Rebuild ``line_crossing`` and ``leak_route`` in one transaction."""
    with pg_transaction(engine) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('gridwatch.derive.defence'))")
        conn.execute("TRUNCATE line_crossing, leak_route RESTART IDENTITY")
        conn.execute(_CROSSINGS, {"reach": CHECKPOINT_REACH_M})
        srid = region_srid(conn)
        if srid is None:
            return
        network = _road_network(conn, srid)
        if network is None:
            return
        sources, core = _ends(conn, srid, network)
        if not sources.size or not core.size:
            return
        routes = [
            (line_no, geom)
            for line_no in (2, 3)
            for geom in _leaks(network, _staffed(conn, srid, line_no), sources, core)
        ]
        _write_routes(conn, srid, routes)


@dataclass(frozen=True)
class _Network:
    graph: nx.Graph
    edges: np.ndarray  # LineStrings in metres, indexed by the graph's "edge" attribute
    xy: np.ndarray  # node coordinates, indexed by node id


def _fetch(conn: psycopg.Connection, query: str, params: tuple = ()) -> np.ndarray:
    rows = conn.execute(query, params).fetchall()
    return shapely.from_wkb([r[0] for r in rows]) if rows else np.empty(0, dtype=object)


def _road_network(conn: psycopg.Connection, srid: int) -> _Network | None:
    """The road graph: roads noded at every crossing, vertices snapped to :data:`SNAP_M`."""
    roads = _fetch(conn, "SELECT ST_AsBinary(ST_Transform(geom, %s)) FROM road", (srid,))
    if not roads.size:
        return None
    # Noded together with line 3, so that a route ends where its road enters the core; the ring's own
    # pieces are dropped again.
    ring = shapely.union_all(
        _fetch(conn, "SELECT ST_AsBinary(ST_Transform(geom, %s)) FROM defence_line WHERE line_no = 3", (srid,))
    )
    edges = shapely.get_parts(shapely.union_all(np.append(roads, ring), grid_size=SNAP_M))
    edges = edges[shapely.get_type_id(edges) == shapely.GeometryType.LINESTRING]
    if not ring.is_empty:
        edges = edges[~shapely.covered_by(edges, ring.buffer(SNAP_M))]
    ends = np.stack([shapely.get_coordinates(shapely.get_point(edges, i)) for i in (0, -1)], axis=1)
    keys, node = np.unique(np.round(ends.reshape(-1, 2) / SNAP_M).astype(np.int64), axis=0, return_inverse=True)
    node = node.reshape(-1, 2)
    length = shapely.length(edges)
    graph = nx.Graph()
    order = np.argsort(-length)  # parallel roads: the shortest is added last and wins
    graph.add_edges_from(
        (int(a), int(b), {"length": float(w), "edge": int(i)})
        for a, b, w, i in zip(node[order, 0], node[order, 1], length[order], order)
    )
    return _Network(graph, edges, keys * SNAP_M)


def _ends(conn: psycopg.Connection, srid: int, network: _Network) -> tuple[np.ndarray, np.ndarray]:
    """Node ids in the border belt (sources) and inside line 3's ring (the core)."""
    belt = shapely.union_all(_fetch(
        conn, "SELECT ST_AsBinary(ST_Transform(geom, %s)) FROM zone WHERE kind = 'border_closed'", (srid,)
    ))
    if belt.is_empty:
        line1 = shapely.union_all(_fetch(
            conn, "SELECT ST_AsBinary(ST_Transform(geom, %s)) FROM defence_line WHERE line_no = 1", (srid,)
        ))
        belt = line1.buffer(BORDER_BELT_M) if not line1.is_empty else belt
    ring = _fetch(conn, "SELECT ST_AsBinary(ST_Transform(geom, %s)) FROM defence_line WHERE line_no = 3", (srid,))
    core = shapely.union_all(shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.get_parts(ring)))))
    x, y = network.xy[:, 0], network.xy[:, 1]
    in_belt = (
        shapely.dwithin(belt, shapely.points(x, y), EDGE_TOLERANCE_M) if not belt.is_empty else np.zeros(len(x), bool)
    )
    in_core = shapely.intersects_xy(core, x, y) if not core.is_empty else np.zeros(len(x), bool)
    return np.flatnonzero(in_belt & ~in_core), np.flatnonzero(in_core)


def _staffed(conn: psycopg.Connection, srid: int, line_no: int) -> np.ndarray:
    return _fetch(
        conn, "SELECT ST_AsBinary(ST_Transform(geom, %s)) FROM checkpoint WHERE staffed AND line_no = %s",
        (srid, line_no),
    )


def _leaks(network: _Network, checkpoints: np.ndarray, sources: np.ndarray, core: np.ndarray) -> list[shapely.Geometry]:
    """Shortest paths from the belt to each core entry avoiding the edges next to ``checkpoints``."""
    graph = network.graph
    if checkpoints.size:
        blocked = set(shapely.STRtree(network.edges).query(checkpoints, predicate="dwithin", distance=BLOCK_RADIUS_M)[1])
        graph = nx.restricted_view(graph, [], [(u, v) for u, v, i in graph.edges(data="edge") if i in blocked])
    _, paths = nx.multi_source_dijkstra(graph, set(sources.tolist()), weight="length")
    in_core, in_belt = set(core.tolist()), set(sources.tolist())
    routes = {}
    for target in in_core & paths.keys():
        path = paths[target]
        entry = next(i for i, n in enumerate(path) if n in in_core)
        start = max(i for i, n in enumerate(path[: entry + 1]) if n in in_belt)
        routes[tuple(path[start : entry + 1])] = None
    return [
        shapely.line_merge(shapely.multilinestrings(
            [network.edges[graph.edges[a, b]["edge"]] for a, b in zip(route[:-1], route[1:])]
        ))
        for route in routes
        if len(route) > 1
    ]


def _write_routes(conn: psycopg.Connection, srid: int, routes: list[tuple[int, shapely.Geometry]]) -> None:
    if not routes:
        return
    line_no, geoms = zip(*routes)
    geoms = np.asarray(geoms, dtype=object)
    length = shapely.length(geoms)
    back = pyproj.Transformer.from_crs(srid, 4326, always_xy=True)
    lonlat = shapely.transform(geoms, lambda xy: np.column_stack(back.transform(*xy.T)))
    multi = np.array([shapely.multilinestrings(shapely.get_parts(g)) for g in lonlat], dtype=object)
    frame = pd.DataFrame({
        "line_no": line_no,
        "length_m": length,
        "geom": shapely.to_wkb(shapely.set_srid(multi, 4326), hex=True, include_srid=True),
    })
    copy_rows(conn, "leak_route", frame)
