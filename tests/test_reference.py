"""Importing departments' vector files: CRS, encoding, column mapping, validation, quarantine."""
from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import sqlalchemy as sa
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from gridwatch.errors import InputError
from gridwatch.etl.importer import import_file
from gridwatch.etl.manifest import FileEntry, read_manifest
from gridwatch.etl.readers import detect_encoding, read_vector
from gridwatch.settings import Settings

# A small fictional place near lon 98.5, lat 23.5.
PREFECTURE = box(98.0, 23.0, 99.0, 24.0)
COUNTY = box(98.0, 23.0, 99.0, 24.0)
TOWNSHIP_A = box(98.0, 23.0, 98.5, 24.0)
TOWNSHIP_B = box(98.5, 23.0, 99.0, 24.0)
BOWTIE = Polygon([(98.1, 23.1), (98.2, 23.2), (98.2, 23.1), (98.1, 23.2), (98.1, 23.1)])
CGCS2000_GK_99E = "EPSG:4542"


@pytest.fixture
def settings() -> Settings:
    return Settings()


def write(frame: gpd.GeoDataFrame, path: Path, **kwargs) -> Path:
    frame.to_file(path, **kwargs)
    return path


@pytest.fixture
def command_units(tmp_path: Path) -> Path:
    frame = gpd.GeoDataFrame(
        {
            "code": ["P1", "C1", "T1", "T2", "S1", "X9"],
            "name": ["示范州", "一县", "甲乡", "乙乡", "甲站", "孤站"],
            "level": ["prefecture", "county", "township", "township", "station", "station"],
            "parent_code": [None, "P1", "C1", "C1", "T1", "NOPE"],
        },
        geometry=[PREFECTURE, COUNTY, TOWNSHIP_A, TOWNSHIP_B, TOWNSHIP_A, TOWNSHIP_B],
        crs=4326,
    )
    return write(frame, tmp_path / "units.gpkg")


def test_command_units_nest_and_unknown_parent_is_quarantined(clean_db: sa.Engine, command_units: Path, settings: Settings) -> None:
    summary = import_file(clean_db, command_units, target="command_unit", settings=settings)
    assert summary.endswith("6 rows, 5 loaded, 1 quarantined")
    with clean_db.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.code, p.code FROM command_unit c LEFT JOIN command_unit p ON p.id = c.parent_id ORDER BY c.code"
        )).all()
        reason = conn.execute(sa.text("SELECT reason, record->>'code' FROM quarantine")).one()
        multi = conn.execute(sa.text("SELECT bool_and(GeometryType(geom) = 'MULTIPOLYGON') FROM command_unit")).scalar()
    assert rows == [("C1", "P1"), ("P1", None), ("S1", "T1"), ("T1", "C1"), ("T2", "C1")]
    assert reason == ("parent_code names no command unit", "X9")
    assert multi


def test_same_file_twice_changes_nothing(clean_db: sa.Engine, command_units: Path, settings: Settings) -> None:
    import_file(clean_db, command_units, target="command_unit", settings=settings)
    again = import_file(clean_db, command_units, target="command_unit", settings=settings)
    assert again.endswith("already loaded, nothing changed")
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM command_unit")).scalar() == 5
        assert conn.execute(sa.text("SELECT count(*) FROM quarantine")).scalar() == 1


def test_gbk_shapefile_in_gauss_kruger_without_cpg(tmp_path: Path, clean_db: sa.Engine, settings: Settings) -> None:
    grids = gpd.GeoDataFrame(
        {"WGBM": ["G1", "G2"], "WGMC": ["勐腊镇第一网格", "曼庄村网格"], "HS": [320, 410]},
        geometry=[box(98.1, 23.1, 98.2, 23.2), box(98.2, 23.1, 98.3, 23.2)],
        crs=4326,
    ).to_crs(CGCS2000_GK_99E)
    path = write(grids, tmp_path / "civil.shp", encoding="gbk")
    path.with_suffix(".cpg").unlink(missing_ok=True)
    assert detect_encoding(path) == "gb18030"
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps({"source_code": "WGBM", "name": "WGMC", "households": "HS"}))
    summary = import_file(clean_db, path, target="grid_source", department="civil_affairs",
                          columns_file=columns, settings=settings)
    assert summary.endswith("2 rows, 2 loaded, 0 quarantined")
    with clean_db.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT source_code, name, households, ST_X(ST_Centroid(geom)) FROM grid_source ORDER BY 1"
        )).all()
    assert rows == [("G1", "勐腊镇第一网格", 320, pytest.approx(98.15, abs=1e-3)),
                    ("G2", "曼庄村网格", 410, pytest.approx(98.25, abs=1e-3))]


def test_shapefile_without_prj_names_the_fix(tmp_path: Path) -> None:
    path = write(gpd.GeoDataFrame({"name": ["a"]}, geometry=[LineString([(0, 0), (1, 1)])], crs=4326), tmp_path / "r.shp")
    path.with_suffix(".prj").unlink()
    with pytest.raises(InputError, match=r"r\.shp: the file declares no CRS .* --crs EPSG"):
        read_vector(FileEntry(path, "river"))


def test_projected_numbers_declared_as_degrees(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame({"name": ["a"]}, geometry=[LineString([(98.1, 23.1), (98.2, 23.2)])], crs=4326)
    path = write(frame.to_crs(CGCS2000_GK_99E).set_crs(4326, allow_override=True), tmp_path / "r.gpkg")
    with pytest.raises(InputError, match=r"are projected metres, but the CRS .* is in degrees"):
        read_vector(FileEntry(path, "river"))


def test_swapped_lat_lon_is_caught(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame({"name": ["a"]}, geometry=[LineString([(23.1, 98.1), (23.2, 98.2)])], crs=4326)
    path = write(frame, tmp_path / "r.geojson")
    with pytest.raises(InputError, match="only with latitude and longitude swapped"):
        read_vector(FileEntry(path, "river"), bbox=(98.0, 23.0, 99.0, 24.0))


def test_rows_are_repaired_or_quarantined_never_dropped(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"kind": ["border_closed", "social_surface", None, "port_control"], "name": ["a", "b", "c", "d"]},
        geometry=[BOWTIE, None, box(98, 23, 98.1, 23.1), Point(98.5, 23.5)],
        crs=4326,
    )
    path = write(frame, tmp_path / "zones.gpkg")
    read = read_vector(FileEntry(path, "zone"))
    assert read.rows_in == 4 and len(read.accepted) == 1 and len(read.rejected) == 3
    assert read.repaired == 1
    assert isinstance(read.accepted.geometry.iloc[0], MultiPolygon) and read.accepted.geometry.iloc[0].is_valid
    assert sorted(read.reasons) == ["empty or missing geometry", "geometry is not a polygon", "missing kind"]
    assert "geometry_wkt" in read.rejected.columns


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    path = write(gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(98, 23, 98.1, 23.1)], crs=4326), tmp_path / "z.gpkg")
    with pytest.raises(InputError, match=r"z\.gpkg: missing required columns kind \(column 'kind'\)"):
        read_vector(FileEntry(path, "zone"))


def test_truncated_geopackage_is_a_clear_error(tmp_path: Path) -> None:
    good = write(gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(98, 23, 98.1, 23.1)], crs=4326), tmp_path / "g.gpkg")
    broken = tmp_path / "broken.gpkg"
    broken.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(InputError, match=r"broken\.gpkg: cannot read it as a vector file"):
        read_vector(FileEntry(broken, "zone"))


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"format": "other"}, "format is 'other' but is expected to be 'gridwatch-manifest/1'"),
        ({"format": "gridwatch-manifest/1", "files": [{"path": "x.csv", "target": "nope"}]},
         r"target is 'nope' but is expected to be in \["),
        ({"format": "gridwatch-manifest/1", "timezone": "Mars/Base", "files": [{"path": "x.csv", "target": "unit"}]},
         r"timezone 'Mars/Base' is not a known time zone.*x\.csv does not exist"),
    ],
)
def test_manifest_problems_are_collected(tmp_path: Path, manifest: dict, message: str) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=message):
        read_manifest(tmp_path)
