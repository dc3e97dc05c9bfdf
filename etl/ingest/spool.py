"""The durable local spool: a fix is acknowledged only once it is on disk here.

Fixes are appended to segment files ``<spool>/<number>.seg``; each file starts
with a 16-byte header (magic and the sequence number of its first fix) and
holds records::

    magic "GWSP" | payload length u32 | crc32 u32 | seq of first fix u64 | payload

The payload is a run of fixed-width :data:`FIX_DTYPE` rows, and the crc covers
length, seq and payload. Appends are group-committed: every append waiting
while the previous ``fdatasync`` ran goes into the next record, written and
synced in one call, so a busy service syncs a few hundred times a second and
not once per fix. A record torn by a crash fails its length or crc check and
is cut off when the spool is opened (nothing in it was acknowledged).

The reader (:class:`SpoolReader`) reads records in order between two
:class:`SpoolPosition` values; segments wholly behind the committed position
are removed by :meth:`Spool.prune`.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from etl.ingest._fix import SOURCES, Fix
from gridwatch.errors import GridwatchError

__all__ = [
    "FIX_DTYPE", "SpoolPosition", "Spool", "SpoolReader", "SpoolCorruptError", "to_records", "now_us",
]

FIX_DTYPE = np.dtype([
    ("callsign", "S32"), ("ts_us", "<i8"), ("lon", "<f8"), ("lat", "<f8"), ("speed_kmh", "<f4"),
    ("heading", "<f4"), ("accuracy_m", "<f4"), ("source", "u1"), ("received_us", "<i8"),
])
SEGMENT_MAGIC = b"GWSEG001"
_SEGMENT_HEADER = struct.Struct("<8sQ")
RECORD_MAGIC = b"GWSP"
_RECORD_HEADER = struct.Struct("<4sIIQ")
SEGMENT_BYTES = 64 * 1024 * 1024
MAX_GROUP_FIXES = 65_536


class SpoolCorruptError(GridwatchError):
    """A record the spool acknowledged cannot be read back."""


@dataclass(frozen=True, order=True)
class SpoolPosition:
    """A place in the spool: segment number, byte offset in it, and fixes before it (``seq``)."""

    segment: int
    pos: int
    seq: int


def now_us() -> int:
    """The current time in Unix microseconds."""
    return int(datetime.now(timezone.utc).timestamp() * 1_000_000)


def to_records(fixes: Sequence[Fix], *, received_us: int) -> np.ndarray:
    """Fixes as spool rows (one request's worth, so this loop is per request, not in the DB path)."""
    return np.array(
        [
            (f.callsign.encode("utf-8"), int(f.ts.timestamp() * 1_000_000), f.lon, f.lat, f.speed_kmh,
             f.heading, f.accuracy_m, SOURCES.index(f.source), received_us)
            for f in fixes
        ],
        dtype=FIX_DTYPE,
    )


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


def _records(handle, start: int, limit: int) -> Iterator[tuple[int, int, bytes]]:
    """``(seq, end offset, payload)`` of each whole, valid record from ``start`` up to ``limit``."""
    pos = start
    handle.seek(pos)
    while pos + _RECORD_HEADER.size <= limit:
        magic, length, crc, seq = _RECORD_HEADER.unpack(handle.read(_RECORD_HEADER.size))
        end = pos + _RECORD_HEADER.size + length
        if magic != RECORD_MAGIC or end > limit or length % FIX_DTYPE.itemsize:
            return
        payload = handle.read(length)
        if len(payload) != length or _crc(length, seq, payload) != crc:
            return
        yield seq, end, payload
        pos = end


class Spool:
    """The append side: group-committed, fsynced appends from the event loop.

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
        self._fd = -1
        self._lock_fd = -1
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-fsync")

    # -- opening and recovery ---------------------------------------------------
    def open(self) -> SpoolPosition:
        """Lock the folder, cut off a torn tail, and return the durable end."""
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
        while numbers and not self._segment_readable(numbers[-1]):
            _segment_path(self.directory, numbers.pop()).unlink()  # torn while being created
        if not numbers:
            self._create_segment(1, 0)
            numbers = [1]
        last = numbers[-1]
        path = _segment_path(self.directory, last)
        with open(path, "rb") as handle:
            base = _SEGMENT_HEADER.unpack(handle.read(_SEGMENT_HEADER.size))[1]
            end, seq = _SEGMENT_HEADER.size, base
            for rec_seq, rec_end, payload in _records(handle, end, path.stat().st_size):
                end, seq = rec_end, rec_seq + len(payload) // FIX_DTYPE.itemsize
        size = path.stat().st_size
        if size > end:
            self.torn_bytes = size - end
            os.truncate(path, end)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.durable = SpoolPosition(last, end, seq)
        return self.durable

    def _read_or_create_id(self) -> str:
        path = self.directory / "spool_id"
        if path.exists():
            return path.read_text().strip()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(uuid.uuid4().hex)
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        return path.read_text().strip()

    def _segment_readable(self, number: int) -> bool:
        with open(_segment_path(self.directory, number), "rb") as handle:
            head = handle.read(_SEGMENT_HEADER.size)
        return len(head) == _SEGMENT_HEADER.size and head.startswith(SEGMENT_MAGIC)

    def _create_segment(self, number: int, base_seq: int) -> int:
        path = _segment_path(self.directory, number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(fd, _SEGMENT_HEADER.pack(SEGMENT_MAGIC, base_seq))
        os.fsync(fd)
        _fsync_dir(self.directory)
        return fd

    def first_position(self) -> SpoolPosition:
        """The start of the oldest segment still kept."""
        number = _segment_numbers(self.directory)[0]
        with open(_segment_path(self.directory, number), "rb") as handle:
            base = _SEGMENT_HEADER.unpack(handle.read(_SEGMENT_HEADER.size))[1]
        return SpoolPosition(number, _SEGMENT_HEADER.size, base)

    # -- appending --------------------------------------------------------------
    async def start(self) -> None:
        """Start the group-commit task (call from the event loop, after :meth:`open`)."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._commit_loop(), name="spool-commit")

    async def append(self, records: np.ndarray) -> None:
        """Return once ``records`` are on disk (raises OSError when the disk refuses)."""
        if self._closing or self._wake is None:
            raise GridwatchError("the spool is closed")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((records, future))
        self._wake.set()
        await future

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.window_s and not self._closing:
                await asyncio.sleep(self.window_s)
            group, count = [], 0
            while self._pending and count < MAX_GROUP_FIXES:
                group.append(self._pending.pop(0))
                count += len(group[-1][0])
            if self._pending or self._closing:
                self._wake.set()
            if not group:
                if self._closing:
                    return
                continue
            records = np.concatenate([r for r, _ in group])
            try:
                await loop.run_in_executor(self._executor, self._write_group, records)
            except Exception as exc:  # the disk refused: no fix of the group is acknowledged
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in group:
                if not future.done():
                    future.set_result(None)

    def _write_group(self, records: np.ndarray) -> None:
        payload = records.tobytes()
        seq = self.durable.seq
        record = _RECORD_HEADER.pack(RECORD_MAGIC, len(payload), _crc(len(payload), seq, payload), seq) + payload
        segment, pos = self.durable.segment, self.durable.pos
        if pos + len(record) > self.segment_bytes and pos > _SEGMENT_HEADER.size:
            os.close(self._fd)
            segment, pos = segment + 1, _SEGMENT_HEADER.size
            self._fd = self._create_segment(segment, seq)
        view = memoryview(record)
        while view:
            view = view[os.write(self._fd, view):]
        os.fdatasync(self._fd)
        self.durable = SpoolPosition(segment, pos + len(record), seq + len(records))

    async def close(self) -> None:
        """Commit what is pending, then close the files (the spool is kept)."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)
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
        """Fixes from ``start`` (at most about ``max_fixes``, whole records) and the position after them."""
        parts: list[bytes] = []
        count = 0
        pos = start
        while pos < end and count < max_fixes:
            path = _segment_path(self.directory, pos.segment)
            limit = path.stat().st_size if pos.segment < end.segment else end.pos
            if pos.pos >= limit:
                pos = SpoolPosition(pos.segment + 1, _SEGMENT_HEADER.size, pos.seq)
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
                    "move the file aside and restart to go on"
                )
        return np.frombuffer(b"".join(parts), dtype=FIX_DTYPE), pos
