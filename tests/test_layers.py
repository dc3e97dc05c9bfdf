"""The layer catalog, the style built from it, and the wall's read queries on a hand-made dataset."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from gridwatch.layers.catalog import CATALOG, UnknownLayerError, available_layers, get_layer
from gridwatch.layers.queries import (
    UnknownCommandUnitError,
    command_unit,
    command_unit_tree,
    data_status,
    jurisdiction_bounds,
    kpis,
    live_units,
    trails,
)
from gridwatch.layers.style import build_style, style_layer_ids
from gridwatch.settings import Settings

SETTINGS = Settings(unit_silent_after_s=600, data_stale_after_s=900)

# P = [100, 102] x [20, 22]; county A is the west half, B the east half; A1 (township) = A1S (station) = A.
HAND_MADE = """
INSERT INTO command_unit (id, level, parent_id, code, name, name_en, geom) VALUES
 (1, 'prefecture', NULL, 'P', '地区', 'Pref', ST_Multi(ST_MakeEnvelope(100, 20, 102, 22, 4326))),
 (2, 'county', 1, 'A', '甲县', 'A County', ST_Multi(ST_MakeEnvelope(100, 20, 101, 22, 4326))),
 (3, 'county', 1, 'B', '乙县', 'B County', ST_Multi(ST_MakeEnvelope(101, 20, 102, 22, 4326))),
 (4, 'township', 2, 'A1', '甲一镇', NULL, ST_Multi(ST_MakeEnvelope(100, 20, 101, 22, 4326))),
 (5, 'station', 4, 'A1S', '甲一所', NULL, ST_Multi(ST_MakeEnvelope(100, 20, 101, 22, 4326)));
INSERT INTO unit (id, callsign, kind, command_unit_id, status) VALUES
 (1, 'U1', 'foot', 5, 'on_duty'), (2, 'U2', 'vehicle', 2, 'responding'), (3, 'U3', 'drone', 3, 'on_duty'),
 (4, 'U4', 'post', 3, 'off_duty'), (5, 'U5', 'foot', 4, 'on_duty');
SELECT ensure_position_partitions(now() - interval '3 hours', now());
INSERT INTO unit_latest (unit_id, ts, geom, heading, source) VALUES
 (1, now() - interval '5 seconds', ST_SetSRID(ST_MakePoint(100.5, 21), 4326), 90, 't'),
 (2, now() - interval '20 seconds', ST_SetSRID(ST_MakePoint(100.6, 21), 4326), NULL, 't'),
 (3, now() - interval '2 hours', ST_SetSRID(ST_MakePoint(101.5, 21), 4326), 180, 't'),
 (4, now() - interval '5 seconds', ST_SetSRID(ST_MakePoint(101.6, 21), 4326), 0, 't');
INSERT INTO position (unit_id, ts, geom, source)
 SELECT 1, l.ts - make_interval(mins => m), ST_Translate(l.geom, -0.001 * m, 0), 't'
 FROM unit_latest l, unnest(ARRAY[0, 3, 6, 30]) m WHERE l.unit_id = 1;
INSERT INTO border_segment (id, km_from, km_to, geom) VALUES
 (1, 0, 1, ST_MakeLine(ST_SetSRID(ST_MakePoint(100.2, 21.9), 4326), ST_SetSRID(ST_MakePoint(100.3, 21.9), 4326))),
 (2, 1, 2, ST_MakeLine(ST_SetSRID(ST_MakePoint(100.3, 21.9), 4326), ST_SetSRID(ST_MakePoint(100.4, 21.9), 4326))),
 (3, 2, 3, ST_MakeLine(ST_SetSRID(ST_MakePoint(101.2, 21.9), 4326), ST_SetSRID(ST_MakePoint(101.3, 21.9), 4326))),
 (4, 3, 4, ST_MakeLine(ST_SetSRID(ST_MakePoint(101.3, 21.9), 4326), ST_SetSRID(ST_MakePoint(101.4, 21.9), 4326)));
INSERT INTO segment_coverage (segment_id, limit_h, status) VALUES
 (1, 4, 'patrolled'), (2, 4, 'watched'), (3, 4, 'overdue');
INSERT INTO checkpoint (code, line_no, staffed, geom) VALUES
 ('K1', 1, true, ST_SetSRID(ST_MakePoint(100.5, 21.8), 4326)),
 ('K2', 1, false, ST_SetSRID(ST_MakePoint(101.5, 21.8), 4326)),
 ('K3', 2, true, ST_SetSRID(ST_MakePoint(100.5, 21.5), 4326));
INSERT INTO grid (id, code, township_id, geom) VALUES
 (1, 'G1', 4, ST_Multi(ST_MakeEnvelope(100, 20, 100.5, 21, 4326))),
 (2, 'G2', 4, ST_Multi(ST_MakeEnvelope(100.5, 20, 101, 21, 4326))),
 (3, 'G3', 4, ST_Multi(ST_MakeEnvelope(100, 21, 101, 22, 4326))),
 (4, 'G4', 4, ST_Multi(ST_MakeEnvelope(101, 20, 102, 22, 4326)));
INSERT INTO grid_coverage (grid_id, last_visit, limit_h, status) VALUES
 (1, now() - interval '30 hours', 24, 'overdue'), (2, now() - interval '1 hour', 24, 'fresh'), (4, NULL, 24, 'overdue');
INSERT INTO incident (source_id, kind, severity, status, reported_at, closed_at, geom) VALUES
 ('I1', 'fire', 4, 'reported', now(), NULL, ST_SetSRID(ST_MakePoint(100.5, 20.5), 4326)),
 ('I2', 'traffic', 2, 'closed', now() - interval '1 hour', now(), ST_SetSRID(ST_MakePoint(100.5, 20.6), 4326)),
 ('I3', 'dispute', 3, 'on_scene', now(), NULL, ST_SetSRID(ST_MakePoint(101.5, 20.5), 4326));
"""


@pytest.fixture
def hand_made(clean_db):
    with clean_db.begin() as conn:
        conn.exec_driver_sql(HAND_MADE)
    return clean_db


@pytest.mark.parametrize("layer", [layer for layer in CATALOG if not layer.requires], ids=lambda layer: layer.id)
def test_every_catalog_source_runs_on_the_schema(clean_db, layer):
    with clean_db.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM ({layer.source}) AS s LIMIT 0"))
        assert {"id", "geom"} <= set(result.keys())
        assert set(layer.popup) <= set(result.keys())


def test_catalog_ids_are_unique_and_titled():
    ids = [layer.id for layer in CATALOG]
    assert len(ids) == len(set(ids))
    assert all(set(layer.title) == {"en", "zh"} for layer in CATALOG)
    with pytest.raises(UnknownLayerError, match="not in the catalog"):
        get_layer("position")


def test_layers_needing_a_missing_table_are_left_out(clean_db):
    with clean_db.connect() as conn:
        has_leak_route = conn.exec_driver_sql("SELECT to_regclass('leak_route') IS NOT NULL").scalar()
    ids = {layer.id for layer in available_layers(clean_db)}
    assert ("leak_routes" in ids) == has_leak_route
    assert ids >= {layer.id for layer in CATALOG if not layer.requires}


def test_style_references_only_catalog_layers():
    style = build_style(CATALOG, base_url="http://127.0.0.1:1", lang="zh", labels=True)
    json.dumps(style)
    catalog_ids = {layer.id for layer in CATALOG}
    assert style["version"] == 8 and style["glyphs"].startswith("http://127.0.0.1:1/glyphs/")
    # A tile source per group (static and live layers, the layers the map opens hidden apart), each
    # tile holding its layers as source-layers.
    assert style["sources"].keys() == {"static", "live", "live_hidden"}
    assert all(src["tiles"][0].startswith("http://127.0.0.1:1/tiles/group/") for src in style["sources"].values())
    ids = [spec["id"] for spec in style["layers"]]
    assert len(ids) == len(set(ids)) and ids[0] == "background"
    live = {layer.id for layer in CATALOG if layer.live}
    hidden = {layer.id for layer in CATALOG if not layer.visible}
    assert hidden, "the catalog has a layer the map opens hidden"
    for spec in style["layers"][1:]:
        assert spec["source-layer"] in catalog_ids
        group = "live" if spec["source-layer"] in live else "static"
        assert spec["source"] == (f"{group}_hidden" if spec["source-layer"] in hidden else group)
        assert spec["metadata"]["gridwatch:layer"] == spec["source-layer"]
    expected = [i for layer in CATALOG for i in style_layer_ids(layer, labels=True)]
    assert sorted(ids[1:]) == sorted(expected)
    assert ["get", "name"] in [spec["layout"].get("text-field") for spec in style["layers"][1:]]


def test_style_visibility_and_labels():
    default = build_style(CATALOG, base_url="", labels=False)
    assert "glyphs" not in default
    assert not any(spec["type"] == "symbol" for spec in default["layers"])
    hidden = {spec["id"] for spec in default["layers"] if spec.get("layout", {}).get("visibility") == "none"}
    assert hidden == set(style_layer_ids(get_layer("hexes"), labels=False))
    chosen = build_style(CATALOG, base_url="", labels=False, hidden=frozenset({"grids"}))
    hidden = {spec["id"] for spec in chosen["layers"] if spec.get("layout", {}).get("visibility") == "none"}
    assert hidden == set(style_layer_ids(get_layer("grids"), labels=False))


def _feature_driven(value) -> bool:
    """Whether a paint value reads feature properties (MapLibre then needs a shader variant for it)."""
    if isinstance(value, list):
        return (bool(value) and value[0] in ("get", "has", "properties", "feature-state", "id", "geometry-type")
                or any(_feature_driven(item) for item in value))
    return False


def test_style_layers_of_a_type_share_one_shader():
    style = build_style(CATALOG, base_url="", labels=False, bounds=(98.0, 23.0, 99.0, 24.0))
    assert all(src["bounds"] == [98.0, 23.0, 99.0, 24.0] for src in style["sources"].values())
    for spec in style["layers"]:
        driven = {key for key, value in spec.get("paint", {}).items() if _feature_driven(value)}
        if spec["type"] in ("fill", "line"):
            assert driven <= {f"{spec['type']}-color"}, (spec["id"], driven)
        if spec["type"] == "fill":
            assert spec["paint"]["fill-antialias"] is False  # the outline is a line layer's job


def test_kpis_of_the_whole_jurisdiction(hand_made):
    k = kpis(hand_made, SETTINGS)
    # disjoint: U3 (no fix for 2 h) and U5 (never reported) are silent, not on duty
    assert (k.units_on_duty, k.units_responding, k.units_silent) == (1, 1, 2)
    assert (k.segments_total, k.segments_covered, k.segments_covered_pct) == (4, 2, 50.0)
    assert k.checkpoints == {1: (1, 2), 2: (1, 1)}
    assert (k.grids_total, k.grids_overdue, k.grids_unknown) == (4, 2, 2)  # never visited: grid 3 (no row), grid 4
    assert k.incidents_open == {4: 1, 3: 1}
    assert k.status.newest_fix is not None and not k.status.stale


def test_kpis_of_a_county(hand_made):
    k = kpis(hand_made, SETTINGS, scope=command_unit(hand_made, "A").id)
    assert (k.units_on_duty, k.units_responding, k.units_silent) == (1, 1, 1)
    assert (k.segments_total, k.segments_covered) == (2, 2)
    assert k.checkpoints == {1: (1, 1), 2: (1, 1)}
    assert (k.grids_total, k.grids_overdue, k.grids_unknown) == (3, 1, 1)
    assert k.incidents_open == {4: 1}


def test_kpis_and_status_of_an_empty_database(clean_db):
    k = kpis(clean_db, SETTINGS)
    assert k.segments_covered_pct is None and k.checkpoints == {} and k.incidents_open == {}
    assert data_status(clean_db, SETTINGS).empty
    assert jurisdiction_bounds(clean_db) is None


def test_stale_when_the_newest_fix_is_old(hand_made):
    with hand_made.begin() as conn:
        conn.exec_driver_sql("UPDATE unit_latest SET ts = ts - interval '1 hour'")
    status = data_status(hand_made, SETTINGS)
    assert status.stale and not status.empty


def test_live_units_and_trails(hand_made):
    units = live_units(hand_made, SETTINGS)
    assert units["callsign"].tolist() == ["U1", "U2", "U3"]  # U4 is off duty, U5 never reported
    assert units["silent"].tolist() == [False, False, True]
    assert live_units(hand_made, SETTINGS, scope=command_unit(hand_made, "B").id)["callsign"].tolist() == ["U3"]
    trail = trails(hand_made, minutes=10)
    # U1's fixes 6, 3 and 0 min before its latest lie on a line: simplified to its two ends, oldest first;
    # the fix 30 min before is left out
    assert trail["unit_id"].tolist() == [1, 1]
    assert trail["lon"].tolist() == [100.494, 100.5]


def test_command_unit_tree_and_lookup(hand_made):
    tree = command_unit_tree(hand_made)
    assert tree["code"].tolist() == ["P", "A", "A1", "A1S", "B"]
    assert tree["depth"].tolist() == [0, 1, 2, 3, 1]
    unit = command_unit(hand_made, "B")
    assert unit.level == "county" and unit.bounds == (101, 20, 102, 22)
    assert jurisdiction_bounds(hand_made) == (100, 20, 102, 22)
    with pytest.raises(UnknownCommandUnitError, match="'Z' does not exist"):
        command_unit(hand_made, "Z")
