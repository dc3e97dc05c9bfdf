"""Drain the spool into the database, in order, in batches, exactly once.

A :class:`SpoolWriter` thread reads the spool from the committed position up to
its durable end (as soon as more is durable, at most every ~200 ms when idle,
at once while there is a backlog) and, in
one transaction per batch: checks each fix against the database (unknown
unit, impossible implied speed → ``quarantine``), fuses the rest with grids,
zones, border segments and H3 (:func:`gridwatch.etl._fuse_points.fuse_points`),
inserts them into ``position`` (``ON CONFLICT DO NOTHING``, so a fix sent
twice is stored once) and their keys into ``coverage_pending``, moves
``unit_latest`` forward, and stores the new spool position in
``ingest_offset``; the fixes are visible when it commits. Beside it, the
writer's coverage thread, on a connection of its own, counts every pending fix
in coverage and takes it out, in a short transaction
(:func:`gridwatch.etl.coverage.move_pending_coverage`, only the places they
hit), whenever a batch stored some, so no batch waits for coverage. Because the
position commits with the rows and their pending keys, a restart replays from
exactly where the database stopped, and coverage never counts a fix twice or
misses one: the pending keys a crash left are counted when the writer starts
again. While a full rebuild (or the upkeep) holds coverage, the fixes stay
pending and the writer goes on storing; the coverage thread tries again every
interval. The reference
layers are read again only when the change counts of their tables in
``table_change`` moved (statement triggers count every write to them).

One bad fix never stops the stream: partitions are made only for the days the
fixes fall on, and a batch the database refuses for a data reason (SQLSTATE
class 22 or 23) is split in halves, each in a savepoint, until the refused
fixes stand alone; those go to ``quarantine`` with the database's reason, the
rest are stored, and the offset moves past the batch, in the one transaction.
Anything else (the database unreachable, a timeout, a bug) leaves the batch in
the spool to be tried again with backoff; the spool keeps growing. How the
writer is doing (storing, retrying, stopped; backlog; the oldest fix not yet
stored; the last error) is in :meth:`SpoolWriter.status` and, every
:data:`STATUS_EVERY_S` whenever the database answers, in ``ingest_status``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import ClassVar

import numpy as np
import pandas as pd
import psycopg

from gridwatch.errors import GridwatchError
from gridwatch.etl import _pgbinary as pgb
from gridwatch.etl._fuse_points import REFERENCE_TABLES, Reference, fuse_points, load_reference
from gridwatch.etl._position_rows import POSITION_COLUMNS, ensure_partitions, position_columns, upsert_latest
from gridwatch.etl.coverage import move_pending_coverage
from gridwatch.etl.ingest._fix import SOURCES
from gridwatch.etl.ingest.spool import Spool, SpoolPosition, SpoolReader, now_us
from gridwatch.etl.runlog import quarantine_rows
from gridwatch.geo.tracks import too_fast
from gridwatch.settings import Settings

__all__ = ["StoreResult", "fuse_and_store", "ReferenceCache", "SpoolWriter", "WriterStats", "QUARANTINE_SOURCE",
           "STATUS_EVERY_S"]

log = logging.getLogger(__name__)

QUARANTINE_SOURCE = "ingest"
_LATENCY_WINDOW = 20_000
_NAMES = ", ".join(POSITION_COLUMNS)
STATUS_EVERY_S = 2.0
# What the database refuses for the data itself (SQLSTATE classes 22 and 23): splitting finds the rows.
_DATA_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
REFUSED = "refused by the database"
# The writer's own session: a lock or a statement that waits this long is an error to retry, not a stall.
_SESSION_LOCK_TIMEOUT = "5s"
_SESSION = (f"SET lock_timeout = '{_SESSION_LOCK_TIMEOUT}'", "SET statement_timeout = '60s'")


@dataclass
class StoreResult:
    """What one batch did: rows written, repeats dropped, rejections by reason."""

    written: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)


def fuse_and_store(conn: psycopg.Connection, records: np.ndarray, *, reference: Reference, settings: Settings) -> StoreResult:
    """Check, fuse and store a batch of spool rows (:data:`gridwatch.etl.ingest.spool.FIX_DTYPE`), in the caller's
    transaction; rows the database refuses are quarantined with its reason."""
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
    keep = (reasons == None) & ~repeated  # noqa: E711
    result.rejected.update(reasons[~keep & ~repeated].tolist())
    written, refused = _store(conn, records[keep], unit_id[keep], reference=reference, settings=settings)
    if refused:
        result.rejected[REFUSED] += len(refused)
        reasons[np.flatnonzero(keep)[list(refused)]] = list(refused.values())

    rejected = reasons != None  # noqa: E711
    if rejected.any():
        quarantine_rows(conn, None, QUARANTINE_SOURCE, _as_records(records[rejected], callsign[rejected]),
                        pd.Series(reasons[rejected]))
    result.written = written
    result.duplicates = int(keep.sum()) - written - len(refused) + int(repeated.sum())
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
           settings: Settings) -> tuple[int, dict[int, str]]:
    """Fuse, insert new fixes into ``position`` and their keys into ``coverage_pending``, and move
    ``unit_latest``; return how many fixes were inserted (a repeat of a stored fix is not) and, by
    row, the reason of each the database refused.

    Each try runs in a savepoint; a data error splits the rows tried in halves until it stands
    alone, so k refused rows cost O(k log n) tries and one try when there are none.
    """
    if len(records) == 0:
        return 0, {}
    lon, lat = records["lon"].astype(np.float64), records["lat"].astype(np.float64)
    fused = fuse_points(reference, lon, lat, resolution=settings.h3_resolution)
    ts = records["ts_us"].astype(np.int64).view("datetime64[us]")

    def attempt(part: slice) -> int:
        with conn.transaction():
            ensure_partitions(conn, ts[part])
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS ingest_stage (LIKE position) ON COMMIT DELETE ROWS")
            conn.execute("DELETE FROM ingest_stage")  # what an earlier part of this batch staged
            rows = records[part]
            for code in np.unique(rows["source"]):
                at = rows["source"] == code
                pgb.copy_columns(conn, "ingest_stage", position_columns(
                    unit_id[part][at], ts[part][at], lon[part][at], lat[part][at], rows["speed_kmh"][at],
                    rows["heading"][at], rows["accuracy_m"][at], source=SOURCES[code], fused=fused.iloc[part][at]))
            inserted = conn.execute(
                f"WITH stored AS (INSERT INTO position ({_NAMES}) SELECT {_NAMES} FROM ingest_stage "
                "ON CONFLICT (unit_id, ts) DO NOTHING RETURNING unit_id, ts) "
                "INSERT INTO coverage_pending (unit_id, ts) SELECT unit_id, ts FROM stored"
            ).rowcount
            upsert_latest(conn, "ingest_stage")
            return inserted

    inserted, refused = 0, {}
    parts = [(0, len(records))]
    while parts:
        lo, hi = parts.pop()
        try:
            inserted += attempt(slice(lo, hi))
        except _DATA_ERRORS as exc:
            if hi - lo == 1:
                refused[lo] = f"{REFUSED}: {exc.diag.message_primary or exc}"
            else:
                mid = (lo + hi) // 2
                parts += [(mid, hi), (lo, mid)]
    return inserted, refused


class ReferenceCache:
    """The reference layers fixes are fused with, read again only when a write to grids, zones, border
    segments or command units has committed (their change counts in ``table_change``)."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.reference: Reference | None = None
        self.loads = 0

    def get(self, conn: psycopg.Connection) -> Reference:
        """The reference as the database holds it now (one cheap query when unchanged)."""
        version = conn.execute(
            "SELECT coalesce(sum(generation), 0) FROM table_change WHERE name = ANY(%s)", (list(REFERENCE_TABLES),)
        ).fetchone()[0]
        if self.reference is None or version != self.version:
            self.reference, self.version = load_reference(conn), version
            self.loads += 1
        return self.reference


@dataclass
class WriterStats:
    """What the writer has done (the counts in :data:`COUNTED` are kept across restarts by the service)
    and how it is doing now."""

    COUNTED: ClassVar[tuple[str, ...]] = ("written", "duplicates", "rejected", "batches", "lost")

    written: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    batches: int = 0
    lost: int = 0  # acknowledged fixes of a damaged spool segment that could not be read back
    coverage_waits: int = 0  # turns the pending fixes waited for a full rebuild or the upkeep
    state: str = "retrying"  # storing | retrying | stopped (retrying until it first reaches the database)
    db_up: bool = False
    last_error: str = ""
    last_stored_at: datetime | None = None
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
        self.committed: SpoolPosition | None = None  # known once the writer has reached the database
        self._reader = SpoolReader(spool.directory)
        self._stop_at: float | None = None
        self._reference = ReferenceCache()
        self._oldest: tuple[SpoolPosition | None, datetime | None] = (None, None)
        self._reported_at = float("-inf")
        self._coverage_due = threading.Event()  # a batch stored fixes
        self._halted = threading.Event()
        self._coverage = threading.Thread(target=self._count_coverage, name="coverage-mover", daemon=True)

    def backlog(self) -> int | None:
        """Fixes spooled but not yet committed (None until the writer has reached the database)."""
        committed = self.committed
        return None if committed is None else self.spool.durable.seq - committed.seq

    def status(self) -> dict:
        """State (storing, retrying, stopped), backlog, the oldest fix not yet stored (when it was received,
        and its age in seconds), when a batch was last stored, and the last error."""
        oldest = self._oldest_unstored()
        return {
            "state": self.stats.state if self.is_alive() or self.stats.state == "stopped" else "stopped",
            "backlog": self.backlog(),
            "oldest_unstored_at": oldest,
            "oldest_unstored_age_s": None if oldest is None else round(time.time() - oldest.timestamp(), 1),
            "last_stored_at": self.stats.last_stored_at,
            "last_error": self.stats.last_error,
        }

    def stop(self, *, drain_s: float = 5.0) -> None:
        """Write what the database will take within ``drain_s``, then stop."""
        self._stop_at = time.monotonic() + drain_s
        self.join(drain_s + 10.0)

    def run(self) -> None:
        self._coverage.start()
        conn: psycopg.Connection | None = None
        backoff = 0.2
        while not self._should_stop():
            try:
                if conn is None:
                    conn = self._connect()
                    self.committed = self._load_offset(conn)
                    self.stats.db_up = True
                started = time.monotonic()
                drained = self._batch(conn)
                backoff = 0.2
                self._report(conn)
                if drained:  # until more is durable, or the interval has passed
                    self.spool.grew.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
            except Exception as exc:  # the batch stays in the spool and is tried again; never lost, never skipped
                self.stats.db_up = conn is not None and not conn.broken
                self.stats.state = "retrying"
                self.stats.last_error = f"{type(exc).__name__}: " + " ".join(str(exc).split())[:300]
                log.warning("spool writer: %s; retrying in %.1f s", self.stats.last_error, backoff)
                if conn is not None:
                    conn.close()
                conn = None
                self._report(None)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        self.stats.state = "stopped"
        self._report(conn, now=True)
        if conn is not None:
            conn.close()
        self._halted.set()
        self._coverage_due.set()
        self._coverage.join(30)

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url_of(), autocommit=True, connect_timeout=3)
        for statement in _SESSION:
            conn.execute(statement)
        return conn

    def _should_stop(self) -> bool:
        if self._stop_at is None:
            return False
        caught_up = self.committed is not None and self.committed >= self.spool.durable
        return caught_up or time.monotonic() > self._stop_at

    def _load_offset(self, conn: psycopg.Connection) -> SpoolPosition:
        first = self.spool.first_position()
        row = conn.execute(
            "SELECT segment, pos, fixes, updated_at FROM ingest_offset WHERE spool_id = %s", (self.spool.spool_id,)
        ).fetchone()
        if row is None:
            return first
        self.stats.last_stored_at = row[3]
        return max(SpoolPosition(*row[:3]), first)

    def _oldest_unstored(self) -> datetime | None:
        """When the first fix after the committed position was received (read once per position)."""
        committed = self.committed
        if committed is None or committed >= self.spool.durable:
            return None
        if self._oldest[0] != committed:
            try:
                first, _ = SpoolReader(self.spool.directory).read(committed, self.spool.durable, max_fixes=1)
            except (OSError, GridwatchError):  # pruned meanwhile, or damaged: the writer reports it
                return None
            received = datetime.fromtimestamp(int(first["received_us"][0]) / 1e6, timezone.utc) if len(first) else None
            self._oldest = (committed, received)
        return self._oldest[1]

    def _report(self, conn: psycopg.Connection | None, *, now: bool = False) -> None:
        """Every :data:`STATUS_EVERY_S` (or ``now``), upsert :meth:`status` into ``ingest_status`` in a
        transaction of its own, on ``conn`` or, when there is none, a connection of its own; skipped
        while the database does not answer."""
        if not now and time.monotonic() - self._reported_at < STATUS_EVERY_S:
            return
        self._reported_at = time.monotonic()
        status = self.status()
        if status["backlog"] is None:
            return
        row = (self.spool.spool_id, status["state"], max(0, status["backlog"]), status["oldest_unstored_at"],
               status["last_stored_at"], status["last_error"] or None)
        sql = ("INSERT INTO ingest_status (spool_id, updated_at, state, backlog, oldest_unstored_at, last_stored_at, "
               "last_error) VALUES (%s, now(), %s, %s, %s, %s, %s) ON CONFLICT (spool_id) DO UPDATE SET "
               "updated_at = EXCLUDED.updated_at, state = EXCLUDED.state, backlog = EXCLUDED.backlog, "
               "oldest_unstored_at = EXCLUDED.oldest_unstored_at, last_stored_at = EXCLUDED.last_stored_at, "
               "last_error = EXCLUDED.last_error")
        try:
            if conn is not None:
                conn.execute(sql, row)
                return
            with psycopg.connect(self.url_of(), autocommit=True, connect_timeout=2) as own:
                own.execute(sql, row)
        except (psycopg.Error, GridwatchError) as exc:
            log.debug("spool writer: status not written: %s", exc)

    def _count_coverage(self) -> None:
        """The coverage thread: count the pending fixes whenever a batch stored some (and once at the
        start, for what a crash left), in a transaction of its own; while a full rebuild or the upkeep
        holds coverage, or the database fails, they stay pending and it tries again every interval."""
        conn: psycopg.Connection | None = None
        due = True
        while not self._halted.is_set():
            due = self._coverage_due.wait(self.interval_s) or due
            if not due or self._halted.is_set():
                continue
            self._coverage_due.clear()  # before reading them: a batch committed meanwhile wakes it again
            try:
                conn = conn or self._connect()
                with conn.transaction():
                    due = move_pending_coverage(conn, settings=self.settings, wait=False) is None
                self.stats.coverage_waits += due
            except Exception as exc:  # the fixes stay pending; never lost, never counted twice
                log.warning("coverage thread: %s: %s", type(exc).__name__, " ".join(str(exc).split())[:300])
                if conn is not None:
                    conn.close()
                conn, due = None, True
        if conn is not None:
            conn.close()

    def _storing(self) -> None:
        """The database takes what the writer sends."""
        self.stats.state, self.stats.last_error = "storing", ""

    def _batch(self, conn: psycopg.Connection) -> bool:
        """Write one batch and move :attr:`committed` past it; return whether the spool is drained."""
        self.spool.grew.clear()  # before reading the end: a fix made durable after this wakes the writer
        committed, end = self.committed, self.spool.durable
        if committed >= end:
            self._storing()
            return True
        records, after = self._reader.read(committed, end, max_fixes=self.max_fixes)
        reference = self._reference.get(conn)
        with conn.transaction():
            result = fuse_and_store(conn, records, reference=reference, settings=self.settings)
            stored_at = conn.execute(
                "INSERT INTO ingest_offset (spool_id, segment, pos, fixes) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (spool_id) DO UPDATE SET segment = EXCLUDED.segment, pos = EXCLUDED.pos, "
                "fixes = EXCLUDED.fixes, updated_at = now() RETURNING updated_at",
                (self.spool.spool_id, after.segment, after.pos, after.seq),
            ).fetchone()[0]
        visible_us = now_us()
        self._storing()  # before the committed position moves: a drained spool never reads as "retrying"
        lost = max(0, after.seq - committed.seq - len(records))
        if lost:
            log.warning("spool writer: %d acknowledged fixes not yet stored were in a damaged spool segment and "
                        "could not be read back; they are lost", lost)
        self.stats.record_latency((visible_us - records["received_us"].astype(np.int64)) / 1000.0)
        self.stats.written += result.written
        self.stats.duplicates += result.duplicates
        self.stats.rejected.update(result.rejected)
        self.stats.batches += 1
        if result.written:
            self._coverage_due.set()
        self.stats.lost += lost
        self.stats.last_stored_at = stored_at
        self.committed = after
        self.spool.prune(after)
        return after >= self.spool.durable
