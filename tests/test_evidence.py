"""Evidence exports and shift reports of a hand-made shift: the GeoPackage is read by GDAL's ogrinfo
with every layer and the right rows in both CRSs; the PDF renders with poppler, with its map and its
Chinese text; bad input gets one clear line."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pyogrio
import pytest
import sqlalchemy as sa
from PIL import Image

from gridwatch.dashboard._context import WallContext
from gridwatch.dashboard.dispatch_data import evidence_file
from gridwatch.dashboard.shift_report import shift_report, write_shift_report
from gridwatch.errors import InputError
from gridwatch.etl.database import engine_for
from gridwatch.layers.evidence import (
    LAYERS,
    export_evidence,
    position_counts,
    positions_table,
    read_evidence,
    summarise,
    window,
)
from gridwatch.settings import Settings

from _refdata import seed_region

ZONE = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 20, 0, 0, tzinfo=ZONE)
END = START + timedelta(hours=12)

# County C2: the east of the square, away from the west grid and the west border segment.
SHIFT_SQL = """
INSERT INTO command_unit (id, level, parent_id, code, name, name_en, geom) VALUES
 (5, 'county', 1, 'C2', '东县', 'East County',
  ST_GeomFromText('MULTIPOLYGON(((100.12 22, 100.2 22, 100.2 22.2, 100.12 22.2, 100.12 22)))', 4326));
UPDATE grid SET name = CASE code WHEN 'G-W' THEN '西区网格' ELSE '东区网格' END;
SELECT ensure_position_partitions(CAST(:start AS timestamptz) - interval '1 day', CAST(:end AS timestamptz));
-- F1 every 10 min in the west grid, V1 every 20 min in the east one, a little before and after the window too
INSERT INTO position (unit_id, ts, geom, source, grid_id)
SELECT 1, ts, ST_SetSRID(ST_MakePoint(100.05, 22.1), 4326), 'test', 1
FROM generate_series(CAST(:start AS timestamptz) - interval '1 hour', CAST(:end AS timestamptz), interval '10 min') ts;
INSERT INTO position (unit_id, ts, geom, source, grid_id)
SELECT 2, ts, ST_SetSRID(ST_MakePoint(100.15, 22.1), 4326), 'test', 2
FROM generate_series(CAST(:start AS timestamptz), CAST(:end AS timestamptz) - interval '1 min', interval '20 min') ts;
-- two fixes in no grid: one in the east county, one across the border (in no area)
INSERT INTO position (unit_id, ts, geom, source, grid_id) VALUES
 (2, CAST(:start AS timestamptz) + interval '6 hours 5 min', ST_SetSRID(ST_MakePoint(100.15, 22.05), 4326), 'test', NULL),
 (2, CAST(:start AS timestamptz) + interval '6 hours 6 min', ST_SetSRID(ST_MakePoint(100.15, 21.99), 4326), 'test', NULL);
INSERT INTO incident (id, source_id, kind, severity, status, reported_at, closed_at, note, geom) VALUES
 (1, 'I1', 'dispute', 2, 'closed', CAST(:start AS timestamptz) + interval '1 hour',
  CAST(:start AS timestamptz) + interval '90 min', '邻里纠纷', ST_SetSRID(ST_MakePoint(100.05, 22.1), 4326)),
 (2, 'I2', 'border_crossing', 3, 'closed', CAST(:start AS timestamptz) + interval '2 hours',
  CAST(:start AS timestamptz) + interval '3 hours', NULL, ST_SetSRID(ST_MakePoint(100.15, 22.1), 4326)),
 (3, 'I3', 'intrusion_alarm', 4, 'on_scene', CAST(:start AS timestamptz) + interval '11 hours', NULL, NULL,
  ST_SetSRID(ST_MakePoint(100.16, 22.12), 4326)),
 (4, 'I4', 'fire', 1, 'closed', CAST(:start AS timestamptz) - interval '4 hours',
  CAST(:start AS timestamptz) - interval '3 hours', NULL, ST_SetSRID(ST_MakePoint(100.05, 22.1), 4326)),
 (5, 'I5', 'traffic', 1, 'closed', CAST(:start AS timestamptz) - interval '1 hour',
  CAST(:start AS timestamptz) + interval '30 min', NULL, ST_SetSRID(ST_MakePoint(100.05, 22.15), 4326));
INSERT INTO alert (kind, subject, severity, detail, raised_at, cleared_at, acknowledged_by, acknowledged_at) VALUES
 ('unit_silent', '2', 2, '{"callsign": "V1"}', CAST(:start AS timestamptz) + interval '4 hours', NULL,
  'ann', CAST(:start AS timestamptz) + interval '4 hours 5 min'),
 ('incident_in_gap', '2', 3, '{"source_id": "I2", "incident_kind": "border_crossing", "lon": 100.15, "lat": 22.1}',
  CAST(:start AS timestamptz) + interval '2 hours 1 min', NULL, NULL, NULL),
 ('segment_overdue', '1', 2, '{"km_from": 0, "km_to": 10.3, "lon": 100.05, "lat": 22.0}',
  CAST(:start AS timestamptz) - interval '14 hours', CAST(:start AS timestamptz) - interval '13 hours', NULL, NULL);
INSERT INTO grid_coverage (grid_id, last_visit, limit_h, status) VALUES
 (1, CAST(:end AS timestamptz) - interval '10 min', 24, 'fresh'), (2, NULL, 24, 'overdue');
INSERT INTO segment_coverage (segment_id, last_visit, limit_h, status) VALUES
 (1, CAST(:end AS timestamptz) - interval '1 hour', 4, 'patrolled'), (2, NULL, 4, 'overdue');
"""

# What each area holds in the window, layer by layer.
EXPECTED = {
    "P": {"grids": 2, "border_segments": 2, "positions": 72 + 36 + 1, "incidents": 4, "alerts": 2},
    "C2": {"grids": 1, "border_segments": 1, "positions": 36 + 1, "incidents": 2, "alerts": 1},
}


@pytest.fixture
def shift(clean_db: sa.Engine) -> sa.Engine:
    seed_region(clean_db)
    with clean_db.begin() as conn:
        for statement in SHIFT_SQL.split(";\n"):
            if statement.strip():
                conn.execute(sa.text(statement), {"start": START, "end": END})
    return clean_db


def _ogrinfo(path) -> dict[str, str]:
    """ogrinfo's summary of each layer, by layer name."""
    out = subprocess.run(["ogrinfo", "-ro", "-al", "-so", str(path)], capture_output=True, text=True, check=True).stdout
    blocks = out.split("Layer name: ")[1:]
    return {block.split("\n", 1)[0].strip(): block for block in blocks}


@pytest.mark.parametrize(("area", "crs", "epsg"), [("P", "cgcs2000", 4490), ("P", "wgs84", 4326),
                                                   ("C2", "cgcs2000", 4490)])
def test_the_geopackage_holds_every_layer_and_ogrinfo_reads_it(shift, tmp_path, area, crs, epsg):
    path = tmp_path / "evidence.gpkg"
    counts = export_evidence(shift, window(shift, area, START, END), path, crs=crs)
    assert counts == EXPECTED[area]
    layers = _ogrinfo(path)
    assert set(layers) == set(LAYERS)
    for name, block in layers.items():
        assert f"Feature Count: {EXPECTED[area][name]}\n" in block, name
        assert f'ID["EPSG",{epsg}]' in block, name
    alerts = pyogrio.read_dataframe(path, layer="alerts")
    if area == "P":
        assert sorted(alerts["acknowledged_by"].fillna("-")) == ["-", "ann"]
        grids = pyogrio.read_dataframe(path, layer="grids").set_index("code")
        assert grids.loc["G-W", "name"] == "西区网格" and grids.loc["G-E", "status"] == "overdue"
        incidents = pyogrio.read_dataframe(path, layer="incidents").set_index("source_id")
        assert incidents.loc["I2", "handling_min"] == pytest.approx(60.0)
        assert incidents.loc["I1", "note"] == "邻里纠纷"
    positions = pyogrio.read_dataframe(path, layer="positions")
    assert positions["ts"].min() >= START and positions["ts"].max() < END


def test_the_shift_figures_count_what_was_handled(shift):
    win = window(shift, "P", START, END)
    frames = read_evidence(shift, win)
    summary = summarise(frames, win, fixes=positions_table(shift, win).num_rows, units=2)
    assert (summary.reported, summary.closed) == (3, 3)  # I5 was reported before the shift, closed in it
    assert summary.handled_per_hour == pytest.approx(3 / 12)
    assert summary.handling_median_min == pytest.approx(60.0) and summary.handling_p90_min == pytest.approx(84.0)
    assert summary.handled_by_hour.sum() == 3 and len(summary.handled_by_hour) == 12
    assert (summary.alerts_raised, summary.alerts_acknowledged, summary.ack_median_min) == (2, 1, pytest.approx(5.0))
    assert (summary.segments_covered, summary.segments_total, summary.grids_overdue, summary.grids_never) == (1, 2, 1, 1)
    assert position_counts(shift, win) == (109, 2)


def _page_png(pdf, tmp_path) -> np.ndarray:
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
                   check=True, capture_output=True)
    return np.asarray(Image.open(next(tmp_path.glob("page*.png"))).convert("RGB")).astype(int)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_shift_report_renders_with_its_map_and_chinese_text(shift, tmp_path, lang):
    pdf = tmp_path / "shift.pdf"
    write_shift_report(shift, window(shift, "P", START, END), pdf, settings=Settings(), lang=lang)
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "WenQuanYi" in fonts and " yes " in fonts.split("WenQuanYi", 1)[1].splitlines()[0]  # embedded
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    if lang == "zh":
        assert "班次勤务报告" in text and "每小时处置警情数" in text and "告警及确认" in text
    else:
        assert "Shift report" in text and "Incidents handled per hour: 0.2" in text
    assert "ann" in text and "I2" in text  # the acknowledger, the incidents
    page = _page_png(pdf, tmp_path)
    r, g, b = page[..., 0], page[..., 1], page[..., 2]
    green = ((g > r + 60) & (g > b + 40)).sum()  # the fresh grid
    red = ((r > g + 80) & (r > b + 80)).sum()  # the overdue grid and segment
    assert green > 500 and red > 500, (green, red)


def test_an_empty_window_still_makes_a_report_and_a_file(shift, tmp_path):
    early = START - timedelta(days=30)
    win = window(shift, "C2", early, early + timedelta(hours=1))
    assert export_evidence(shift, win, tmp_path / "e.gpkg")["positions"] == 0
    assert set(_ogrinfo(tmp_path / "e.gpkg")) == set(LAYERS)
    assert shift_report(shift, win, settings=Settings(), lang="zh").startswith(b"%PDF")


def test_bad_windows_and_targets_are_refused_and_keep_an_older_file(shift, tmp_path):
    with pytest.raises(InputError, match="command unit 'NOPE' does not exist"):
        window(shift, "NOPE", START, END)
    with pytest.raises(InputError, match="not before its end"):
        window(shift, "P", END, START)
    win = window(shift, "P", START, END)
    with pytest.raises(InputError, match="folder .* does not exist"):
        export_evidence(shift, win, tmp_path / "missing" / "e.gpkg")
    with pytest.raises(InputError, match="it is a folder"):
        write_shift_report(shift, win, tmp_path, settings=Settings())
    with pytest.raises(ValueError, match="CRS 'gk' is not one of cgcs2000, wgs84"):
        export_evidence(shift, win, tmp_path / "e.gpkg", crs="gk")
    assert list(tmp_path.iterdir()) == []  # nothing half written


def _gridwatch(cli_env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gridwatch.cli", *args], capture_output=True, text=True,
                          env=cli_env, timeout=300)


def test_the_commands_write_both_files_and_refuse_bad_input_in_one_line(shift, tmp_path, cli_env):
    window_args = ("--area", "C2", "--from", "2026-11-20T00:00", "--to", "2026-11-20T12:00")  # the site's zone
    done = _gridwatch(cli_env, "export", *window_args, "--crs", "wgs84", "-o", str(tmp_path / "c2.gpkg"))
    assert done.returncode == 0, done.stderr
    assert "37 positions" in done.stdout and "1 alerts" in done.stdout
    done = _gridwatch(cli_env, "report", *window_args, "--lang", "zh", "-o", str(tmp_path / "c2.pdf"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c2.pdf").read_bytes().startswith(b"%PDF")
    for args, message in [
        (("export", "--area", "NOPE", "-o", str(tmp_path / "x.gpkg")), "command unit 'NOPE' does not exist"),
        (("export", "--area", "P", "--from", "2026-11-20T12:00", "--to", "2026-11-20T00:00", "-o",
          str(tmp_path / "x.gpkg")), "not before its end"),
        (("report", "--area", "P", "-o", str(tmp_path / "no" / "x.pdf")), "does not exist"),
        (("report", "--area", "P", "--to", "yesterday", "-o", str(tmp_path / "x.pdf")), "not an ISO 8601 time"),
    ]:
        failed = _gridwatch(cli_env, *args)
        assert failed.returncode != 0 and message in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def test_the_dispatch_page_serves_both_files_or_says_why_not(shift, tmp_path):
    ctx = WallContext(shift, Settings())
    data, name = evidence_file(ctx, kind="gpkg", unit="C2", at=END, lang="en")  # the 12 h shift ending at END
    assert name == "evidence-C2-20261120-1200.gpkg"
    (tmp_path / name).write_bytes(data)
    assert "Feature Count: 37\n" in _ogrinfo(tmp_path / name)["positions"]
    data, name = evidence_file(ctx, kind="pdf", unit=None, at=END, lang="zh")
    assert name == "shift-report-P-20261120-1200.pdf" and data.startswith(b"%PDF")
    assert evidence_file(ctx, kind="pdf", unit="C2", at=START - timedelta(days=30), lang="en") == \
        "Export failed: the window holds nothing in this area"
    away = WallContext(engine_for("postgresql+psycopg://nobody@127.0.0.1:1/none"), Settings())
    assert evidence_file(away, kind="gpkg", unit="P", at=END, lang="zh") == "导出失败：数据库无法连接，请重试"
