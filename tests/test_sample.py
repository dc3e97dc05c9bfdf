"""Invariants of the sample-region generator (small scale; no database needed)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
import sqlalchemy as sa

from gridwatch.data import SCALES, fixed_end, generate_sample
from gridwatch.settings import Settings

METRIC_CRS = "EPSG:4542"
REL_TOL = 1e-6  # of the parent's area
TARGETS = {
    "command_unit", "police_area", "grid_source", "zone", "defence_line", "checkpoint", "road", "river",
    "settlement", "port", "sensor", "unit", "position", "incident",
}
GPX_NS = {"g": "http://www.topografix.com/GPX/1/1"}
END = fixed_end(1)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate_sample(out, seed=1, scale="small", end=END)
    return out


@pytest.fixture(scope="module")
def manifest(sample_dir: Path) -> dict:
    return json.loads((sample_dir / "manifest.json").read_text(encoding="utf-8"))


def _entry(manifest: dict, target: str) -> dict:
    return next(f for f in manifest["files"] if f["target"] == target)


def _layer(sample_dir: Path, manifest: dict, target: str) -> gpd.GeoDataFrame:
    """A manifest layer projected to metres."""
    e = _entry(manifest, target)
    return gpd.read_file(sample_dir / e["path"], layer=e.get("layer")).to_crs(METRIC_CRS)


def _assert_tiles(parent: shapely.Geometry, children: np.ndarray) -> None:
    """Children lie within the parent, cover it, and do not overlap."""
    tol = REL_TOL * parent.area
    union = shapely.union_all(children)
    assert shapely.area(shapely.difference(union, parent)) < tol
    assert abs(union.area - parent.area) < tol
    assert shapely.area(children).sum() - union.area < tol


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_manifest_paths_exist_and_targets_are_known(sample_dir: Path, manifest: dict) -> None:
    assert manifest["format"] == "gridwatch-manifest/1"
    assert manifest["timezone"] == "Asia/Shanghai"
    assert {f["target"] for f in manifest["files"]} == TARGETS
    for f in manifest["files"]:
        assert (sample_dir / f["path"]).is_file(), f["path"]
        if "layer" in f:
            assert f["layer"] in pyogrio.list_layers(sample_dir / f["path"])[:, 0]
    minlon, minlat, maxlon, maxlat = manifest["bbox"]
    assert 97.0 < minlon < maxlon < 100.0 and 22.0 < minlat < maxlat < 25.0
    assert (sample_dir / "README.md").read_text(encoding="utf-8").count("|") > 20


def test_manifest_columns_exist_in_files(sample_dir: Path, manifest: dict) -> None:
    for f in manifest["files"]:
        if "columns" not in f:
            continue
        path = sample_dir / f["path"]
        if path.suffix == ".csv":
            present = set(pd.read_csv(path, nrows=1).columns)
        else:
            present = set(pyogrio.read_info(path, layer=f.get("layer"), encoding=f.get("encoding"))["fields"])
        assert set(f["columns"].values()) <= present, f["path"]


def test_command_units_nest(sample_dir: Path, manifest: dict) -> None:
    cu = _layer(sample_dir, manifest, "command_unit")
    assert cu.is_valid.all()
    assert cu["level"].value_counts().to_dict() == {"prefecture": 1, "county": 1, "township": 3, "station": 5}
    geom = dict(zip(cu["code"], cu.geometry))
    for parent_code, children in cu.dropna(subset=["parent_code"]).groupby("parent_code"):
        _assert_tiles(geom[parent_code], children.geometry.to_numpy())


def test_true_grids_tile_townships_and_police_areas(sample_dir: Path, manifest: dict) -> None:
    grid = gpd.read_file(sample_dir / "truth" / "grids.gpkg").to_crs(METRIC_CRS)
    cu = _layer(sample_dir, manifest, "command_unit")
    area = _layer(sample_dir, manifest, "police_area")
    township = dict(zip(cu["code"], cu.geometry))
    for code, grids in grid.groupby("township_code"):
        _assert_tiles(township[code], grids.geometry.to_numpy())
    beat = dict(zip(area["code"], area.geometry))
    for code, grids in grid.groupby("police_area_code"):
        _assert_tiles(beat[code], grids.geometry.to_numpy())
    station = dict(zip(cu["code"], cu.geometry))
    for code, beats in area.groupby("station_code"):
        _assert_tiles(station[code], beats.geometry.to_numpy())


def test_zones_tile_the_prefecture(sample_dir: Path, manifest: dict) -> None:
    zone = _layer(sample_dir, manifest, "zone")
    cu = _layer(sample_dir, manifest, "command_unit")
    assert sorted(zone["kind"]) == ["border_closed", "port_control", "social_surface"]
    _assert_tiles(cu[cu["level"] == "prefecture"].geometry.iloc[0], zone.geometry.to_numpy())


def test_line2_checkpoints_lie_on_roads_crossing_line2(sample_dir: Path, manifest: dict) -> None:
    lines = _layer(sample_dir, manifest, "defence_line").set_index("line_no")
    road = _layer(sample_dir, manifest, "road")
    cp = _layer(sample_dir, manifest, "checkpoint")
    line2 = lines.geometry.loc[2]
    crossing = road[(road["class"] != "patrol") & road.intersects(line2)]
    on_line2 = cp[cp["line_no"] == 2]
    assert len(on_line2) >= 1
    assert (shapely.distance(on_line2.geometry.to_numpy()[:, None], crossing.geometry.to_numpy()[None, :])
            .min(axis=1) < 1.0).all()
    n_crossings = len(shapely.get_parts(shapely.intersection(crossing.geometry.to_numpy(), line2)))
    assert len(on_line2) < n_crossings  # some crossings have no checkpoint
    assert not cp["staffed"].all()


def test_border_line_and_ports(sample_dir: Path, manifest: dict) -> None:
    lines = _layer(sample_dir, manifest, "defence_line").set_index("line_no")
    port = _layer(sample_dir, manifest, "port")
    assert lines.geometry.loc[1].length == pytest.approx(55_000, rel=0.02)
    assert (port.distance(lines.geometry.loc[1]) < 1.0).all()


def test_department_grids_disagree(sample_dir: Path, manifest: dict) -> None:
    cu = _layer(sample_dir, manifest, "command_unit")
    prefecture = cu[cu["level"] == "prefecture"].geometry.iloc[0]
    layers = {}
    for f in (f for f in manifest["files"] if f["target"] == "grid_source"):
        gdf = gpd.read_file(sample_dir / f["path"], layer=f.get("layer"), encoding=f["encoding"])
        assert gdf.crs.to_epsg() == int(f["crs"].split(":")[1])
        assert set(f["columns"].values()) <= set(gdf.columns)
        layers[f["department"]] = gdf.to_crs(METRIC_CRS).geometry.to_numpy()
    assert len(layers) >= 3
    for geoms in layers.values():
        union = shapely.union_all(geoms)
        assert shapely.area(geoms).sum() - union.area > 0  # overlaps inside the layer
        assert prefecture.difference(union).area > 0  # holes and slivers
    for a, b in itertools.combinations(layers.values(), 2):
        assert shapely.union_all(a).symmetric_difference(shapely.union_all(b)).area > 0


def test_shapefile_is_gbk_without_cpg(sample_dir: Path, manifest: dict) -> None:
    f = next(f for f in manifest["files"] if f["path"].endswith(".shp"))
    assert f["crs"] == "EPSG:4542" and f["encoding"] == "gbk"
    shp = sample_dir / f["path"]
    assert not shp.with_suffix(".cpg").exists()
    names = gpd.read_file(shp, encoding="gbk")[f["columns"]["name"]]
    assert names.str.contains("网格").all()


@pytest.mark.parametrize(("lon_from", "lon_to", "delivered"), [(98.6, 99.4, "EPSG:4542"), (96.9, 103.9, "EPSG:4490")])
def test_a_region_wider_than_the_shapefiles_zone_comes_in_lon_lat(lon_from: float, lon_to: float,
                                                                    delivered: str) -> None:
    """The civil-affairs grids come in their Gauss-Krüger zone (CM 99E) where it can hold the region; a
    province 7 degrees wide lies outside that zone's area of use, which a reader refuses, so they come
    in CGCS2000 lon/lat."""
    from gridwatch.data._departments import DEPARTMENTS, department_grids

    lon = np.linspace(lon_from, lon_to, 40)
    squares = shapely.box(lon, 24.0, lon + 0.01, 24.01)
    truth = gpd.GeoDataFrame({"code": [f"G{i:03d}" for i in range(40)], "name": "网格", "township_code": "T1",
                              "households": 10, "population": 30}, geometry=squares, crs="EPSG:4326")
    civil = next(d for d in DEPARTMENTS if d.name == "civil_affairs")
    out = department_grids(truth.to_crs(METRIC_CRS), civil, np.random.default_rng(1))
    assert out.crs.to_string() == delivered and len(out) > 30


def test_position_noise_rate(sample_dir: Path, manifest: dict) -> None:
    e = _entry(manifest, "position")
    pos = pd.read_csv(sample_dir / e["path"])
    ts = pd.to_datetime(pos["ts"], format="ISO8601", utc=True)
    end = pd.Timestamp(manifest["exported_at"]).tz_convert("UTC")
    minlon, minlat, maxlon, maxlat = manifest["bbox"]
    outside = ~pos["lon"].between(minlon - 0.1, maxlon + 0.1) | ~pos["lat"].between(minlat - 0.1, maxlat + 0.1)
    duplicate = pos.duplicated(["unit_id", "ts"])
    late = ts < ts.groupby(pos["unit_id"]).cummax()
    future = ts > end + pd.Timedelta(days=1)
    low_accuracy = pos["accuracy"] > 500
    noisy = outside | duplicate | late | future | low_accuracy
    assert 0.005 <= noisy.mean() <= 0.03
    for kind in (outside, duplicate, late, future, low_accuracy):
        assert kind.any()
    assert ((pos["lon"] == 0) & (pos["lat"] == 0)).any()


def test_units_and_gpx_tracks(sample_dir: Path, manifest: dict) -> None:
    units = pd.read_csv(sample_dir / _entry(manifest, "unit")["path"])
    assert units["callsign"].is_unique
    assert set(units["kind"]) <= {"foot", "vehicle", "drone", "post", "checkpoint"}
    assert set(units["status"]) <= {"on_duty", "responding", "off_duty"}
    pos = pd.read_csv(sample_dir / _entry(manifest, "position")["path"])
    gpx = [f for f in manifest["files"] if f["target"] == "position" and "callsign" in f]
    assert gpx
    for f in gpx:
        assert f["callsign"] in set(units["callsign"])
        assert f["callsign"] not in set(pos["unit_id"])
        points = ET.parse(sample_dir / f["path"]).getroot().findall(".//g:trkpt", GPX_NS)
        assert len(points) > 10
        assert points[0].find("g:time", GPX_NS).text.endswith("Z")


def test_incidents_lifecycle(sample_dir: Path, manifest: dict) -> None:
    inc = pd.read_csv(sample_dir / _entry(manifest, "incident")["path"], keep_default_na=False)
    assert inc["source_id"].is_unique
    assert inc["severity"].between(1, 4).all()
    stages = ["reported_at", "dispatched_at", "on_scene_at", "closed_at"]
    assert not inc["reported_at"].str.contains(r"[+Z]").any()  # local time without offset
    reached = (inc[stages] != "").sum(axis=1)
    expected = pd.Series(["reported", "dispatched", "on_scene", "closed"]).to_numpy()[reached - 1]
    assert (inc["status"].to_numpy() == expected).all()
    times = inc[stages].replace("", pd.NA).apply(pd.to_datetime)
    assert (times.diff(axis=1).iloc[:, 1:].fillna(pd.Timedelta(0)) >= pd.Timedelta(0)).all().all()


def test_same_seed_gives_identical_bytes(sample_dir: Path, tmp_path: Path) -> None:
    generate_sample(tmp_path / "again", seed=1, scale="small", end=END)
    assert _files(sample_dir) == _files(tmp_path / "again")


def test_other_seed_gives_other_files(sample_dir: Path, tmp_path: Path) -> None:
    generate_sample(tmp_path / "other", seed=2, scale="small", end=END)
    first, other = _files(sample_dir), _files(tmp_path / "other")
    for name in ("positions.csv", "boundaries.gpkg", "incidents.csv", "grids/housing.geojson"):
        assert first[name] != other[name]


def test_positions_end_at_the_given_end(sample_dir: Path, manifest: dict) -> None:
    assert datetime.fromisoformat(manifest["exported_at"]) == END
    ts = pd.to_datetime(pd.read_csv(sample_dir / _entry(manifest, "position")["path"], usecols=["ts"])["ts"],
                        format="ISO8601")
    assert END - timedelta(minutes=5) < ts[ts <= END].max()  # later rows are the ones spoiled into the future


def test_positions_end_now_by_default(tmp_path: Path) -> None:
    before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    manifest = json.loads(generate_sample(tmp_path, seed=1, scale="small").read_text(encoding="utf-8"))
    end = datetime.fromisoformat(manifest["exported_at"])
    assert before <= end <= datetime.now(timezone.utc) and end.second == 0


def test_unknown_scale_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'county'.*small.*prefecture.*province"):
        generate_sample(tmp_path, scale="county")
    assert SCALES == ("small", "prefecture", "province")


def test_unwritable_out_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not-a-folder"):
        generate_sample(blocker / "out", scale="small")


# One township in three of the small sample gets no patrols by design and the border stations' grids share
# the round with the border, so a plan whose rounds reach each patrolled grid within half its limit leaves
# about three in four grids fresh; 0.6 fails a plan that leaves whole stations unvisited (the former one
# left one grid in four fresh).
FRESH_SHARE = 0.6
_HOUR = "extract(hour FROM p.ts AT TIME ZONE 'Asia/Shanghai')"
_NIGHT = f"({_HOUR} >= 22 OR {_HOUR} < 6)"


def test_a_working_day_after_etl_run(clean_db: sa.Engine, small_sample: Path, cli_env: dict[str, str]) -> None:
    run = subprocess.run([sys.executable, "-m", "gridwatch.cli", "etl", "run", "--input", str(small_sample)],
                         capture_output=True, text=True, env=cli_env, timeout=600)
    assert run.returncode == 0, run.stderr
    as_of = datetime.fromisoformat(json.loads((small_sample / "manifest.json").read_text("utf-8"))["exported_at"])
    with clean_db.connect() as conn:
        township = pd.DataFrame(conn.execute(sa.text(
            "SELECT t.code, c.status = 'fresh' AS fresh FROM grid_coverage c JOIN grid g ON g.id = c.grid_id "
            "JOIN command_unit t ON t.id = g.township_id")).all(), columns=["code", "fresh"])
        night = pd.DataFrame(conn.execute(sa.text(
            f"SELECT s.km_from, count(p.ts) FILTER (WHERE {_NIGHT}), count(p.ts) FROM border_segment s "
            "LEFT JOIN position p ON p.segment_id = s.id AND p.border_m < 2000 GROUP BY s.km_from ORDER BY 1"
        )).all(), columns=["km", "night", "all"])
        silent = conn.execute(sa.text(
            "SELECT count(*) FROM unit u JOIN unit_latest l ON l.unit_id = u.id "
            "WHERE u.status <> 'off_duty' AND l.ts < :at - interval '1 hour'"), {"at": as_of}).scalar()
        incidents = dict(conn.execute(sa.text(
            "SELECT status = 'closed', count(*) FROM incident GROUP BY 1")).all())
        stale_open = conn.execute(sa.text(
            "SELECT count(*) FROM incident WHERE status <> 'closed' AND reported_at < :at - interval '4 hours'"),
            {"at": as_of}).scalar()

    assert township["fresh"].mean() >= FRESH_SHARE
    assert township.groupby("code")["fresh"].mean().min() <= 0.2  # one township short of patrols
    quiet = (night["night"] == 0).to_numpy()
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(int), [0]]))))[::2]
    # a stretch of 3 km or more that nobody patrols overnight, while others are patrolled
    assert runs.max(initial=0) >= 3 and (night["night"] > 0).any()
    assert silent >= 1
    assert incidents.get(True, 0) > 0 and incidents.get(False, 0) > 0
    assert stale_open == 0


@pytest.fixture(scope="module")
def prefecture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prefecture")
    generate_sample(out, seed=1, scale="prefecture", end=END)
    return out


def test_border_stations_patrol_their_stretch_round_the_clock(prefecture_dir: Path) -> None:
    """Each border station's vehicle pair (day and night) drives the patrol road, so in the last 4 h (the
    border's limit) nearly every kilometre of border had a vehicle within its detection radius; the quiet
    station's stretch is the gap."""
    manifest = json.loads((prefecture_dir / "manifest.json").read_text(encoding="utf-8"))
    units = pd.read_csv(prefecture_dir / "units.csv", dtype=str)
    border_vehicles = units[units["callsign"].str.startswith("B") & (units["kind"] == "vehicle")]
    shifts = border_vehicles.groupby("station")["shift_start"].agg(set)
    assert len(shifts) == 12  # every border station
    assert (shifts.map(lambda s: {"08:00", "20:00"} <= s)).sum() == 11  # all but the quiet one, days only
    border = _layer(prefecture_dir, manifest, "defence_line").set_index("line_no").geometry.loc[1]
    fixes = pd.read_csv(prefecture_dir / "positions.csv", usecols=["unit_id", "ts", "lon", "lat"])
    recent = fixes[fixes["unit_id"].isin(border_vehicles["callsign"])
                   & (pd.to_datetime(fixes["ts"], utc=True) > pd.Timestamp(END) - pd.Timedelta(hours=4))]
    points = gpd.GeoSeries.from_xy(recent["lon"], recent["lat"], crs="EPSG:4326").to_crs(METRIC_CRS).to_numpy()
    along = np.arange(50.0, border.length, 100.0)  # each kilometre of border by ten points
    radius = Settings().detection_radius_m["vehicle"]
    near = shapely.STRtree(points).query(shapely.line_interpolate_point(border, along), predicate="dwithin",
                                         distance=radius)[0]
    seen = np.isin(np.arange(int(border.length // 1000)), (along[near] // 1000).astype(int))
    assert seen.mean() >= 0.8
    unseen = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], (~seen).astype(int), [0]]))))[::2]
    assert unseen.max() >= 3  # the quiet stretch, overnight
