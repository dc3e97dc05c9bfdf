"""The common fix record every protocol parses to, and the checks made before a fix is spooled.

These are the checks a tracking server makes at the door (coordinates, time,
accuracy), so that what is acknowledged can be stored; the ones that need the
database (unknown unit, implied speed) are made by
:mod:`gridwatch.etl.ingest.writer`. JSON bodies of every route are read by
:func:`load_json`, which refuses a body too large or nested too deep before
parsing it.
"""
from __future__ import annotations

import codecs
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from gridwatch.errors import InputError
from gridwatch.settings import Settings

__all__ = [
    "Fix", "FixError", "SOURCES", "check_fix", "parse_time", "parse_number", "KNOT_KMH", "MAX_CALLSIGN_BYTES",
    "check_callsign", "check_token", "MAX_BODY_BYTES", "MAX_JSON_DEPTH", "load_json",
]

SOURCES = ("osmand", "cot", "json")
KNOT_KMH = 1.852
MAX_CALLSIGN_BYTES = 32
MAX_BODY_BYTES = 2 * 1024 * 1024
# A batch is {"positions": [{...}]} and Traccar's body {"location": {"coords": {...}}}: a few levels.
MAX_JSON_DEPTH = 16
# Unix times above this are milliseconds (1e11 s is in the year 5138).
_MS_THRESHOLD = 1e11


class FixError(InputError):
    """A fix (or request) refused at the door: the message is sent back, ``key`` is what is counted."""

    def __init__(self, message: str, *, key: str = "malformed") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Fix:
    """One position report: who, when (UTC), where, and how it moved; NaN where not given."""

    callsign: str
    ts: datetime
    lon: float
    lat: float
    speed_kmh: float = math.nan
    heading: float = math.nan
    accuracy_m: float = math.nan
    source: str = "json"


def parse_number(name: str, value: object, *, required: bool = False) -> float:
    """A finite number from text or JSON; NaN when absent and optional."""
    if value is None or value == "":
        if required:
            raise FixError(f"missing {name}", key="missing field")
        return math.nan
    if isinstance(value, bool):
        raise FixError(f"{name} must be a number, not {value!r}", key="not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise FixError(f"{name} must be a number, not {str(value)[:40]!r}", key="not a number") from None
    if not math.isfinite(number):
        raise FixError(f"{name} must be a finite number, not {value!r}", key="not a number")
    return number


def parse_time(value: object, *, naive_is_utc: bool) -> datetime:
    """A UTC time from Unix seconds or milliseconds, or ISO 8601.

    An ISO time without an offset is UTC when the protocol says so
    (``naive_is_utc``, as OsmAnd does) and refused otherwise.
    """
    if value is None or value == "":
        raise FixError("missing timestamp", key="missing field")
    if isinstance(value, (int, float)) and not isinstance(value, bool) or (
        isinstance(value, str) and value.strip().replace(".", "", 1).isdigit()
    ):
        try:
            seconds = float(value)
            if seconds > _MS_THRESHOLD:
                seconds /= 1000.0
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise FixError(f"timestamp {value!r} is out of range", key="bad time") from None
    if not isinstance(value, str):
        raise FixError(f"timestamp must be Unix seconds or ISO 8601, not {value!r}", key="bad time")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FixError(f"timestamp {value[:40]!r} is neither Unix seconds nor ISO 8601", key="bad time") from None
    if moment.tzinfo is None:
        if not naive_is_utc:
            raise FixError(
                f"timestamp {value[:40]!r} has no time zone: add 'Z' or an offset such as +08:00", key="bad time"
            )
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise FixError(f"timestamp {value[:40]!r} is out of range", key="bad time") from None


def check_callsign(callsign: object) -> str:
    """A callsign as text, at most :data:`MAX_CALLSIGN_BYTES` bytes of UTF-8."""
    if not isinstance(callsign, str) or not callsign.strip():
        raise FixError("missing callsign (device id)", key="missing field")
    callsign = callsign.strip()
    if len(_utf8(callsign, "callsign", key="bad callsign")) > MAX_CALLSIGN_BYTES:
        raise FixError(f"callsign {callsign[:40]!r} is longer than {MAX_CALLSIGN_BYTES} bytes", key="bad callsign")
    return callsign


def check_token(token: object) -> str | None:
    """A device token as text, or None when absent (or not text); refused when it is no UTF-8 text
    (a lone surrogate from a JSON escape such as ``"\\ud800"``), which could be neither hashed nor compared."""
    if not isinstance(token, str) or not token:
        return None
    _utf8(token, "token", key="bad token")
    return token


def _utf8(text: str, name: str, *, key: str) -> bytes:
    """``text`` in UTF-8; FixError when it holds a lone surrogate (JSON's ``"\\ud800"`` gives one)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FixError(f"{name} holds {text[exc.start]!r}, a lone surrogate and no character", key=key) from None


def check_fix(fix: Fix, *, now: datetime, settings: Settings) -> Fix:
    """Return the fix when it may be spooled, else raise :class:`FixError` naming the reason."""
    if not (-180.0 <= fix.lon <= 180.0 and -90.0 <= fix.lat <= 90.0):
        raise FixError(f"coordinates out of range: lon {fix.lon:g}, lat {fix.lat:g}", key="coordinates out of range")
    if fix.lon == 0.0 and fix.lat == 0.0:
        raise FixError("coordinates at (0, 0)", key="coordinates at (0, 0)")
    if fix.ts > now + timedelta(seconds=settings.future_tolerance_s):
        raise FixError(
            f"time in the future: {fix.ts.isoformat()} is more than {settings.future_tolerance_s:g} s after now",
            key="time in the future",
        )
    if fix.ts < now - timedelta(seconds=settings.ingest_max_age_s):
        raise FixError(
            f"time too old: {fix.ts.isoformat()} is more than {settings.ingest_max_age_s:g} s before now "
            "(is the device's clock set?)",
            key="time too old",
        )
    if fix.accuracy_m < 0 or fix.accuracy_m > settings.max_accuracy_m:
        raise FixError(f"accuracy {fix.accuracy_m:g} m is outside 0..{settings.max_accuracy_m:g} m", key="bad accuracy")
    if fix.speed_kmh < 0:
        raise FixError(f"speed {fix.speed_kmh:g} is negative", key="bad speed")
    if not 0.0 <= fix.heading <= 360.0 and not math.isnan(fix.heading):
        raise FixError(f"heading {fix.heading:g} is outside 0..360", key="bad heading")
    return fix



def load_json(body: bytes) -> object:
    """Parse a JSON request body of at most :data:`MAX_BODY_BYTES` of UTF-8 (a byte-order mark allowed),
    nested at most :data:`MAX_JSON_DEPTH` deep; raise :class:`FixError` (``too large``, ``too deep``,
    ``bad json``) otherwise.

    Only UTF-8 is read (as RFC 8259 asks), and it is checked before the depth is counted: in UTF-8
    every byte below 0x80 is its ASCII character, so the brackets and quotes counted are the real
    ones. ``json.loads`` would also take UTF-16 and UTF-32, where a character such as U+2200 holds
    the byte of a quote, hides the brackets after it from the count, and a deep enough body
    overflowed the parser's recursion (a RecursionError, not a 4xx).
    """
    if len(body) > MAX_BODY_BYTES:
        raise FixError(f"body is larger than {MAX_BODY_BYTES} bytes: send smaller batches", key="too large")
    body = body.removeprefix(codecs.BOM_UTF8)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FixError(f"body is not JSON in UTF-8 (byte {exc.start} is {body[exc.start:exc.start + 1]!r}): "
                       "send it in UTF-8", key="bad json") from None
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise FixError(f"body is nested {depth} deep; at most {MAX_JSON_DEPTH}", key="too deep")
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4,300 digits
        raise FixError(f"body is not JSON ({' '.join(str(exc).split())[:200]})", key="bad json") from None
    except RecursionError:  # not reached while the depth above is counted right; a 4xx all the same
        raise FixError(f"body is nested deeper than {MAX_JSON_DEPTH}", key="too deep") from None


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count),
    found on the whole text at once, before any of it is parsed."""
    text = np.frombuffer(body, dtype=np.uint8)
    quotes = np.flatnonzero(text == ord('"'))
    if quotes.size and (text[quotes[quotes > 0] - 1] == ord("\\")).any():
        # A quote is escaped when an odd run of backslashes stands right before it.
        index = np.arange(text.size)
        last_other = np.maximum.accumulate(np.where(text == ord("\\"), -1, index))
        run = np.where(quotes > 0, quotes - 1 - last_other[np.maximum(quotes - 1, 0)], 0)
        quotes = quotes[run % 2 == 0]
    opening, closing = (text == ord("[")) | (text == ord("{")), (text == ord("]")) | (text == ord("}"))
    brackets = np.flatnonzero(opening | closing)
    outside = np.searchsorted(quotes, brackets) % 2 == 0
    step = np.where(opening[brackets], 1, -1)[outside]
    return int(np.cumsum(step).max(initial=0))
