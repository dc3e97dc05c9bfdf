"""The durable spool: order, group commit, torn records, damaged segments, segments, one writer at a time."""
from __future__ import annotations

import asyncio
import math
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from gridwatch.errors import GridwatchError
from gridwatch.etl.ingest._fix import Fix
from gridwatch.etl.ingest.spool import FIX_DTYPE, Spool, SpoolCorruptError, SpoolPosition, SpoolReader, to_records

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def fixes(n: int, start: int = 0) -> list[Fix]:
    return [Fix("V1", T0 + timedelta(seconds=start + i), 100.0 + i * 1e-5, 22.0, 10.0, math.nan, 5.0, "osmand")
            for i in range(n)]


async def _append_all(spool: Spool, batches: list[list[Fix]], *, one_by_one: bool = False) -> None:
    await spool.start()
    if one_by_one:
        for batch in batches:
            await spool.append(to_records(batch, received_us=1))
    else:
        await asyncio.gather(*(spool.append(to_records(b, received_us=1)) for b in batches))
    await spool.close()


def write(directory: Path, batches: list[list[Fix]], *, one_by_one: bool = False, **kwargs) -> Spool:
    spool = Spool(directory, **kwargs)
    spool.open()
    asyncio.run(_append_all(spool, batches, one_by_one=one_by_one))
    return spool


def read_all(directory: Path) -> np.ndarray:
    spool = Spool(directory)
    end = spool.open()
    records, after = SpoolReader(directory).read(spool.first_position(), end, max_fixes=10**9)
    asyncio.run(spool.close())
    assert after == end
    return records


def test_concurrent_appends_are_group_committed_and_read_back_in_order(tmp_path: Path) -> None:
    spool = write(tmp_path, [fixes(1, i) for i in range(500)])
    assert spool.durable.seq == 500
    records = read_all(tmp_path)
    assert records.dtype == FIX_DTYPE
    assert (np.diff(records["ts_us"]) > 0).all() and len(records) == 500
    assert records["callsign"][0] == b"V1" and records["speed_kmh"][0] == 10.0 and np.isnan(records["heading"][0])
    per_record = 20
    assert spool.durable.pos < 16 + 500 * (per_record + FIX_DTYPE.itemsize), "500 appends made 500 records: no group commit"


def test_appends_during_a_sync_join_the_next_one_and_the_loop_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    syncs: list[int] = []
    real_fdatasync = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        time.sleep(0.05)  # a slow disk
        syncs.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)

    async def main() -> tuple[int, list[float]]:
        spool = Spool(tmp_path)
        spool.open()
        await spool.start()
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        tick = asyncio.create_task(ticker())
        first = asyncio.create_task(spool.append(to_records(fixes(1), received_us=1)))
        await asyncio.sleep(0.01)  # the first sync is now in flight
        late = [asyncio.create_task(spool.append(to_records(fixes(1, i), received_us=1))) for i in range(1, 200)]
        await asyncio.gather(first, *late)
        tick.cancel()
        await spool.close()
        return spool.durable.seq, ticks

    seq, ticks = asyncio.run(main())
    assert seq == 200
    assert len(syncs) == 2, f"{len(syncs)} syncs for one append and 199 that came during its sync"
    assert len(ticks) >= 10 and max(np.diff(ticks)) < 0.04, "the event loop stalled while the disk synced"
    assert len(read_all(tmp_path)) == 200


def _torn_end(tmp_path: Path) -> tuple[Path, int]:
    """A spool with 10 fixes, then 5 more in the last record; the segment and the end of that record."""
    write(tmp_path, [fixes(10)])
    end = write(tmp_path, [fixes(5, 100)]).durable.pos
    return tmp_path / "000000000001.seg", end


@pytest.mark.parametrize("damage", ["unwritten", "flip", "truncated"])
def test_a_torn_last_record_is_cut_off(tmp_path: Path, damage: str) -> None:
    segment, end = _torn_end(tmp_path)
    data = bytearray(segment.read_bytes())
    if damage == "unwritten":
        data[end - 20:end] = bytes(20)  # the crash came mid-write: the preallocated tail still reads as zeros
    elif damage == "flip":
        data[end - 3] ^= 0xFF  # the last bytes never reached the disk as written
    else:
        data = data[:end - 7]  # a segment that was not preallocated (older spool, no fallocate)
    segment.write_bytes(bytes(data))
    spool = Spool(tmp_path)
    opened = spool.open()
    assert opened.seq == 10 and 0 < spool.torn_bytes <= end - opened.pos
    assert not segment.read_bytes()[opened.pos:].strip(b"\0"), "the torn record was not zeroed"
    asyncio.run(_append_all(spool, [fixes(3, 200)]))
    records = read_all(tmp_path)
    assert len(records) == 13 and records["ts_us"][-1] > records["ts_us"][-4]


def test_segments_are_preallocated_and_the_zero_tail_is_their_end(tmp_path: Path) -> None:
    spool = write(tmp_path, [fixes(3)], one_by_one=True, segment_bytes=1 << 20)
    segment = tmp_path / "000000000001.seg"
    data = segment.read_bytes()
    assert len(data) == 1 << 20, "the segment was not preallocated"
    assert spool.durable.pos == 16 + 20 + 3 * FIX_DTYPE.itemsize and not data[spool.durable.pos:].strip(b"\0")
    reopened = Spool(tmp_path, segment_bytes=1 << 20)
    assert reopened.open() == spool.durable and reopened.torn_bytes == 0, "the zero tail was taken for a torn record"
    asyncio.run(_append_all(reopened, [fixes(2, 10)]))
    assert segment.stat().st_size == 1 << 20, "an append grew the preallocated file"
    records = read_all(tmp_path)
    assert len(records) == 5 and (np.diff(records["ts_us"]) > 0).all()


def test_bad_bytes_before_records_that_check_are_damage_set_aside(tmp_path: Path) -> None:
    """Records are synced one group at a time, so a crash tears only the last one: bad bytes with
    records that check after them are damage to acknowledged fixes. The segment is copied aside and
    cut to its readable records, the spool goes on in a new segment after every seq seen (none is
    used twice), and the records past the damage never come back."""
    write(tmp_path, [fixes(10)])
    first = write(tmp_path, [fixes(5, 100)], one_by_one=True).durable
    write(tmp_path, [fixes(5, 200)], one_by_one=True)
    segment = tmp_path / "000000000001.seg"
    data = bytearray(segment.read_bytes())
    data[first.pos - 3] ^= 0xFF  # the record of fixes 100.. is damaged, the one of 200.. still checks
    segment.write_bytes(bytes(data))
    spool = Spool(tmp_path)
    opened = spool.open()
    assert opened == SpoolPosition(2, 16, 20) and spool.torn_bytes == 0
    (damage,) = spool.damaged
    assert (damage.segment, damage.unreadable, damage.moved_to.parent) == (1, 10, tmp_path / "damaged")
    assert damage.moved_to.read_bytes() == bytes(data) and "10 acknowledged fixes after it" in damage.describe()
    assert segment.stat().st_size == damage.at
    asyncio.run(_append_all(spool, [fixes(5, 300)]))
    records = read_all(tmp_path)
    seconds = (records["ts_us"] - int(T0.timestamp() * 1e6)) // 1_000_000
    assert seconds.tolist() == [*range(10), *range(300, 305)]


def _three_segments(tmp_path: Path) -> tuple[list[int], list[SpoolPosition]]:
    """A spool of small segments holding fixes 0..199 (20 a record); the segment numbers and the
    first position of each."""
    write(tmp_path, [fixes(20, i * 20) for i in range(10)], one_by_one=True, segment_bytes=4096)
    numbers = sorted(int(p.stem) for p in tmp_path.glob("*.seg"))
    assert len(numbers) >= 3
    reader = SpoolReader(tmp_path)
    firsts = []
    for n in numbers:
        base = int.from_bytes((tmp_path / f"{n:012d}.seg").read_bytes()[8:16], "little")
        firsts.append(SpoolPosition(n, 16, base))
    assert reader.read(firsts[0], firsts[-1], max_fixes=10**9)[1] == firsts[-1]
    return numbers, firsts


@pytest.mark.parametrize("where", ["record", "header"])
def test_a_damaged_segment_in_the_middle_is_set_aside_and_the_rest_read(tmp_path: Path, where: str) -> None:
    numbers, firsts = _three_segments(tmp_path)
    middle = tmp_path / f"{numbers[1]:012d}.seg"
    data = bytearray(middle.read_bytes())
    record = 20 + 20 * FIX_DTYPE.itemsize
    data[16 + record + 25 if where == "record" else 3] ^= 0xFF  # its second record, or its header
    middle.write_bytes(bytes(data))
    spool = Spool(tmp_path, segment_bytes=4096)
    end = spool.open()
    (damage,) = spool.damaged
    assert damage.segment == numbers[1] and damage.moved_to.read_bytes() == bytes(data)
    kept = 20 if where == "record" else 0
    lost = firsts[2].seq - firsts[1].seq - kept
    assert damage.unreadable == (lost if where == "record" else None)
    assert middle.exists() == (where == "record")
    records, after = SpoolReader(tmp_path).read(spool.first_position(), end, max_fixes=10**9)
    asyncio.run(spool.close())
    assert after == end and len(records) == 200 - lost and after.seq - len(records) == lost
    seconds = (records["ts_us"] - int(T0.timestamp() * 1e6)) // 1_000_000
    assert seconds.tolist() == [*range(firsts[1].seq + kept), *range(firsts[2].seq, 200)]
    # the writer's position, stored before the damage was found, may lie beyond the cut: reading goes on
    beyond = SpoolPosition(numbers[1], len(data) - 5, firsts[2].seq - 1)
    rest, after = SpoolReader(tmp_path).read(beyond, end, max_fixes=10**9)
    assert after == end and len(rest) == 200 - firsts[2].seq


def test_segments_roll_over_are_read_across_and_pruned(tmp_path: Path) -> None:
    spool = write(tmp_path, [fixes(20, i * 20) for i in range(10)], one_by_one=True, segment_bytes=4096)
    assert len(list(tmp_path.glob("*.seg"))) > 2
    reader = SpoolReader(tmp_path)
    first, after = reader.read(spool.first_position(), spool.durable, max_fixes=50)
    rest, end = reader.read(after, spool.durable, max_fixes=10**9)
    assert len(first) + len(rest) == 200 and end == spool.durable
    assert (np.diff(np.r_[first["ts_us"], rest["ts_us"]]) > 0).all()
    assert spool.prune(end) > 0
    assert [p.name for p in tmp_path.glob("*.seg")] == [f"{end.segment:012d}.seg"]


def test_damage_inside_the_acknowledged_part_is_an_error(tmp_path: Path) -> None:
    spool = write(tmp_path, [fixes(5), fixes(5, 10)], one_by_one=True)
    segment = tmp_path / "000000000001.seg"
    data = bytearray(segment.read_bytes())
    data[40] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(SpoolCorruptError, match="damaged although it was acknowledged"):
        SpoolReader(tmp_path).read(spool.first_position(), spool.durable, max_fixes=100)


def test_one_service_per_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.open()
    with pytest.raises(GridwatchError, match="another `gridwatch ingest` is using the spool"):
        Spool(tmp_path).open()
    asyncio.run(first.close())
