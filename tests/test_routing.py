"""Routing: ETA by unit kind and route on a tiny hand-made network, snapping, unreachable units, the graph cache.

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

from gridwatch.geo.routing import MAX_OFF_ROAD_M, SPEED_KMH, build_road_graph, rank_units
from gridwatch.layers.nearest import nearest_units, road_graph
from gridwatch.settings import UNIT_SPEED_KMH, Settings

GEOD = Geod(ellps="WGS84")
TRUNK = [(100.0, 22.0), (100.1, 22.0)]
TRACK = [(100.1, 22.0), (100.1, 22.05)]
ISLAND = [(100.5, 22.5), (100.6, 22.5)]
TARGET = (100.1, 22.05)
SPEEDS = {"foot": 4.0, "foot_offroad": 2.0, "vehicle_offroad": 10.0, "drone": 50.0}  # km/h, unlike the defaults


def ms(kmh: float) -> float:
    return kmh / 3.6


def rank(network, *rows: tuple[str, str, float, float], k: int = 5) -> pd.DataFrame:
    return rank_units(network, TARGET, units(*rows), speeds=SPEEDS, k=k)


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    return GEOD.inv(a[0], a[1], b[0], b[1])[2]


@pytest.fixture(scope="module")
def network():
    lines = shapely.linestrings([TRUNK, TRACK, ISLAND])
    return build_road_graph(lines, np.array(["trunk", "track", "secondary"]))


def units(*rows: tuple[str, str, float, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["callsign", "kind", "lon", "lat"])


def test_eta_and_route_along_the_roads(network):
    ranked = rank(network, ("V1", "vehicle", *TRUNK[0]))
    expected = metres(*TRUNK) / (SPEED_KMH["trunk"] / 3.6) + metres(*TRACK) / (SPEED_KMH["track"] / 3.6)
    assert ranked["eta_s"].iloc[0] == pytest.approx(expected, rel=0.005)
    assert ranked["via"].iloc[0] == "road"
    route = np.array(ranked["route"].iloc[0])
    assert route[0] == pytest.approx(TRUNK[0]) and route[-1] == pytest.approx(TARGET)
    assert np.hypot(*(route - TRACK[0]).T).min() < 1e-5  # through the junction
    assert ranked["route_m"].iloc[0] == pytest.approx(metres(*TRUNK) + metres(*TRACK), rel=0.005)


def test_off_network_vehicle_is_snapped_with_an_off_road_leg(network):
    ranked = rank(network, ("V2", "vehicle", 100.05, 22.01))
    leg = metres((100.05, 22.01), (100.05, 22.0))  # ~1.1 km to the trunk road
    road = metres((100.05, 22.0), TRACK[0]) / ms(80) + metres(*TRACK) / ms(30)
    assert ranked["eta_s"].iloc[0] == pytest.approx(leg / ms(SPEEDS["vehicle_offroad"]) + road, rel=0.03)
    route = ranked["route"].iloc[0]
    assert route[0] == [100.05, 22.01] and metres(tuple(route[1]), (100.05, 22.0)) < 260  # a node on the trunk


def test_foot_patrol_walks_the_roads_or_crosses_country_whichever_is_quicker(network):
    far, near = (100.05, 22.01), (100.097, 22.048)  # near: closer across country than by the track
    ranked = rank(network, ("FAR", "foot", *far), ("NEAR", "foot", *near))
    assert ranked["callsign"].tolist() == ["NEAR", "FAR"] and ranked["via"].tolist() == ["cross_country", "foot"]
    assert ranked["eta_s"].iloc[0] == pytest.approx(metres(near, TARGET) / ms(SPEEDS["foot_offroad"]), rel=0.001)
    walked = metres((100.05, 22.0), TRACK[0]) + metres(*TRACK)  # at walking speed, whatever the road class
    leg = metres(far, (100.05, 22.0))
    assert ranked["eta_s"].iloc[1] == pytest.approx(leg / ms(SPEEDS["foot_offroad"]) + walked / ms(SPEEDS["foot"]),
                                                    rel=0.03)
    assert ranked["route_m"].iloc[1] == pytest.approx(leg + walked, rel=0.03)
    assert metres(far, TARGET) > MAX_OFF_ROAD_M  # too far to cross country


def test_drone_flies_straight_and_kinds_of_one_place_differ(network):
    start = TRUNK[0]
    ranked = rank(network, ("V", "vehicle", *start), ("F", "foot", *start), ("D", "drone", *start),
                  ("P", "post", *start), ("ISLAND", "drone", *ISLAND[0]))
    by = ranked.set_index("callsign")
    assert by.loc["D", "eta_s"] == pytest.approx(metres(start, TARGET) / ms(SPEEDS["drone"]), rel=0.001)
    assert by.loc["D", "route"] == [list(start), list(TARGET)] and by.loc["D", "via"] == "flight"
    assert by.loc["ISLAND", "eta_s"] == pytest.approx(metres(ISLAND[0], TARGET) / ms(SPEEDS["drone"]), rel=0.001)
    walked = (metres(*TRUNK) + metres(*TRACK)) / ms(SPEEDS["foot"])
    assert by.loc["F", "eta_s"] == pytest.approx(walked, rel=0.005) and by.loc["F", "via"] == "foot"
    assert by.loc["P", "eta_s"] == by.loc["F", "eta_s"]  # a post's crew goes on foot
    assert by.loc["V", "via"] == "road" and by.loc["V", "eta_s"] < by.loc["F", "eta_s"] / 5
    assert ranked["eta_s"].is_monotonic_increasing


def test_ranking_direct_leg_and_unreachable_units(network):
    ranked = rank(network, ("FAR", "vehicle", *TRUNK[0]), ("ISLAND", "vehicle", *ISLAND[0]),
                  ("NEAR", "foot", 100.1005, 22.0495), ("MID", "vehicle", 100.1, 22.01))
    assert ranked["callsign"].tolist() == ["NEAR", "MID", "FAR"]  # the island is unreachable: left out
    assert ranked["via"].tolist() == ["cross_country", "road", "road"]
    assert ranked["route"].iloc[0] == [[100.1005, 22.0495], list(TARGET)]
    assert rank(network, ("V1", "vehicle", *TRUNK[0]), k=0).empty
    assert MAX_OFF_ROAD_M < metres(ISLAND[0], TARGET)


def test_unknown_road_class_unit_kind_or_speed_is_named(network):
    with pytest.raises(ValueError, match=r"road classes \['motorway'\] have no speed"):
        build_road_graph(shapely.linestrings([TRUNK]), np.array(["motorway"]))
    with pytest.raises(ValueError, match=r"unit kinds \['horse'\]"):
        rank(network, ("H", "horse", *TRUNK[0]))
    with pytest.raises(ValueError, match=r"unit speeds \['drone'\] are missing"):
        rank_units(network, TARGET, units(("D", "drone", *TRUNK[0])), speeds={"foot": 5, "foot_offroad": 3,
                                                                               "vehicle_offroad": 15})
    with pytest.raises(ValueError, match=r"unit speeds \['horse'\] are not in"):
        Settings(unit_speed_kmh={"horse": 20})
    assert Settings(unit_speed_kmh={"drone": 80}).unit_speed_kmh == {**UNIT_SPEED_KMH, "drone": 80}


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


def test_nearest_units_eta_by_kind_from_the_database(clean_db):
    """Units of every kind at one place, on hand-made roads in PostGIS: each goes its own way."""
    start = (100.05, 22.01)
    with clean_db.begin() as conn:
        insert_road(conn, "trunk", TRUNK)
        insert_road(conn, "track", TRACK)
        conn.execute(sa.text("INSERT INTO unit (id, callsign, kind, status) VALUES (1, 'V', 'vehicle', 'on_duty'), "
                             "(2, 'F', 'foot', 'on_duty'), (3, 'D', 'drone', 'on_duty')"))
        conn.execute(sa.text("""
            INSERT INTO unit_latest (unit_id, ts, geom, source)
            SELECT id, now(), ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), 'test' FROM unit"""),
            {"lon": start[0], "lat": start[1]})
    settings = Settings(unit_speed_kmh=SPEEDS)
    ranked = nearest_units(clean_db, settings, TARGET).set_index("callsign")
    assert ranked.index.tolist() == ["D", "V", "F"]
    assert ranked["via"].tolist() == ["flight", "road", "foot"]
    assert ranked.loc["D", "eta_s"] == pytest.approx(metres(start, TARGET) / ms(SPEEDS["drone"]), rel=0.001)
    leg = metres(start, (100.05, 22.0))
    road_s = metres((100.05, 22.0), TRACK[0]) / ms(80) + metres(*TRACK) / ms(30)
    assert ranked.loc["V", "eta_s"] == pytest.approx(leg / ms(SPEEDS["vehicle_offroad"]) + road_s, rel=0.03)
    walked = metres((100.05, 22.0), TRACK[0]) + metres(*TRACK)
    assert ranked.loc["F", "eta_s"] == pytest.approx(leg / ms(SPEEDS["foot_offroad"]) + walked / ms(SPEEDS["foot"]),
                                                     rel=0.03)
