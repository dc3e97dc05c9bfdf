"""Grid plan exports (GeoPackage, GeoJSON, Shapefile; CGCS2000 or WGS 84; UTF-8 or GBK) read by GDAL's
ogrinfo, and an edited export imported back as a planner's draft."""
from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import pyogrio
import pytest
import shapely
import sqlalchemy as sa

from gridwatch.errors import InputError
from gridwatch.etl.plan import build_faces
from gridwatch.etl.plan_import import import_drafts
from gridwatch.layers.plan import draft_of, version_grids
from gridwatch.layers.plan_export import export_version
from gridwatch.settings import Settings

from _refdata import seed_region


@pytest.fixture
def region(clean_db: sa.Engine) -> sa.Engine:
    seed_region(clean_db)
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE grid SET name = CASE code WHEN 'G-W' THEN '西区网格' ELSE '东区网格' END, "
                             "households = 300, population = 900"))
        conn.execute(sa.text("INSERT INTO account (id, name, role, command_unit_code, password_hash) "
                             "VALUES (7, 'ann', 'planner', 'P', 'x')"))
    build_faces(clean_db, settings=Settings())
    return clean_db


@pytest.mark.parametrize(("fmt", "crs", "encoding", "epsg"), [
    ("gpkg", "cgcs2000", "utf-8", 4490), ("geojson", "wgs84", "utf-8", 4326), ("shp", "cgcs2000", "gbk", 4490),
    ("shp", "wgs84", "utf-8", 4326),
])
def test_every_export_is_read_by_ogrinfo_and_round_trips(region, tmp_path, fmt, crs, encoding, epsg):
    path = tmp_path / f"grids.{fmt}"
    assert export_version(region, 1, path, fmt=fmt, crs=crs, encoding=encoding) == 2
    info = subprocess.run(["ogrinfo", "-ro", "-al", "-so", str(path)], capture_output=True, text=True, check=True)
    assert "Feature Count: 2" in info.stdout and f'ID["EPSG",{epsg}]' in info.stdout
    if fmt == "shp":
        assert path.with_suffix(".cpg").read_text().strip().upper() == ("GBK" if encoding == "gbk" else "UTF-8")
    back = pyogrio.read_dataframe(path)
    assert sorted(back["name"]) == ["东区网格", "西区网格"]
    assert sorted(back["households"]) == [300, 300]

    import_drafts(region, path, account_id=7)
    base, draft = draft_of(region, 7, "T")
    assert base == 1 and sorted(set(draft.grid)) == ["G-E", "G-W"]
    before = version_grids(region, 1).set_index("code").geometry
    again = gpd.GeoSeries(back.set_index("code").geometry, crs=back.crs).to_crs(4326)
    for code in ("G-E", "G-W"):  # the same ground, to well under a metre
        assert shapely.equals_exact(before[code].normalize(), again[code].normalize(), tolerance=1e-7) or \
            shapely.area(shapely.symmetric_difference(before[code], again[code])) < 1e-10


def test_an_edited_export_becomes_a_draft_with_its_changes(region, tmp_path):
    path = tmp_path / "grids.gpkg"
    export_version(region, 1, path, crs="wgs84")
    frame = pyogrio.read_dataframe(path)
    frame.loc[frame["code"] == "G-W", "workers"] = 5
    frame = gpd.GeoDataFrame(frame.drop(columns="geometry"), geometry=[
        shapely.union_all(frame.geometry.to_numpy())] + [frame.geometry.iloc[1]], crs=frame.crs)
    frame = frame.iloc[[0]].assign(code="G-ALL")  # one grid for the whole township
    edited = tmp_path / "edited.geojson"
    frame.to_file(edited)
    report = import_drafts(region, edited, account_id=7)
    assert report.townships == ["T"] and report.grids == 1 and report.faces_unclaimed == 0
    _, draft = draft_of(region, 7, "T")
    assert set(draft.grid) == {"G-ALL"}


def test_bad_files_get_clear_errors(region, tmp_path):
    with pytest.raises(InputError, match="GBK text is for Shapefiles only"):
        export_version(region, 1, tmp_path / "x.gpkg", encoding="gbk")
    nocode = tmp_path / "nocode.geojson"
    gpd.GeoDataFrame({"id": [1]}, geometry=[shapely.box(100, 22, 100.1, 22.1)], crs=4326).to_file(nocode)
    with pytest.raises(InputError, match="has no 'code' column"):
        import_drafts(region, nocode, account_id=7)
    dup = tmp_path / "dup.geojson"
    gpd.GeoDataFrame({"code": ["A", "A", None]}, crs=4326, geometry=[
        shapely.box(100, 22, 100.1, 22.2), shapely.box(100.1, 22, 100.2, 22.2), shapely.box(100, 22, 100.2, 22.2)]
    ).to_file(dup)
    report = import_drafts(region, dup, account_id=7)
    assert report.rejected == ["feature 3: no code or no geometry", "feature 1: code A appears more than once",
                               "feature 2: code A appears more than once"]
    assert report.townships == []


def gridwatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gridwatch.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_grids_commands_export_import_list_and_publish(region, cli_env, tmp_path):
    out = tmp_path / "grids.shp"
    done = gridwatch(cli_env, "grids", "export", "--format", "shp", "--encoding", "gbk", "-o", str(out))
    assert done.returncode == 0 and "wrote 2 grid(s) of v1" in done.stdout, done.stderr
    imported = gridwatch(cli_env, "grids", "import", str(out), "--as", "ann")
    assert imported.returncode == 0 and "drafts of 1 township(s) for ann: T; 2 grid(s)" in imported.stdout
    listed = gridwatch(cli_env, "grids", "versions")
    assert listed.stdout.startswith("* v1\t") and "grid table" in listed.stdout
    for args, says in ((("grids", "publish", "99"), "version 99 is not a saved plan"),
                       (("grids", "import", str(out), "--as", "nobody"), "'nobody' is not a planner's account"),
                       (("grids", "export", "--encoding", "gbk", "-o", str(tmp_path / "x.gpkg")),
                        "GBK text is for Shapefiles only")):
        failed = gridwatch(cli_env, *args)
        assert failed.returncode == 1 and says in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, \
            failed.stderr
