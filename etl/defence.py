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

import networkx as nx
import numpy as np
import pandas as pd
import psycopg
import shapely
import sqlalchemy as sa

from gridwatch.etl._copy import copy_rows
from gridwatch.etl.database import pg_transaction
from gridwatch.geo.routing import RoadGraph, build_road_graph
from gridwatch.settings import Settings

__all__ = ["derive_defence", "CHECKPOINT_REACH_M", "BLOCK_RADIUS_M", "BORDER_BELT_M"]

CHECKPOINT_REACH_M = 200.0  # a crossing is manned by the nearest checkpoint of its line this close
BLOCK_RADIUS_M = CHECKPOINT_REACH_M  # a staffed checkpoint closes the road edges this close to it
BORDER_BELT_M = 500.0  # without a border_closed zone, the belt along line 1 where leaks start
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
        roads = conn.execute("SELECT ST_AsBinary(geom), class FROM road ORDER BY id").fetchall()
        if not roads:
            return
        wkb, classes = zip(*roads)
        ring = _fetch(conn, "SELECT ST_AsBinary(geom) FROM defence_line WHERE line_no = 3")
        # Noded with line 3, so that a route ends where its road enters the core.
        network = build_road_graph(shapely.from_wkb(list(wkb)), np.asarray(classes, dtype=object), cut_by=ring)
        sources, core = _ends(conn, network, network.project(ring))
        if not sources.size or not core.size:
            return
        routes = [
            (line_no, route)
            for line_no in (2, 3)
            for route in _leaks(network, _staffed(conn, network, line_no), sources, core)
        ]
        _write_routes(conn, network, routes)


def _fetch(conn: psycopg.Connection, query: str, params: tuple = ()) -> np.ndarray:
    rows = conn.execute(query, params).fetchall()
    return shapely.from_wkb([r[0] for r in rows]) if rows else np.empty(0, dtype=object)


def _ends(conn: psycopg.Connection, network: RoadGraph, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Node ids where leaks start (junctions and road ends in the border belt) and inside line 3's ring (the core)."""
    belt = shapely.union_all(network.project(
        _fetch(conn, "SELECT ST_AsBinary(geom) FROM zone WHERE kind = 'border_closed'")))
    if belt.is_empty:
        line1 = shapely.union_all(network.project(
            _fetch(conn, "SELECT ST_AsBinary(geom) FROM defence_line WHERE line_no = 1")))
        belt = line1.buffer(BORDER_BELT_M) if not line1.is_empty else belt
    core = shapely.union_all(shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.get_parts(ring)))))
    x, y = network.xy[:, 0], network.xy[:, 1]
    ends = np.zeros(len(x), dtype=bool)
    ends[network.piece_ends.ravel()] = True
    in_belt = ends & (shapely.dwithin(belt, shapely.points(x, y), EDGE_TOLERANCE_M) if not belt.is_empty else False)
    in_core = shapely.intersects_xy(core, x, y) if not core.is_empty else np.zeros(len(x), bool)
    return np.flatnonzero(in_belt & ~in_core), np.flatnonzero(in_core)


def _staffed(conn: psycopg.Connection, network: RoadGraph, line_no: int) -> np.ndarray:
    """The staffed checkpoints of a line, in the network's metres."""
    return network.project(_fetch(conn, "SELECT ST_AsBinary(geom) FROM checkpoint WHERE staffed AND line_no = %s",
                                  (line_no,)))


def _leaks(network: RoadGraph, checkpoints: np.ndarray, sources: np.ndarray, core: np.ndarray) -> list[list[int]]:
    """Node paths of the shortest road routes from the belt to each entry into the core, passing no
    road piece next to ``checkpoints``: one per distinct stretch from the last belt node to the entry."""
    blocked = set()
    if checkpoints.size:
        blocked = set(shapely.STRtree(network.pieces).query(checkpoints, predicate="dwithin",
                                                            distance=BLOCK_RADIUS_M)[1].tolist())
    graph = nx.Graph([(u, v, d) for u, v, d in network.graph.edges(data=True) if d["piece"] not in blocked])
    start = -1  # one start joined to every source, so one Dijkstra serves all of them
    graph.add_edges_from((start, int(n), {"length_m": 0.0}) for n in sources)
    pred, _ = nx.dijkstra_predecessor_and_distance(graph, start, weight="length_m")
    in_core, in_belt = set(core.tolist()), set(sources.tolist())
    routes: dict[tuple[int, ...], None] = {}
    for entry in in_core & pred.keys():
        path = [entry]
        while path[-1] not in in_belt:  # back along the tree; a core node on the way: not an entry
            path.append(pred[path[-1]][0])
            if path[-1] in in_core:
                break
        else:
            routes[tuple(reversed(path))] = None
    return [list(route) for route in routes]


def _write_routes(conn: psycopg.Connection, network: RoadGraph, routes: list[tuple[int, list[int]]]) -> None:
    if not routes:
        return
    line_no, paths = zip(*routes)
    nodes = np.concatenate(paths)
    which = np.repeat(np.arange(len(paths)), [len(p) for p in paths])
    metric = shapely.linestrings(network.xy[nodes], indices=which)
    lonlat = shapely.multilinestrings(shapely.linestrings(network.lonlat[nodes], indices=which),
                                      indices=np.arange(len(paths)))
    frame = pd.DataFrame({
        "line_no": line_no,
        "length_m": shapely.length(metric),
        "geom": shapely.to_wkb(shapely.set_srid(lonlat, 4326), hex=True, include_srid=True),
    })
    copy_rows(conn, "leak_route", frame)
