"""Position loading: every filter on hand-made rows, fusion, idempotency, accounting."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import h3
import pytest
import sqlalchemy as sa

from gridwatch.etl.manifest import FileEntry
from gridwatch.etl.positions import load_positions
from gridwatch.etl.runlog import RunCounts, job_run
from gridwatch.geo.tracks import haversine_m
from gridwatch.settings import Settings

from _refdata import rows, seed_region

EXPORTED = datetime(2026, 11, 20, 4, 0, tzinfo=timezone.utc)
HEADER = "callsign,ts,lon,lat,accuracy_m\n"
ROWS = {  # row number -> (csv line, reason or None when loaded)
    1: ("F1,2026-11-20T01:00:00Z,100.05,22.05,10", None),
    2: ("F1,2026-11-20T01:00:30Z,100.0501,22.0501,10", None),
    3: ("F1,2026-11-20T01:00:30Z,100.0502,22.0502,10", "duplicate"),
    4: ("F1,2026-11-20T01:00:20Z,100.05005,22.05005,10", None),  # out of order
    5: ("F1,2026-11-20T01:01:00Z,100.15,22.05,10", "impossible speed"),
    6: ("F1,2026-11-20T01:01:30Z,100.0502,22.0502,10", None),
    7: ("F1,2026-11-20T01:02:00Z,0,0,10", "coordinates at (0, 0)"),
    8: ("F1,2026-11-20T01:02:30Z,22.05,100.05,10", "lat/lon swapped"),
    9: ("F1,2026-11-20T05:00:00Z,100.0503,22.0503,10", "time in the future"),
    10: ("F1,2026-11-20T01:03:00Z,100.0503,22.0503,900", "accuracy worse than 500 m"),
    11: ("X9,2026-11-20T01:03:30Z,100.0503,22.0503,10", "unknown unit"),
    12: ("F1,20/11/2026 01:04,100.0503,22.0503,10", "unparseable time"),
    13: ("F1,2026-11-20 09:05:00,100.0503,22.0503,", None),  # no zone: read in Asia/Shanghai
    14: ("F1,2026-11-20T01:05:30Z,abc,22.0503,10", "unparseable coordinates"),
    15: ("V1,2026-11-20T01:00:00+08:00,100.15,22.01,5", None),
    16: ("F1,2026-11-20T01:06:00Z,120,22.05,10", "far outside the region"),
}


def write_csv(path: Path, lines: list[str], header: str = HEADER) -> FileEntry:
    path.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    return FileEntry(path=path, target="position", timezone="Asia/Shanghai")


def load(engine: sa.Engine, entries: list[FileEntry], *, default_timezone: str = "UTC") -> RunCounts:
    with job_run(engine, "positions") as counts:
        load_positions(engine, entries, settings=Settings(), counts=counts, default_timezone=default_timezone,
                       reference_time=EXPORTED)
    return counts


@pytest.fixture
def region(clean_db: sa.Engine) -> sa.Engine:
    seed_region(clean_db)
    return clean_db


def test_every_filter_rejects_with_its_reason(region, tmp_path):
    entry = write_csv(tmp_path / "fixes.csv", [line for line, _ in ROWS.values()])
    counts = load(region, [entry])
    expected = {reason for _, reason in ROWS.values() if reason}
    got = rows(region, "SELECT record->>'ts', reason FROM quarantine ORDER BY id")
    assert {reason for _, reason in got} == expected
    assert len(got) == sum(1 for _, r in ROWS.values() if r)
    assert (counts.rows_in, counts.rows_loaded, counts.rows_rejected) == (16, 6, 10)
    assert counts.rows_in == counts.rows_loaded + counts.rows_rejected
    # the original record is kept as it was in the file
    assert ("20/11/2026 01:04", "unparseable time") in got


def test_time_without_zone_is_read_in_the_entry_zone(region, tmp_path):
    load(region, [write_csv(tmp_path / "a.csv", [ROWS[13][0]])])
    assert rows(region, "SELECT ts FROM position") == [(datetime(2026, 11, 20, 1, 5, tzinfo=timezone.utc),)]


def test_time_without_zone_falls_back_to_the_manifest_zone(region, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(HEADER + ROWS[13][0] + "\n")
    load(region, [FileEntry(path=path, target="position")], default_timezone="Asia/Tokyo")
    assert rows(region, "SELECT ts FROM position") == [(datetime(2026, 11, 20, 0, 5, tzinfo=timezone.utc),)]


def test_fixes_are_fused_with_grid_zone_segment_border_and_h3(region, tmp_path):
    load(region, [write_csv(tmp_path / "a.csv", [ROWS[1][0], ROWS[15][0]])])
    got = rows(region, "SELECT unit_id, grid_id, zone_id, segment_id, border_m, h3 FROM position ORDER BY unit_id")
    assert [g[:4] for g in got] == [(1, 1, 2, 1), (2, 2, 1, 2)]
    assert got[1][4] == pytest.approx(haversine_m(100.15, 22.0, 100.15, 22.01), rel=0.01)
    assert got[0][5] == h3.str_to_int(h3.latlng_to_cell(22.05, 100.05, 9))
    fused = rows(region, "SELECT police_area_id, station_id, township_id, county_id, prefecture_id "
                         "FROM position_fused WHERE unit_id = 1")
    assert fused == [(1, 4, 3, 2, 1)]


def test_loading_the_same_file_twice_changes_nothing(region, tmp_path):
    entry = write_csv(tmp_path / "fixes.csv", [line for line, _ in ROWS.values()])
    snapshot = "SELECT unit_id, ts, ST_AsText(geom), grid_id FROM position ORDER BY 1, 2"
    load(region, [entry])
    first = rows(region, snapshot), rows(region, "SELECT record, reason FROM quarantine ORDER BY id")
    latest = rows(region, "SELECT unit_id, ts FROM unit_latest ORDER BY 1")
    again = load(region, [entry])
    assert (rows(region, snapshot), rows(region, "SELECT record, reason FROM quarantine ORDER BY id")) == first
    assert rows(region, "SELECT unit_id, ts FROM unit_latest ORDER BY 1") == latest
    assert (again.rows_in, again.rows_loaded, again.rows_rejected) == (0, 0, 0)


def test_duplicates_and_speed_are_checked_against_the_table(region, tmp_path):
    load(region, [write_csv(tmp_path / "a.csv", [ROWS[1][0]])])
    second = write_csv(
        tmp_path / "b.csv",
        [
            "F1,2026-11-20T01:00:00Z,100.05,22.05,10",  # already in the table
            "F1,2026-11-20T01:00:40Z,100.15,22.05,10",  # 10 km from the stored fix in 40 s
            "F1,2026-11-20T01:01:00Z,100.0501,22.0501,10",
        ],
    )
    counts = load(region, [second])
    assert rows(region, "SELECT reason FROM quarantine ORDER BY id") == [("duplicate",), ("impossible speed",)]
    assert counts.rows_loaded == 1


def test_unit_latest_moves_only_forward(region, tmp_path):
    load(region, [write_csv(tmp_path / "new.csv", [ROWS[6][0]])])
    load(region, [write_csv(tmp_path / "old.csv", [ROWS[1][0]])])
    assert rows(region, "SELECT unit_id, ts FROM unit_latest") == [
        (1, datetime(2026, 11, 20, 1, 1, 30, tzinfo=timezone.utc))
    ]


def test_missing_required_column_names_the_file_and_column(region, tmp_path):
    entry = write_csv(tmp_path / "nolat.csv", ["F1,2026-11-20T01:00:00Z,100.05"], header="callsign,ts,lon\n")
    (outcome,) = load(region, [entry]).files
    assert outcome.status == "refused" and re.match(r"required column\(s\) 'lat' missing", outcome.message)
    assert outcome.describe().startswith(f"{entry.path}: refused: required column(s) 'lat' missing")
    assert rows(region, "SELECT count(*) FROM position") == [(0,)]


def test_mapped_column_names_are_used(region, tmp_path):
    path = tmp_path / "mapped.csv"
    path.write_text("unit,time,x,y\nF1,2026-11-20T01:00:00Z,100.05,22.05\n")
    entry = FileEntry(path=path, target="position", columns={"callsign": "unit", "ts": "time", "lon": "x", "lat": "y"})
    assert load(region, [entry]).rows_loaded == 1
    other = tmp_path / "mapped2.csv"
    other.write_text("unit,time,x,y\nF1,2026-11-20T01:01:00Z,100.05,22.05\n")
    bad = FileEntry(path=other, target="position", columns={"lat": "latitude"})
    (outcome,) = load(region, [bad]).files
    assert outcome.status == "refused"
    assert outcome.message.startswith("required column(s) 'callsign', 'ts', 'lon', 'latitude' (for lat)")


def test_gpx_track_takes_the_callsign_from_the_entry(region, tmp_path):
    path = tmp_path / "track.gpx"
    path.write_text(
        '<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
        '<trkpt lat="22.05" lon="100.05"><time>2026-11-20T01:00:00Z</time></trkpt>'
        '<trkpt lat="22.0501" lon="100.0501"><time>2026-11-20T01:00:30Z</time></trkpt>'
        '<trkpt lat="0" lon="0"><time>2026-11-20T01:01:00Z</time></trkpt>'
        "</trkseg></trk></gpx>"
    )
    counts = load(region, [FileEntry(path=path, target="position", callsign="F1")])
    assert (counts.rows_loaded, counts.rows_rejected) == (2, 1)
    assert rows(region, "SELECT DISTINCT source FROM position") == [("gpx",)]
    other = tmp_path / "other.gpx"
    other.write_text(path.read_text().replace("01:00:00Z", "01:02:00Z"))
    (outcome,) = load(region, [FileEntry(path=other, target="position")]).files
    assert outcome.status == "refused" and outcome.message.startswith("a GPX file needs its unit's callsign")


def test_geojson_points(region, tmp_path):
    path = tmp_path / "fixes.geojson"
    features = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [100.05, 22.05]},
         "properties": {"callsign": "F1", "ts": "2026-11-20T01:00:00Z"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [100.05, 22.05]},
         "properties": {"callsign": "F1", "ts": "not a time"}},
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    counts = load(region, [FileEntry(path=path, target="position")])
    assert (counts.rows_loaded, counts.rows_rejected) == (1, 1)
    assert rows(region, "SELECT reason FROM quarantine") == [("unparseable time",)]


def test_the_nearest_vertex_is_the_default_trees_even_where_vertices_tie() -> None:
    """The fast vertex search answers as a tree of shapely's default nodes does, for fixes at one
    least distance and for fixes equidistant from several vertices (at the shared end of two
    segments, on the bisectors of neighbouring vertices)."""
    import numpy as np
    import shapely

    from gridwatch.etl._fuse_points import VERTEX_NODE_CAPACITY, Reference, _nearest_vertex

    rng = np.random.default_rng(7)
    k = np.arange(201.0)
    xy = np.concatenate([np.c_[20 * k, 0 * k], np.c_[4000 + 20 * k, 20 * k]])  # two segments sharing (4000, 0)
    vertices = shapely.points(xy)
    default = shapely.STRtree(vertices)
    ref = Reference(*(np.empty(0),) * 6, shapely.STRtree(vertices, node_capacity=VERTEX_NODE_CAPACITY), default,
                    np.repeat([0, 1], 201), None, None)
    bisectors = np.c_[np.repeat(20 * k[:-1] + 10, 4), np.tile([-3000, -300, -30, -3], 200)]  # B lies above y = 0
    points = shapely.points(np.vstack([rng.uniform(-20_000, 30_000, size=(20_000, 2)), [[4000, 0]], bisectors]))
    ties = np.bincount(default.query_nearest(points, all_matches=True)[0]) > 1
    assert ties[20_000:].all()
    assert np.array_equal(_nearest_vertex(ref, points), default.query_nearest(points, all_matches=False)[1])
