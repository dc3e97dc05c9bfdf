"""Drain the spool into the database, in order, in batches, exactly once.

A :class:`SpoolWriter` thread reads the spool from the committed position up to
its durable end (every ~200 ms, or at once while there is a backlog) and, in
one transaction per batch: checks each fix against the database (unknown
unit, impossible implied speed → ``quarantine``), fuses the rest with grids,
zones, border segments and H3 (:func:`gridwatch.etl._fuse_points.fuse_points`),
inserts them into ``position`` (``ON CONFLICT DO NOTHING``, so a fix sent
twice is stored once), moves ``unit_latest`` forward, and stores the new spool
position in ``ingest_offset``. Because the position commits with the rows, a
restart replays from exactly where the database stopped. Right after each
commit, coverage follows the new fixes (:func:`gridwatch.etl.coverage.refresh_coverage_for`). When the database is
unreachable the thread retries with backoff; the spool keeps growing.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import psycopg

from gridwatch.etl import _pgbinary as pgb
from gridwatch.etl._fuse_points import Reference, fuse_points, load_reference
from gridwatch.etl._position_rows import POSITION_COLUMNS, position_columns, upsert_latest
from gridwatch.etl.coverage import refresh_coverage_for
from gridwatch.etl.ingest._fix import SOURCES
from gridwatch.etl.ingest.spool import Spool, SpoolPosition, SpoolReader, now_us
from gridwatch.etl.runlog import quarantine_rows
from gridwatch.geo.tracks import too_fast
from gridwatch.settings import Settings

__all__ = ["StoreResult", "fuse_and_store", "SpoolWriter", "QUARANTINE_SOURCE"]

log = logging.getLogger(__name__)

QUARANTINE_SOURCE = "ingest"
_REFERENCE_TTL_S = 60.0
_LATENCY_WINDOW = 20_000
_NAMES = ", ".join(POSITION_COLUMNS)


@dataclass
class StoreResult:
    """What one batch did: rows written, repeats dropped, rejections by reason, and the
    accepted fixes as fused (for the coverage update)."""

    written: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    accepted: pd.DataFrame | None = None


def fuse_and_store(conn: psycopg.Connection, records: np.ndarray, *, reference: Reference, settings: Settings) -> StoreResult:
    """Check, fuse and store a batch of spool rows (:data:`gridwatch.etl.ingest.spool.FIX_DTYPE`), in the caller's transaction."""
    result = StoreResult()
    if len(records) == 0:
        return result
    callsign = np.char.decode(records["callsign"], "utf-8")
    ts_us = records["ts_us"].astype(np.int64)
    lon, lat = records["lon"].astype(np.float64), records["lat"].astype(np.float64)
    names, which = np.unique(callsign, return_inverse=True)
    units = _units(conn, names, settings)
    unit_id = units["unit_id"].to_numpy()[which]
    reasons = np.full(len(records), None, dtype=object)
    reasons[unit_id < 0] = "unknown unit"

    ok = reasons == None  # noqa: E711 - element-wise
    repeated = ok & pd.DataFrame({"u": unit_id, "t": ts_us}).duplicated().to_numpy()
    too_fast = _too_fast(unit_id, ts_us, lon, lat, units["vmax"].to_numpy()[which], units, ok & ~repeated)
    reasons[too_fast] = "impossible speed"
    rejected = reasons != None  # noqa: E711
    result.rejected.update(reasons[rejected].tolist())
    if rejected.any():
        quarantine_rows(conn, None, QUARANTINE_SOURCE, _as_records(records[rejected], callsign[rejected]),
                        pd.Series(reasons[rejected]))

    keep = ~rejected & ~repeated
    result.written, result.accepted = _store(conn, records[keep], unit_id[keep], reference=reference,
                                             settings=settings)
    result.duplicates = int(keep.sum()) - result.written + int(repeated.sum())
    return result


def _units(conn: psycopg.Connection, names: np.ndarray, settings: Settings) -> pd.DataFrame:
    """Per callsign (in ``names`` order): unit id (-1 unknown), its kind's speed limit, and its latest fix."""
    rows = conn.execute(
        "SELECT c.i, u.id, u.kind, (extract(epoch FROM l.ts) * 1000000)::bigint, ST_X(l.geom), ST_Y(l.geom) "
        "FROM unnest(%s::text[]) WITH ORDINALITY AS c(callsign, i) "
        "JOIN unit u USING (callsign) LEFT JOIN unit_latest l ON l.unit_id = u.id",
        (names.tolist(),),
    ).fetchall()
    found = pd.DataFrame(rows, columns=["i", "unit_id", "kind", "last_ts", "last_lon", "last_lat"]).set_index("i")
    frame = found.reindex(pd.RangeIndex(1, len(names) + 1))
    frame["unit_id"] = frame["unit_id"].fillna(-1).astype(np.int64)
    frame["vmax"] = frame["kind"].map(settings.max_speed_kmh).astype(np.float64).fillna(np.inf)
    return frame.reset_index(drop=True)


def _too_fast(
    unit_id: np.ndarray, ts_us: np.ndarray, lon: np.ndarray, lat: np.ndarray, vmax: np.ndarray,
    units: pd.DataFrame, ok: np.ndarray,
) -> np.ndarray:
    """Fixes too fast from the unit's previous fix (:func:`gridwatch.geo.tracks.too_fast`), seeded with
    its ``unit_latest`` fix when that is older than its first fix in the batch."""
    out = np.zeros(len(ok), dtype=bool)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return out
    first = pd.Series(ts_us[idx]).groupby(unit_id[idx]).min()
    seeds = units[units["last_ts"].notna()].set_index("unit_id")
    seeds = seeds[seeds.index.isin(first.index)]
    seeds = seeds[seeds["last_ts"].to_numpy() < first.reindex(seeds.index).to_numpy()]
    out[idx] = too_fast(unit_id[idx], ts_us[idx], lon[idx], lat[idx], vmax[idx], seeds=(
        seeds.index.to_numpy(), seeds["last_ts"].to_numpy(dtype=np.int64),
        seeds["last_lon"].to_numpy(dtype=np.float64), seeds["last_lat"].to_numpy(dtype=np.float64)))
    return out


def _as_records(records: np.ndarray, callsign: np.ndarray) -> pd.DataFrame:
    """Rejected spool rows as the fields a person reads in ``quarantine``."""
    return pd.DataFrame({
        "callsign": callsign,
        "ts": pd.to_datetime(records["ts_us"], unit="us", utc=True).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "lon": records["lon"], "lat": records["lat"], "speed_kmh": records["speed_kmh"],
        "heading": records["heading"], "accuracy_m": records["accuracy_m"],
        "source": np.asarray(SOURCES)[records["source"]],
    })


def _store(conn: psycopg.Connection, records: np.ndarray, unit_id: np.ndarray, *, reference: Reference,
           settings: Settings) -> tuple[int, pd.DataFrame | None]:
    """Fuse, insert new fixes into ``position`` and move ``unit_latest``; return rows inserted
    and the fused fixes (unit_id, ts, grid_id, segment_id, border_m, h3)."""
    if len(records) == 0:
        return 0, None
    lon, lat = records["lon"].astype(np.float64), records["lat"].astype(np.float64)
    fused = fuse_points(reference, lon, lat, resolution=settings.h3_resolution)
    ts = records["ts_us"].astype(np.int64).view("datetime64[us]")
    conn.execute(
        "SELECT ensure_position_partitions(%s, %s)",
        tuple(pd.Timestamp(v, tz="UTC") for v in (ts.min(), ts.max())),
    )
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS ingest_stage (LIKE position) ON COMMIT DELETE ROWS")
    for code in np.unique(records["source"]):
        part = records["source"] == code
        pgb.copy_columns(conn, "ingest_stage", position_columns(
            unit_id[part], ts[part], lon[part], lat[part], records["speed_kmh"][part], records["heading"][part],
            records["accuracy_m"][part], source=SOURCES[code], fused=fused[part]))
    inserted = conn.execute(
        f"INSERT INTO position ({_NAMES}) SELECT {_NAMES} FROM ingest_stage ON CONFLICT (unit_id, ts) DO NOTHING"
    ).rowcount
    upsert_latest(conn, "ingest_stage")
    return inserted, fused.assign(unit_id=unit_id, ts=pd.to_datetime(ts, utc=True))


@dataclass
class WriterStats:
    """What the writer has done since the service started."""

    written: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    batches: int = 0
    committed_seq: int | None = None
    db_up: bool = False
    last_error: str = ""
    latency_ms: np.ndarray = field(default_factory=lambda: np.full(_LATENCY_WINDOW, np.nan))
    _latency_at: int = 0

    def record_latency(self, ms: np.ndarray) -> None:
        """Keep the latest receive-to-committed times in a ring."""
        ms = ms[-_LATENCY_WINDOW:]
        slots = (self._latency_at + np.arange(len(ms))) % _LATENCY_WINDOW
        self.latency_ms[slots] = ms
        self._latency_at = int((self._latency_at + len(ms)) % _LATENCY_WINDOW)

    def latency_percentiles(self) -> dict[str, float | None]:
        """p50 and p99 of receive-to-visible, in ms, over the recent window."""
        seen = self.latency_ms[~np.isnan(self.latency_ms)]
        if seen.size == 0:
            return {"p50": None, "p99": None}
        return {"p50": round(float(np.percentile(seen, 50)), 1), "p99": round(float(np.percentile(seen, 99)), 1)}


class SpoolWriter(threading.Thread):
    """The thread that drains ``spool`` into the database whose URL ``url_of()`` gives.

    The URL is asked for at every reconnect: an embedded server restarted
    after a crash may listen on another port.
    """

    def __init__(self, spool: Spool, url_of: Callable[[], str], *, settings: Settings, interval_s: float = 0.2,
                 max_fixes: int = 20_000) -> None:
        super().__init__(name="spool-writer", daemon=True)
        self.spool = spool
        self.url_of = url_of
        self.settings = settings
        self.interval_s = interval_s
        self.max_fixes = max_fixes
        self.stats = WriterStats()
        self._reader = SpoolReader(spool.directory)
        self._stop_at: float | None = None
        self._reference: tuple[float, Reference] | None = None

    def backlog(self) -> int | None:
        """Fixes spooled but not yet committed (None until the writer has reached the database)."""
        if self.stats.committed_seq is None:
            return None
        return self.spool.durable.seq - self.stats.committed_seq

    def stop(self, *, drain_s: float = 5.0) -> None:
        """Write what the database will take within ``drain_s``, then stop."""
        self._stop_at = time.monotonic() + drain_s
        self.join(drain_s + 10.0)

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        committed: SpoolPosition | None = None
        backoff = 0.2
        while not self._should_stop(committed):
            try:
                if conn is None:
                    conn = psycopg.connect(self.url_of(), autocommit=True, connect_timeout=3)
                    committed = self._load_offset(conn)
                    self.stats.db_up, self.stats.last_error = True, ""
                started = time.monotonic()
                committed, drained = self._batch(conn, committed)
                backoff = 0.2
                if drained:
                    time.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
            except Exception as exc:  # the batch stays in the spool and is tried again; never lost, never skipped
                self.stats.db_up = not isinstance(exc, psycopg.OperationalError)
                self.stats.last_error = f"{type(exc).__name__}: " + " ".join(str(exc).split())[:300]
                log.warning("spool writer: %s; retrying in %.1f s", self.stats.last_error, backoff)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        if conn is not None:
            conn.close()

    def _should_stop(self, committed: SpoolPosition | None) -> bool:
        if self._stop_at is None:
            return False
        caught_up = committed is not None and committed >= self.spool.durable
        return caught_up or time.monotonic() > self._stop_at

    def _load_offset(self, conn: psycopg.Connection) -> SpoolPosition:
        first = self.spool.first_position()
        row = conn.execute(
            "SELECT segment, pos, fixes FROM ingest_offset WHERE spool_id = %s", (self.spool.spool_id,)
        ).fetchone()
        committed = SpoolPosition(*row) if row else first
        committed = max(committed, first)
        self.stats.committed_seq = committed.seq
        return committed

    def _reference_for(self, conn: psycopg.Connection) -> Reference:
        if self._reference is None or time.monotonic() - self._reference[0] > _REFERENCE_TTL_S:
            self._reference = (time.monotonic(), load_reference(conn))
        return self._reference[1]

    def _move_coverage(self, conn: psycopg.Connection, accepted: pd.DataFrame | None) -> None:
        """Coverage follows the committed fixes at once; while a full rebuild holds the tables,
        skip (the rebuild, or the next batch's update, catches up)."""
        if accepted is None or accepted.empty:
            return
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '300ms'")
                refresh_coverage_for(conn, accepted, settings=self.settings)
        except psycopg.errors.LockNotAvailable:
            log.info("spool writer: coverage busy with a rebuild; this batch's coverage waits for it")

    def _batch(self, conn: psycopg.Connection, committed: SpoolPosition) -> tuple[SpoolPosition, bool]:
        """Write one batch; return the new committed position and whether the spool is drained."""
        end = self.spool.durable
        if committed >= end:
            return committed, True
        records, after = self._reader.read(committed, end, max_fixes=self.max_fixes)
        reference = self._reference_for(conn)
        with conn.transaction():
            result = fuse_and_store(conn, records, reference=reference, settings=self.settings)
            conn.execute(
                "INSERT INTO ingest_offset (spool_id, segment, pos, fixes) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (spool_id) DO UPDATE SET segment = EXCLUDED.segment, pos = EXCLUDED.pos, "
                "fixes = EXCLUDED.fixes, updated_at = now()",
                (self.spool.spool_id, after.segment, after.pos, after.seq),
            )
        visible_us = now_us()
        self._move_coverage(conn, result.accepted)
        self.stats.record_latency((visible_us - records["received_us"].astype(np.int64)) / 1000.0)
        self.stats.written += result.written
        self.stats.duplicates += result.duplicates
        self.stats.rejected.update(result.rejected)
        self.stats.batches += 1
        self.stats.committed_seq = after.seq
        self.spool.prune(after)
        return after, after >= self.spool.durable
