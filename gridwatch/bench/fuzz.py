"""``gridwatch bench fuzz``: generated inputs through every parser at the door and every file reader.

Hypothesis generates OsmAnd query parameters, Traccar JSON bodies, JSON
batches, Cursor-on-Target byte streams and position files (CSV, GPX,
GeoJSON) and vector files, most of them close to a good input with one or
a few fields gone wrong, some raw bytes. Each input must end in one of the
outcomes the service and the ETL know (:data:`OUTCOMES`): a fix that may be
spooled, a refusal with its reason (a 4xx, or a CoT connection dropped), or
for a file each row loaded or quarantined with a reason (or the whole file
refused with an :class:`~gridwatch.errors.InputError`). Anything else is a
crash, and the goal is none.

The verdict functions (``*_verdict``) state that contract and are what
``tests/test_fuzz.py`` runs at a small count. Drawing an input with
Hypothesis costs milliseconds, parsing it microseconds, so the benchmark
draws a seed corpus of a few hundred inputs per parser and reaches its
≥ 100,000 inputs by mutating them as byte-level fuzzers do (:func:`mutate`);
the file readers also read files of many rows, each row judged and counted.
It prints, per parser, the inputs tried, the share that became fixes or
loaded rows, the crashes and the inputs per second, beside the same parser
on a well-formed input alone (a file reader on a file of good rows).
"""
from __future__ import annotations

import json
import math
import random
import re
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from gridwatch.bench import Figure
from gridwatch.errors import InputError
from gridwatch.etl._feeds import Rejections, check_coordinates, parse_numbers, parse_times
from gridwatch.etl._fuse_points import Reference
from gridwatch.etl.ingest._fix import FixError, check_fix
from gridwatch.etl.ingest.batch import BatchItem, parse_batch
from gridwatch.etl.ingest.cot import CotFramer, CotStreamError, parse_event
from gridwatch.etl.ingest.devices import hash_token
from gridwatch.etl.ingest.osmand import parse_osmand_query, parse_traccar_json
from gridwatch.etl.manifest import FileEntry
from gridwatch.etl.positions import read_position_file
from gridwatch.etl.readers import read_vector
from gridwatch.settings import Settings

try:
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - the test extra is not installed
    raise InputError("gridwatch bench fuzz needs hypothesis: pip install -e '.[test]'") from None

__all__ = [
    "OUTCOMES", "NOW", "REGION", "PARSERS", "Target", "FuzzRun", "osmand_params", "traccar_bodies", "batch_bodies",
    "cot_streams", "csv_files", "csv_rows", "csv_of_rows", "gpx_files", "gpx_points", "gpx_of_points",
    "geojson_files", "position_features", "zone_files", "zone_features", "collection_of", "osmand_verdict",
    "traccar_verdict", "batch_verdict", "cot_verdict", "position_file_verdict", "vector_file_verdict",
    "tweak_number", "mutate", "draw_inputs", "fuzz_parser", "bench_fuzz",
]

T = TypeVar("T")

# Every outcome an input may have; any exception other than these refusals is a crash.
OUTCOMES = ("fix", "refused", "other event", "stream dropped", "loaded", "quarantined", "file refused")
# The outcomes that reach the store.
_KEPT = frozenset({"fix", "loaded"})
# A fixed "now", so that the same input has the same verdict in every run.
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
REGION = (97.5, 21.0, 101.5, 24.5)
_SETTINGS = Settings()
_REFERENCE = Reference(
    grid_ids=np.empty(0, dtype=np.int64), grids=np.empty(0, dtype=object),
    zone_ids=np.empty(0, dtype=np.int64), zones=np.empty(0, dtype=object),
    segment_ids=np.empty(0, dtype=np.int64), segments=np.empty(0, dtype=object),
    vertex_tree=None, tie_tree=None, vertex_segment=np.empty(0, dtype=np.int64), to_metric=None, bbox=REGION,
)

# ---------------------------------------------------------------- strategies


def _weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of the strategies, each drawn in proportion to its weight.

    ``st.one_of`` cannot weigh: it merges nested ``one_of`` into one list of branches, drops
    repeated ones (``one_of(a, a, b)`` is ``one_of(a, b)``) and draws each branch alike.
    """
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(lambda s: s)


def _mostly(good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``good`` six times in seven, else ``bad``: most inputs are close to a good one, a field or two wrong."""
    return _weighted((6, good), (1, bad))


# Values that have broken parsers elsewhere: unicode digits, lone surrogates, NUL, overflow, hex.
_TRICKY_VALUES = (
    "", " ", "0", "-0", "nan", "NaN", "inf", "-Infinity", "1e400", "-1e400", "0x10", "1_000", "١٢٣", "²", "𝟏",
    "\x00", "\ud800", "\udfff", "9" * 400, "1" * 5000, "1.5.5", "+", "-", ".", "e5", " 22.5 ", "22,5",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-06-01T12:00:00", "2026-13-01T00:00:00Z",
    "2026-06-01T11:59:00Z", "2026-06-01 11:59:00+08:00", "T", "Z", "<", "&", "]]>", "\"", "'", "\\",
)
_TEXT = st.one_of(st.sampled_from(_TRICKY_VALUES), st.text(max_size=20), st.text(st.characters(codec="utf-8"),
                                                                                  max_size=8))
_GOOD_CALLSIGN = st.sampled_from(["P1", "V-12", "巡逻3"])
_CALLSIGN = _mostly(_GOOD_CALLSIGN, st.one_of(st.sampled_from(["A" * 32, "A" * 33, "界" * 11, " P2 "]), _TEXT))


def _number_text(low: float, high: float) -> st.SearchStrategy[str]:
    """A number as text: mostly in [low, high], else any number, a huge one or no number."""
    return _mostly(st.floats(low, high).map(lambda v: f"{v:.6f}"), st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-(2 ** 80), 2 ** 80).map(str), _TEXT))


_NOW_S = int(NOW.timestamp())
_RECENT_S = st.integers(_NOW_S - 3600, _NOW_S)
_RECENT_ISO = st.integers(0, 3600).map(lambda s: (NOW - timedelta(seconds=s)).isoformat())
_TIME_TEXT = _mostly(
    st.one_of(_RECENT_S.map(str), _RECENT_S.map(lambda s: str(s * 1000)), _RECENT_ISO),
    st.one_of(
        st.integers(-(2 ** 70), 2 ** 70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=8)),
                                                timezone(timedelta(hours=-23, minutes=-59))])).map(
            lambda d: d.isoformat()),
        _TEXT,
    ),
)
# Files carry ISO 8601 times (the door also takes Unix seconds).
_FILE_TIME = _mostly(_RECENT_ISO, _TIME_TEXT)
_LON, _LAT = _number_text(REGION[0], REGION[2]), _number_text(REGION[1], REGION[3])


def osmand_params() -> st.SearchStrategy[dict[str, str]]:
    """OsmAnd query or form parameters: mostly a good report with some fields replaced, added or absent."""
    location = _mostly(st.tuples(_LAT, _LON).map(",".join), _TEXT)
    good = st.fixed_dictionaries({"id": _GOOD_CALLSIGN, "lat": _LAT, "lon": _LON, "timestamp": _TIME_TEXT})
    varied = st.fixed_dictionaries(
        {},
        optional={
            "id": _CALLSIGN, "deviceid": _CALLSIGN, "lat": _LAT, "lon": _LON, "location": location,
            "timestamp": _TIME_TEXT, "speed": _number_text(0, 100), "bearing": _number_text(0, 360),
            "heading": _number_text(-10, 370), "accuracy": _number_text(0, 500), "altitude": _number_text(0, 5000),
            "batt": _number_text(0, 100), "hdop": _number_text(0, 10), "token": _TEXT, "": _TEXT,
        },
    )
    return _mostly(st.tuples(good, varied).map(lambda t: {**t[0], **t[1]}), varied)


# JSON values: the right type, text standing for it, or any other JSON (NaN, huge integers included).
_JSON_ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(), _TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)),
    max_leaves=6,
)


def _json_number(low: float, high: float) -> st.SearchStrategy[object]:
    return _mostly(st.one_of(st.floats(low, high), st.integers(math.ceil(low), math.floor(high))),
                   st.one_of(_number_text(low, high), _JSON_ANY))


_JSON_TIME = _mostly(st.one_of(_RECENT_S, _RECENT_S.map(lambda s: s * 1000)), st.one_of(_TIME_TEXT, _JSON_ANY))


def _json_bytes(documents: st.SearchStrategy[object]) -> st.SearchStrategy[bytes]:
    """Documents as UTF-8 JSON, with or without ``\\u`` escapes (a lone surrogate kept as it is)."""
    return st.tuples(documents, st.booleans()).map(
        lambda d: json.dumps(d[0], ensure_ascii=d[1]).encode("utf-8", "surrogatepass"))


def _encoded(bodies: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """UTF-8 JSON bodies, some in UTF-16/32 (which ``json.loads`` also reads), cut or spliced with
    random bytes, deeply nested, or random bytes."""
    recoded = st.tuples(bodies, st.sampled_from(["utf-16", "utf-32", "utf-16-be"])).map(
        lambda t: t[0].decode("utf-8", "surrogatepass").encode(t[1], "surrogatepass"))
    spliced = st.tuples(bodies, st.integers(0, 2000), st.integers(0, 8), st.binary(max_size=8)).map(
        lambda t: t[0][: t[1]] + t[3] + t[0][t[1] + t[2]:])
    nested = st.tuples(st.integers(1, 5000), st.sampled_from(["[", "{\"a\":", "[\"\\\\\","])).map(
        lambda t: (t[1] * t[0]).encode())
    return _weighted((12, bodies), (1, recoded), (2, spliced), (1, nested), (1, st.binary(max_size=64)))


def _coords() -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries(
        {"latitude": _json_number(REGION[1], REGION[3]), "longitude": _json_number(REGION[0], REGION[2])},
        optional={"speed": _json_number(0, 60), "heading": _json_number(0, 360),
                  "accuracy": _json_number(0, 500), "altitude": _JSON_ANY},
    )


def traccar_bodies() -> st.SearchStrategy[bytes]:
    """Traccar Client JSON POST bodies."""
    location = st.fixed_dictionaries({"timestamp": _JSON_TIME, "coords": _mostly(_coords(), _JSON_ANY)})
    document = st.fixed_dictionaries(
        {"device_id": _mostly(_CALLSIGN, _JSON_ANY), "location": _mostly(location, _JSON_ANY)},
        optional={"token": st.one_of(_TEXT, _JSON_ANY)},
    )
    return _encoded(_json_bytes(_mostly(document, _JSON_ANY)))


def _batch_fix() -> st.SearchStrategy[object]:
    fix = st.fixed_dictionaries(
        {"ts": _JSON_TIME, "lon": _json_number(REGION[0], REGION[2]), "lat": _json_number(REGION[1], REGION[3])},
        optional={"callsign": _mostly(_CALLSIGN, _JSON_ANY), "speed_kmh": _json_number(0, 200),
                  "heading": _json_number(0, 360), "accuracy_m": _json_number(0, 500),
                  "token": st.one_of(_TEXT, _JSON_ANY)},
    )
    return _mostly(fix, _JSON_ANY)


def batch_bodies() -> st.SearchStrategy[bytes]:
    """``POST /api/positions`` bodies."""
    document = st.fixed_dictionaries({"positions": st.lists(_batch_fix(), max_size=4)})
    return _encoded(_json_bytes(_mostly(document, _JSON_ANY)))


def _attr(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`` name="value"``: mostly escaped, sometimes raw (so that the XML may break), or absent."""
    return _weighted((6, values.map(lambda v: f" {name}={quoteattr(v)}")), (1, st.just("")),
                     (1, values.map(lambda v: f' {name}="{v}"')))


def _xml_text(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Element text: mostly escaped, else raw."""
    return _mostly(values.map(escape), values)


# What may stand before an XML document's root: mostly nothing, else a declaration, a DTD (refused:
# no entity is ever expanded) or an encoding the XML parser cannot read.
_PROLOG = _weighted((8, st.just("")), (1, st.sampled_from(['<?xml version="1.0" encoding="UTF-8"?>', "\n"])), (
    1, st.sampled_from(["<!DOCTYPE x []>", '<!DOCTYPE x [<!ENTITY e "y">]>', "<?xml version='1.0' encoding='UTF-16'?>",
                        '<?xml version="1.0" encoding="UTF-7"?>', '<?xml version="1.0" encoding="UTF-5"?>'])))


def _cot_event() -> st.SearchStrategy[str]:
    """One CoT event: mostly a friendly position with some attributes or elements wrong or missing."""
    kind = _mostly(st.sampled_from(["a-f-G-U-C", "a-f-A", "a-f-"]),
                   st.one_of(st.sampled_from(["a-h-G", "t-x-c-t", "b-t-f", "a-f"]), _TEXT))
    accuracy = st.one_of(_number_text(0, 100), st.just("9999999.0"))
    point = st.tuples(_attr("lat", _LAT), _attr("lon", _LON), _attr("ce", accuracy), _attr("hae", accuracy)).map(
        lambda a: f"<point{''.join(a)}/>")
    track = st.tuples(_attr("speed", _number_text(0, 60)), _attr("course", _number_text(0, 360))).map(
        lambda a: f"<track{''.join(a)}/>")
    contact = _attr("callsign", _CALLSIGN).map(lambda a: f"<contact{a}/>")
    auth = _attr("token", _TEXT).map(lambda a: f"<__auth{a}/>")
    detail = st.lists(st.one_of(track, contact, auth, _xml_text(_TEXT)), max_size=4).map(
        lambda p: f"<detail>{''.join(p)}</detail>")
    body = _mostly(st.tuples(point, detail).map("".join),
                   st.lists(st.one_of(point, detail, _xml_text(_TEXT)), min_size=1, max_size=3).map("".join))
    head = st.tuples(_attr("uid", _CALLSIGN), _attr("type", kind), _attr("time", _TIME_TEXT),
                     _attr("start", _TIME_TEXT)).map("".join)
    root = _mostly(st.just("event"), st.sampled_from(["point", "Event"]))
    return st.tuples(_PROLOG, root, head, body).map(lambda t: f"{t[0]}<{t[1]} version=\"2.0\"{t[2]}>{t[3]}</event>")


def _split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` as the chunks a TCP connection may deliver it in, cut at ``cuts``."""
    edges = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def cot_streams() -> st.SearchStrategy[list[bytes]]:
    """A TCP stream of events, as the chunks it arrives in (cut anywhere), some bytes spliced in."""
    events = st.lists(_cot_event(), min_size=1, max_size=3).map(lambda e: "".join(e).encode("utf-8", "surrogatepass"))
    spliced = st.tuples(events, st.integers(0, 500), st.binary(max_size=6)).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1]:])
    stream = _weighted((8, events), (1, spliced), (1, st.binary(max_size=64)))
    return st.tuples(stream, st.lists(st.integers(0, 2000), max_size=3)).map(lambda t: _split(*t))


def _spliced(files: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Files, one in five with a few bytes replaced by random ones."""
    spliced = st.tuples(files, st.floats(0, 1), st.binary(max_size=6), st.integers(0, 4)).map(
        lambda t: t[0][: int(t[1] * len(t[0]))] + t[2] + t[0][int(t[1] * len(t[0])) + t[3]:])
    return _weighted((4, files), (1, spliced))


_CSV_COLUMNS = ["callsign", "ts", "lon", "lat", "speed_kmh", "heading", "accuracy_m"]
_CSV_CELL = {"callsign": _CALLSIGN, "ts": _FILE_TIME, "lon": _LON, "lat": _LAT, "speed_kmh": _number_text(0, 200),
             "heading": _number_text(0, 360), "accuracy_m": _number_text(0, 500)}


def _csv_line(cells: Sequence[str], quoting: bool) -> str:
    """Cells joined by commas: CSV-quoted where they need it, or raw (so that the row may break)."""
    def cell(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if quoting and any(c in v for c in ',"\r\n') else v
    return ",".join(cell(v) for v in cells)


def _csv_row(header: Sequence[str]) -> st.SearchStrategy[list[str]]:
    """A row for ``header``: mostly its cells good or bad, else any cells, too few or too many."""
    return _mostly(st.tuples(*[_CSV_CELL.get(c, _TEXT) for c in header]).map(list),
                   st.lists(_TEXT, max_size=len(header) + 2))


def csv_rows() -> st.SearchStrategy[bytes]:
    """One row of a position CSV with every column (:func:`csv_of_rows` makes a file of them)."""
    return st.tuples(_csv_row(_CSV_COLUMNS), st.booleans()).map(
        lambda t: _csv_line(*t).encode("utf-8", "surrogatepass"))


def csv_of_rows(rows: Sequence[bytes]) -> bytes:
    """A position CSV: the header of every column, then ``rows``."""
    return b"\n".join([",".join(_CSV_COLUMNS).encode(), *rows]) + b"\n"


@st.composite
def _csv_file(draw: st.DrawFn) -> bytes:
    some = st.lists(st.sampled_from(_CSV_COLUMNS), max_size=len(_CSV_COLUMNS), unique=True)
    full = st.lists(st.sampled_from(_CSV_COLUMNS[4:]), unique=True).map(lambda c: [*_CSV_COLUMNS[:4], *c])
    header = draw(_mostly(full.flatmap(st.permutations), some))
    header = header if draw(st.integers(0, 9)) else [*header, *draw(st.lists(_TEXT, max_size=2))]
    rows = draw(st.lists(_csv_row(header), max_size=6))
    quoting, newline = draw(st.booleans()), draw(st.sampled_from(["\n", "\r\n", "\r", "\n\n"]))
    return (newline.join(_csv_line(line, quoting) for line in [header, *rows]) + newline).encode(
        "utf-8", "surrogatepass")


def csv_files() -> st.SearchStrategy[bytes]:
    """Position CSV files: a header with some columns missing, moved or extra; cells good or bad;
    some rows too short or long; CSV quoting or raw text; LF, CRLF or CR; spliced or random bytes."""
    return _mostly(_spliced(_csv_file()), st.binary(max_size=80))


def gpx_points() -> st.SearchStrategy[bytes]:
    """One GPX track point with good or bad lat, lon, time, speed and course
    (:func:`gpx_of_points` makes a file of them)."""
    time_element = _xml_text(_FILE_TIME).map(lambda v: f"<time>{v}</time>")
    others = st.lists(st.one_of(
        time_element,
        _xml_text(_number_text(0, 60)).map(lambda v: f"<extensions><speed>{v}</speed></extensions>"),
        _xml_text(_number_text(0, 360)).map(lambda v: f"<course>{v}</course>"),
    ), max_size=2)
    return st.tuples(_attr("lat", _LAT), _attr("lon", _LON), _mostly(time_element, st.just("")), others).map(
        lambda t: f"<trkpt{t[0]}{t[1]}>{t[2]}{''.join(t[3])}</trkpt>".encode("utf-8", "surrogatepass"))


def gpx_of_points(points: Sequence[bytes], prolog: str = "") -> bytes:
    """A GPX 1.1 file of one track segment of ``points``."""
    return (prolog.encode() + b'<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
            + b"".join(points) + b"</trkseg></trk></gpx>")


def gpx_files() -> st.SearchStrategy[bytes]:
    """GPX tracks of up to five points, some with broken XML or a prolog that is refused."""
    return _spliced(st.tuples(st.lists(gpx_points(), max_size=5), _PROLOG).map(lambda t: gpx_of_points(*t)))


def _geometry(kind: str) -> st.SearchStrategy[object]:
    """Mostly a good point, or a small square for a polygon, in the region; else no geometry, another
    type, too few or wild coordinates."""
    x, y = st.floats(REGION[0], REGION[2]), st.floats(REGION[1], REGION[3])
    anything = st.floats(allow_nan=False, allow_infinity=False, width=32)
    coord = st.one_of(st.tuples(x, y).map(list), st.lists(anything, max_size=4))
    ring = st.lists(coord, min_size=0, max_size=6).map(lambda r: [*r, r[0]] if r else r)
    good = st.fixed_dictionaries({"type": st.just("Point"), "coordinates": st.tuples(x, y).map(list)}) \
        if kind == "Point" else st.tuples(x, y, st.floats(1e-4, 0.1)).map(lambda t: {"type": "Polygon", "coordinates": [
            [[t[0], t[1]], [t[0] + t[2], t[1]], [t[0] + t[2], t[1] + t[2]], [t[0], t[1] + t[2]], [t[0], t[1]]]]})
    return _mostly(good, st.one_of(
        st.none(),
        st.fixed_dictionaries({"type": st.just("Point"), "coordinates": coord}),
        st.fixed_dictionaries({"type": st.just("Polygon"), "coordinates": st.lists(ring, min_size=1, max_size=2)}),
        st.fixed_dictionaries({"type": st.just("LineString"), "coordinates": st.lists(coord, max_size=4)}),
        st.fixed_dictionaries({"type": st.sampled_from([kind, "MultiPolygon", "GeometryCollection", "Nope"]),
                               "coordinates": _JSON_ANY}),
    ))


def _features(kind: str, properties: st.SearchStrategy[dict[str, object]]) -> st.SearchStrategy[bytes]:
    feature = st.fixed_dictionaries({"type": st.just("Feature"), "geometry": _geometry(kind),
                                     "properties": _mostly(properties, st.none())})
    return _json_bytes(feature)


def collection_of(features: Sequence[bytes]) -> bytes:
    """A GeoJSON FeatureCollection of ``features`` (each a Feature in JSON)."""
    return b'{"type": "FeatureCollection", "features": [' + b", ".join(features) + b"]}"


def _feature_files(features: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """FeatureCollections of up to four features, some damaged (as JSON bodies are) or other JSON."""
    return _encoded(_mostly(st.lists(features, max_size=4).map(collection_of), _json_bytes(_JSON_ANY)))


def position_features() -> st.SearchStrategy[bytes]:
    """One point feature of a position GeoJSON, the position's properties good or bad."""
    return _features("Point", _mostly(
        st.fixed_dictionaries({"callsign": _CALLSIGN, "ts": _FILE_TIME}, optional={
            "speed_kmh": _json_number(0, 200), "heading": _json_number(0, 360), "accuracy_m": _json_number(0, 500)}),
        st.fixed_dictionaries({}, optional={"callsign": _JSON_ANY, "ts": _JSON_ANY, "speed_kmh": _JSON_ANY,
                                            "extra": _JSON_ANY})))


def geojson_files() -> st.SearchStrategy[bytes]:
    """Position GeoJSON files: point features with the position's properties good or bad."""
    return _feature_files(position_features())


def zone_features() -> st.SearchStrategy[bytes]:
    """One polygon feature of a zone file, with kind and name good or bad."""
    return _features("Polygon", _mostly(
        st.fixed_dictionaries({"kind": st.sampled_from(["border_closed", "port_control", "social_surface"]),
                               "name": st.sampled_from(["A", "Port 3", "界河"])}),
        st.fixed_dictionaries({}, optional={"kind": _TEXT, "name": _TEXT, "extra": _JSON_ANY})))


def zone_files() -> st.SearchStrategy[bytes]:
    """Zone GeoJSON files for the vector reader: polygons with kind and name good or bad."""
    return _feature_files(zone_features())


# ---------------------------------------------------------------- the contract


def _refused(exc: FixError) -> str:
    """A refusal must say what was wrong and how it is counted."""
    if not (isinstance(exc.key, str) and exc.key and str(exc)):
        raise AssertionError(f"a refusal without a reason or key: {exc!r}")
    return "refused"


def _checked(fix: object) -> str:
    """A parsed fix is either spooled or refused by :func:`check_fix`."""
    try:
        check_fix(fix, now=NOW, settings=_SETTINGS)  # type: ignore[arg-type]
    except FixError as exc:
        return _refused(exc)
    return "fix"


def _token(token: str | None) -> None:
    """A token that came with a fix must be one the device registry can hash."""
    if token is not None:
        hash_token(token)


def osmand_verdict(params: dict[str, str]) -> list[str]:
    """The outcome of an OsmAnd request."""
    try:
        report = parse_osmand_query(params)
        _token(report.token)
        return [_checked(report.fix)]
    except FixError as exc:
        return [_refused(exc)]


def traccar_verdict(body: bytes) -> list[str]:
    """The outcome of a Traccar JSON POST."""
    try:
        report = parse_traccar_json(body)
        _token(report.token)
        return [_checked(report.fix)]
    except FixError as exc:
        return [_refused(exc)]


def batch_verdict(body: bytes) -> list[str]:
    """The outcome of each fix of a batch (or of the whole body)."""
    try:
        items = parse_batch(body, default_callsign="GW1")
    except FixError as exc:
        return [_refused(exc)]
    for item in items:
        _token(item.token if isinstance(item, BatchItem) else None)
    return [_checked(i.fix) if isinstance(i, BatchItem) else _refused(i) for i in items]


def cot_verdict(chunks: list[bytes]) -> list[str]:
    """The outcome of each event of a CoT stream; a stream the framer refuses is dropped."""
    framer, outcomes = CotFramer(), []
    try:
        for chunk in chunks:
            for document in framer.feed(chunk):
                try:
                    event = parse_event(document)
                except FixError as exc:
                    outcomes.append(_refused(exc))
                    continue
                _token(event.token)
                outcomes.append("other event" if event.fix is None else _checked(event.fix))
    except CotStreamError as exc:
        if not exc.key:
            raise AssertionError(f"a dropped stream without a reason: {exc!r}") from None
        outcomes.append("stream dropped")
    return outcomes


@contextmanager
def _reader_notes_ignored() -> Iterator[None]:
    """GDAL's and pyogrio's notes on each odd feature they read, silenced: the verdict is what counts."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="pyogrio")
        warnings.filterwarnings("ignore", message="Could not parse column", category=UserWarning)
        yield


def _write(data: bytes, suffix: str, folder: Path) -> Path:
    path = folder / f"fuzz{suffix}"
    path.write_bytes(data)
    return path


def position_file_verdict(data: bytes, suffix: str, folder: Path) -> list[str]:
    """Each row of a position file loaded or quarantined with a reason (the checks of ``etl positions``
    that need no database), or the whole file refused."""
    entry = FileEntry(_write(data, suffix, folder), "position", callsign="GW1", timezone="Asia/Shanghai")
    try:
        with _reader_notes_ignored():
            fields, raw = read_position_file(entry)
    except InputError as exc:
        if not str(exc):
            raise AssertionError("a file refused without a reason") from None
        return ["file refused"]
    rej = Rejections(len(fields))
    rej.reject((fields["callsign"] == "").to_numpy(), "unknown unit")
    ts = parse_times(fields["ts"], entry.timezone or "UTC")
    rej.reject(ts.isna().to_numpy(), "unparseable time")
    lon, lon_bad = parse_numbers(fields["lon"])
    lat, lat_bad = parse_numbers(fields["lat"])
    check_coordinates(rej, lon, lat, lon_bad | lat_bad, _REFERENCE)
    for name in ("speed_kmh", "heading", "accuracy_m"):
        value, bad = parse_numbers(fields[name])
        rej.reject(bad | (value < 0), f"invalid {name}")
    if len(raw.frame) != len(fields) or (rej.reasons[~rej.ok] == None).any():  # noqa: E711 - element-wise
        raise AssertionError("a row is neither loaded nor quarantined with a reason")
    if not raw.unparsed.empty and (raw.unparsed["reason"].eq("").any() or raw.unparsed["line"].lt(2).any()):
        raise AssertionError("an unparsed record without its reason or line")
    return ["loaded"] * int(rej.ok.sum()) + ["quarantined"] * (int((~rej.ok).sum()) + len(raw.unparsed))


def vector_file_verdict(data: bytes, folder: Path) -> list[str]:
    """Each feature of a zone file accepted or rejected with a reason, or the whole file refused."""
    entry = FileEntry(_write(data, ".geojson", folder), "zone", crs="EPSG:4326")
    try:
        with _reader_notes_ignored():
            read = read_vector(entry, bbox=REGION)
    except InputError as exc:
        if not str(exc):
            raise AssertionError("a file refused without a reason") from None
        return ["file refused"]
    if len(read.accepted) + len(read.rejected) != read.rows_in or (read.reasons == "").any():
        raise AssertionError("a feature is neither accepted nor rejected with a reason")
    return ["loaded"] * len(read.accepted) + ["quarantined"] * len(read.rejected)


# ---------------------------------------------------------------- mutation

# A number standing alone (not the digits of a word, a callsign or a "\\u" escape).
_NUMBER = re.compile(rb"(?<![\w.\\])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
# Numbers at and past the edges: of the region, of the ranges checked, of float and int64.
_EXTREMES = (b"0", b"-0", b"-1", b"0.000001", b"90.000001", b"-180.000001", b"360.5", b"500.1", b"4294967296",
             b"99999999999999999999", b"1e308", b"1e400", b"-1e400")
_TOKENS = tuple(v.encode("utf-8", "surrogatepass") for v in _TRICKY_VALUES) + (
    b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\r", b"\n", b",", b"=", b"&", b"%", b"%ff", b"%00",
    b"<![CDATA[", b"&#0;", b"<!DOCTYPE x []>", b"</event>", b"[", b"{", b"\\u0000",
)


def tweak_number(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one of its numbers changed (a digit, the sign, or to an extreme) and the text
    around it kept, so that JSON, XML and CSV stay well formed while the value leaves its range."""
    numbers = [found.span() for found in _NUMBER.finditer(data)]
    if not numbers:
        return data
    start, end = rng.choice(numbers)
    number, pick = data[start:end], rng.random()
    if pick < 0.6:
        digits = [i for i, c in enumerate(number) if 48 <= c <= 57]
        at = rng.choice(digits)
        # A first digit never becomes 0: JSON has no leading zeros.
        new = number[:at] + bytes([rng.randint(49 if at == digits[0] else 48, 57)]) + number[at + 1:]
    elif pick < 0.8:
        new = number[1:] if number.startswith(b"-") else b"-" + number
    else:
        new = rng.choice(_EXTREMES)
    return data[:start] + new + data[end:]


def mutate(data: bytes, rng: random.Random, donors: Sequence[bytes]) -> bytes:
    """``data`` with one to three changes of the kinds byte-level fuzzers make: a number changed, a
    bit flipped, random bytes or a known-bad token put in, a span deleted or duplicated (a field
    twice), the end cut off, or the end replaced by that of another input (``donors``)."""
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        at = rng.randint(0, len(data))
        to = min(len(data), at + rng.choice((1, 2, 4, 8, 32, 128)))
        op = rng.randrange(10)
        if op < 3:
            data = tweak_number(data, rng)
        elif op == 3:
            if to > at:
                data = data[:at] + bytes([data[at] ^ 1 << rng.randrange(8)]) + data[at + 1:]
        elif op == 4:
            data = data[:at] + rng.randbytes(rng.randint(1, 8)) + data[at:]
        elif op == 5:
            data = data[:at] + rng.choice(_TOKENS) + data[at:]
        elif op == 6:
            data = data[:at] + data[to:]
        elif op == 7:
            data = data[:to] + data[at:to] + data[to:]
        elif op == 8:
            data = data[:at]
        else:
            donor = rng.choice(donors)
            data = data[:at] + donor[rng.randint(0, len(donor)):]
    return data


def _query_string(params: dict[str, str]) -> bytes:
    """OsmAnd parameters as the query string a device sends."""
    return urlencode(params, errors="surrogatepass").encode()


def _query(data: bytes, _rng: random.Random | None = None) -> dict[str, str]:
    """A query string's parameters as the server hands them to the parser (``dict(request.query)``:
    percent-decoded, the first of a repeated name)."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(data.decode("utf-8", "surrogateescape"), keep_blank_values=True,
                                 errors="surrogateescape"):
        params.setdefault(name, value)
    return params


def _chunked(data: bytes, rng: random.Random) -> list[bytes]:
    """A mutated CoT stream, delivered in up to four chunks."""
    return _split(data, [rng.randint(0, len(data)) for _ in range(rng.randrange(4))])


def _same(value: T, _rng: random.Random | None = None) -> T:
    """The input as it is: a JSON body or a file is mutated as the bytes it is."""
    return value


# ---------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class Target:
    """A parser under fuzzing: its inputs drawn by Hypothesis and as bytes to mutate, its verdict,
    a well-formed input for the baseline, and for a file reader one row and a file of rows."""

    strategy: Callable[[], st.SearchStrategy]
    verdict: Callable[[object, Path], list[str]]
    good: object
    count: int  # inputs at the full scale; for a file reader, rows
    seeds: int  # inputs drawn by Hypothesis at the full scale
    to_bytes: Callable[[object], bytes] = _same
    from_bytes: Callable[[bytes, random.Random], object] = _same
    rows: Callable[[], st.SearchStrategy[bytes]] | None = None
    of_rows: Callable[[Sequence[bytes]], bytes] | None = None
    rows_per_file: tuple[int, int] = (0, 0)

    def inputs(self, outcomes: list[str]) -> int:
        """How many inputs a verdict stands for: one for a parser at the door; for a file reader each
        row judged, or one for a file refused whole or without rows."""
        return max(len(outcomes), 1) if self.rows else 1


# Rows of the well-formed file a file reader's baseline reads.
_GOOD_ROWS = 100
PARSERS: dict[str, Target] = {
    "osmand": Target(
        osmand_params, lambda v, _: osmand_verdict(v),
        {"id": "P1", "lat": "22.5", "lon": "99.0", "timestamp": str(_NOW_S), "speed": "3.2"}, 20_000, 500,
        to_bytes=_query_string, from_bytes=_query),
    "traccar json": Target(traccar_bodies, lambda v, _: traccar_verdict(v), json.dumps(
        {"device_id": "P1", "location": {"timestamp": _NOW_S, "coords": {"latitude": 22.5, "longitude": 99.0}}}
    ).encode(), 15_000, 500),
    "json batch": Target(batch_bodies, lambda v, _: batch_verdict(v), json.dumps(
        {"positions": [{"ts": _NOW_S, "lon": 99.0, "lat": 22.5, "callsign": "P1"}] * 2}).encode(), 15_000, 500),
    "cot": Target(cot_streams, lambda v, _: cot_verdict(v), [(
        f'<event version="2.0" uid="P1" type="a-f-G-U-C" time="{NOW.isoformat()}"><point lat="22.5" lon="99.0" '
        'ce="5" hae="0"/><detail><contact callsign="P1"/></detail></event>').encode()], 20_000, 500,
        to_bytes=b"".join, from_bytes=_chunked),
    "csv file": Target(csv_files, lambda v, d: position_file_verdict(v, ".csv", d), csv_of_rows(
        [f"P1,{NOW.isoformat()},99.0,22.5,3.5,90,5".encode()] * _GOOD_ROWS), 12_000, 100,
        rows=csv_rows, of_rows=csv_of_rows, rows_per_file=(20, 300)),
    "gpx file": Target(gpx_files, lambda v, d: position_file_verdict(v, ".gpx", d), gpx_of_points(
        [f'<trkpt lat="22.5" lon="99.0"><time>{NOW.isoformat()}</time></trkpt>'.encode()] * _GOOD_ROWS), 8_000, 100,
        rows=gpx_points, of_rows=gpx_of_points, rows_per_file=(10, 100)),
    "geojson file": Target(geojson_files, lambda v, d: position_file_verdict(v, ".geojson", d), collection_of(
        [json.dumps({"type": "Feature", "geometry": {"type": "Point", "coordinates": [99.0, 22.5]},
                     "properties": {"callsign": "P1", "ts": NOW.isoformat()}}).encode()] * _GOOD_ROWS), 6_000, 100,
        rows=position_features, of_rows=collection_of, rows_per_file=(10, 150)),
    "vector file": Target(zone_files, lambda v, d: vector_file_verdict(v, d), collection_of(
        [json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
            [[99, 22], [99.1, 22], [99.1, 22.1], [99, 22]]]}, "properties": {"kind": "port_control", "name": "A"}}
        ).encode()] * _GOOD_ROWS), 4_000, 100, rows=zone_features, of_rows=collection_of, rows_per_file=(10, 100)),
}


@dataclass
class FuzzRun:
    """What one parser's run gave: inputs tried (a file reader's rows, a file refused or without rows
    counting as one), of which drawn by Hypothesis, files read, outcomes, crashes as (input, error)."""

    tried: int = 0
    seeds: int = 0
    files: int = 0
    outcomes: Counter = field(default_factory=Counter)
    crashes: list[tuple[object, str]] = field(default_factory=list)
    seconds: float = 0.0


def draw_inputs(strategy: st.SearchStrategy[T], count: int, *, derandomize: bool = False) -> list[T]:
    """Up to ``count`` inputs drawn by Hypothesis (a few may be dropped as too large)."""
    drawn: list[T] = []

    @hypothesis_settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
                         derandomize=derandomize, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(value: T) -> None:
        drawn.append(value)

    draw()
    return drawn


def fuzz_parser(name: str, count: int, folder: Path, *, seeds: int, derandomize: bool = False) -> FuzzRun:
    """At least ``count`` inputs through one parser, each judged by its verdict: ``seeds`` drawn by
    Hypothesis, the rest mutations of them (:func:`mutate`; half from a seed that gave a fix or a
    loaded row). A file reader also reads each of ``3 * seeds`` rows drawn by Hypothesis as a file
    of its own, then, for every other file, many of the rows kept (half with a number changed)."""
    target, run = PARSERS[name], FuzzRun()
    rng = random.Random(0 if derandomize else None)
    start = time.perf_counter()

    def judge(value: object) -> set[str]:
        try:
            outcomes = target.verdict(value, folder)
        except Exception as exc:  # noqa: BLE001 - a crash is what is counted
            run.crashes.append((value, f"{type(exc).__name__}: {exc}"[:300]))
            outcomes = []
        run.tried += target.inputs(outcomes)
        run.files += target.rows is not None
        run.outcomes.update(outcomes)
        return set(outcomes)

    drawn = draw_inputs(target.strategy(), seeds, derandomize=derandomize)
    corpus = [target.to_bytes(value) for value in drawn]
    kept = [data for value, data in zip(drawn, corpus) if judge(value) & _KEPT]
    # Rows that a file of their own is not refused for, so that a file of many is not refused for one.
    rows = [row for row in (draw_inputs(target.rows(), 3 * seeds, derandomize=derandomize) if target.rows else [])
            if judge(target.of_rows([row])) != {"file refused"}]
    run.seeds = run.tried
    while run.tried < count:
        if rows and rng.random() < 0.5:
            picked = rng.choices(rows, k=rng.randint(*target.rows_per_file))
            judge(target.of_rows([tweak_number(r, rng) if rng.random() < 0.5 else r for r in picked]))
        else:
            parent = rng.choice(kept if kept and rng.random() < 0.5 else corpus)
            judge(target.from_bytes(mutate(parent, rng, corpus), rng))
    run.seconds = time.perf_counter() - start
    return run


def _well_formed_rate(target: Target, folder: Path, *, seconds: float = 0.5) -> float:
    """Inputs per second of the parser on its well-formed input alone (no generation; a file
    reader's rows per second on a file of :data:`_GOOD_ROWS` good rows)."""
    outcomes = target.verdict(target.good, folder)
    if not set(outcomes) <= _KEPT:
        raise AssertionError(f"the well-formed input is not accepted: {outcomes}")
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += target.inputs(target.verdict(target.good, folder))
    return n / (time.perf_counter() - start)


def bench_fuzz(settings: Settings, *, scale: str) -> list[Figure]:
    """≥ 100,000 inputs across the parsers (a tenth at ``small``): per parser the inputs tried, of
    which drawn by Hypothesis, the share that became fixes or loaded rows, crashes and inputs/s;
    then the totals."""
    share = 0.1 if scale == "small" else 1.0
    figures: list[Figure] = []
    total_tried, total_crashes, total_s = 0, 0, 0.0
    with tempfile.TemporaryDirectory(prefix="gridwatch-fuzz-") as tmp:
        folder = Path(tmp)
        for name, target in PARSERS.items():
            run = fuzz_parser(name, math.ceil(target.count * share), folder, seeds=math.ceil(target.seeds * share))
            total_tried, total_crashes = total_tried + run.tried, total_crashes + len(run.crashes)
            total_s += run.seconds
            unit = "rows" if target.rows else "inputs"
            kept = sum(run.outcomes[k] for k in _KEPT)
            figures += [
                Figure(f"fuzz {name}: inputs tried", run.tried, unit),
                Figure(f"fuzz {name}: of which drawn by Hypothesis", run.seeds, unit),
                *([Figure(f"fuzz {name}: files read", run.files, "files")] if target.rows else []),
                Figure(f"fuzz {name}: fixes or loaded rows", 100.0 * kept / max(run.outcomes.total(), 1), "%"),
                Figure(f"fuzz {name}: crashes", len(run.crashes), "", goal="<= 0"),
                Figure(f"fuzz {name}: inputs/s", run.tried / run.seconds, "/s", baseline=_well_formed_rate(
                    target, folder), baseline_name=f"a file of {_GOOD_ROWS} good rows" if target.rows else
                    "well-formed input alone"),
            ]
            for value, error in run.crashes[:3]:
                print(f"crash in {name}: {error} on {value!r:.300}")
    figures += [
        Figure("fuzz all parsers: inputs tried", total_tried, "inputs", goal=f">= {math.ceil(100_000 * share)}"),
        Figure("fuzz all parsers: crashes", total_crashes, "", goal="<= 0"),
        Figure("fuzz all parsers: inputs/s", total_tried / total_s, "/s"),
        Figure("fuzz all parsers: seconds", total_s, "s"),
    ]
    return figures
