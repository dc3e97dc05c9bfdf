"""The durable local spool: a fix is acknowledged only once it is on disk here.

Fixes are appended to segment files ``<spool>/<number>.seg``; each file starts
with a 16-byte header (magic and the sequence number of its first fix) and
holds records::

    magic "GWSP" | payload length u32 | crc32 u32 | seq of first fix u64 | payload

The payload is a run of fixed-width :data:`FIX_DTYPE` rows, and the crc covers
length, seq and payload. Appends are group-committed: every append that
arrives while an ``fdatasync`` runs (in a thread, so the event loop keeps
taking requests) goes into the next record, written and synced in one call,
and all its waiters are released together; a busy service syncs a few
hundred times a second and not once per fix.

A segment is preallocated when created (``posix_fallocate`` of
``segment_bytes``, so a full disk refuses a new segment, not a fix in the
middle of one) and zero-filled a chunk ahead of the last record, so a record
lands in blocks that already exist and are initialised: its ``fdatasync``
flushes data only, with no file-size or extent change to journal (what
PostgreSQL does for its WAL). The records of a segment therefore end at the
first place where a record does not check: a zero-filled header (the
preallocated tail) or a record torn by a crash, whose length, crc or seq fails
(nothing in it was acknowledged). Opening the spool zeroes a torn record so
it cannot be read as data later; a full segment is cut to its last record
before the next one is started.

Opening also checks every kept segment. Records are synced one group at a
time, so a crash can tear only the last one: bytes that do not check
followed by records that do, or a full segment that ends before its size, are
damage to what was acknowledged. Such a segment is copied aside to
``<spool>/damaged/``, cut to its readable records, and listed in
:attr:`Spool.damaged`; the service starts and goes on (a damaged last segment
is closed and a new one begun, so no seq is used twice). The fixes past the
damage are lost; the writer counts those not stored yet when it skips them.

The reader (:class:`SpoolReader`) reads records in order between two
:class:`SpoolPosition` values; past the end of a segment it goes on at the
start of the next kept one; segments wholly behind the committed position are
removed by :meth:`Spool.prune`.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import io
import os
import shutil
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from gridwatch.errors import GridwatchError
from gridwatch.etl.ingest._fix import SOURCES, Fix
from gridwatch.settings import Settings

__all__ = [
    "FIX_DTYPE", "SpoolPosition", "Spool", "SpoolReader", "SpoolCorruptError", "SpoolDamage", "pack_rows",
    "to_records", "now_us",
]

FIX_DTYPE = np.dtype([
    ("callsign", "S32"), ("ts_us", "<i8"), ("lon", "<f8"), ("lat", "<f8"), ("speed_kmh", "<f4"),
    ("heading", "<f4"), ("accuracy_m", "<f4"), ("source", "u1"), ("received_us", "<i8"),
])
SEGMENT_MAGIC = b"GWSEG001"
_SEGMENT_HEADER = struct.Struct("<8sQ")
RECORD_MAGIC = b"GWSP"
_RECORD_HEADER = struct.Struct("<4sIIQ")
SEGMENT_BYTES: int = Settings.model_fields["ingest_segment_bytes"].default
ZERO_AHEAD_BYTES = 1024 * 1024
MAX_GROUP_FIXES = 65_536
# FIX_DTYPE as a struct, to pack a request's rows without building an array.
_ROW = struct.Struct("<32sqddfffBq")
assert _ROW.size == FIX_DTYPE.itemsize
_SOURCE_CODE = {name: code for code, name in enumerate(SOURCES)}
_SYNC_WINDOW = 4096


class SpoolCorruptError(GridwatchError):
    """A record the spool acknowledged cannot be read back."""


@dataclass(frozen=True)
class SpoolDamage:
    """A damaged segment found on opening: its readable records end at byte ``at``; ``unreadable``
    fixes came after (None: not known); the segment as it was is at ``moved_to``."""

    segment: int
    at: int
    unreadable: int | None
    moved_to: Path
    problem: str

    def describe(self) -> str:
        """One line for the log."""
        lost = "an unknown number of" if self.unreadable is None else f"{self.unreadable}"
        return (f"spool segment {self.segment:012d}.seg is damaged ({self.problem}) at byte {self.at}: its "
                f"records before it are kept, {lost} acknowledged fixes after it cannot be read and are lost "
                f"unless already stored; the segment as it was is in {self.moved_to}")


@dataclass(frozen=True)
class _Scan:
    """What a segment holds: its first seq (None: the header is damaged), where its readable records
    end (byte and seq), its size, how it ends (``clean``, ``torn``, ``damaged``) and, past damage,
    the seq after the last record that still checks."""

    base: int | None
    end: int
    end_seq: int
    size: int
    tail: str
    later_seq: int | None = None


@dataclass(frozen=True, order=True)
class SpoolPosition:
    """A place in the spool: segment number, byte offset in it, and fixes before it (``seq``)."""

    segment: int
    pos: int
    seq: int


def now_us() -> int:
    """The current time in Unix microseconds."""
    return time.time_ns() // 1000


def pack_rows(fixes: Sequence[Fix], *, received_us: int) -> bytes:
    """Fixes as the bytes of spool rows (:data:`FIX_DTYPE`), what :meth:`Spool.append` takes.

    One request's worth, so this loop is per request, not in the database path.
    """
    return b"".join(
        _ROW.pack(f.callsign.encode("utf-8"), _epoch_us(f.ts), f.lon, f.lat, f.speed_kmh, f.heading,
                  f.accuracy_m, _SOURCE_CODE[f.source], received_us)
        for f in fixes
    )


def to_records(fixes: Sequence[Fix], *, received_us: int) -> np.ndarray:
    """Fixes as an array of spool rows."""
    return np.frombuffer(pack_rows(fixes, received_us=received_us), dtype=FIX_DTYPE)


def _epoch_us(ts: datetime) -> int:
    return (ts - _EPOCH) // _ONE_US


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


def _segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:012d}.seg"


def _segment_numbers(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob("*.seg") if p.stem.isdigit())


def _crc(length: int, seq: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<IQ", length, seq)))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _records(handle, start: int, limit: int, seq: int | None = None) -> Iterator[tuple[int, int, bytes]]:
    """``(seq, end offset, payload)`` of each whole, valid record from ``start`` up to ``limit``.

    The run stops at the first record that does not check: the zero-filled
    tail, or a torn record. Given ``seq`` (the seq of the first record), a
    record whose seq does not follow on also ends the run.
    """
    pos = start
    handle.seek(pos)
    while pos + _RECORD_HEADER.size <= limit:
        magic, length, crc, rec_seq = _RECORD_HEADER.unpack(handle.read(_RECORD_HEADER.size))
        end = pos + _RECORD_HEADER.size + length
        if magic != RECORD_MAGIC or end > limit or length % FIX_DTYPE.itemsize or seq not in (None, rec_seq):
            return
        payload = handle.read(length)
        if len(payload) != length or _crc(length, rec_seq, payload) != crc:
            return
        yield rec_seq, end, payload
        pos = end
        if seq is not None:
            seq = rec_seq + length // FIX_DTYPE.itemsize


def _zero_torn_tail(fd: int, start: int, size: int) -> int:
    """Zero whatever is not zero in ``[start, size)`` (a torn record), sync, and return how many bytes
    that spanned. Blocks never written read as zeros at no I/O cost, so reading to the end is cheap."""
    last, pos = start, start
    while pos < size:
        chunk = os.pread(fd, min(ZERO_AHEAD_BYTES, size - pos), pos)
        if not chunk:
            break
        kept = len(chunk.rstrip(b"\0"))
        if kept:
            last = pos + kept
        pos += len(chunk)
    if last > start:
        _write_all(fd, bytes(last - start), start)
        os.fdatasync(fd)
    return last - start


def _write_all(fd: int, data: bytes | memoryview, pos: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, pos)
        view, pos = view[written:], pos + written


def _preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes for the file (a full disk refuses here); a no-op where unsupported."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def _scan(path: Path) -> _Scan:
    """Check a whole segment: header, records in order, and what lies after them."""
    data = path.read_bytes()
    magic, base = _SEGMENT_HEADER.unpack(data[:_SEGMENT_HEADER.size].ljust(_SEGMENT_HEADER.size, b"\0"))
    if magic != SEGMENT_MAGIC:
        tail = "clean" if not data.strip(b"\0") else "damaged"
        return _Scan(None, 0, 0, len(data), tail, _last_valid_seq(data, 0))
    end, seq = _SEGMENT_HEADER.size, base
    for rec_seq, rec_end, payload in _records(io.BytesIO(data), end, len(data), base):
        end, seq = rec_end, rec_seq + len(payload) // FIX_DTYPE.itemsize
    if not data[end:].strip(b"\0"):
        return _Scan(base, end, seq, len(data), "clean")
    later = _last_valid_seq(data, end)
    return _Scan(base, end, seq, len(data), "torn" if later is None else "damaged", later)


def _last_valid_seq(data: bytes, start: int) -> int | None:
    """The seq after the last record from ``start`` on whose header and crc check (None: there is none).
    Only runs over damaged bytes, on opening: it looks at each place the record magic occurs."""
    found, at = None, data.find(RECORD_MAGIC, start)
    while at >= 0 and at + _RECORD_HEADER.size <= len(data):
        _, length, crc, seq = _RECORD_HEADER.unpack_from(data, at)
        end = at + _RECORD_HEADER.size + length
        if length and not length % FIX_DTYPE.itemsize and end <= len(data) and \
                _crc(length, seq, memoryview(data)[at + _RECORD_HEADER.size:end]) == crc:
            found, at = seq + length // FIX_DTYPE.itemsize, end
        else:
            at += 1
        at = data.find(RECORD_MAGIC, at)
    return found


def _release(futures: list[asyncio.Future], error: BaseException | None) -> None:
    """On the event loop: acknowledge (or fail) every append of one group at once."""
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class Spool:
    """The append side: group-committed, fdatasynced appends from the event loop.

    ``durable`` is the position up to which everything is on disk; the writer
    thread reads up to it.
    """

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES, window_s: float = 0.0) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.window_s = window_s
        self.spool_id = ""
        self.durable = SpoolPosition(1, _SEGMENT_HEADER.size, 0)
        self.torn_bytes = 0
        self.damaged: list[SpoolDamage] = []
        self.syncs = 0
        self.synced_fixes = 0
        self.sync_ms = np.full(_SYNC_WINDOW, np.nan)
        self.wait_ms = np.full(_SYNC_WINDOW, np.nan)
        self._fd = -1
        self._lock_fd = -1
        self._zeroed = 0  # bytes of the current segment that are written (records or zeros) and synced
        self._pending: deque[tuple[bytes, int, asyncio.Future, float]] = deque()
        self._wake = threading.Event()
        self.grew = threading.Event()  # set whenever ``durable`` moves on (the writer waits on it)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    # -- opening and recovery ---------------------------------------------------
    def open(self) -> SpoolPosition:
        """Lock the folder, check every segment (cutting off a torn tail, setting damaged ones aside),
        and return the durable end."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise GridwatchError(
                f"another `gridwatch ingest` is using the spool {self.directory}: stop it first"
            ) from None
        self.spool_id = self._read_or_create_id()
        numbers = _segment_numbers(self.directory)
        scans = [_scan(_segment_path(self.directory, n)) for n in numbers]
        while numbers and scans[-1].base is None and scans[-1].tail == "clean":
            _segment_path(self.directory, numbers.pop()).unlink()  # torn while being created
            scans.pop()
        if not numbers:
            self._fd = self._create_segment(1, 0)
            self.durable = SpoolPosition(1, _SEGMENT_HEADER.size, 0)
            return self.durable
        for i, (number, scan) in enumerate(zip(numbers, scans)):
            last = i == len(numbers) - 1
            if scan.tail == "damaged" or scan.base is None or (scan.tail == "torn" and not last):
                following = None if last else scans[i + 1].base
                self.damaged.append(self._set_aside(number, scan, following if following is not None else scan.later_seq))
        last, scan = numbers[-1], scans[-1]
        if self.damaged and self.damaged[-1].segment == last:  # go on in a new segment, after every seq seen
            base = max(scan.end_seq, scan.later_seq or 0, scans[-2].end_seq if len(scans) > 1 else 0)
            self._fd = self._create_segment(last + 1, base)
            self.durable = SpoolPosition(last + 1, _SEGMENT_HEADER.size, base)
            return self.durable
        self._fd = os.open(_segment_path(self.directory, last), os.O_RDWR)
        self.torn_bytes = _zero_torn_tail(self._fd, scan.end, scan.size) if scan.tail == "torn" else 0
        self._zeroed = scan.end
        self.durable = SpoolPosition(last, scan.end, scan.end_seq)
        return self.durable

    def _set_aside(self, number: int, scan: _Scan, following_seq: int | None) -> SpoolDamage:
        """Copy a damaged segment to ``damaged/`` and cut it to its readable records (or, when its
        header is damaged, move it there whole)."""
        path = _segment_path(self.directory, number)
        aside = self.directory / "damaged"
        aside.mkdir(exist_ok=True)
        target = aside / f"{path.name}.{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        if scan.base is None:
            os.replace(path, target)
            problem = "its header does not check"
        else:
            shutil.copyfile(path, target)
            with open(target, "rb+") as copy:
                os.fsync(copy.fileno())
            fd = os.open(path, os.O_RDWR)
            try:
                os.ftruncate(fd, scan.end)
                os.fsync(fd)
            finally:
                os.close(fd)
            problem = "a record does not check" if scan.tail != "clean" else "it is cut short"
        _fsync_dir(aside)
        _fsync_dir(self.directory)
        unreadable = None if following_seq is None or scan.base is None else max(0, following_seq - scan.end_seq)
        return SpoolDamage(number, scan.end, unreadable, target, problem)

    def _read_or_create_id(self) -> str:
        path = self.directory / "spool_id"
        if path.exists():
            return path.read_text().strip()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(uuid.uuid4().hex)
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        return path.read_text().strip()

    def _create_segment(self, number: int, base_seq: int) -> int:
        path = _segment_path(self.directory, number)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _preallocate(fd, self.segment_bytes)
            _write_all(fd, _SEGMENT_HEADER.pack(SEGMENT_MAGIC, base_seq), 0)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        _fsync_dir(self.directory)
        self._zeroed = _SEGMENT_HEADER.size
        return fd

    def first_position(self) -> SpoolPosition:
        """The start of the oldest segment still kept."""
        number = _segment_numbers(self.directory)[0]
        with open(_segment_path(self.directory, number), "rb") as handle:
            base = _SEGMENT_HEADER.unpack(handle.read(_SEGMENT_HEADER.size))[1]
        return SpoolPosition(number, _SEGMENT_HEADER.size, base)

    # -- appending --------------------------------------------------------------
    async def start(self) -> None:
        """Start the committer thread (call from the event loop, after :meth:`open`)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._commit_loop, name="spool-commit", daemon=True)
        self._thread.start()

    async def append(self, records: np.ndarray | bytes) -> None:
        """Return once ``records`` (an array of :data:`FIX_DTYPE`, or its bytes as :func:`pack_rows`
        makes them) are on disk; raises OSError when the disk refuses."""
        if self._closing or self._thread is None:
            raise GridwatchError("the spool is closed")
        payload = records.tobytes() if isinstance(records, np.ndarray) else bytes(records)
        if len(payload) % FIX_DTYPE.itemsize:
            raise ValueError(f"{len(payload)} bytes are not whole spool rows of {FIX_DTYPE.itemsize} bytes")
        future = self._loop.create_future()
        self._pending.append((payload, len(payload) // FIX_DTYPE.itemsize, future, time.perf_counter()))
        self._wake.set()
        await future

    def _commit_loop(self) -> None:
        """The committer thread: take everything pending, write it as one record, ``fdatasync``, hand
        the waiters back to the event loop in one call, and go straight on with what came meanwhile.

        The loop only appends to a deque and sets an event, so it keeps taking requests while the disk
        syncs, and a commit needs no round trip through the loop before the next one starts.
        """
        while True:
            self._wake.wait()
            self._wake.clear()
            if self.window_s and not self._closing:
                time.sleep(self.window_s)
            while self._pending:
                group, count = [], 0
                while self._pending and count < MAX_GROUP_FIXES:
                    group.append(self._pending.popleft())
                    count += group[-1][1]
                try:
                    self._write_group(b"".join(g[0] for g in group), count)
                    self.wait_ms[(self.syncs - 1) % _SYNC_WINDOW] = (time.perf_counter() - group[0][3]) * 1000.0
                    error = None
                except Exception as exc:  # the disk refused: no fix of the group is acknowledged
                    error = exc
                self._loop.call_soon_threadsafe(_release, [g[2] for g in group], error)
            if self._closing and not self._pending:
                return

    def _write_group(self, payload: bytes, count: int) -> None:
        """Write one record and ``fdatasync`` it (in the committer thread)."""
        started = time.perf_counter()
        seq = self.durable.seq
        record = _RECORD_HEADER.pack(RECORD_MAGIC, len(payload), _crc(len(payload), seq, payload), seq) + payload
        segment, pos = self.durable.segment, self.durable.pos
        if pos + len(record) > self.segment_bytes and pos > _SEGMENT_HEADER.size:
            os.ftruncate(self._fd, pos)  # a full segment ends at its last record (the reader goes by its size)
            os.fsync(self._fd)
            fd = self._create_segment(segment + 1, seq)  # on failure, the old segment stays in use
            os.close(self._fd)
            self._fd, segment, pos = fd, segment + 1, _SEGMENT_HEADER.size
        end = pos + len(record)
        zeroed = self._zeroed
        if end > zeroed:  # initialise the next chunk, so the syncs until then flush data only
            zeroed = max(end, min(end + ZERO_AHEAD_BYTES, self.segment_bytes))
            record += bytes(zeroed - end)
        _write_all(self._fd, record, pos)
        os.fdatasync(self._fd)
        self._zeroed = zeroed
        self.durable = SpoolPosition(segment, end, seq + count)
        self.grew.set()
        self.sync_ms[self.syncs % _SYNC_WINDOW] = (time.perf_counter() - started) * 1000.0
        self.syncs += 1
        self.synced_fixes += count

    def sync_stats(self) -> dict:
        """Group commits so far, the fixes in them, and over the recent ones the time (ms) to write and
        sync a record (``sync``) and the longest wait of an append in it (``wait``: queued, written, synced)."""
        out = {"syncs": self.syncs, "synced_fixes": self.synced_fixes}
        for name, ring in (("sync", self.sync_ms), ("wait", self.wait_ms)):
            seen = ring[~np.isnan(ring)]
            for q in (50, 99):
                out[f"{name}_ms_p{q}"] = round(float(np.percentile(seen, q)), 2) if seen.size else None
        return out

    async def close(self) -> None:
        """Commit what is pending, then close the files (the spool is kept)."""
        if self._thread is not None:
            self._closing = True
            self._wake.set()
            await asyncio.to_thread(self._thread.join)  # its last releases are queued before this returns
            self._thread = None
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    # -- retention --------------------------------------------------------------
    def prune(self, committed: SpoolPosition) -> int:
        """Remove segments wholly before ``committed``; return how many."""
        gone = [n for n in _segment_numbers(self.directory) if n < committed.segment]
        for number in gone:
            _segment_path(self.directory, number).unlink(missing_ok=True)
        return len(gone)


class SpoolReader:
    """The read side: records in order between two positions, as one array of fixes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def read(self, start: SpoolPosition, end: SpoolPosition, *, max_fixes: int) -> tuple[np.ndarray, SpoolPosition]:
        """Fixes from ``start`` (at most about ``max_fixes``, whole records) and the position after them.

        A segment before ``end``'s ends at its size; reading goes on at the start of the next kept
        segment, at its first seq (past a damaged segment that seq is further on: the fixes between
        are the ones lost).
        """
        parts: list[bytes] = []
        count = 0
        pos = start
        while pos < end and count < max_fixes:
            path = _segment_path(self.directory, pos.segment)
            if pos.segment < end.segment:
                limit = path.stat().st_size if path.exists() else 0
            else:
                limit = end.pos
            if pos.pos >= limit:
                pos = self._next_segment(pos, end)
                continue
            with open(path, "rb") as handle:
                for seq, rec_end, payload in _records(handle, pos.pos, limit):
                    if seq != pos.seq:
                        raise SpoolCorruptError(f"{path}: record at {pos.pos} has seq {seq}, expected {pos.seq}")
                    parts.append(payload)
                    count += len(payload) // FIX_DTYPE.itemsize
                    pos = SpoolPosition(pos.segment, rec_end, pos.seq + len(payload) // FIX_DTYPE.itemsize)
                    if count >= max_fixes:
                        break
            if pos.pos < limit and count < max_fixes:
                raise SpoolCorruptError(
                    f"{path}: the record at byte {pos.pos} is damaged although it was acknowledged; "
                    "restart the service to set the segment aside and go on"
                )
        return np.frombuffer(b"".join(parts), dtype=FIX_DTYPE), pos

    def _next_segment(self, pos: SpoolPosition, end: SpoolPosition) -> SpoolPosition:
        """The start of the first kept segment after ``pos``'s."""
        number = min((n for n in _segment_numbers(self.directory) if pos.segment < n <= end.segment), default=None)
        if number is None:
            raise SpoolCorruptError(f"{self.directory}: segment {end.segment:012d}.seg is missing")
        path = _segment_path(self.directory, number)
        with open(path, "rb") as handle:
            magic, base = _SEGMENT_HEADER.unpack(handle.read(_SEGMENT_HEADER.size))
        if magic != SEGMENT_MAGIC:
            raise SpoolCorruptError(f"{path}: its header is damaged; restart the service to set it aside and go on")
        return SpoolPosition(number, _SEGMENT_HEADER.size, base)
