"""Load incidents from CSV: checked (severity, status lifecycle, times, place), fused, upserted by source_id.

A re-delivered incident updates the stored one when its status is at least as
far along (``reported`` < ``dispatched`` < ``on_scene`` < ``closed``); one that
is behind the stored status goes to the quarantine as stale. A changed version
of a file loaded before (new bytes or options) or ``--force`` reloads it: its
incidents replace the stored ones of the same ``source_id`` whatever their
status (it is the correction of what that file said); incidents the earlier
version held and the new one lacks stay, as ``incident`` does not record which
file an incident came from.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from functools import partial

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa

from gridwatch.etl._copy import copy_rows, create_staging
from gridwatch.etl._feeds import (
    FileLoad,
    Rejections,
    check_coordinates,
    load_each_file,
    parse_numbers,
    parse_times,
    read_csv_text,
    require_fields,
)
from gridwatch.etl._fuse_points import FUSED_COLUMNS, fuse_points, load_reference
from gridwatch.etl.manifest import TARGETS, FileEntry
from gridwatch.etl.runlog import RunCounts
from gridwatch.settings import Settings

__all__ = ["load_incidents", "STATUSES", "SEVERITY_NAMES"]

REQUIRED, OPTIONAL = TARGETS["incident"]
STATUSES = ("reported", "dispatched", "on_scene", "closed")
STAGE_TIMES = ("reported_at", "dispatched_at", "on_scene_at", "closed_at")
SEVERITY_NAMES = {"low": 1, "medium": 2, "high": 3, "critical": 4}
_RANK_SQL = "array_position(ARRAY['reported', 'dispatched', 'on_scene', 'closed'], {})"


def load_incidents(
    engine: sa.Engine,
    entries: list[FileEntry],
    *,
    settings: Settings,
    counts: RunCounts,
    default_timezone: str,
    reference_time: datetime | None = None,
    force: bool = False,
) -> None:
    """Load incident CSV files, each in one transaction; a file loaded before (same load key) is
    skipped unless ``force``, a file that cannot be read is refused and the others are loaded."""
    if reference_time is not None and reference_time.tzinfo is None:
        raise ValueError("reference_time must carry a time zone (e.g. the manifest's exported_at)")
    now = reference_time or datetime.now(timezone.utc)
    entries = [dataclasses.replace(e, timezone=e.timezone or default_timezone) for e in entries]
    load = partial(_load_file, settings=settings, reference_time=now)
    load_each_file(engine, entries, target="incident", counts=counts, load=load, force=force)


def _severity(text: pd.Series) -> np.ndarray:
    """Severity 1-4 from a number or a name; NaN where it is neither."""
    named = text.str.lower().map(SEVERITY_NAMES)
    number, _ = parse_numbers(text)
    value = np.where(named.notna(), named.to_numpy(dtype=np.float64, na_value=np.nan), number)
    return np.where(np.isin(value, [1, 2, 3, 4]), value, np.nan)


def _check_lifecycle(rej: Rejections, fields: pd.DataFrame, times: pd.DataFrame, rank: np.ndarray) -> None:
    """Each status needs its own time, no later stage's time, and times in stage order."""
    for i, (status, column) in enumerate(zip(STATUSES, STAGE_TIMES)):
        given = (fields[column] != "").to_numpy()
        rej.reject(given & times[column].isna().to_numpy(), f"unparseable {column}")
        rej.reject((rank == i) & ~given, f"status {status} without {column}")
        rej.reject((rank < i) & given, f"{column} given but the status is still earlier than {status}")
    micros = np.column_stack([times[c].to_numpy(dtype="datetime64[us]").view(np.int64) for c in STAGE_TIMES])
    earlier = np.maximum.accumulate(micros, axis=1)[:, :-1]
    present = micros[:, 1:] != np.iinfo(np.int64).min
    rej.reject((present & (micros[:, 1:] < earlier)).any(axis=1), "status times out of order")


def _load_file(conn: psycopg.Connection, file: FileLoad, *, settings: Settings, reference_time: datetime) -> None:
    entry = file.entry
    raw = read_csv_text(entry)
    fields = require_fields(entry, raw.frame, REQUIRED, OPTIONAL)
    n = len(fields)
    file.outcome.rows_in += raw.count
    rej = Rejections(n)
    rej.reject(fields["source_id"] == "", "missing source_id")
    rej.reject(fields["kind"] == "", "missing kind")
    severity = _severity(fields["severity"])
    rej.reject(np.isnan(severity), "severity is not 1-4 or one of low/medium/high/critical")
    rank = pd.Index(STATUSES).get_indexer(fields["status"].str.lower())
    rej.reject(rank < 0, f"status is not one of {list(STATUSES)}")
    times = pd.DataFrame({c: parse_times(fields[c], entry.timezone) for c in STAGE_TIMES})
    _check_lifecycle(rej, fields, times, rank)
    lon, lon_bad = parse_numbers(fields["lon"])
    lat, lat_bad = parse_numbers(fields["lat"])
    ref = load_reference(conn)
    check_coordinates(rej, lon, lat, lon_bad | lat_bad, ref)
    limit = pd.Timestamp(reference_time) + pd.Timedelta(seconds=settings.future_tolerance_s)
    rej.reject((times > limit).any(axis=1).to_numpy(), "time in the future")

    latest = times.max(axis=1)
    order = pd.DataFrame({"id": fields["source_id"], "rank": rank, "t": latest}).sort_values(["rank", "t"])
    later_copy = order["id"].where(rej.ok[order.index], None).duplicated(keep="last").reindex(fields.index)
    rej.reject(rej.ok & later_copy.to_numpy(), "duplicate")
    if not file.reload:
        stored = dict(conn.execute(
            f"SELECT source_id, {_RANK_SQL.format('status')} - 1 FROM incident WHERE source_id = ANY(%s)",
            (fields["source_id"][rej.ok].tolist(),),
        ).fetchall())
        rej.reject(rank < fields["source_id"].map(stored).fillna(-1).to_numpy(),
                   "stale: older status than the stored one")
    rej.quarantine(conn, file, raw)

    ok = rej.ok
    good = fields.loc[ok, ["source_id", "kind", "note"]].reset_index(drop=True)
    good["status"] = np.asarray(STATUSES)[rank[ok]]
    good["severity"] = severity[ok].astype(np.int16)
    for c in STAGE_TIMES:
        good[c] = times.loc[ok, c].reset_index(drop=True)
    good["lon"], good["lat"] = lon[ok], lat[ok]
    fused = fuse_points(ref, lon[ok], lat[ok], resolution=settings.h3_resolution)
    for c in FUSED_COLUMNS:
        good[c] = fused[c].astype("Int64").where(fused[c] >= 0) if c.endswith("_id") else fused[c]
    good["note"] = good["note"].replace("", None)
    file.outcome.rows_loaded += _upsert(conn, good, replace=file.reload)


def _upsert(conn: psycopg.Connection, good: pd.DataFrame, *, replace: bool) -> int:
    """Insert or update the incidents by source_id; an update needs a status at least as far along,
    unless ``replace``."""
    create_staging(
        conn, "incident_stage",
        columns="source_id text, kind text, severity smallint, status text, reported_at timestamptz, "
                "dispatched_at timestamptz, on_scene_at timestamptz, closed_at timestamptz, note text, "
                "lon float8, lat float8, grid_id integer, zone_id integer, segment_id integer, border_m real, h3 bigint",
    )
    copy_rows(conn, "incident_stage", good, columns=[
        "source_id", "kind", "severity", "status", *STAGE_TIMES, "note", "lon", "lat", *FUSED_COLUMNS
    ])
    guard = "true" if replace else f"{_RANK_SQL.format('EXCLUDED.status')} >= {_RANK_SQL.format('incident.status')}"
    names = ("kind, severity, status, reported_at, dispatched_at, on_scene_at, closed_at, note, "
             "grid_id, zone_id, segment_id, border_m, h3").split(", ")
    return conn.execute(
        f"""
        INSERT INTO incident (source_id, {', '.join(names)}, geom)
        SELECT source_id, {', '.join(names)}, ST_SetSRID(ST_MakePoint(lon, lat), 4326) FROM incident_stage
        ON CONFLICT (source_id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in (*names, 'geom'))}
        WHERE {guard}
        """
    ).rowcount
