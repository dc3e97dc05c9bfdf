"""Generated inputs through every parser at the door and every file reader: each ends as a fix, a
refusal with its reason (a 4xx, or a CoT stream dropped), or rows loaded or quarantined with a
reason (or the whole file refused); never another exception.

The strategies, the mutations and the verdicts are those of ``gridwatch bench fuzz`` (which runs
≥ 100,000 inputs); here a couple of hundred drawn per parser and, through the benchmark's own run,
a thousand mutated, derandomized so that CI sees the same inputs each run. The ``@example`` inputs
are the crashes the fuzzing found, kept after their fix.
"""
from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings

from gridwatch.bench.fuzz import (
    NOW,
    OUTCOMES,
    PARSERS,
    batch_bodies,
    batch_verdict,
    collection_of,
    cot_streams,
    cot_verdict,
    csv_files,
    fuzz_parser,
    geojson_files,
    gpx_files,
    osmand_params,
    osmand_verdict,
    position_file_verdict,
    traccar_bodies,
    traccar_verdict,
    tweak_number,
    vector_file_verdict,
    zone_files,
)
from gridwatch.errors import InputError
from gridwatch.etl._feeds import parse_times
from gridwatch.etl.ingest._fix import MAX_JSON_DEPTH, FixError, load_json
from gridwatch.etl.ingest.cot import CotStreamError, parse_event
from gridwatch.etl.manifest import FileEntry
from gridwatch.etl.positions import read_position_file

PARSER_EXAMPLES = 200
FILE_EXAMPLES = 60
_FAST = settings(max_examples=PARSER_EXAMPLES, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_FILES = settings(_FAST, max_examples=FILE_EXAMPLES)
_TS = int(NOW.timestamp())
# Deeply nested UTF-16: U+2200 holds the byte of a quote, which hid the brackets after it from the
# depth count; json.loads then overflowed its recursion (RecursionError instead of a 4xx).
_UTF16_DEEP = ('["\u2200",' + "[" * 3000 + "]" * 3000 + "]").encode("utf-16-le")
_EVENT = (f'<event version="2.0" uid="P1" type="a-f-G-U-C" time="{NOW.isoformat()}"><point lat="22.5" lon="99.0"/>'
          "</event>").encode()
_TRACK = (b'<gpx><trk><trkseg><trkpt lat="22.5" lon="99.0"><time>2026-06-01T12:00:00Z</time></trkpt>'
          b"</trkseg></trk></gpx>")
# An encoding expat does not know (LookupError) or cannot read (ValueError), where a number was changed.
_UTF5, _UTF7 = b'<?xml version="1.0" encoding="UTF-5"?>', b'<?xml version="1.0" encoding="UTF-7"?>'
_ENTITY = b'<!DOCTYPE gpx [<!ENTITY e "y">]>'  # EntitiesForbidden from defusedxml, a ValueError
# An offset pandas reads though it is no ISO 8601 one: taken for a local time, it failed the whole file.
_ODD_OFFSET_CSV = b"callsign,ts,lon,lat\nP1,2026-06-01T11:59:13+00:0,99,22.5\nP1,2026-06-01T11:59:13,99,22.5\n"


@pytest.fixture(scope="module")
def folder() -> Path:
    """Where the generated files are written (one file at a time, overwritten)."""
    with tempfile.TemporaryDirectory(prefix="gridwatch-fuzz-") as tmp:
        yield Path(tmp)


def _known(outcomes: list[str]) -> None:
    unknown = set(outcomes) - set(OUTCOMES)
    assert not unknown, f"outcomes {unknown} are none of {OUTCOMES}"


@_FAST
@given(osmand_params())
@example({"id": "\ud800", "lat": "22.5", "lon": "99", "timestamp": str(_TS)})  # lone surrogate callsign
@example({"id": "P1", "lat": "22.5", "lon": "99", "timestamp": str(_TS), "token": "\udfff"})
def test_osmand_query(params: dict[str, str]) -> None:
    """An OsmAnd request gives a fix or a refusal with its reason."""
    outcomes = osmand_verdict(params)
    assert len(outcomes) == 1
    _known(outcomes)


@_FAST
@given(traccar_bodies())
@example(_UTF16_DEEP)
@example(json.dumps({"device_id": "\ud800", "location": {"timestamp": _TS, "coords": {
    "latitude": 22.5, "longitude": 99.0}}}).encode())
@example(json.dumps({"device_id": "P1", "token": "\ud800", "location": {"timestamp": _TS, "coords": {
    "latitude": 22.5, "longitude": 99.0}}}).encode())
def test_traccar_json(body: bytes) -> None:
    """A Traccar JSON POST gives a fix or a refusal with its reason."""
    outcomes = traccar_verdict(body)
    assert len(outcomes) == 1
    _known(outcomes)


@_FAST
@given(batch_bodies())
@example(_UTF16_DEEP)
@example(b'{"positions": [{"callsign": "\\ud800", "ts": %d, "lon": 99, "lat": 22.5}]}' % _TS)
@example(b'{"positions": [{"token": "\\udfff", "ts": %d, "lon": 99, "lat": 22.5}]}' % _TS)
def test_json_batch(body: bytes) -> None:
    """Each fix of a batch is a fix or refused with its reason, or the whole body is refused."""
    _known(batch_verdict(body))


@_FAST
@given(cot_streams())
@example([_UTF5 + _EVENT])
@example([_UTF7, _EVENT])
def test_cot_stream(chunks: list[bytes]) -> None:
    """Each CoT event is a fix, another event or refused; a stream that is not CoT is dropped."""
    _known(cot_verdict(chunks))


@_FILES
@given(csv_files())
@example(b"callsign,ts,lon,lat\rP1,2026-06-01T12:00:00Z,99,22.5\r")  # CR line ends: csv.Error on the header
@example(b"callsign,ts,lon,lat,lat\nP1,2026-06-01T12:00:00Z,99,22.5,1\n")  # a column twice: AttributeError
@example(b"a,a\n\n")  # a column twice and a blank line: UFuncTypeError
@example(_ODD_OFFSET_CSV)  # TypeError "Already tz-aware" (ValueError "Mixed timezones" beside a local time)
def test_csv_file(folder: Path, data: bytes) -> None:
    """Each row of a position CSV is loaded or quarantined with a reason, or the file is refused."""
    _known(position_file_verdict(data, ".csv", folder))


@_FILES
@given(gpx_files())
@example(_UTF5 + _TRACK)
@example(_UTF7 + _TRACK)
@example(_ENTITY + _TRACK)
def test_gpx_file(folder: Path, data: bytes) -> None:
    """Each track point of a GPX file is loaded or quarantined with a reason, or the file is refused."""
    _known(position_file_verdict(data, ".gpx", folder))


_ONE_POINT_LINE = json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
    "callsign": "P1", "ts": NOW.isoformat(), "kind": "port_control", "name": "A"},
    "geometry": {"type": "LineString", "coordinates": [[99.0, 22.5]]}}]}).encode()
_TWO_POINT_RING = _ONE_POINT_LINE.replace(b'"LineString", "coordinates": [[99.0, 22.5]]',
                                          b'"Polygon", "coordinates": [[[99.0, 22.5], [99.0, 22.5]]]')


# GDAL reads a "ts" column of times alone as dates (and mends the offset); beside other text it stays text.
_ODD_OFFSET_GEOJSON = collection_of([json.dumps({"type": "Feature", "properties": {"callsign": "P1", "ts": ts},
                                                 "geometry": {"type": "Point", "coordinates": [99.0, 22.5]}}).encode()
                                     for ts in ("2026-06-01T11:56:30+0:00", "x")])


@_FILES
@given(geojson_files())
@example(_ONE_POINT_LINE)  # GEOSException from pyogrio: a line of one point
@example(b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"ts": "6.4\xbf"}, '
         b'"geometry": {"type": "Point", "coordinates": [99.0, 22.5]}}]}')  # UnicodeDecodeError from pyogrio
@example(_ODD_OFFSET_GEOJSON)  # TypeError "Already tz-aware"
def test_geojson_position_file(folder: Path, data: bytes) -> None:
    """Each feature of a position GeoJSON is loaded or quarantined with a reason, or the file is refused."""
    _known(position_file_verdict(data, ".geojson", folder))


@_FILES
@given(zone_files())
@example(_ONE_POINT_LINE)
@example(_TWO_POINT_RING)  # GEOSException from pyogrio: a ring of two points
def test_vector_file(folder: Path, data: bytes) -> None:
    """Each feature of a zone file is accepted or rejected with a reason, or the file is refused."""
    _known(vector_file_verdict(data, folder))


def test_found_crashes_now_have_their_reasons(folder: Path) -> None:
    """The inputs that crashed the parsers are refused or quarantined for what is wrong with them."""
    with pytest.raises(FixError, match="not JSON") as refused:
        load_json(_UTF16_DEEP)  # NUL bytes are UTF-8: read as text, it is no JSON
    assert refused.value.key == "bad json"
    with pytest.raises(FixError, match="not JSON in UTF-8"):
        load_json('{"a": 1}'.encode("utf-16"))
    with pytest.raises(FixError, match=f"nested {MAX_JSON_DEPTH + 1} deep"):
        load_json(b"\xef\xbb\xbf" + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert load_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert traccar_verdict(json.dumps({"device_id": "\ud800", "location": {"timestamp": _TS, "coords": {
        "latitude": 22.5, "longitude": 99.0}}}).encode()) == ["refused"]
    assert batch_verdict(b'{"positions": [{"callsign": "P1", "token": "\\ud800", "ts": %d, "lon": 99, "lat": 22.5},'
                         b' {"callsign": "P1", "ts": %d, "lon": 99, "lat": 22.5}]}' % (_TS, _TS)) == ["refused", "fix"]
    assert position_file_verdict(b"callsign,ts,lon,lat\rP1,2026-06-01T12:00:00Z,99,22.5\rP1,x,99,22.5\r",
                                 ".csv", folder) == ["loaded", "quarantined"]
    assert position_file_verdict(b"a,a\n\n", ".csv", folder) == ["file refused"]
    assert position_file_verdict(_ONE_POINT_LINE, ".geojson", folder) == ["quarantined"]
    assert vector_file_verdict(_TWO_POINT_RING, folder) == ["quarantined"]
    assert position_file_verdict(_ODD_OFFSET_CSV, ".csv", folder) == ["loaded", "quarantined"]
    assert position_file_verdict(_ODD_OFFSET_GEOJSON, ".geojson", folder) == ["quarantined", "quarantined"]
    times = parse_times(pd.Series(["2026-06-01T08:05+0:00", "20260601T0805+5", "2026-06-01T08:05+08:00", "2026-6-1"]),
                        "Asia/Shanghai")
    assert times.isna().tolist() == [True, True, False, False]  # a date alone is still read, at local midnight
    for prolog in (_UTF5, _UTF7):
        with pytest.raises(CotStreamError, match="encoding cannot be read") as dropped:
            parse_event(prolog + _EVENT)
        assert dropped.value.key == "malformed xml"
        (folder / "a.gpx").write_bytes(prolog + _TRACK)
        with pytest.raises(InputError, match="encoding cannot be read.*save it as UTF-8"):
            read_position_file(FileEntry(folder / "a.gpx", "position", callsign="GW1"))
    (folder / "a.gpx").write_bytes(_ENTITY + _TRACK)
    with pytest.raises(InputError, match="declares entities"):
        read_position_file(FileEntry(folder / "a.gpx", "position", callsign="GW1"))


def test_number_tweaks_keep_json_well_formed() -> None:
    """The mutation that changes a number leaves JSON parseable (no leading zero, no broken escape),
    so that a file of many rows is not refused for one."""
    document = json.dumps({"lat": 22.5, "ts": 1780315200, "name": "界河", "callsign": "P1", "e": 1e-05}).encode()
    rng = random.Random(0)
    tweaked = {tweak_number(document, rng) for _ in range(300)}
    assert len(tweaked) > 100
    for data in tweaked:
        json.loads(data)
        assert b'"\\u754c\\u6cb3"' in data and b'"P1"' in data


@pytest.mark.parametrize("name", PARSERS)
def test_bench_run(folder: Path, name: str) -> None:
    """The benchmark's run at a small count: every input judged, no crash, and a real share of them
    fixes or loaded rows (the strategies weigh good values; mutation starts from them)."""
    count, seeds = (200, 10) if PARSERS[name].rows else (1000, 50)
    run = fuzz_parser(name, count, folder, seeds=seeds, derandomize=True)
    assert not run.crashes
    assert run.tried >= count and 0 < run.seeds < run.tried
    assert set(run.outcomes) <= set(OUTCOMES)
    assert run.outcomes["fix"] + run.outcomes["loaded"] >= 0.1 * run.outcomes.total()
