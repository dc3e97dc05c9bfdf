"""``gridwatch bench evidence``: what an evidence export and a shift report of the whole prefecture cost.

Runs in a throwaway database loaded with the whole ETL run of the ``scale`` sample (kept under
``<home>/bench/sample-<scale>-<generator hash>``), its alerts raised at the sample's export time, then
vacuumed (as autovacuum leaves a database that has run a while: freshly loaded rows cost their first reader
the writes of their hint bits). Each figure is the median of three runs; each baseline runs once.

- Area export of a day: :func:`gridwatch.layers.evidence.export_evidence` of the top command unit
  over the 24 h before the export time, in CGCS2000 (every layer; the positions are most of it);
  baseline: GDAL's ``ogr2ogr`` writing the same positions alone from PostgreSQL to a GeoPackage.
- Shift report: :func:`gridwatch.dashboard.shift_report.write_shift_report` of the top command unit
  over the 12 h before the export time; baseline: the report's reads alone (its layers, the fix
  counts and the gap list), without the map and the PDF.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from gridwatch.bench import Figure
from gridwatch.bench._harness import bench_engine, bench_sample, load_sample, timed
from gridwatch.dashboard.shift_report import write_shift_report
from gridwatch.errors import GridwatchError
from gridwatch.etl.alerts import refresh_alerts
from gridwatch.etl.database import pg_connection
from gridwatch.etl.manifest import read_manifest
from gridwatch.layers.evidence import export_evidence, position_counts, positions_sql, read_evidence, window
from gridwatch.layers.gaps import gap_list
from gridwatch.settings import Settings

__all__ = ["bench_evidence"]

RUNS = 3


def _seconds(call, runs: int = 1) -> float:
    """The median seconds of ``runs`` calls."""
    return float(np.median(timed(call, runs)))


def _ogr2ogr(engine: sa.Engine, win, out: Path) -> None:
    """GDAL's own copy of the window's positions from PostgreSQL into a GeoPackage."""
    if shutil.which("ogr2ogr") is None:
        raise GridwatchError("the baseline needs GDAL's ogr2ogr: sudo apt-get install gdal-bin")
    url = engine.url
    dsn = " ".join(f"{key}={value}" for key, value in (("host", url.host), ("port", url.port), ("dbname", url.database),
                                                       ("user", url.username), ("password", url.password)) if value)
    with pg_connection(engine) as conn:
        sql = positions_sql(conn, win, geometry="p.geom")
    subprocess.run(["ogr2ogr", "-f", "GPKG", "-overwrite", "-a_srs", "EPSG:4490", "-nln", "positions", str(out),
                    f"PG:{dsn}", "-sql", sql], check=True, capture_output=True)


def bench_evidence(settings: Settings, *, scale: str) -> list[Figure]:
    """A day's area export vs ogr2ogr of its positions; a shift report vs its reads alone."""
    manifest = read_manifest(bench_sample(settings, scale))
    with bench_engine(settings) as engine, tempfile.TemporaryDirectory() as tmp:
        load_sample(engine, manifest, settings=settings)
        end = manifest.exported_at
        with engine.begin() as conn:
            refresh_alerts(conn, settings, end)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE)")
            top = conn.execute(sa.text("SELECT code FROM command_unit WHERE parent_id IS NULL ORDER BY id LIMIT 1")
                               ).scalar_one()
        day = window(engine, top, end - timedelta(hours=24), end)
        shift = window(engine, top, end - timedelta(hours=settings.shift_hours), end)
        counts: dict[str, int] = {}
        export_s = _seconds(lambda: counts.update(export_evidence(engine, day, Path(tmp) / "day.gpkg")), RUNS)
        held = ", ".join(f"{n:,} {name.replace('_', ' ')}" for name, n in counts.items())
        export = Figure(f"area export of a day, {top} ({held})", export_s, "s", "<= 10",
                        _seconds(lambda: _ogr2ogr(engine, day, Path(tmp) / "ogr2ogr.gpkg")),
                        "ogr2ogr of the positions alone")
        report_s = _seconds(lambda: write_shift_report(engine, shift, Path(tmp) / "shift.pdf", settings=settings), RUNS)
        reads_s = _seconds(lambda: (read_evidence(engine, shift), position_counts(engine, shift),
                                    gap_list(engine, settings, now=shift.end, unit=top, limit=10)))
        report = Figure(f"shift report, {top}, {settings.shift_hours:g} h", report_s, "s", "<= 10", reads_s,
                        "the report's reads alone")
    return [export, report]
