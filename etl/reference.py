"""Load the reference layers: command units, police areas, zones, defence lines,
checkpoints, roads, rivers, settlements, ports, sensors and departmental grids.

Each target is loaded as a whole in one transaction: its files are read and
checked (etl.readers), COPYed into a staging table, checked once more in SQL
against what the database already holds (unknown parent codes, kinds not
allowed), rejected rows go to quarantine with their reason, and the rest are
upserted by their code (or replace the table, for layers without a code, with
ids numbered in file order so an identical reload keeps them). Border segments
are cut from defence line 1 here. Unchanged files (the ``loaded_file``
ledger: every part of the dataset and the options) are skipped; a changed one
reloads its target (grid_source: its department), replacing what the load
before produced, its quarantine rows included. Every rejected row goes to the
quarantine with its file and feature number.
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

from gridwatch.errors import InputError
from gridwatch.etl._copy import copy_rows
from gridwatch.etl._feeds import refusal
from gridwatch.etl.database import pg_connection, pg_transaction
from gridwatch.etl.manifest import TARGETS, FileEntry, Manifest
from gridwatch.etl.readers import VectorRead, choose_layer, read_vector
from gridwatch.etl.runlog import (
    FileOutcome,
    RunCounts,
    already_loaded,
    forget_earlier_load,
    load_key,
    mark_loaded,
    quarantine_rows,
)
from gridwatch.geo.border import segment_line
from gridwatch.settings import Settings

__all__ = ["REFERENCE_TARGETS", "NEEDS", "load_reference", "region_bbox"]


@dataclass(frozen=True)
class TargetSpec:
    """How one reference target lands in its table."""

    table: str
    insert: str  # INSERT ... SELECT ... FROM stage
    checks: tuple[tuple[str, str], ...] = ()  # (SQL condition on stage row s, reason)
    replace: bool = False  # no natural key: the table is replaced as a whole
    key: tuple[str, ...] = ("code",)  # the natural key of the other targets
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
        key=("department", "source_code"),
    ),
    "zone": TargetSpec(
        "zone",
        insert="INSERT INTO zone (id, kind, name, geom) SELECT s.row_no, s.kind, s.name, {geom} FROM stage s WHERE s.reason IS NULL",
        checks=(("s.kind NOT IN ('border_closed', 'port_control', 'social_surface')",
                 "kind is not one of border_closed, port_control, social_surface"),),
        replace=True,
        key=(),
    ),
    "defence_line": TargetSpec(
        "defence_line",
        insert="INSERT INTO defence_line (id, line_no, name, geom) SELECT s.row_no, s.line_no::float8::int, s.name, {geom} FROM stage s WHERE s.reason IS NULL",
        checks=(("s.line_no::float8 NOT IN (1, 2, 3)", "line_no is not 1, 2 or 3"),),
        replace=True,
        key=(),
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
        key=(),
    ),
    "river": TargetSpec(
        "river",
        insert="INSERT INTO river (id, name, geom) SELECT s.row_no, s.name, {geom} FROM stage s WHERE s.reason IS NULL",
        replace=True,
        key=(),
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
# The targets a target's rows name: not loaded when one of them was refused.
NEEDS = {"police_area": ("command_unit",)}


def _as_text(values: pd.Series) -> pd.Series:
    """A column as text for the staging table (whole floats without '.0'), missing as None."""
    if values.dtype.kind == "f" and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype(str).where(values.notna(), None)


def _stage_frame(entry: FileEntry, frame: gpd.GeoDataFrame, first_row: int) -> pd.DataFrame:
    """The staging rows of one file: every target field as text, geometry as WKB, and where each
    row came from (source and 1-based feature number)."""
    required, optional = TARGETS[entry.target]
    out = pd.DataFrame({"row_no": np.arange(first_row, first_row + len(frame))}, index=frame.index)
    out["source"] = entry.source
    out["line"] = frame.index.to_numpy() + 1
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
class _File:
    """One file of a load: its entry (with the layer chosen), load key, what was read and its outcome."""

    entry: FileEntry
    key: str
    outcome: FileOutcome
    read: VectorRead | None = None


_STAGE_TYPES = {"row_no": "int", "line": "bigint", "wkb": "bytea"}


def _load_target(
    conn: psycopg.Connection, target: str, files: list[_File], settings: Settings, run_id: int,
) -> None:
    """Stage, check and write the rows read from every file of one load (counts filled in the outcomes),
    replacing what the load before produced: the whole table, or the rows of the departments loaded."""
    spec = SPECS[target]
    frames = []
    next_row = 1
    for file in files:
        read = file.read
        file.outcome.rows_in = read.rows_in
        file.outcome.rows_rejected = quarantine_rows(conn, run_id, file.entry.source, read.rejected, read.reasons,
                                                     lines=read.rejected_lines)
        frames.append(_stage_frame(file.entry, read.accepted, next_row))
        next_row += len(read.accepted)
    stage = pd.concat(frames, ignore_index=True)
    columns = ", ".join(f'"{c}" {_STAGE_TYPES.get(c, "text")}' for c in stage.columns)
    conn.execute(f"CREATE TEMP TABLE stage ({columns}, reason text) ON COMMIT DROP")
    copy_rows(conn, "stage", stage)
    checks = spec.checks
    if spec.key:  # the key checks and _drop_absent join on it: indexed, or a province's grids join row by row
        conn.execute(f"CREATE INDEX ON stage ({', '.join(spec.key)})")
        same = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
        checks += ((f"EXISTS (SELECT 1 FROM stage t WHERE {same} AND t.row_no > s.row_no)",
                    f"{' and '.join(spec.key)} given again on a later row"),)
    for condition, reason in checks:
        conn.execute(f"UPDATE stage s SET reason = %s WHERE s.reason IS NULL AND ({condition})", (reason,))
    rejected = dict(conn.execute(
        "WITH q AS (INSERT INTO quarantine (run_id, source, line, record, reason) "
        "SELECT %s, s.source, s.line, to_jsonb(s) - 'wkb' - 'reason' - 'row_no' - 'source' - 'line' "
        "       || jsonb_build_object('geometry_wkt', ST_AsText(ST_GeomFromWKB(s.wkb))), s.reason "
        "FROM stage s WHERE s.reason IS NOT NULL RETURNING source) SELECT source, count(*) FROM q GROUP BY source",
        (run_id,),
    ).fetchall())
    for file in files:
        file.outcome.rows_rejected += rejected.get(file.entry.source, 0)
        file.outcome.rows_loaded = file.outcome.rows_in - file.outcome.rows_rejected
    if spec.replace:
        conn.execute(f"DELETE FROM {spec.table}")
    insert = spec.insert.format(geom=_GEOM)
    if target == "command_unit":
        for level in ("prefecture", "county", "township", "station"):
            conn.execute(insert, {"level": level})
    else:
        conn.execute(insert)
    if spec.key:
        conn.execute(f"ANALYZE stage, {spec.table}")
        _drop_absent(conn, spec, departments=sorted({f.entry.department for f in files if f.entry.department}))
    if spec.replace:
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{spec.table}', 'id'), GREATEST(max(id), 1)) FROM {spec.table}")
    if spec.after:
        spec.after(conn, settings)


def _drop_absent(conn: psycopg.Connection, spec: TargetSpec, *, departments: list[str]) -> None:
    """Delete the rows the files no longer hold (for grid_source: of the departments loaded)."""
    same = " AND ".join(f"s.{k} = t.{k}" for k in spec.key)
    scope = "t.department = ANY(%(departments)s) AND " if spec.table == "grid_source" else ""
    try:
        conn.execute(
            f"DELETE FROM {spec.table} t WHERE {scope}"
            f"NOT EXISTS (SELECT 1 FROM stage s WHERE s.reason IS NULL AND {same})",
            {"departments": departments},
        )
    except psycopg.errors.ForeignKeyViolation as exc:
        detail = exc.diag.message_detail or str(exc)
        raise InputError(
            f"rows the earlier version held and this one lacks are still in use ({detail}): keep them in the "
            "file, or reload what refers to them first"
        ) from None


def region_bbox(engine: sa.Engine) -> tuple[float, float, float, float] | None:
    """The extent of the loaded command units, if any (to catch data far outside)."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) e FROM command_unit) x"
        )).one()
    return None if row[0] is None else tuple(float(v) for v in row)


def _loads(manifest: Manifest) -> list[tuple[str, list[FileEntry]]]:
    """The loads of a manifest, in load order: one per target, for grid_source one per department."""
    loads = []
    for target in REFERENCE_TARGETS:
        entries = manifest.for_target(target)
        if target == "grid_source":
            departments = dict.fromkeys(e.department for e in entries)
            loads += [(target, [e for e in entries if e.department == d]) for d in departments]
        elif entries:
            loads.append((target, entries))
    return loads


def load_reference(
    engine: sa.Engine, manifest: Manifest, *, settings: Settings, counts: RunCounts, progress: bool = False,
    force: bool = False,
) -> set[str]:
    """Load every reference target of the manifest whose files changed (or all, with ``force``).

    A target's files (grid_source: a department's) load together in one
    transaction and replace what the load before produced; a file that cannot
    be read refuses its load, and a target needing a refused one (police areas
    need command units) is skipped. Each file's outcome goes into ``counts``;
    returns the targets refused or skipped.
    """
    blocked: set[str] = set()
    region = manifest.bbox or region_bbox(engine)
    for target, entries in tqdm(_loads(manifest), desc="reference layers", disable=not progress, unit="load"):
        waits = [t for t in NEEDS.get(target, ()) if t in blocked]
        if waits:
            for entry in entries:
                counts.add(FileOutcome(entry.source, target, "skipped", f"needs {', '.join(waits)}, which was refused"))
            blocked.add(target)
            continue
        files = _prepare(entries, target)
        if all(f.outcome.status != "refused" for f in files):
            with pg_connection(engine) as conn:
                if not force and all(already_loaded(conn, f.key, target) for f in files):
                    for file in files:
                        counts.add(FileOutcome(file.outcome.source, target, "unchanged"))
                    continue
            _read(files, region)
        if all(f.outcome.status != "refused" for f in files):
            try:
                _write(engine, target, files, settings, counts.run_id)
            except InputError as exc:
                for file in files:
                    file.outcome.status, file.outcome.message = "refused", " ".join(str(exc).split())
        refused = [f.outcome.source for f in files if f.outcome.status == "refused"]
        for file in files:
            if refused and file.outcome.status != "refused":
                file.outcome = FileOutcome(file.outcome.source, target, "skipped",
                                           f"loads together with {', '.join(refused)}, which was refused")
            counts.add(file.outcome)
        if refused:
            blocked.add(target)
    return blocked


def _prepare(entries: list[FileEntry], target: str) -> list[_File]:
    """Each file with its layer chosen and its load key, or refused."""
    files = []
    for entry in entries:
        try:
            entry = choose_layer(entry)
            files.append(_File(entry, load_key(entry), FileOutcome(entry.source, target, "loaded")))
        except (InputError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            files.append(_File(entry, "", FileOutcome(entry.source, target, "refused", refusal(exc, entry))))
    return files


def _read(files: list[_File], region: tuple[float, float, float, float] | None) -> None:
    """Read and check every file, or refuse it."""
    for file in files:
        try:
            file.read = read_vector(file.entry, bbox=region)
        except (InputError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            file.outcome.status, file.outcome.message = "refused", refusal(exc, file.entry)


def _write(engine: sa.Engine, target: str, files: list[_File], settings: Settings, run_id: int) -> None:
    """Write one load in one transaction, with its ledger rows."""
    with pg_transaction(engine) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"gridwatch.load.{target}",))
        for file in files:
            forget_earlier_load(conn, file.entry.source, target, file.key)
        _load_target(conn, target, files, settings, run_id)
        for file in files:
            mark_loaded(conn, file.key, file.outcome, run_id)
