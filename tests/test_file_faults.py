"""Faulty files: every bad record is quarantined with its line and the rest loads, a refused file
does not stop the others, the source layer is chosen, corrections reload, an implausible CRS is
refused naming the likely one, and every message about an unreadable file names what is read."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import pytest
import sqlalchemy as sa
from shapely.geometry import LineString, box

from gridwatch.errors import InputError
from gridwatch.etl._feeds import read_csv_text
from gridwatch.etl.importer import import_file
from gridwatch.etl.incidents import load_incidents
from gridwatch.etl.manifest import FileEntry
from gridwatch.etl.positions import load_positions
from gridwatch.etl.runlog import RunCounts, job_run
from gridwatch.etl.units import load_units
from gridwatch.settings import Settings

from _refdata import empty_tables, rows, seed_region, snapshot

GRIDWATCH = [sys.executable, "-m", "gridwatch.cli"]
EXPORTED = datetime(2026, 11, 20, 4, 0, tzinfo=timezone.utc)
FIX_HEADER = "callsign,ts,lon,lat"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GRIDWATCH, *args], capture_output=True, text=True, env=env, timeout=600)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (the progress bars aside)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("gridwatch:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return lines[0]


def csv_entry(path: Path, text: str | bytes, target: str = "position", **options) -> FileEntry:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return FileEntry(path=path, target=target, **options)


def load_fixes(engine: sa.Engine, entries: list[FileEntry], *, force: bool = False) -> RunCounts:
    with job_run(engine, "positions") as counts:
        load_positions(engine, entries, settings=Settings(), counts=counts, default_timezone="UTC",
                       reference_time=EXPORTED, force=force)
    return counts


@pytest.fixture
def region(clean_db: sa.Engine) -> sa.Engine:
    seed_region(clean_db)
    return clean_db


# -- CSV records and their lines -------------------------------------------------------------------
def test_each_record_keeps_its_physical_line(tmp_path: Path) -> None:
    text = (
        "a,b,c\n"  # 1
        "1,2,3\n"  # 2
        "4,5\n"  # 3: short
        '"x\ny",7,8\n'  # 4-5: a quoted field over two lines
        "\n"  # 6: blank
        "9,10,11,12\n"  # 7: long
        'ab"c,d,e\r\n'  # 8: a quote inside a field, CRLF
        ",,\n"  # 9: no value at all
        '"q""r","multi\r\nline\nvalue",2\n'  # 10-12
        "5,6,7\n"  # 13
        '"open,1,2\n'  # 14: the quote never closes ...
        "8,9,10\n"  # 15: ... and takes this line with it
    )
    read = read_csv_text(csv_entry(tmp_path / "a.csv", text, "unit"))
    assert read.frame["a"].tolist() == ["1", "x\ny", 'ab"c', 'q"r', "5"]
    assert read.lines.tolist() == [2, 4, 8, 10, 13]
    assert read.unparsed.to_dict("records") == [
        {"line": 3, "text": "4,5", "reason": "2 field(s) but the header has 3"},
        {"line": 7, "text": "9,10,11,12", "reason": "4 field(s) but the header has 3"},
        {"line": 14, "text": '"open,1,2\n8,9,10', "reason": "a quote is not closed: lines 14-15 were read as one record"},
    ]
    assert read.count == 8


@pytest.mark.parametrize("end", ["", "\n", "\r\n"])
def test_a_last_record_over_two_lines_with_or_without_a_line_end(tmp_path: Path, end: str) -> None:
    read = read_csv_text(csv_entry(tmp_path / "a.csv", f'a,b\r\n1,2\r\n"x{end or chr(10)}y",3{end}', "unit"))
    assert read.lines.tolist() == [2, 3] and read.frame["b"].tolist() == ["2", "3"]
    short = read_csv_text(csv_entry(tmp_path / "b.csv", f'a,b\n"x\ny"{end}', "unit"))
    assert short.unparsed[["line", "reason"]].to_dict("records") == [
        {"line": 2, "reason": "1 field(s) but the header has 2"}]


def test_lines_hold_past_many_blocks_and_in_another_encoding(tmp_path: Path) -> None:
    body = [f"甲{i},{i}" for i in range(200_000)]
    body[150_000] = "短"
    text = "名称,值\n" + "\n".join(body) + "\n"
    read = read_csv_text(csv_entry(tmp_path / "gbk.csv", text.encode("gbk"), "unit", encoding="gbk"))
    assert read.unparsed[["line", "text"]].to_dict("records") == [{"line": 150_002, "text": "短"}]
    assert read.frame["名称"].iloc[150_000] == "甲150001" and read.lines[150_000] == 150_003
    assert read.lines[-1] == 200_001


def test_a_file_that_is_not_text_in_its_encoding_is_refused_with_the_line(tmp_path: Path) -> None:
    entry = csv_entry(tmp_path / "u.csv", "a,b\n1,2\n".encode() + "甲,乙\n".encode("gbk"), "unit")
    with pytest.raises(InputError, match=r"u\.csv: its text is not utf-8 \(line 3\)"):
        read_csv_text(entry)
    with pytest.raises(InputError, match=r"u\.csv: its text is not ascii \(line 3\)"):
        read_csv_text(FileEntry(entry.path, "unit", encoding="ascii"))


def test_a_short_row_is_quarantined_with_its_line_and_the_rest_loads(region: sa.Engine, tmp_path: Path) -> None:
    """The user's report: one short row refused the whole file, with no line number."""
    entry = csv_entry(tmp_path / "fixes.csv", f"{FIX_HEADER},accuracy_m,note\n"
                      "F1,2026-11-20T01:00:00Z,100.05,22.05,10,\n"
                      "F1,2026-11-20T01:00:30Z,100.0501\n"
                      '"F1",2026-11-20T01:01:00Z,100.0502,22.0502,10,"a\nnote"\n'
                      "F1,2026-11-20T01:01:30Z,100.0503,22.0503,900,\n")
    counts = load_fixes(region, [entry])
    assert (counts.rows_in, counts.rows_loaded, counts.rows_rejected) == (4, 2, 2)
    assert rows(region, "SELECT line, reason, record FROM quarantine ORDER BY line") == [
        (3, "3 field(s) but the header has 6", {"text": "F1,2026-11-20T01:00:30Z,100.0501"}),
        (6, "accuracy worse than 500 m", {"callsign": "F1", "ts": "2026-11-20T01:01:30Z", "lon": "100.0503",
                                          "lat": "22.0503", "accuracy_m": "900", "note": ""}),
    ]


def test_units_and_incidents_quarantine_with_their_lines(region: sa.Engine, tmp_path: Path) -> None:
    units = csv_entry(tmp_path / "units.csv", "callsign,kind,command_unit_code,status\n"
                      "F2,foot,S,on_duty\nF3,tank,S,on_duty\nF4,foot\n")
    with job_run(region, "units") as counts:
        load_units(region, [units], settings=Settings(), counts=counts)
    incidents = csv_entry(tmp_path / "inc.csv", "source_id,kind,severity,status,reported_at,lon,lat\n"
                          "I1,fire,1,reported,2026-11-20T01:00:00Z,100.05,22.1\n"
                          "I2,fire,9,reported,2026-11-20T01:00:00Z,100.05,22.1\n", "incident")
    with job_run(region, "incidents") as counts:
        load_incidents(region, [incidents], settings=Settings(), counts=counts, default_timezone="UTC",
                       reference_time=EXPORTED)
    got = rows(region, "SELECT source, line, reason FROM quarantine ORDER BY source, line")
    assert got == [
        (str(incidents.path), 3, "severity is not 1-4 or one of low/medium/high/critical"),
        (str(units.path), 3, "kind is not one of ['foot', 'vehicle', 'drone', 'post', 'checkpoint']"),
        (str(units.path), 4, "2 field(s) but the header has 4"),
    ]


def test_reference_rows_are_quarantined_with_their_feature_number(clean_db: sa.Engine, tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"code": ["P1", "C1", "X1", "C2"], "name": ["p", "c", "x", None],
         "level": ["prefecture", "county", "county", None], "parent_code": [None, "P1", "NOPE", "P1"]},
        geometry=[box(98, 23, 99, 24), box(98, 23, 98.5, 24), box(98.5, 23, 99, 24), box(98.5, 23, 99, 24)],
        crs=4326,
    )
    frame.to_file(tmp_path / "units.gpkg")
    import_file(clean_db, tmp_path / "units.gpkg", target="command_unit", settings=Settings())
    assert rows(clean_db, "SELECT line, reason, record->>'code' FROM quarantine ORDER BY line") == [
        (3, "parent_code names no command unit", "X1"),  # checked in SQL
        (4, "missing name", "C2"),  # checked on reading
    ]


# -- a refused file does not stop the run ----------------------------------------------------------
@pytest.fixture(scope="module")
def clean_run(small_sample: Path, db_url: str, engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tables an uninterrupted run of the small sample leaves."""
    empty_tables(engine)
    env = {**os.environ, "GRIDWATCH_DATABASE_URL": db_url, "GRIDWATCH_HOME": str(tmp_path_factory.mktemp("home"))}
    assert cli("etl", "run", "--input", str(small_sample), env=env).returncode == 0
    return snapshot(engine)


def test_a_refused_unit_file_skips_what_needs_units_and_a_fixed_one_completes_the_run(
    clean_run: dict, clean_db: sa.Engine, small_sample: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    shutil.copytree(small_sample, folder)
    units = folder / "units.csv"
    units.write_bytes(units.read_bytes() + "甲,乙\n".encode("gbk"))  # not all UTF-8 any more
    result = cli("etl", "run", "--input", str(folder), env=cli_env)
    assert result.returncode == 1
    assert error_line(result) == ("gridwatch: error: etl run: 1 refused and 3 skipped (see above; the rest is "
                                  "loaded): fix those files and run again")
    out = result.stdout
    assert f"{units}: refused: its text is not utf-8 (line {len(units.read_bytes().splitlines())})" in out
    assert f"{folder / 'positions.csv'}: skipped: needs unit, which was refused or skipped" in out
    assert "coverage: skipped: needs position, unit" in out
    assert f"{folder / 'incidents.csv'}: " in out and "incidents.csv: skipped" not in out
    partial = snapshot(clean_db)
    for name in ("command_unit", "grid", "grid_codes", "incident", "border_segment"):
        assert partial[name] == clean_run[name], name
    assert partial["unit"] == partial["position"] == partial["grid_coverage"] == 0

    shutil.copy(small_sample / "units.csv", units)
    again = cli("etl", "run", "--input", str(folder), env=cli_env)
    assert again.returncode == 0, again.stderr
    assert "incidents.csv: already loaded, nothing changed" in again.stdout
    assert snapshot(clean_db) == clean_run


@pytest.fixture
def cut_track(small_sample: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the sample whose GPX track is cut short: (the folder, the track)."""
    folder = tmp_path / "drop"
    shutil.copytree(small_sample, folder)
    (track,) = folder.glob("gpx/*.gpx")
    track.write_text("<gpx><trk>")
    return folder, track


def test_killed_runs_past_a_refused_file_then_rerun_end_like_an_uninterrupted_one(
    clean_db: sa.Engine, cut_track: tuple[Path, Path], cli_env: dict[str, str]
) -> None:
    import signal
    import time

    folder, track = cut_track
    started = time.monotonic()
    assert cli("etl", "run", "--input", str(folder), env=cli_env).returncode == 1
    duration = time.monotonic() - started
    expected = snapshot(clean_db)
    empty_tables(clean_db)
    for fraction in (0.3, 0.5, 0.7, 0.9):
        run = subprocess.Popen([*GRIDWATCH, "etl", "run", "--input", str(folder)], env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * fraction)
        run.send_signal(signal.SIGKILL)
        run.wait()
    final = cli("etl", "run", "--input", str(folder), env=cli_env)
    assert final.returncode == 1 and f"{track}: refused: not a readable GPX file" in final.stdout
    assert snapshot(clean_db) == expected


def test_a_refused_track_leaves_the_other_positions_loaded(
    clean_db: sa.Engine, cut_track: tuple[Path, Path], cli_env: dict[str, str]
) -> None:
    folder, track = cut_track
    result = cli("etl", "run", "--input", str(folder), env=cli_env)
    assert result.returncode == 1
    assert f"{track}: refused: not a readable GPX file" in result.stdout
    assert "CSV (comma-separated" in result.stdout and "GPX tracks (.gpx)" in result.stdout
    assert f"{folder / 'positions.csv'}: " in result.stdout and "rows," in result.stdout
    assert "coverage: skipped: needs position" in result.stdout
    assert rows(clean_db, "SELECT count(*) > 0 FROM position") == [(True,)]
    with clean_db.connect() as conn:
        logged = conn.execute(sa.text("SELECT job, status, message FROM etl_run WHERE status <> 'ok'")).all()
    assert [(job, status) for job, status, _ in logged] == [("positions", "failed"), ("coverage", "failed")]
    assert "refused: not a readable GPX file" in logged[0][2]


def test_a_file_gone_mid_run_is_refused_and_the_others_load(region: sa.Engine, tmp_path: Path) -> None:
    here = csv_entry(tmp_path / "here.csv", f"{FIX_HEADER}\nF1,2026-11-20T01:00:00Z,100.05,22.05\n")
    gone = FileEntry(tmp_path / "gone.csv", "position")
    counts = load_fixes(region, [gone, here])
    assert [(f.status, f.message) for f in counts.files] == [
        ("refused", "the file is gone (moved or deleted after the run started?)"), ("loaded", "")]
    assert rows(region, "SELECT count(*) FROM position") == [(1,)]


# -- corrections reload ----------------------------------------------------------------------------
def zones(path: Path, names: list[str], kinds: list[str] | None = None) -> Path:
    kinds = kinds or ["social_surface"] * len(names)
    frame = gpd.GeoDataFrame({"kind": kinds, "name": names, "label": [n.upper() for n in names]},
                             geometry=[box(98 + i * 0.1, 23, 98.1 + i * 0.1, 23.1) for i in range(len(names))],
                             crs=4326)
    frame.to_file(path, encoding="utf-8")
    return path


def test_an_edited_dbf_alone_reloads_and_replaces_its_quarantine_rows(clean_db: sa.Engine, tmp_path: Path) -> None:
    path = zones(tmp_path / "z.shp", ["a", "b", "c"], ["social_surface", "port_control", "nope"])
    first = import_file(clean_db, path, target="zone", settings=Settings())
    assert first.endswith("3 rows, 2 loaded, 1 quarantined")
    shp = path.read_bytes()
    zones(tmp_path / "z.shp", ["a", "B", "c"], ["social_surface", "port_control", "nope"])
    assert path.read_bytes() == shp  # only the .dbf changed
    again = import_file(clean_db, path, target="zone", settings=Settings())
    assert again.endswith("3 rows, 2 loaded, 1 quarantined")
    assert rows(clean_db, "SELECT name FROM zone ORDER BY id") == [("a",), ("B",)]
    assert rows(clean_db, "SELECT count(*), min(line) FROM quarantine") == [(1, 3)]
    assert import_file(clean_db, path, target="zone", settings=Settings()).endswith("already loaded, nothing changed")
    forced = import_file(clean_db, path, target="zone", settings=Settings(), force=True)
    assert forced.endswith("3 rows, 2 loaded, 1 quarantined")
    assert rows(clean_db, "SELECT count(*) FROM quarantine") == [(1,)]


def test_a_changed_option_reloads(clean_db: sa.Engine, tmp_path: Path) -> None:
    path = zones(tmp_path / "z.gpkg", ["a", "b"])
    import_file(clean_db, path, target="zone", settings=Settings())
    mapping = tmp_path / "columns.json"
    mapping.write_text(json.dumps({"name": "label"}))
    again = import_file(clean_db, path, target="zone", settings=Settings(), columns_file=mapping)
    assert again.endswith("2 rows, 2 loaded, 0 quarantined")
    assert rows(clean_db, "SELECT name FROM zone ORDER BY id") == [("A",), ("B",)]


def test_a_department_reload_replaces_that_department_only(clean_db: sa.Engine, tmp_path: Path) -> None:
    def grids(path: Path, codes: list[str]) -> Path:
        gpd.GeoDataFrame({"source_code": codes}, geometry=[box(98 + i * 0.01, 23, 98.01 + i * 0.01, 23.01)
                                                           for i in range(len(codes))], crs=4326).to_file(path)
        return path

    civil, housing = grids(tmp_path / "civil.gpkg", ["A", "B", "C"]), grids(tmp_path / "housing.gpkg", ["A", "X"])
    for path, department in ((civil, "civil"), (housing, "housing")):
        import_file(clean_db, path, target="grid_source", department=department, settings=Settings())
    kept = rows(clean_db, "SELECT id FROM grid_source WHERE department = 'civil' AND source_code = 'A'")
    grids(civil, ["A", "C"])
    import_file(clean_db, civil, target="grid_source", department="civil", settings=Settings())
    assert rows(clean_db, "SELECT department, source_code FROM grid_source ORDER BY 1, 2") == [
        ("civil", "A"), ("civil", "C"), ("housing", "A"), ("housing", "X")]
    assert rows(clean_db, "SELECT id FROM grid_source WHERE department = 'civil' AND source_code = 'A'") == kept


def test_a_changed_position_file_replaces_its_fixes_by_unit_and_time(region: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "fixes.csv"
    first = [f"{FIX_HEADER},accuracy_m", "F1,2026-11-20T01:00:00Z,100.05,22.05,10",
             "F1,2026-11-20T01:00:30Z,100.0501,22.0501,10", "F1,2026-11-20T01:01:00Z,100.0502,22.0502,900"]
    load_fixes(region, [csv_entry(path, "\n".join(first) + "\n")])
    assert rows(region, "SELECT count(*) FROM quarantine") == [(1,)]
    # The correction: the second fix moved, the third fixed, the first gone.
    second = [first[0], "F1,2026-11-20T01:00:30Z,100.0502,22.0501,10", "F1,2026-11-20T01:01:00Z,100.0503,22.0502,10"]
    counts = load_fixes(region, [csv_entry(path, "\n".join(second) + "\n")])
    assert (counts.rows_in, counts.rows_loaded, counts.rows_rejected) == (2, 2, 0)
    assert rows(region, "SELECT to_char(ts, 'HH24:MI:SS'), round(ST_X(geom)::numeric, 4)::float8 FROM position ORDER BY ts") == [
        ("01:00:00", 100.05), ("01:00:30", 100.0502), ("01:01:00", 100.0503)]  # the first stays (see the docstring)
    assert rows(region, "SELECT count(*) FROM quarantine") == [(0,)]
    assert rows(region, "SELECT round(ST_X(geom)::numeric, 4)::float8 FROM unit_latest") == [(100.0503,)]
    again = load_fixes(region, [FileEntry(path, "position")], force=True)
    assert again.rows_loaded == 2 and rows(region, "SELECT count(*) FROM position") == [(3,)]


def test_a_changed_time_zone_reloads_a_position_file(region: sa.Engine, tmp_path: Path) -> None:
    entry = csv_entry(tmp_path / "fixes.csv", f"{FIX_HEADER}\nF1,2026-11-20 09:00:00,100.05,22.05\n",
                      timezone="Asia/Shanghai")
    load_fixes(region, [entry])
    counts = load_fixes(region, [FileEntry(entry.path, "position", timezone="Asia/Tokyo")])
    assert [f.status for f in counts.files] == ["loaded"]
    assert rows(region, "SELECT to_char(ts AT TIME ZONE 'UTC', 'HH24:MI') FROM position ORDER BY ts") == [
        ("00:00",), ("01:00",)]


def test_a_corrected_incident_file_replaces_a_later_status(region: sa.Engine, tmp_path: Path) -> None:
    header = "source_id,kind,severity,status,reported_at,closed_at,dispatched_at,on_scene_at,lon,lat\n"
    path = tmp_path / "inc.csv"

    def load(text: str) -> RunCounts:
        with job_run(region, "incidents") as counts:
            load_incidents(region, [csv_entry(path, header + text, "incident")], settings=Settings(), counts=counts,
                           default_timezone="UTC", reference_time=EXPORTED)
        return counts

    load("I1,fire,1,closed,2026-11-20T01:00:00Z,2026-11-20T02:00:00Z,2026-11-20T01:10:00Z,"
         "2026-11-20T01:20:00Z,100.05,22.1\n")
    counts = load("I1,fire,2,reported,2026-11-20T01:00:00Z,,,,100.05,22.1\n")
    assert counts.rows_loaded == 1
    assert rows(region, "SELECT status, severity, closed_at FROM incident") == [("reported", 2, None)]


def test_force_on_the_command_line(region: sa.Engine, tmp_path: Path, cli_env: dict[str, str]) -> None:
    path = tmp_path / "fixes.csv"
    path.write_text(f"{FIX_HEADER}\nF1,2026-11-20T01:00:00Z,100.05,22.05\n")
    assert cli("etl", "positions", str(path), env=cli_env).stdout.strip() == f"{path}: 1 rows, 1 loaded, 0 quarantined"
    assert cli("etl", "positions", str(path), env=cli_env).stdout.strip() == f"{path}: already loaded, nothing changed"
    forced = cli("etl", "positions", "--force", str(path), env=cli_env)
    assert forced.stdout.strip() == f"{path}: 1 rows, 1 loaded, 0 quarantined", forced.stderr
    assert rows(region, "SELECT count(*) FROM position") == [(1,)]


# -- the source layer ------------------------------------------------------------------------------
@pytest.fixture
def two_layers(tmp_path: Path) -> Path:
    path = tmp_path / "many.gpkg"
    gpd.GeoDataFrame({"kind": ["social_surface"]}, geometry=[box(98, 23, 98.1, 23.1)], crs=4326).to_file(
        path, layer="areas")
    gpd.GeoDataFrame({"class": ["trunk"]}, geometry=[LineString([(98, 23), (98.1, 23.1)])], crs=4326).to_file(
        path, layer="ways")
    return path


def test_a_file_of_several_layers_needs_its_source_layer(
    clean_db: sa.Engine, two_layers: Path, cli_env: dict[str, str]
) -> None:
    """The user's report: --layer zone read the first layer and said "missing required columns kind"."""
    result = cli("etl", "import", str(two_layers), "--layer", "road", env=cli_env)
    assert result.returncode == 1
    assert error_line(result) == (
        f"gridwatch: error: {two_layers}: refused: has 2 layers (areas, ways) and none is named 'road': "
        "choose one with --source-layer NAME (or 'layer' in the manifest)")
    loaded = cli("etl", "import", str(two_layers), "--target", "road", "--source-layer", "ways", env=cli_env)
    assert loaded.stdout.strip() == f"{two_layers}|layername=ways: 1 rows, 1 loaded, 0 quarantined", loaded.stderr
    wrong = cli("etl", "import", str(two_layers), "--target", "zone", "--source-layer", "zones", env=cli_env)
    assert "has no layer 'zones'; its layers are areas, ways" in error_line(wrong)
    assert "--source-layer" in cli("etl", "import", "--help", env=cli_env).stdout


def test_the_layer_named_like_the_target_is_read(clean_db: sa.Engine, two_layers: Path) -> None:
    gpd.GeoDataFrame({"kind": ["port_control"]}, geometry=[box(98, 23, 98.1, 23.1)], crs=4326).to_file(
        two_layers, layer="zone")
    assert import_file(clean_db, two_layers, target="zone", settings=Settings()).startswith(
        f"{two_layers}|layername=zone: 1 rows, 1 loaded")
    assert rows(clean_db, "SELECT kind FROM zone") == [("port_control",)]


# -- an implausible CRS ----------------------------------------------------------------------------
BORDER_108E = LineString([(108.05, 23.05), (108.3, 23.2), (108.6, 23.3)])


def test_a_border_read_in_the_neighbouring_zone_is_refused_naming_its_crs(
    clean_db: sa.Engine, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    prefecture = gpd.GeoDataFrame({"code": ["P"], "name": ["p"], "level": ["prefecture"]},
                                  geometry=[box(107.9, 22.9, 108.8, 23.5)], crs=4326)
    prefecture.to_file(tmp_path / "p.gpkg")
    import_file(clean_db, tmp_path / "p.gpkg", target="command_unit", settings=Settings())
    border = gpd.GeoDataFrame({"line_no": [1]}, geometry=[BORDER_108E], crs=4326).to_crs("EPSG:4545")
    border.to_file(tmp_path / "border.shp")
    (tmp_path / "border.prj").unlink()  # no CRS in the file: only the numbers tell
    result = cli("etl", "import", str(tmp_path / "border.shp"), "--layer", "defence_line", "--crs", "EPSG:4544",
                 env=cli_env)
    assert result.returncode == 1
    line = error_line(result)
    assert "read as EPSG:4544 (CGCS2000 / 3-degree Gauss-Kruger CM 105E) the data lies at lon 105.0" in line
    assert "outside the region (lon 107.900-108.800" in line
    assert "it is likely in EPSG:4545 (CGCS2000 / 3-degree Gauss-Kruger CM 108E): give --crs EPSG:4545" in line
    assert rows(clean_db, "SELECT count(*) FROM defence_line") == [(0,)]
    right = cli("etl", "import", str(tmp_path / "border.shp"), "--layer", "defence_line", "--crs", "EPSG:4545",
                env=cli_env)
    assert right.returncode == 0, right.stderr
    assert rows(clean_db, "SELECT round(ST_XMin(geom)::numeric, 2)::float8 FROM defence_line") == [(108.05,)]


def test_zone_numbered_eastings_read_in_another_zone_are_refused_without_a_region(tmp_path: Path) -> None:
    from gridwatch.etl.readers import read_vector

    path = tmp_path / "border.gpkg"
    gpd.GeoDataFrame({"line_no": [1]}, geometry=[BORDER_108E], crs=4326).to_crs("EPSG:4524").to_file(path)
    with pytest.raises(InputError, match=r"read as EPSG:4523 .* outside where that CRS is used .*"
                                         r"it is likely in EPSG:4524 \(CGCS2000 / 3-degree Gauss-Kruger zone 36\)"):
        read_vector(FileEntry(path, "defence_line", crs="EPSG:4523"))
    with pytest.raises(InputError, match=r"are projected metres, but the CRS EPSG:4326 is in degrees: "
                                         r"it is likely in EPSG:4524"):
        read_vector(FileEntry(path, "defence_line", crs="EPSG:4326"))
    assert len(read_vector(FileEntry(path, "defence_line")).accepted) == 1  # as the file declares: fine


def test_without_a_zone_number_or_region_the_codes_are_listed(tmp_path: Path) -> None:
    from gridwatch.etl.readers import read_vector

    path = tmp_path / "border.gpkg"
    gpd.GeoDataFrame({"line_no": [1]}, geometry=[BORDER_108E], crs=4326).to_crs("EPSG:4545").to_file(path)
    with pytest.raises(InputError, match=r"is in degrees: it may be any of the CGCS2000 Gauss-Kruger CRSs without "
                                         r"a zone number .*EPSG:4545.*give the one of its central meridian"):
        read_vector(FileEntry(path, "defence_line", crs="EPSG:4490"))


# -- what each command reads -----------------------------------------------------------------------
def test_a_file_positions_cannot_read_names_the_formats_it_reads(
    region: sa.Engine, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    path = tmp_path / "fixes.json"
    path.write_text(json.dumps([{"callsign": "F1", "ts": "2026-11-20T01:00:00Z", "lon": 100.05, "lat": 22.05}]))
    result = cli("etl", "positions", str(path), env=cli_env)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{path}: refused: cannot read it (")
    assert "etl positions reads CSV (comma-separated, a header row" in result.stdout
    assert "GPX tracks (.gpx) and GeoJSON points (.geojson, .json)" in result.stdout
    assert error_line(result) == ("gridwatch: error: etl positions: 1 refused (see above; the rest is loaded): "
                                  "fix those files and run again")


def test_an_incident_file_that_is_no_csv_names_the_format_read(
    region: sa.Engine, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    path = tmp_path / "incidents.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    result = cli("etl", "incidents", str(path), env=cli_env)
    assert result.returncode == 1
    assert result.stdout.strip() == (f"{path}: refused: is not a .csv file; incident files are read as CSV "
                                     "(comma-separated, a header row, UTF-8 unless an encoding is given)")


def test_a_file_import_cannot_read_names_the_formats_it_reads(tmp_path: Path, cli_env: dict[str, str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a map\n")
    line = error_line(cli("etl", "import", str(path), "--target", "zone", env=cli_env))
    assert line.startswith(f"gridwatch: error: {path}: refused: cannot read it as a vector file (")
    assert "etl import reads OGR vector formats such as GeoPackage (.gpkg), Shapefile (.shp" in line
    assert "GeoJSON, FlatGeobuf (.fgb)" in line


# -- the database lost mid-run ---------------------------------------------------------------------
@pytest.fixture
def private_home(tmp_path_factory: pytest.TempPathFactory):
    """A home of its own, with an embedded server to kill (stopped at the end)."""
    home = tmp_path_factory.mktemp("lost")
    home.chmod(0o755)  # the server runs as postgres when the tests run as root
    for parent in home.parents:
        if parent != Path("/") and parent.stat().st_mode & 0o001 == 0:
            parent.chmod(parent.stat().st_mode | 0o001)
    env = {**{k: v for k, v in os.environ.items() if k != "GRIDWATCH_DATABASE_URL"}, "GRIDWATCH_HOME": str(home)}
    yield home, env
    cli("db", "stop", env=env)


def test_a_postmaster_killed_mid_run_is_one_clear_line_and_a_rerun_ends_like_a_clean_run(
    clean_run: dict, small_sample: Path, private_home: tuple[Path, dict[str, str]]
) -> None:
    import signal
    import time

    import psycopg

    from gridwatch.etl.database import engine_for
    from gridwatch.etl.server import EmbeddedServer

    home, env = private_home
    assert cli("db", "start", env=env).returncode == 0
    server = EmbeddedServer(Settings(home=home))
    postmaster = server.pid()
    assert postmaster is not None
    run = subprocess.Popen([*GRIDWATCH, "etl", "run", "--input", str(small_sample)], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    with psycopg.connect(server.url(), autocommit=True) as watch:
        while not watch.execute("SELECT 1 FROM etl_run WHERE job = 'fuse-grids'").fetchone():
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be cut"
            time.sleep(0.05)
    os.kill(postmaster, signal.SIGKILL)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 1, (out, err)
    line = error_line(subprocess.CompletedProcess(run.args, run.returncode, out, err))
    assert line.startswith("gridwatch: error: the database went away during ")
    assert "the jobs and files finished before are kept (finished: reference, units" in line
    assert line.endswith("start it (gridwatch db start) and run `etl run` again")

    again = cli("etl", "run", "--input", str(small_sample), env=env)  # starts the embedded server again
    assert again.returncode == 0, again.stderr
    engine = engine_for(server.url())
    try:
        assert snapshot(engine) == clean_run
    finally:
        engine.dispose()


# -- a full disk (mounting a small tmpfs for the server needs root) ---------------------------------
if os.geteuid() == 0:

    @pytest.fixture
    def tiny_temp_space(engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory, server_url: str):
        """PGOPTIONS that put the session's temporary tables on a 1 MB file system of their own."""
        from gridwatch.etl.server import EmbeddedServer

        folder = tmp_path_factory.mktemp("tiny")
        folder.chmod(0o755)
        for parent in folder.parents:
            if parent != Path("/") and parent.stat().st_mode & 0o001 == 0:
                parent.chmod(parent.stat().st_mode | 0o001)
        owner = EmbeddedServer(Settings(home=Path(__file__).resolve().parents[1] / ".gridwatch")).datadir.stat()
        os.chown(folder, owner.st_uid, owner.st_gid)  # the server's own, under the mount too: a crash replays the
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)  # CREATE here
        os.chown(folder, owner.st_uid, owner.st_gid)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"CREATE TABLESPACE gridwatch_tiny LOCATION '{folder}'"))
        try:
            yield "-c temp_tablespaces=gridwatch_tiny -c temp_buffers=800kB"
        finally:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("DROP TABLESPACE gridwatch_tiny"))
                conn.execute(sa.text("CHECKPOINT"))  # recovery after a later crash starts past the tablespace
            subprocess.run(["umount", str(folder)], check=True)


    def test_a_full_disk_is_one_clear_line_and_loses_nothing(
        clean_db: sa.Engine, tmp_path: Path, cli_env: dict[str, str], tiny_temp_space: str
    ) -> None:
        from shapely.geometry import Point

        shapes = [Point(98.0 + i * 0.002, 23.5).buffer(0.001, quad_segs=2000) for i in range(200)]  # ~6 MB to stage
        gpd.GeoDataFrame({"kind": ["social_surface"] * len(shapes)}, geometry=shapes, crs=4326).to_file(
            tmp_path / "zones.gpkg")
        small = zones(tmp_path / "small.gpkg", ["kept"])
        assert import_file(clean_db, small, target="zone", settings=Settings()).endswith("1 loaded, 0 quarantined")
        (tmp_path / "manifest.json").write_text(json.dumps({"format": "gridwatch-manifest/1", "files": [
            {"path": "zones.gpkg", "target": "zone"}]}))
        env = {**cli_env, "PGOPTIONS": tiny_temp_space}
        for args, again in ((["etl", "import", str(tmp_path / "zones.gpkg"), "--target", "zone"], "the command"),
                            (["etl", "run", "--input", str(tmp_path)], "`etl run`")):
            result = cli(*args, env=env)
            assert result.returncode == 1
            line = error_line(result)
            assert line.startswith("gridwatch: error: the database's disk is full (")
            assert "No space left on device" in line and f"free space on it and run {again} again" in line
            assert rows(clean_db, "SELECT name FROM zone") == [("kept",)]
