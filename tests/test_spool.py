"""The durable spool: order, group commit, torn records, segments, one writer at a time."""
from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from etl.ingest._fix import Fix
from etl.ingest.spool import FIX_DTYPE, Spool, SpoolCorruptError, SpoolReader, to_records
from gridwatch.errors import GridwatchError

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
    size = (tmp_path / "000000000001.seg").stat().st_size
    per_record = 20
    assert size < 16 + 500 * (per_record + FIX_DTYPE.itemsize), "500 appends made 500 records: no group commit"


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_a_torn_last_record_is_cut_off(tmp_path: Path, damage: str) -> None:
    write(tmp_path, [fixes(10)])
    write(tmp_path, [fixes(5, 100)])
    segment = tmp_path / "000000000001.seg"
    data = bytearray(segment.read_bytes())
    if damage == "cut":
        data = data[:-7]  # the crash came mid-write
    else:
        data[-3] ^= 0xFF  # the last bytes never reached the disk as written
    segment.write_bytes(bytes(data))
    spool = Spool(tmp_path)
    end = spool.open()
    assert end.seq == 10 and spool.torn_bytes > 0
    asyncio.run(_append_all(spool, [fixes(3, 200)]))
    records = read_all(tmp_path)
    assert len(records) == 13 and records["ts_us"][-1] > records["ts_us"][-4]


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
