"""Road routing: ETA and route on a tiny hand-made network, snapping, unreachable units, the graph cache.

The network: a trunk road west-east along lat 22.0 from lon 100.00 to 100.10 (~10.3 km),
then a track north from (100.10, 22.00) to (100.10, 22.05) (~5.5 km); far away, an island
road no one can reach off-road.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
import sqlalchemy as sa
from pyproj import Geod

from gridwatch.geo.routing import MAX_OFF_ROAD_M, OFF_ROAD_KMH, SPEED_KMH, build_road_graph, rank_units
from gridwatch.layers.nearest import nearest_units, road_graph
from gridwatch.settings import Settings

GEOD = Geod(ellps="WGS84")
TRUNK = [(100.0, 22.0), (100.1, 22.0)]
TRACK = [(100.1, 22.0), (100.1, 22.05)]
ISLAND = [(100.5, 22.5), (100.6, 22.5)]
TARGET = (100.1, 22.05)


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    return GEOD.inv(a[0], a[1], b[0], b[1])[2]


@pytest.fixture(scope="module")
def network():
    lines = shapely.linestrings([TRUNK, TRACK, ISLAND])
    return build_road_graph(lines, np.array(["trunk", "track", "secondary"]))


def units(*rows: tuple[str, str, float, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["callsign", "kind", "lon", "lat"])


def test_eta_and_route_along_the_roads(network):
    ranked = rank_units(network, TARGET, units(("V1", "vehicle", *TRUNK[0])))
    expected = metres(*TRUNK) / (SPEED_KMH["trunk"] / 3.6) + metres(*TRACK) / (SPEED_KMH["track"] / 3.6)
    assert ranked["eta_s"].iloc[0] == pytest.approx(expected, rel=0.005)
    assert ranked["via"].iloc[0] == "road"
    route = np.array(ranked["route"].iloc[0])
    assert route[0] == pytest.approx(TRUNK[0]) and route[-1] == pytest.approx(TARGET)
    assert np.hypot(*(route - TRACK[0]).T).min() < 1e-5  # through the junction
    assert ranked["route_m"].iloc[0] == pytest.approx(metres(*TRUNK) + metres(*TRACK), rel=0.005)


def test_off_network_unit_is_snapped_with_an_off_road_leg(network):
    ranked = rank_units(network, TARGET, units(("F1", "foot", 100.05, 22.01)))
    leg = metres((100.05, 22.01), (100.05, 22.0))  # ~1.1 km to the trunk road
    road = metres((100.05, 22.0), TRACK[0]) / (80 / 3.6) + metres(*TRACK) / (30 / 3.6)
    assert ranked["eta_s"].iloc[0] == pytest.approx(leg / (OFF_ROAD_KMH["foot"] / 3.6) + road, rel=0.03)
    route = ranked["route"].iloc[0]
    assert route[0] == [100.05, 22.01] and metres(tuple(route[1]), (100.05, 22.0)) < 260  # a node on the trunk


def test_ranking_direct_leg_and_unreachable_units(network):
    ranked = rank_units(network, TARGET, units(
        ("FAR", "vehicle", *TRUNK[0]), ("ISLAND", "vehicle", *ISLAND[0]), ("NEAR", "foot", 100.1005, 22.0495),
        ("MID", "vehicle", 100.1, 22.01)), k=5)
    assert ranked["callsign"].tolist() == ["NEAR", "MID", "FAR"]  # the island is unreachable: left out
    assert ranked["via"].tolist() == ["direct", "road", "road"]
    assert ranked["route"].iloc[0] == [[100.1005, 22.0495], list(TARGET)]
    assert rank_units(network, TARGET, units(("V1", "vehicle", *TRUNK[0])), k=0).empty
    assert MAX_OFF_ROAD_M < metres(ISLAND[0], TARGET)


def test_unknown_road_class_or_unit_kind_is_named(network):
    with pytest.raises(ValueError, match=r"road classes \['motorway'\] have no speed"):
        build_road_graph(shapely.linestrings([TRUNK]), np.array(["motorway"]))
    with pytest.raises(ValueError, match=r"unit kinds \['horse'\]"):
        rank_units(network, TARGET, units(("H", "horse", *TRUNK[0])))


# -- the database side: the cached graph and the available units ---------------------------------
def insert_road(conn: sa.Connection, cls: str, coords: list[tuple[float, float]]) -> None:
    wkt = "MULTILINESTRING((" + ", ".join(f"{x} {y}" for x, y in coords) + "))"
    conn.execute(sa.text("INSERT INTO road (class, geom) VALUES (:c, ST_GeomFromText(:g, 4326))"), {"c": cls, "g": wkt})


def test_graph_cache_follows_the_road_table(clean_db):
    assert road_graph(clean_db) is None
    with clean_db.begin() as conn:
        insert_road(conn, "trunk", TRUNK)
    first = road_graph(clean_db)
    assert road_graph(clean_db) is first  # unchanged roads: the cached graph
    with clean_db.begin() as conn:
        insert_road(conn, "track", TRACK)
    second = road_graph(clean_db)
    assert second is not first and second.graph.number_of_nodes() > first.graph.number_of_nodes()
    with clean_db.begin() as conn:  # same count and max id, another geometry
        conn.execute(sa.text("UPDATE road SET geom = ST_Translate(geom, 0, 0.001) WHERE class = 'track'"))
    third = road_graph(clean_db)
    assert third is not second
    with clean_db.begin() as conn:  # same geometry, another class (another speed)
        conn.execute(sa.text("UPDATE road SET class = 'patrol' WHERE class = 'track'"))
    assert road_graph(clean_db) is not third


def test_nearest_units_skip_silent_and_off_duty(clean_db):
    with clean_db.begin() as conn:
        insert_road(conn, "trunk", TRUNK)
        insert_road(conn, "track", TRACK)
        conn.execute(sa.text("""
            INSERT INTO unit (id, callsign, kind, status) VALUES
              (1, 'ON', 'vehicle', 'on_duty'), (2, 'SILENT', 'vehicle', 'on_duty'),
              (3, 'OFF', 'vehicle', 'off_duty'), (4, 'BUSY', 'vehicle', 'responding');
            INSERT INTO unit_latest (unit_id, ts, geom, source)
            SELECT id, now() - CASE WHEN id = 2 THEN interval '1 hour' ELSE interval '10 seconds' END,
                   ST_SetSRID(ST_MakePoint(100.05, 22.0), 4326), 'test' FROM unit"""))
    ranked = nearest_units(clean_db, Settings(unit_silent_after_s=600), TARGET)
    assert ranked["callsign"].tolist() == ["ON"]
    assert ranked["eta_s"].iloc[0] > 0
