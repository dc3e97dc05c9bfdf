"""Load the reference layers: command units, police areas, zones, defence lines,
checkpoints, roads, rivers, settlements, ports, sensors and departmental grids.

Each target is loaded as a whole in one transaction: its files are read and
checked (etl.readers), COPYed into a staging table, checked once more in SQL
against what the database already holds (unknown parent codes, kinds not
allowed), rejected rows go to quarantine with their reason, and the rest are
upserted by their code (or replace the table, for layers without a code, with
ids numbered in file order so an identical reload keeps them). Border segments
are cut from defence line 1 here. Unchanged files (the ``loaded_file``
ledger) are skipped.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
import sqlalchemy as sa
from tqdm import tqdm

from gridwatch.etl._copy import copy_rows
from gridwatch.etl.manifest import TARGETS, FileEntry, Manifest
from gridwatch.etl.readers import read_vector
from gridwatch.etl.runlog import RunCounts, already_loaded, file_digest, mark_loaded, quarantine_rows
from gridwatch.geo.border import segment_line
from gridwatch.settings import Settings

__all__ = ["REFERENCE_TARGETS", "load_reference"]


@dataclass(frozen=True)
class TargetSpec:
    """How one reference target lands in its table."""

    table: str
    insert: str  # INSERT ... SELECT ... FROM stage
    checks: tuple[tuple[str, str], ...] = ()  # (SQL condition on stage row s, reason)
    replace: bool = False  # no natural key: the table is replaced as a whole
    after: Callable[[psycopg.Connection, Settings], None] | None = field(default=None)


def _cut_border_segments(conn: psycopg.Connection, settings: Settings) -> None:
    """Rebuild border_segment from defence line 1, numbered along the line."""
    row = conn.execute(
        "SELECT ST_AsBinary(ST_LineMerge(ST_Union(geom))) FROM defence_line WHERE line_no = 1"
    ).fetchone()
    conn.execute("DELETE FROM border_segment")
    if not row or row[0] is None:
        return
    line = shapely.from_wkb(row[0])
    if line.geom_type == "MultiLineString":  # keep the longest run if the line is broken
        line = max(line.geoms, key=lambda g: g.length)
    segments = segment_line(line, length_m=settings.border_segment_m)
    frame = pd.DataFrame(
        {
            "id": range(1, len(segments) + 1),
            "km_from": segments["km_from"].to_numpy(),
            "km_to": segments["km_to"].to_numpy(),
            "wkb": shapely.to_wkb(segments.geometry.values),
        }
    )
    conn.execute("CREATE TEMP TABLE stage_segment (id int, km_from float8, km_to float8, wkb bytea) ON COMMIT DROP")
    copy_rows(conn, "stage_segment", frame)
    conn.execute(
        "INSERT INTO border_segment (id, km_from, km_to, geom) "
        "SELECT id, km_from, km_to, ST_SetSRID(ST_GeomFromWKB(wkb), 4326) FROM stage_segment"
    )
    conn.execute("SELECT setval(pg_get_serial_sequence('border_segment', 'id'), GREATEST(max(id), 1)) FROM border_segment")


_GEOM = "ST_SetSRID(ST_GeomFromWKB(s.wkb), 4326)"

SPECS: dict[str, TargetSpec] = {
    "command_unit": TargetSpec(
        "command_unit",
        # Parents first: one statement per level, each looking up the level above.
        insert="""
        INSERT INTO command_unit (level, parent_id, code, name, name_en, geom)
        SELECT s.level, p.id, s.code, s.name, s.name_en, {geom}
        FROM stage s LEFT JOIN command_unit p ON p.code = s.parent_code
        WHERE s.reason IS NULL AND s.level = %(level)s
        ON CONFLICT (code) DO UPDATE SET level = EXCLUDED.level, parent_id = EXCLUDED.parent_id,
            name = EXCLUDED.name, name_en = EXCLUDED.name_en, geom = EXCLUDED.geom""",
        checks=(
            ("s.level NOT IN ('prefecture', 'county', 'township', 'station')",
             "level is not one of prefecture, county, township, station"),
            ("s.level <> 'prefecture' AND NOT EXISTS (SELECT 1 FROM stage t WHERE t.code = s.parent_code) "
             "AND NOT EXISTS (SELECT 1 FROM command_unit c WHERE c.code = s.parent_code)",
             "parent_code names no command unit"),
        ),
    ),
    "police_area": TargetSpec(
        "police_area",
        insert="""
        INSERT INTO police_area (code, name, name_en, station_id, geom)
        SELECT s.code, s.name, s.name_en, c.id, {geom}
        FROM stage s JOIN command_unit c ON c.code = s.station_code AND c.level = 'station'
        WHERE s.reason IS NULL
        ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_en = EXCLUDED.name_en,
            station_id = EXCLUDED.station_id, geom = EXCLUDED.geom""",
        checks=(("NOT EXISTS (SELECT 1 FROM command_unit c WHERE c.code = s.station_code AND c.level = 'station')",
                 "station_code names no station"),),
    ),
    "grid_source": TargetSpec(
        "grid_source",
        insert="""
        INSERT INTO grid_source (department, source_code, name, township_code, households, population, attrs, geom)
        SELECT s.department, s.source_code, s.name, s.township_code, round(s.households::numeric)::int,
               round(s.population::numeric)::int, s.attrs::jsonb, {geom}
        FROM stage s WHERE s.reason IS NULL
        ON CONFLICT (department, source_code) DO UPDATE SET name = EXCLUDED.name,
            township_code = EXCLUDED.township_code, households = EXCLUDED.households,
            population = EXCLUDED.population, attrs = EXCLUDED.attrs, geom = EXCLUDED.geom""",
        checks=(("s.households::float8 < 0 OR s.population::float8 < 0", "households or population below 0"),),
    ),
    "zone": TargetSpec(
        "zone",
        insert="INSERT INTO zone (id, kind, name, geom) SELECT s.row_no, s.kind, s.name, {geom} FROM stage s WHERE s.reason IS NULL",
        checks=(("s.kind NOT IN ('border_closed', 'port_control', 'social_surface')",
                 "kind is not one of border_closed, port_control, social_surface"),),
        replace=True,
    ),
    "defence_line": TargetSpec(
        "defence_line",
        insert="INSERT INTO defence_line (id, line_no, name, geom) SELECT s.row_no, s.line_no::float8::int, s.name, {geom} FROM stage s WHERE s.reason IS NULL",
        checks=(("s.line_no::float8 NOT IN (1, 2, 3)", "line_no is not 1, 2 or 3"),),
        replace=True,
        after=_cut_border_segments,
    ),
    "checkpoint": TargetSpec(
        "checkpoint",
        insert="""
        INSERT INTO checkpoint (code, line_no, name, kind, staffed, geom)
        SELECT s.code, s.line_no::float8::int, s.name, coalesce(s.kind, 'road_checkpoint'), s.staffed::boolean, {geom}
        FROM stage s WHERE s.reason IS NULL
        ON CONFLICT (code) DO UPDATE SET line_no = EXCLUDED.line_no, name = EXCLUDED.name,
            kind = EXCLUDED.kind, staffed = EXCLUDED.staffed, geom = EXCLUDED.geom""",
        checks=(
            ("s.line_no::float8 NOT IN (1, 2, 3)", "line_no is not 1, 2 or 3"),
            ("coalesce(s.kind, 'road_checkpoint') NOT IN ('road_checkpoint', 'port', 'post')",
             "kind is not one of road_checkpoint, port, post"),
        ),
    ),
    "road": TargetSpec(
        "road",
        insert="INSERT INTO road (id, code, class, name, geom) SELECT s.row_no, s.code, s.class, s.name, {geom} FROM stage s WHERE s.reason IS NULL",
        checks=(("s.class NOT IN ('trunk', 'secondary', 'track', 'patrol')",
                 "class is not one of trunk, secondary, track, patrol"),),
        replace=True,
    ),
    "river": TargetSpec(
        "river",
        insert="INSERT INTO river (id, name, geom) SELECT s.row_no, s.name, {geom} FROM stage s WHERE s.reason IS NULL",
        replace=True,
    ),
    "settlement": TargetSpec(
        "settlement",
        insert="""
        INSERT INTO settlement (code, name, name_en, kind, households, population, geom)
        SELECT s.code, s.name, s.name_en, s.kind, round(s.households::numeric)::int, round(s.population::numeric)::int, {geom}
        FROM stage s WHERE s.reason IS NULL
        ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_en = EXCLUDED.name_en, kind = EXCLUDED.kind,
            households = EXCLUDED.households, population = EXCLUDED.population, geom = EXCLUDED.geom""",
        checks=(("s.kind NOT IN ('seat', 'town', 'village')", "kind is not one of seat, town, village"),),
    ),
    "port": TargetSpec(
        "port",
        insert="""
        INSERT INTO port (code, name, geom) SELECT s.code, s.name, {geom} FROM stage s WHERE s.reason IS NULL
        ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, geom = EXCLUDED.geom""",
    ),
    "sensor": TargetSpec(
        "sensor",
        insert="""
        INSERT INTO sensor (code, kind, range_m, fov_deg, azimuth_deg, up, geom)
        SELECT s.code, s.kind, s.range_m::float8, s.fov_deg::float8, s.azimuth_deg::float8, s.up::boolean, {geom}
        FROM stage s WHERE s.reason IS NULL
        ON CONFLICT (code) DO UPDATE SET kind = EXCLUDED.kind, range_m = EXCLUDED.range_m, fov_deg = EXCLUDED.fov_deg,
            azimuth_deg = EXCLUDED.azimuth_deg, up = EXCLUDED.up, geom = EXCLUDED.geom""",
        checks=(
            ("s.kind NOT IN ('camera', 'radar')", "kind is not one of camera, radar"),
            ("s.range_m::float8 <= 0", "range_m is not above 0"),
            ("s.fov_deg::float8 <= 0 OR s.fov_deg::float8 > 360", "fov_deg is not in (0, 360]"),
            ("s.azimuth_deg::float8 < 0 OR s.azimuth_deg::float8 >= 360", "azimuth_deg is not in [0, 360)"),
        ),
    ),
}
# Load order: parents before the rows that name them.
REFERENCE_TARGETS = tuple(SPECS)


def _as_text(values: pd.Series) -> pd.Series:
    """A column as text for the staging table (whole floats without '.0'), missing as None."""
    if values.dtype.kind == "f" and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype(str).where(values.notna(), None)


def _stage_frame(entry: FileEntry, frame: gpd.GeoDataFrame, first_row: int) -> pd.DataFrame:
    """The staging rows of one file: every target field as text, geometry as WKB."""
    required, optional = TARGETS[entry.target]
    out = pd.DataFrame({"row_no": np.arange(first_row, first_row + len(frame))}, index=frame.index)
    for name in (*required, *optional):
        out[name] = _as_text(frame[name]) if name in frame.columns else None
    if entry.target == "grid_source":
        out["department"] = entry.department
        extra = pd.DataFrame(frame[frame.attrs.get("extra_columns", [])])
        out["attrs"] = (
            extra.to_json(orient="records", lines=True, force_ascii=False).splitlines()
            if len(extra.columns) and len(extra) else "{}"
        )
    out["wkb"] = shapely.to_wkb(frame.geometry.values)
    return out


@dataclass
class _FileRows:
    entry: FileEntry
    digest: str
    rows_in: int
    rejected: int
    first_row: int
    last_row: int


def _load_target(
    conn: psycopg.Connection, target: str, files: list[_FileRows], manifest: Manifest, settings: Settings,
    run_id: int,
) -> None:
    """Read, stage, check and upsert every file of one target (counts filled in ``files``)."""
    spec = SPECS[target]
    frames = []
    next_row = 1
    for file in files:
        read = read_vector(file.entry, bbox=manifest.bbox)
        file.rows_in = read.rows_in
        file.rejected = quarantine_rows(conn, run_id, str(file.entry.path), read.rejected, read.reasons)
        file.first_row, file.last_row = next_row, next_row + len(read.accepted) - 1
        frames.append(_stage_frame(file.entry, read.accepted, next_row))
        next_row += len(read.accepted)
    stage = pd.concat(frames, ignore_index=True)
    columns = ", ".join(f'"{c}" {"int" if c == "row_no" else "bytea" if c == "wkb" else "text"}' for c in stage.columns)
    conn.execute(f"CREATE TEMP TABLE stage ({columns}, reason text) ON COMMIT DROP")
    copy_rows(conn, "stage", stage)
    for condition, reason in spec.checks:
        conn.execute(f"UPDATE stage s SET reason = %s WHERE s.reason IS NULL AND ({condition})", (reason,))
    bad_rows = np.array([r[0] for r in conn.execute(
        "INSERT INTO quarantine (run_id, source, record, reason) "
        "SELECT %s, %s, to_jsonb(s) - 'wkb' - 'reason' "
        "       || jsonb_build_object('geometry_wkt', ST_AsText(ST_GeomFromWKB(s.wkb))), s.reason "
        "FROM stage s WHERE s.reason IS NOT NULL RETURNING (record->>'row_no')::int",
        (run_id, ", ".join(str(f.entry.path) for f in files)),
    ).fetchall()], dtype=int)
    for file in files:
        file.rejected += int(((bad_rows >= file.first_row) & (bad_rows <= file.last_row)).sum())
    if spec.replace:
        conn.execute(f"DELETE FROM {spec.table}")
    insert = spec.insert.format(geom=_GEOM)
    if target == "command_unit":
        for level in ("prefecture", "county", "township", "station"):
            conn.execute(insert, {"level": level})
    else:
        conn.execute(insert)
    if spec.replace:
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{spec.table}', 'id'), GREATEST(max(id), 1)) FROM {spec.table}")
    if spec.after:
        spec.after(conn, settings)


def load_reference(
    engine: sa.Engine, manifest: Manifest, *, settings: Settings, counts: RunCounts, progress: bool = False
) -> list[str]:
    """Load every reference target of the manifest whose files changed; return those loaded."""
    loaded = []
    targets = [t for t in REFERENCE_TARGETS if manifest.for_target(t)]
    for target in tqdm(targets, desc="reference layers", disable=not progress, unit="layer"):
        files = [_FileRows(e, file_digest(e.path), 0, 0, 0, 0) for e in manifest.for_target(target)]
        with engine.begin() as sa_conn:
            conn = sa_conn.connection.driver_connection
            if all(already_loaded(conn, f.digest, target) for f in files):
                continue
            _load_target(conn, target, files, manifest, settings, counts.run_id)
            for file in files:
                file_counts = RunCounts(counts.run_id, file.rows_in, file.rows_in - file.rejected, file.rejected)
                counts.rows_in += file_counts.rows_in
                counts.rows_loaded += file_counts.rows_loaded
                counts.rows_rejected += file_counts.rows_rejected
                if not already_loaded(conn, file.digest, target):
                    mark_loaded(conn, file.digest, file.entry.path, target, file_counts)
        loaded.append(target)
    return loaded
