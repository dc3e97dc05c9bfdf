"""Single-file entry points (``etl import``, ``etl positions``, ``etl incidents``):
each builds a one-file manifest and runs the same loaders as ``etl run``."""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from gridwatch.errors import InputError
from gridwatch.etl.manifest import TARGETS, FileEntry, Manifest
from gridwatch.etl.reference import REFERENCE_TARGETS, load_reference
from gridwatch.etl.runlog import RunCounts, job_run
from gridwatch.settings import Settings

__all__ = ["import_file", "load_feed_files", "region_bbox"]


def region_bbox(engine: sa.Engine) -> tuple[float, float, float, float] | None:
    """The extent of the loaded command units, if any (to catch data far outside)."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) e FROM command_unit) x"
        )).one()
    return None if row[0] is None else tuple(float(v) for v in row)


def _columns(target: str, columns_file: Path | None) -> dict[str, str]:
    if columns_file is None:
        return {}
    try:
        mapping = json.loads(Path(columns_file).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{columns_file}: cannot read the column mapping ({exc})") from None
    required, optional = TARGETS[target]
    unknown = set(mapping) - set(required) - set(optional)
    if not isinstance(mapping, dict) or unknown:
        raise InputError(
            f"{columns_file}: maps unknown fields {sorted(unknown)}; allowed {sorted(required + optional)}"
        )
    return mapping


def _summary(path: str, counts: RunCounts) -> str:
    if counts.rows_in == 0:
        return f"{path}: already loaded, nothing changed"
    return f"{path}: {counts.rows_in:,} rows, {counts.rows_loaded:,} loaded, {counts.rows_rejected:,} quarantined"


def import_file(
    engine: sa.Engine, path: Path, *, target: str, settings: Settings, crs: str | None = None,
    encoding: str | None = None, department: str | None = None, columns_file: Path | None = None,
) -> str:
    """Import one vector file into a reference layer; return a one-line summary."""
    if target not in REFERENCE_TARGETS:
        raise InputError(f"layer is {target!r} but is expected to be in {list(REFERENCE_TARGETS)}")
    if target == "grid_source" and not department:
        raise InputError("a grid_source file needs its --department")
    if not Path(path).exists():
        raise InputError(f"{path} does not exist")
    entry = FileEntry(Path(path).resolve(), target, crs=crs, encoding=encoding, department=department,
                      columns=_columns(target, columns_file))
    manifest = Manifest(entry.path.parent, (entry,), settings.timezone, bbox=region_bbox(engine))
    with job_run(engine, f"import {target}", str(path)) as counts:
        load_reference(engine, manifest, settings=settings, counts=counts)
    return _summary(str(path), counts)


def load_feed_files(
    engine: sa.Engine, kind: str, paths: list[Path], *, settings: Settings, timezone_name: str | None = None,
    callsign: str | None = None, columns_file: Path | None = None,
) -> str:
    """Load position or incident files; return a one-line summary."""
    from gridwatch.etl.incidents import load_incidents
    from gridwatch.etl.positions import load_positions

    target = {"positions": "position", "incidents": "incident"}[kind]
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise InputError(f"{', '.join(missing)} does not exist")
    columns = _columns(target, columns_file)
    entries = [FileEntry(Path(p).resolve(), target, callsign=callsign, timezone=timezone_name, columns=columns)
               for p in paths]
    loader = load_positions if target == "position" else load_incidents
    with job_run(engine, kind, ", ".join(map(str, paths))) as counts:
        loader(engine, entries, settings=settings, counts=counts, default_timezone=timezone_name or settings.timezone)
    return _summary(", ".join(map(str, paths)), counts)
