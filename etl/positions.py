"""Load unit positions (CSV, GPX, GeoJSON points): filter like a tracking server, fuse, COPY.

Per file, in one transaction: read every field as text, reject rows with a
reason and their line (unparseable record, unknown unit, bad time or
coordinates, swapped lat/lon, far outside the region, in the future, low
accuracy, duplicate, impossible speed), fuse the accepted fixes with grids,
zones and border segments (see :mod:`gridwatch.etl._fuse_points`),
binary-COPY them into ``position`` and move ``unit_latest`` forward. All of it
on whole columns; no loop per row. Fusing starts in a background thread as
soon as the coordinates are checked, beside the filters that follow, and the
COPY is sent from another, so fusing, filtering and storing overlap.

A changed file (new bytes or options) or ``--force`` reloads: its fixes
replace the stored fixes of the same unit and time, instead of being rejected
as duplicates, and ``unit_latest`` of its units is taken again from
``position``. Fixes that an earlier version of the file held and the new one
lacks stay: ``position`` does not record which file a fix came from, and a
fix the live feed or another file also delivered must not be lost.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial

import defusedxml.ElementTree as DET
import numpy as np
import pandas as pd
import psycopg
import pyogrio
import shapely
import sqlalchemy as sa
from defusedxml import DefusedXmlException

from gridwatch.errors import InputError
from gridwatch.etl import _pgbinary as pgb
from gridwatch.etl._feeds import (
    CSV_FORMAT,
    FileLoad,
    Rejections,
    TextRows,
    check_coordinates,
    load_each_file,
    parse_numbers,
    parse_times,
    read_csv_text,
    require_fields,
)
from gridwatch.etl._fuse_points import Reference, fuse_points, load_reference
from gridwatch.etl._position_rows import POSITION_COLUMNS, ensure_partitions, position_columns, upsert_latest
from gridwatch.etl.manifest import TARGETS, FileEntry
from gridwatch.etl.runlog import RunCounts
from gridwatch.geo.tracks import too_fast
from gridwatch.settings import Settings

__all__ = ["load_positions", "read_position_file"]

REQUIRED, OPTIONAL = TARGETS["position"]
_FUSE_BATCH = 50_000


def load_positions(
    engine: sa.Engine,
    entries: list[FileEntry],
    *,
    settings: Settings,
    counts: RunCounts,
    default_timezone: str,
    reference_time: datetime | None = None,
    force: bool = False,
) -> None:
    """Load position files, each in one transaction; a file loaded before (same load key) is skipped
    unless ``force``, a file that cannot be read is refused and the others are loaded.

    ``reference_time`` (the manifest's ``exported_at``, else now) bounds how far
    in the future a fix may be; times without a zone are read in the entry's
    zone, else ``default_timezone``.
    """
    if reference_time is not None and reference_time.tzinfo is None:
        raise ValueError("reference_time must carry a time zone (e.g. the manifest's exported_at)")
    now = reference_time or datetime.now(timezone.utc)
    entries = [dataclasses.replace(e, timezone=e.timezone or default_timezone) for e in entries]
    load = partial(_load_file, settings=settings, reference_time=now, reference=_ReferenceOnce())
    load_each_file(engine, entries, target="position", counts=counts, load=load, force=force)


# What ``etl positions`` reads, for messages about a file it cannot read.
FORMATS = f"{CSV_FORMAT}, GPX tracks (.gpx) and GeoJSON points (.geojson, .json)"


def read_position_file(entry: FileEntry) -> tuple[pd.DataFrame, TextRows]:
    """The file's rows as (target fields as text, the records as read for the quarantine)."""
    if entry.format == "csv":
        rows = read_csv_text(entry)
    elif entry.format == "gpx":
        rows = _read_gpx(entry)
    else:
        rows = _read_geojson(entry)
    return require_fields(entry, rows.frame, REQUIRED, OPTIONAL), rows


def _read_gpx(entry: FileEntry) -> TextRows:
    """Track points of a GPX file (speed in m/s becomes km/h), numbered from 1; the callsign comes
    from the manifest."""
    if not entry.callsign:
        raise InputError(f"{entry.path}: a GPX file needs its unit's callsign in the manifest ('callsign')")
    try:
        points = DET.parse(entry.path).getroot().findall(".//{*}trkpt")
    except DET.ParseError as exc:
        raise InputError(f"{entry.path}: not a readable GPX file ({exc}); etl positions reads {FORMATS}") from None
    except DefusedXmlException as exc:
        raise InputError(f"{entry.path}: the GPX file declares entities ({type(exc).__name__}), which are not "
                         "read: export it again without a DTD") from None
    except (LookupError, ValueError) as exc:  # the XML declaration names an encoding expat cannot read
        raise InputError(f"{entry.path}: the GPX file's encoding cannot be read ({exc}): save it as UTF-8") from None
    speed = pd.to_numeric(pd.Series([p.findtext(".//{*}speed") for p in points], dtype=object), errors="coerce") * 3.6
    frame = pd.DataFrame(
        {
            "callsign": entry.callsign,
            "ts": [p.findtext("{*}time") or "" for p in points],
            "lon": [p.get("lon", "") for p in points],
            "lat": [p.get("lat", "") for p in points],
            "speed_kmh": speed.map("{:.3f}".format).where(speed.notna(), ""),
            "heading": [p.findtext(".//{*}course") or "" for p in points],
        },
        index=pd.RangeIndex(len(points)),
    )
    return TextRows(frame, np.arange(1, len(frame) + 1))


def _read_geojson(entry: FileEntry) -> TextRows:
    """Point features of a vector file (GeoJSON), numbered from 1, properties as text, lon/lat from
    the geometry."""
    try:
        # A geometry GEOS cannot build (a one-point line) is read as missing: its row is rejected.
        frame = pyogrio.read_dataframe(entry.path, layer=entry.layer, datetime_as_string=True, on_invalid="ignore")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{entry.path}: cannot read it ({first}); etl positions reads {FORMATS}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{entry.path}: its text is not UTF-8 (byte {exc.start}): GeoJSON is UTF-8") from None
    geoms = frame.geometry.to_numpy()
    is_point = shapely.get_type_id(geoms) == shapely.GeometryType.POINT
    text = pd.DataFrame(frame.drop(columns=frame.geometry.name)).astype(object).fillna("").astype(str)
    text["lon"] = np.where(is_point, shapely.get_x(geoms).astype(str), "")
    text["lat"] = np.where(is_point, shapely.get_y(geoms).astype(str), "")
    return TextRows(text.reset_index(drop=True), np.arange(1, len(text) + 1))


class _ReferenceOnce:
    """The reference layers, read in the first loaded file's transaction and kept for the job's other
    files (the reference job ran before; building the layers is the same work for every file)."""

    def __init__(self) -> None:
        self._ref: Reference | None = None

    def __call__(self, conn: psycopg.Connection) -> Reference:
        if self._ref is None:
            self._ref = load_reference(conn)
        return self._ref


def _units(conn: psycopg.Connection) -> pd.DataFrame:
    rows = conn.execute("SELECT callsign, id, kind FROM unit").fetchall()
    return pd.DataFrame(rows, columns=["callsign", "id", "kind"])


def _load_file(
    conn: psycopg.Connection, file: FileLoad, *, settings: Settings, reference_time: datetime,
    reference: _ReferenceOnce,
) -> None:
    entry = file.entry
    fields, raw = read_position_file(entry)
    n = len(fields)
    file.outcome.rows_in += raw.count
    rej = Rejections(n)
    units = _units(conn)
    where = pd.Index(units["callsign"]).get_indexer(fields["callsign"])
    rej.reject(where < 0, "unknown unit")
    unit_id = np.where(where >= 0, units["id"].to_numpy()[where], -1)
    max_kmh = np.where(
        where >= 0, units["kind"].map(settings.max_speed_kmh).fillna(np.inf).to_numpy()[where], np.inf
    )

    ts = parse_times(fields["ts"], entry.timezone)
    rej.reject(ts.isna().to_numpy(), "unparseable time")
    lon, lon_bad = parse_numbers(fields["lon"])
    lat, lat_bad = parse_numbers(fields["lat"])
    ref = reference(conn)
    check_coordinates(rej, lon, lat, lon_bad | lat_bad, ref)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuse-positions")
    try:
        fusing = _fuse_ahead(pool, ref, lon, lat, np.flatnonzero(rej.ok), settings=settings)
        _filter_and_write(conn, file, raw, rej, fusing, unit_id=unit_id, max_kmh=max_kmh, ts=ts, lon=lon, lat=lat,
                          fields=fields, settings=settings, reference_time=reference_time)
    finally:
        pool.shutdown(cancel_futures=True)


def _fuse_ahead(
    pool: ThreadPoolExecutor, ref: Reference, lon: np.ndarray, lat: np.ndarray, rows: np.ndarray, *,
    settings: Settings,
) -> list[tuple[np.ndarray, Future[pd.DataFrame]]]:
    """Start fusing the fixes at ``rows``, batch by batch, in ``pool``: a fix's grid, zone, border
    segment and distance and H3 cell depend on its coordinates alone, so this runs while the other
    filters do (and the database answers them); the few fixes they reject are fused for nothing."""
    batches = (rows[start : start + _FUSE_BATCH] for start in range(0, len(rows), _FUSE_BATCH))
    return [(b, pool.submit(fuse_points, ref, lon[b], lat[b], resolution=settings.h3_resolution)) for b in batches]


def _accepted_parts(fusing: list[tuple[np.ndarray, Future[pd.DataFrame]]], ok: np.ndarray) -> Iterator[pd.DataFrame]:
    """The fused values of the accepted fixes, batch by batch, in file order."""
    for rows, fused in fusing:
        yield fused.result().loc[ok[rows]].reset_index(drop=True)


def _filter_and_write(
    conn: psycopg.Connection, file: FileLoad, raw: TextRows, rej: Rejections,
    fusing: list[tuple[np.ndarray, Future[pd.DataFrame]]], *, unit_id: np.ndarray, max_kmh: np.ndarray,
    ts: pd.Series, lon: np.ndarray, lat: np.ndarray, fields: pd.DataFrame, settings: Settings,
    reference_time: datetime,
) -> None:
    """The filters after the coordinates (time, values, duplicates, speed), the quarantine, and the
    accepted fixes with their fused values into ``position`` and ``unit_latest``."""
    entry = file.entry
    future = (ts > pd.Timestamp(reference_time) + pd.Timedelta(seconds=settings.future_tolerance_s)).to_numpy()
    rej.reject(future, "time in the future")
    speed, speed_bad = parse_numbers(fields["speed_kmh"])
    heading, heading_bad = parse_numbers(fields["heading"])
    accuracy, accuracy_bad = parse_numbers(fields["accuracy_m"])
    rej.reject(speed_bad | (speed < 0), "invalid speed")
    rej.reject(heading_bad | (heading < 0) | (heading > 360), "invalid heading")
    rej.reject(accuracy_bad | (accuracy < 0), "invalid accuracy")
    rej.reject(accuracy > settings.max_accuracy_m, f"accuracy worse than {settings.max_accuracy_m:g} m")

    ts_us = ts.to_numpy(dtype="datetime64[us]", na_value=np.datetime64("NaT")).view(np.int64)
    rej.reject(_repeated(unit_id, ts_us, rej.ok), "duplicate")
    if not file.reload:
        rej.reject(_in_database(conn, unit_id, ts_us, rej.ok), "duplicate")
    rej.reject(_too_fast(conn, unit_id, ts_us, lon, lat, max_kmh, rej.ok), "impossible speed")

    rej.quarantine(conn, file, raw)
    ok = rej.ok
    accepted = pd.DataFrame(
        {"unit_id": unit_id[ok], "ts": ts_us[ok].view("datetime64[us]"), "lon": lon[ok], "lat": lat[ok],
         "speed": speed[ok], "heading": heading[ok], "accuracy": accuracy[ok]}
    )
    if file.reload:
        _drop_stored(conn, accepted)
    file.outcome.rows_loaded += _write(conn, accepted, _accepted_parts(fusing, ok),
                                       source=entry.path.suffix.lstrip(".").lower())
    if file.reload:
        _latest_again(conn, accepted["unit_id"].unique())


def _repeated(unit_id: np.ndarray, ts_us: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Accepted rows whose (unit, time) came earlier in the file."""
    out = np.zeros(len(ok), dtype=bool)
    idx = np.flatnonzero(ok)
    out[idx] = pd.DataFrame({"u": unit_id[idx], "t": ts_us[idx]}).duplicated().to_numpy()
    return out


def _in_database(conn: psycopg.Connection, unit_id: np.ndarray, ts_us: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Rows whose (unit, time) is already in ``position``."""
    if not ok.any():
        return np.zeros(len(ok), dtype=bool)
    t0, t1 = (pd.Timestamp(int(v), unit="us", tz="UTC") for v in (ts_us[ok].min(), ts_us[ok].max()))
    rows = conn.execute(
        "SELECT unit_id, (extract(epoch FROM ts) * 1000000)::bigint FROM position "
        "WHERE ts BETWEEN %s AND %s AND unit_id = ANY(%s)",
        (t0, t1, np.unique(unit_id[ok]).tolist()),
    ).fetchall()
    if not rows:
        return np.zeros(len(ok), dtype=bool)
    existing = pd.MultiIndex.from_tuples(rows)
    return ok & pd.MultiIndex.from_arrays([unit_id, ts_us]).isin(existing)


def _drop_stored(conn: psycopg.Connection, accepted: pd.DataFrame) -> None:
    """Delete the stored fixes at the (unit, time) of ``accepted``: a reload replaces them."""
    if accepted.empty:
        return
    conn.execute("CREATE TEMP TABLE reload_key (unit_id int, ts timestamptz) ON COMMIT DROP")
    pgb.copy_columns(conn, "reload_key", [pgb.int4("unit_id", accepted["unit_id"].to_numpy()),
                                          pgb.timestamptz("ts", accepted["ts"].to_numpy())])
    t0, t1 = (pd.Timestamp(t, tz="UTC") for t in (accepted["ts"].min(), accepted["ts"].max()))
    conn.execute("DELETE FROM position p USING reload_key k "
                 "WHERE p.unit_id = k.unit_id AND p.ts = k.ts AND p.ts BETWEEN %s AND %s", (t0, t1))


def _latest_again(conn: psycopg.Connection, units: np.ndarray) -> None:
    """Take ``unit_latest`` of ``units`` from ``position`` again (a reload may have replaced the newest fix)."""
    if len(units) == 0:
        return
    ids = [int(u) for u in units]
    conn.execute("DELETE FROM unit_latest WHERE unit_id = ANY(%s)", (ids,))
    conn.execute("CREATE TEMP TABLE latest_again ON COMMIT DROP AS SELECT l.* FROM unnest(%s::int[]) AS u(id) "
                 "CROSS JOIN LATERAL (SELECT * FROM position WHERE unit_id = u.id ORDER BY ts DESC LIMIT 1) l",
                 (ids,))
    upsert_latest(conn, "latest_again")


def _previous_fixes(conn: psycopg.Connection, unit_id: np.ndarray, ts_us: np.ndarray) -> pd.DataFrame:
    """For each unit, its last stored fix before its first fix in this file."""
    first = pd.DataFrame({"unit_id": unit_id, "ts": ts_us}).groupby("unit_id")["ts"].min()
    rows = conn.execute(
        "SELECT f.unit_id, (extract(epoch FROM p.ts) * 1000000)::bigint, ST_X(p.geom), ST_Y(p.geom) "
        "FROM unnest(%s::int[], %s::timestamptz[]) AS f(unit_id, t0) "
        "CROSS JOIN LATERAL (SELECT ts, geom FROM position WHERE unit_id = f.unit_id AND ts < f.t0 "
        "                    ORDER BY ts DESC LIMIT 1) p",
        (first.index.tolist(), pd.to_datetime(first.to_numpy(), unit="us", utc=True).tolist()),
    ).fetchall()
    return pd.DataFrame(rows, columns=["unit_id", "ts", "lon", "lat"])


def _too_fast(
    conn: psycopg.Connection,
    unit_id: np.ndarray,
    ts_us: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    max_kmh: np.ndarray,
    ok: np.ndarray,
) -> np.ndarray:
    """Accepted fixes too fast from the unit's previous accepted fix (:func:`gridwatch.geo.tracks.too_fast`),
    seeded with each unit's last stored fix before its first one in this file."""
    idx = np.flatnonzero(ok)
    out = np.zeros(len(ok), dtype=bool)
    if idx.size == 0:
        return out
    seeds = _previous_fixes(conn, unit_id[idx], ts_us[idx])
    out[idx] = too_fast(unit_id[idx], ts_us[idx], lon[idx], lat[idx], max_kmh[idx],
                        seeds=tuple(seeds[c].to_numpy() for c in ("unit_id", "ts", "lon", "lat")))
    return out


def _columns(frame: pd.DataFrame, *, source: str) -> list[pgb.Column]:
    """The ``position`` / ``unit_latest`` columns of fused fixes, for binary COPY."""
    return position_columns(*(frame[c].to_numpy() for c in ("unit_id", "ts", "lon", "lat", "speed", "heading",
                                                            "accuracy")), source=source, fused=frame)


def _write(conn: psycopg.Connection, accepted: pd.DataFrame, fused_parts: Iterator[pd.DataFrame], *,
           source: str) -> int:
    """COPY the accepted fixes with their fused values (``fused_parts``: consecutive batches of
    ``accepted``'s rows) into ``position`` batch by batch, then move ``unit_latest``.

    The COPY is sent from a background thread, so the next batch is fused and
    encoded while the server stores (and indexes) the one before.
    """
    if accepted.empty:
        return 0
    ensure_partitions(conn, accepted["ts"].to_numpy())
    loaded = 0
    parts = []
    with pgb.binary_copy(conn, "position", POSITION_COLUMNS, threaded=True) as write:
        for fused in fused_parts:
            fixes = accepted.iloc[loaded : loaded + len(fused)].reset_index(drop=True)
            loaded += write(_columns(pd.concat([fixes, fused], axis=1), source=source))
            parts.append(fused)

    newest = accepted.sort_values("ts").drop_duplicates("unit_id", keep="last").index
    latest = pd.concat([accepted.loc[newest].reset_index(drop=True),
                        pd.concat(parts, ignore_index=True).loc[newest].reset_index(drop=True)], axis=1)
    conn.execute("CREATE TEMP TABLE latest_stage (LIKE unit_latest) ON COMMIT DROP")
    pgb.copy_columns(conn, "latest_stage", _columns(latest, source=source))
    upsert_latest(conn, "latest_stage")
    return loaded
