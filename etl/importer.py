"""Single-file entry points (``etl import``, ``etl positions``, ``etl incidents``):
each builds a one-file manifest and runs the same loaders as ``etl run``."""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from gridwatch.errors import InputError
from gridwatch.etl.manifest import TARGETS, FileEntry, Manifest
from gridwatch.etl.reference import REFERENCE_TARGETS, load_reference
from gridwatch.etl.runlog import FileOutcome, job_run
from gridwatch.settings import Settings

__all__ = ["import_file", "load_feed_files"]


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


def import_file(
    engine: sa.Engine, path: Path, *, target: str, settings: Settings, crs: str | None = None,
    encoding: str | None = None, department: str | None = None, columns_file: Path | None = None,
    source_layer: str | None = None, force: bool = False,
) -> str:
    """Import one vector file (its ``source_layer``, when it has several) into a reference layer;
    return a one-line summary, or raise InputError saying why the file was refused."""
    if target not in REFERENCE_TARGETS:
        raise InputError(f"layer is {target!r} but is expected to be in {list(REFERENCE_TARGETS)}")
    if target == "grid_source" and not department:
        raise InputError("a grid_source file needs its --department")
    if not Path(path).exists():
        raise InputError(f"{path} does not exist")
    entry = FileEntry(Path(path).resolve(), target, crs=crs, encoding=encoding, department=department,
                      layer=source_layer, columns=_columns(target, columns_file))
    manifest = Manifest(entry.path.parent, (entry,), settings.timezone)
    with job_run(engine, f"import {target}", str(path)) as counts:
        load_reference(engine, manifest, settings=settings, counts=counts, force=force)
    (outcome,) = counts.files
    if outcome.status == "refused":
        raise InputError(outcome.describe())
    return outcome.describe()


def load_feed_files(
    engine: sa.Engine, kind: str, paths: list[Path], *, settings: Settings, timezone_name: str | None = None,
    callsign: str | None = None, columns_file: Path | None = None, force: bool = False,
) -> list[FileOutcome]:
    """Load position or incident files; return each file's outcome (a refused file does not stop the others)."""
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
        loader(engine, entries, settings=settings, counts=counts, default_timezone=timezone_name or settings.timezone,
               force=force)
    return counts.files
