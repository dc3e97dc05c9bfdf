"""Generated inputs through every parser at the door and every file reader: each ends as a fix, a
refusal with its reason (a 4xx, or a CoT stream dropped), or rows loaded or quarantined with a
reason (or the whole file refused); never another exception.

The strategies and the verdicts are those of ``gridwatch bench fuzz`` (which runs ≥ 100,000
inputs); here a few hundred per parser, derandomized so that CI sees the same inputs each run.
The ``@example`` inputs are the crashes the fuzzing found, kept after their fix.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings

from gridwatch.bench.fuzz import (
    NOW,
    OUTCOMES,
    batch_bodies,
    batch_verdict,
    cot_streams,
    cot_verdict,
    csv_files,
    geojson_files,
    gpx_files,
    osmand_params,
    osmand_verdict,
    position_file_verdict,
    traccar_bodies,
    traccar_verdict,
    vector_file_verdict,
    zone_files,
)
from gridwatch.etl.ingest._fix import MAX_JSON_DEPTH, FixError, load_json

PARSER_EXAMPLES = 400
FILE_EXAMPLES = 150
_FAST = settings(max_examples=PARSER_EXAMPLES, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_FILES = settings(_FAST, max_examples=FILE_EXAMPLES)
_TS = int(NOW.timestamp())
# Deeply nested UTF-16: U+2200 holds the byte of a quote, which hid the brackets after it from the
# depth count; json.loads then overflowed its recursion (RecursionError instead of a 4xx).
_UTF16_DEEP = ('["\u2200",' + "[" * 3000 + "]" * 3000 + "]").encode("utf-16-le")


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
def test_cot_stream(chunks: list[bytes]) -> None:
    """Each CoT event is a fix, another event or refused; a stream that is not CoT is dropped."""
    _known(cot_verdict(chunks))


@_FILES
@given(csv_files())
@example(b"callsign,ts,lon,lat\rP1,2026-06-01T12:00:00Z,99,22.5\r")  # CR line ends: csv.Error on the header
@example(b"callsign,ts,lon,lat,lat\nP1,2026-06-01T12:00:00Z,99,22.5,1\n")  # a column twice: AttributeError
@example(b"a,a\n\n")  # a column twice and a blank line: UFuncTypeError
def test_csv_file(folder: Path, data: bytes) -> None:
    """Each row of a position CSV is loaded or quarantined with a reason, or the file is refused."""
    _known(position_file_verdict(data, ".csv", folder))


@_FILES
@given(gpx_files())
def test_gpx_file(folder: Path, data: bytes) -> None:
    """Each track point of a GPX file is loaded or quarantined with a reason, or the file is refused."""
    _known(position_file_verdict(data, ".gpx", folder))


_ONE_POINT_LINE = json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
    "callsign": "P1", "ts": NOW.isoformat(), "kind": "port_control", "name": "A"},
    "geometry": {"type": "LineString", "coordinates": [[99.0, 22.5]]}}]}).encode()
_TWO_POINT_RING = _ONE_POINT_LINE.replace(b'"LineString", "coordinates": [[99.0, 22.5]]',
                                          b'"Polygon", "coordinates": [[[99.0, 22.5], [99.0, 22.5]]]')


@_FILES
@given(geojson_files())
@example(_ONE_POINT_LINE)  # GEOSException from pyogrio: a line of one point
@example(b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"ts": "6.4\xbf"}, '
         b'"geometry": {"type": "Point", "coordinates": [99.0, 22.5]}}]}')  # UnicodeDecodeError from pyogrio
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
