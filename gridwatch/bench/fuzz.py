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
``tests/test_fuzz.py`` runs at a small count; the benchmark runs them at
≥ 100,000 inputs and prints, per parser, the inputs tried, the crashes and
the inputs per second, beside the same parsers on well-formed inputs alone.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
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
    "OUTCOMES", "NOW", "REGION", "PARSERS", "osmand_params", "traccar_bodies", "batch_bodies", "cot_streams",
    "csv_files", "gpx_files", "geojson_files", "osmand_verdict", "traccar_verdict", "batch_verdict",
    "cot_verdict", "position_file_verdict", "vector_file_verdict", "bench_fuzz",
]

# Every outcome an input may have; any exception other than these refusals is a crash.
OUTCOMES = ("fix", "refused", "other event", "stream dropped", "loaded", "quarantined", "file refused")
# A fixed "now", so that the same input has the same verdict in every run.
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
REGION = (97.5, 21.0, 101.5, 24.5)
_SETTINGS = Settings()
_REFERENCE = Reference(
    grid_ids=np.empty(0, dtype=np.int64), grids=np.empty(0, dtype=object),
    zone_ids=np.empty(0, dtype=np.int64), zones=np.empty(0, dtype=object),
    segment_ids=np.empty(0, dtype=np.int64), segments=np.empty(0, dtype=object),
    vertex_tree=None, vertex_segment=np.empty(0, dtype=np.int64), to_metric=None, bbox=REGION,
)

# ---------------------------------------------------------------- strategies

# Values that have broken parsers elsewhere: unicode digits, lone surrogates, NUL, overflow, hex.
_TRICKY = st.sampled_from([
    "", " ", "0", "-0", "nan", "NaN", "inf", "-Infinity", "1e400", "-1e400", "0x10", "1_000", "١٢٣", "²", "𝟏",
    "\x00", "\ud800", "\udfff", "9" * 400, "1" * 5000, "1.5.5", "+", "-", ".", "e5", " 22.5 ", "22,5",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-06-01T12:00:00", "2026-13-01T00:00:00Z",
    "2026-06-01T11:59:00Z", "2026-06-01 11:59:00+08:00", "T", "Z", "<", "&", "]]>", "\"", "'", "\\",
])
_TEXT = st.one_of(_TRICKY, st.text(max_size=20), st.text(st.characters(codec="utf-8"), max_size=8))
_CALLSIGN = st.one_of(st.sampled_from(["P1", "V-12", "巡逻3", "A" * 32, "A" * 33, "界" * 11, " P2 "]), _TEXT)


def _number_text(low: float, high: float) -> st.SearchStrategy[str]:
    """A number as text: mostly in [low, high], sometimes anything."""
    return st.one_of(
        st.floats(low, high).map(lambda v: f"{v:.6f}"),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-(2 ** 80), 2 ** 80).map(str),
        _TEXT,
    )


_NOW_S = int(NOW.timestamp())
_TIME_TEXT = st.one_of(
    st.integers(_NOW_S - 3600, _NOW_S).map(str),
    st.integers(_NOW_S - 3600, _NOW_S).map(lambda s: str(s * 1000)),
    st.integers(-(2 ** 70), 2 ** 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=8)),
                                            timezone(timedelta(hours=-23, minutes=-59))])).map(
        lambda d: d.isoformat()),
    st.integers(0, 3600).map(lambda s: (NOW - timedelta(seconds=s)).isoformat()),
    _TEXT,
)
_LON, _LAT = _number_text(REGION[0], REGION[2]), _number_text(REGION[1], REGION[3])
# A good value of each field the others are varied around.
_GOOD_CALLSIGN = st.sampled_from(["P1", "V-12", "巡逻3"])
_GOOD_LON = st.floats(REGION[0], REGION[2]).map(lambda v: f"{v:.6f}")
_GOOD_LAT = st.floats(REGION[1], REGION[3]).map(lambda v: f"{v:.6f}")
_GOOD_TIME = st.integers(_NOW_S - 3600, _NOW_S).map(str)


def osmand_params() -> st.SearchStrategy[dict[str, str]]:
    """OsmAnd query or form parameters, each field good, bad or absent."""
    location = st.one_of(st.tuples(_LAT, _LON).map(",".join), _TEXT)
    good = st.fixed_dictionaries({"id": _GOOD_CALLSIGN, "lat": _GOOD_LAT, "lon": _GOOD_LON, "timestamp": _GOOD_TIME})
    return st.tuples(good, st.fixed_dictionaries(
        {},
        optional={
            "id": _CALLSIGN, "deviceid": _CALLSIGN, "lat": _LAT, "lon": _LON, "location": location,
            "timestamp": _TIME_TEXT, "speed": _number_text(0, 100), "bearing": _number_text(0, 360),
            "heading": _number_text(-10, 370), "accuracy": _number_text(0, 500), "altitude": _number_text(0, 5000),
            "batt": _number_text(0, 100), "hdop": _number_text(0, 10), "token": _TEXT, "": _TEXT,
        },
    ), st.integers(0, 4)).map(lambda t: {**t[0], **t[1]} if t[2] else t[1])


# JSON values: the right type, text standing for it, or any other JSON (NaN, huge integers included).
_JSON_ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(), _TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)),
    max_leaves=6,
)


def _json_number(low: float, high: float) -> st.SearchStrategy[object]:
    return st.one_of(st.floats(low, high), st.integers(int(low), int(high)), _number_text(low, high), _JSON_ANY)


_JSON_TIME = st.one_of(st.integers(_NOW_S - 3600, _NOW_S), st.integers(_NOW_S - 3600, _NOW_S).map(lambda s: s * 1000),
                       _TIME_TEXT, _JSON_ANY)


def _encoded(documents: st.SearchStrategy[object]) -> st.SearchStrategy[bytes]:
    """JSON documents as bodies: UTF-8 (or UTF-16/32, which ``json.loads`` also reads), some cut or
    spliced with random bytes, some deeply nested, some random bytes."""
    text = st.tuples(documents, st.booleans()).map(lambda d: json.dumps(d[0], ensure_ascii=d[1]))
    encoded = st.tuples(text, st.sampled_from(["utf-8"] * 6 + ["utf-16", "utf-32", "utf-16-be"])).map(
        lambda t: t[0].encode(t[1], "surrogatepass"))
    spliced = st.tuples(encoded, st.integers(0, 2000), st.integers(0, 8), st.binary(max_size=8)).map(
        lambda t: t[0][: t[1]] + t[3] + t[0][t[1] + t[2]:])
    nested = st.tuples(st.integers(1, 5000), st.sampled_from(["[", "{\"a\":", "[\"\\\\\","])).map(
        lambda t: (t[1] * t[0]).encode())
    return st.one_of(encoded, encoded, spliced, nested, st.binary(max_size=64))


def _coords() -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries(
        {"latitude": _json_number(REGION[1], REGION[3]), "longitude": _json_number(REGION[0], REGION[2])},
        optional={"speed": _json_number(-1, 60), "heading": _json_number(-1, 360),
                  "accuracy": _json_number(0, 500), "altitude": _JSON_ANY},
    )


def traccar_bodies() -> st.SearchStrategy[bytes]:
    """Traccar Client JSON POST bodies."""
    location = st.fixed_dictionaries({"timestamp": _JSON_TIME, "coords": st.one_of(_coords(), _JSON_ANY)})
    document = st.fixed_dictionaries(
        {"device_id": st.one_of(_CALLSIGN, _JSON_ANY), "location": st.one_of(location, location, _JSON_ANY)},
        optional={"token": st.one_of(_TEXT, _JSON_ANY)},
    )
    return _encoded(st.one_of(document, document, document, _JSON_ANY))


def _batch_fix() -> st.SearchStrategy[object]:
    fix = st.fixed_dictionaries(
        {"ts": _JSON_TIME, "lon": _json_number(REGION[0], REGION[2]), "lat": _json_number(REGION[1], REGION[3])},
        optional={"callsign": st.one_of(_CALLSIGN, _JSON_ANY), "speed_kmh": _json_number(0, 200),
                  "heading": _json_number(0, 360), "accuracy_m": _json_number(0, 500),
                  "token": st.one_of(_TEXT, _JSON_ANY)},
    )
    return st.one_of(fix, fix, fix, _JSON_ANY)


def batch_bodies() -> st.SearchStrategy[bytes]:
    """``POST /api/positions`` bodies."""
    document = st.one_of(st.fixed_dictionaries({"positions": st.lists(_batch_fix(), max_size=4)}), _JSON_ANY)
    return _encoded(st.one_of(document, document, document, _JSON_ANY))


def _attr(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`` name="value"`` (escaped, or raw so that the XML may break), or nothing."""
    quoted = values.map(lambda v: f" {name}={quoteattr(v)}")
    return st.one_of(st.just(""), quoted, quoted, quoted, values.map(lambda v: f' {name}="{v}"'))


def _cot_event() -> st.SearchStrategy[str]:
    kind = st.one_of(st.sampled_from(["a-f-G-U-C", "a-f-A", "a-h-G", "t-x-c-t", "b-t-f", "a-f-"]), _TEXT)
    time_text = st.one_of(st.integers(0, 3600).map(lambda s: (NOW - timedelta(seconds=s)).isoformat()), _TIME_TEXT)
    point = st.tuples(_attr("lat", _LAT), _attr("lon", _LON), _attr("ce", _number_text(0, 9_999_999)),
                      _attr("hae", _number_text(0, 9_999_999))).map(lambda a: f"<point{''.join(a)}/>")
    track = st.tuples(_attr("speed", _number_text(-1, 60)), _attr("course", _number_text(-1, 360))).map(
        lambda a: f"<track{''.join(a)}/>")
    contact = _attr("callsign", _CALLSIGN).map(lambda a: f"<contact{a}/>")
    auth = _attr("token", _TEXT).map(lambda a: f"<__auth{a}/>")
    text = st.one_of(_TEXT.map(escape), _TEXT.map(escape), _TEXT)
    detail = st.lists(st.one_of(track, contact, auth, text), max_size=4).map(lambda p: f"<detail>{''.join(p)}</detail>")
    body = st.lists(st.one_of(point, point, point, detail, detail, text), min_size=1, max_size=3).map("".join)
    head = st.tuples(_attr("uid", _CALLSIGN), _attr("type", kind), _attr("time", time_text),
                     _attr("start", time_text)).map("".join)
    prolog = st.sampled_from(["", "", "", "", "", "", '<?xml version="1.0" encoding="UTF-8"?>', "\n", "<!DOCTYPE event []>",
                              '<!DOCTYPE e [<!ENTITY x "y">]>', "<?xml version='1.0' encoding='UTF-16'?>"])
    root = st.sampled_from(["event", "event", "event", "point", "Event"])
    return st.tuples(prolog, root, head, body).map(lambda t: f"{t[0]}<{t[1]} version=\"2.0\"{t[2]}>{t[3]}</event>")


def cot_streams() -> st.SearchStrategy[list[bytes]]:
    """A TCP stream of events, as the chunks it arrives in (cut anywhere), some bytes spliced in."""
    events = st.lists(_cot_event(), min_size=1, max_size=3).map(lambda e: "".join(e).encode("utf-8", "surrogatepass"))
    stream = st.one_of(events, events, events, st.tuples(events, st.integers(0, 500), st.binary(max_size=6)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1]:]), st.binary(max_size=64))
    return st.tuples(stream, st.lists(st.integers(0, 2000), max_size=3)).map(
        lambda t: [t[0][a:b] for a, b in zip([0, *sorted(t[1])], [*sorted(t[1]), len(t[0])])])


_CSV_COLUMNS = ["callsign", "ts", "lon", "lat", "speed_kmh", "heading", "accuracy_m"]
_CSV_CELL = {"callsign": _CALLSIGN, "ts": _TIME_TEXT, "lon": _LON, "lat": _LAT, "speed_kmh": _number_text(0, 200),
             "heading": _number_text(0, 360), "accuracy_m": _number_text(0, 500)}


def _csv_text(header: list[str], rows: list[list[str]], quoting: bool, newline: str) -> str:
    def cell(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if quoting and any(c in v for c in ',"\r\n') else v
    return newline.join(",".join(cell(v) for v in line) for line in [header, *rows]) + newline


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """Position CSV files: a header with some columns missing, moved or extra; cells good or bad;
    some rows too short or long; CSV quoting or raw text; LF, CRLF or CR; spliced bytes."""
    some = st.lists(st.sampled_from(_CSV_COLUMNS), max_size=len(_CSV_COLUMNS), unique=True)
    header = draw(st.one_of(some, some.map(lambda c: [*_CSV_COLUMNS[:4], *(x for x in c if x not in _CSV_COLUMNS[:4])])
                            .flatmap(st.permutations)))
    header = header if draw(st.integers(0, 9)) else [*header, *draw(st.lists(_TEXT, max_size=2))]
    row = st.tuples(*[_CSV_CELL.get(c, _TEXT) for c in header]).map(list)
    rows = draw(st.lists(st.one_of(row, row, row, st.lists(_TEXT, max_size=len(header) + 2)), max_size=6))
    text = _csv_text(header, rows, draw(st.booleans()), draw(st.sampled_from(["\n", "\r\n", "\r", "\n\n"])))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=6)) + data[at + draw(st.integers(0, 4)):]
    return draw(st.one_of(st.just(data), st.just(data), st.just(data), st.binary(max_size=80)))


@st.composite
def gpx_files(draw: st.DrawFn) -> bytes:
    """GPX tracks: points with good or bad lat, lon, time, speed and course; some broken XML."""
    def point() -> str:
        attrs = draw(_attr("lat", _LAT)) + draw(_attr("lon", _LON))
        children = "".join(draw(st.lists(st.one_of(
            _TIME_TEXT.map(lambda v: f"<time>{v}</time>"),
            _number_text(0, 60).map(lambda v: f"<extensions><speed>{v}</speed></extensions>"),
            _number_text(0, 360).map(lambda v: f"<course>{v}</course>"),
        ), max_size=3)))
        return f"<trkpt{attrs}>{children}</trkpt>"
    points = "".join(point() for _ in range(draw(st.integers(0, 5))))
    text = (f'<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">'
            f"<trk><trkseg>{points}</trkseg></trk></gpx>")
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=6)) + data[at + draw(st.integers(0, 4)):]
    return data


def _geometry(kind: str) -> st.SearchStrategy[object]:
    x, y = st.floats(REGION[0], REGION[2]), st.floats(REGION[1], REGION[3])
    anything = st.floats(allow_nan=False, allow_infinity=False, width=32)
    coord = st.one_of(st.tuples(x, y).map(list), st.tuples(x, y).map(list), st.lists(anything, max_size=4))
    ring = st.lists(coord, min_size=0, max_size=6).map(lambda r: [*r, r[0]] if r else r)
    return st.one_of(
        st.none(),
        st.fixed_dictionaries({"type": st.just("Point"), "coordinates": coord}),
        st.fixed_dictionaries({"type": st.just("Polygon"), "coordinates": st.lists(ring, min_size=1, max_size=2)}),
        st.fixed_dictionaries({"type": st.just("LineString"), "coordinates": st.lists(coord, max_size=4)}),
        st.fixed_dictionaries({"type": st.sampled_from([kind, "MultiPolygon", "GeometryCollection", "Nope"]),
                               "coordinates": _JSON_ANY}),
    )


def _feature_collection(kind: str, properties: st.SearchStrategy[dict[str, object]]) -> st.SearchStrategy[bytes]:
    feature = st.fixed_dictionaries({"type": st.just("Feature"), "geometry": _geometry(kind),
                                     "properties": st.one_of(properties, properties, st.none())})
    collection = st.fixed_dictionaries({"type": st.just("FeatureCollection"),
                                        "features": st.lists(feature, max_size=4)})
    return st.one_of(collection.map(lambda c: json.dumps(c).encode()), collection.map(lambda c: json.dumps(c).encode()),
                     _encoded(st.one_of(collection, _JSON_ANY)))


def geojson_files() -> st.SearchStrategy[bytes]:
    """Position GeoJSON files: point features with the position's properties good or bad."""
    props = st.fixed_dictionaries({}, optional={"callsign": _CALLSIGN, "ts": _TIME_TEXT,
                                                "speed_kmh": _json_number(0, 200), "heading": _json_number(0, 360),
                                                "accuracy_m": _json_number(0, 500), "extra": _JSON_ANY})
    return _feature_collection("Point", props)


def zone_files() -> st.SearchStrategy[bytes]:
    """Zone GeoJSON files for the vector reader: polygons with kind and name good or bad."""
    props = st.fixed_dictionaries({}, optional={"kind": st.one_of(
        st.sampled_from(["border_closed", "port_control", "social_surface"]), _TEXT), "name": _TEXT,
        "extra": _JSON_ANY})
    return _feature_collection("Polygon", props)


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


def _write(data: bytes, suffix: str, folder: Path) -> Path:
    path = folder / f"fuzz{suffix}"
    path.write_bytes(data)
    return path


def position_file_verdict(data: bytes, suffix: str, folder: Path) -> list[str]:
    """Each row of a position file loaded or quarantined with a reason (the checks of ``etl positions``
    that need no database), or the whole file refused."""
    entry = FileEntry(_write(data, suffix, folder), "position", callsign="GW1", timezone="Asia/Shanghai")
    try:
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
        read = read_vector(entry, bbox=REGION)
    except InputError as exc:
        if not str(exc):
            raise AssertionError("a file refused without a reason") from None
        return ["file refused"]
    if len(read.accepted) + len(read.rejected) != read.rows_in or (read.reasons == "").any():
        raise AssertionError("a feature is neither accepted nor rejected with a reason")
    return ["loaded"] * len(read.accepted) + ["quarantined"] * len(read.rejected)


# ---------------------------------------------------------------- the benchmark

# Each parser: its inputs, its verdict, and a well-formed input for the baseline.
PARSERS: dict[str, tuple[Callable[[], st.SearchStrategy], Callable[[object, Path], list[str]], object, int]] = {
    "osmand": (osmand_params, lambda v, _: osmand_verdict(v),
               {"id": "P1", "lat": "22.5", "lon": "99.0", "timestamp": str(_NOW_S), "speed": "3.2"}, 24_000),
    "traccar json": (traccar_bodies, lambda v, _: traccar_verdict(v), json.dumps(
        {"device_id": "P1", "location": {"timestamp": _NOW_S, "coords": {"latitude": 22.5, "longitude": 99.0}}}
    ).encode(), 16_000),
    "json batch": (batch_bodies, lambda v, _: batch_verdict(v), json.dumps(
        {"positions": [{"ts": _NOW_S, "lon": 99.0, "lat": 22.5, "callsign": "P1"}] * 2}).encode(), 16_000),
    "cot": (cot_streams, lambda v, _: cot_verdict(v), [(
        f'<event version="2.0" uid="P1" type="a-f-G-U-C" time="{NOW.isoformat()}"><point lat="22.5" lon="99.0" '
        'ce="5" hae="0"/><detail><contact callsign="P1"/></detail></event>').encode()], 24_000),
    "csv file": (csv_files, lambda v, d: position_file_verdict(v, ".csv", d),
                 f"callsign,ts,lon,lat\nP1,{NOW.isoformat()},99.0,22.5\n".encode(), 9_000),
    "gpx file": (gpx_files, lambda v, d: position_file_verdict(v, ".gpx", d), (
        f'<gpx><trk><trkseg><trkpt lat="22.5" lon="99.0"><time>{NOW.isoformat()}</time></trkpt>'
        "</trkseg></trk></gpx>").encode(), 6_000),
    "geojson file": (geojson_files, lambda v, d: position_file_verdict(v, ".geojson", d), json.dumps(
        {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [
            99.0, 22.5]}, "properties": {"callsign": "P1", "ts": NOW.isoformat()}}]}).encode(), 3_000),
    "vector file": (zone_files, lambda v, d: vector_file_verdict(v, d), json.dumps(
        {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
            [[99, 22], [99.1, 22], [99.1, 22.1], [99, 22]]]}, "properties": {"kind": "port_control", "name": "A"}}]}
    ).encode(), 2_000),
}


def fuzz_parser(name: str, count: int, folder: Path) -> tuple[int, list[tuple[object, str]], Counter, float]:
    """Run ``count`` generated inputs through one parser: (inputs tried, crashes as (input, error),
    outcomes, seconds)."""
    strategy, verdict, _, _ = PARSERS[name]
    tried, crashes, outcomes = 0, [], Counter()

    @hypothesis_settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @given(strategy())
    def run(value: object) -> None:
        nonlocal tried
        tried += 1
        try:
            outcomes.update(verdict(value, folder))
        except Exception as exc:  # noqa: BLE001 - a crash is what is counted
            crashes.append((value, f"{type(exc).__name__}: {exc}"[:300]))

    start = time.perf_counter()
    run()
    return tried, crashes, outcomes, time.perf_counter() - start


def _well_formed_rate(name: str, folder: Path, *, seconds: float = 0.5) -> float:
    """Inputs per second of the parser on its well-formed input alone (no generation)."""
    _, verdict, good, _ = PARSERS[name]
    if verdict(good, folder)[0] not in ("fix", "loaded"):
        raise AssertionError(f"the well-formed {name} input is not accepted: {verdict(good, folder)}")
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        verdict(good, folder)
        n += 1
    return n / (time.perf_counter() - start)


def bench_fuzz(settings: Settings, *, scale: str) -> list[Figure]:
    """≥ 100,000 generated inputs across the parsers (a tenth at ``small``): per parser the inputs
    tried, the share that became fixes or loaded rows, crashes and inputs/s; then the totals."""
    share = 0.1 if scale == "small" else 1.0
    figures: list[Figure] = []
    total_tried, total_crashes, total_s = 0, 0, 0.0
    with tempfile.TemporaryDirectory(prefix="gridwatch-fuzz-") as tmp:
        folder = Path(tmp)
        for name, (_, _, _, count) in PARSERS.items():
            tried, crashes, outcomes, seconds = fuzz_parser(name, math.ceil(count * share), folder)
            total_tried, total_crashes, total_s = total_tried + tried, total_crashes + len(crashes), total_s + seconds
            kept = outcomes["fix"] + outcomes["loaded"]
            figures += [
                Figure(f"fuzz {name}: inputs tried", tried, "inputs"),
                Figure(f"fuzz {name}: fixes or loaded rows", 100.0 * kept / max(sum(outcomes.values()), 1), "%"),
                Figure(f"fuzz {name}: crashes", len(crashes), "", goal="<= 0"),
                Figure(f"fuzz {name}: inputs/s", tried / seconds, "/s", baseline=_well_formed_rate(name, folder),
                       baseline_name="well-formed input alone"),
            ]
            for value, error in crashes[:3]:
                print(f"crash in {name}: {error} on {value!r:.300}")
    figures += [
        Figure("fuzz all parsers: inputs tried", total_tried, "inputs", goal=f">= {math.ceil(100_000 * share)}"),
        Figure("fuzz all parsers: crashes", total_crashes, "", goal="<= 0"),
        Figure("fuzz all parsers: inputs/s", total_tried / total_s, "/s"),
    ]
    return figures
