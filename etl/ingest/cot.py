"""Cursor-on-Target XML from TAK clients: framing a TCP stream into events, parsing one event.

Events come back-to-back on a connection, each optionally after an XML
declaration. :class:`CotFramer` cuts the stream at ``</event>`` and refuses an
event over :data:`MAX_EVENT_BYTES` or bytes that are not XML; the connection
is then dropped. :func:`parse_event` parses with defusedxml and no DTD at all
(so neither entity expansion nor external entities are possible) and keeps
only friendly (``a-f-*``) position events.

On the plain CoT port the first event of a connection authenticates it with
``<detail><__auth token=".."/></detail>``; the callsign is
``<detail><contact callsign=".."/>`` or else the event's ``uid``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from gridwatch.etl.ingest._fix import Fix, FixError, check_callsign, parse_number, parse_time

__all__ = ["MAX_EVENT_BYTES", "CotStreamError", "CotFramer", "CotEvent", "parse_event"]

MAX_EVENT_BYTES = 64 * 1024
_END = b"</event>"
# CoT's "unknown" for ce, le and hae.
_UNKNOWN = 9_999_999.0
_MPS_KMH = 3.6


class CotStreamError(Exception):
    """The stream cannot go on; ``key`` is what is counted (oversize, garbage, hostile xml, malformed xml)."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key


class CotFramer:
    """Cut a byte stream into whole ``<event>`` documents, at most ``max_bytes`` each."""

    def __init__(self, *, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the events they completed. Raises :class:`CotStreamError`."""
        self._buffer += data
        events: list[bytes] = []
        while True:
            start = len(self._buffer) - len(self._buffer.lstrip())
            if start:
                del self._buffer[:start]
            if not self._buffer:
                return events
            if self._buffer[:1] != b"<":
                raise CotStreamError("garbage", f"stream does not start with XML ({bytes(self._buffer[:16])!r})")
            end = self._buffer.find(_END, 0, self.max_bytes + len(_END))
            if end < 0:
                if len(self._buffer) > self.max_bytes:
                    raise CotStreamError("oversize", f"an event is larger than {self.max_bytes} bytes")
                return events
            cut = end + len(_END)
            events.append(bytes(self._buffer[:cut]))
            del self._buffer[:cut]


@dataclass(frozen=True, slots=True)
class CotEvent:
    """A parsed event: its type, its fix (only for friendly positions) and the auth token if any."""

    type: str
    callsign: str
    fix: Fix | None
    token: str | None


def parse_event(document: bytes) -> CotEvent:
    """Parse one event document.

    Raises :class:`CotStreamError` for XML that is hostile or not well formed
    (the connection is then dropped) and :class:`FixError` for a friendly
    position event whose values are unusable (that event alone is refused).
    """
    try:
        root = DET.fromstring(document, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise CotStreamError("hostile xml", type(exc).__name__) from None
    except ParseError as exc:
        raise CotStreamError("malformed xml", str(exc)) from None
    except (LookupError, ValueError) as exc:  # the XML declaration names an encoding expat cannot read
        raise CotStreamError("malformed xml", f"the encoding cannot be read ({exc})") from None
    if root.tag != "event":
        raise CotStreamError("malformed xml", f"root element is <{root.tag}>, not <event>")
    kind = root.get("type", "")
    detail = root.find("detail")
    auth = detail.find("__auth") if detail is not None else None
    contact = detail.find("contact") if detail is not None else None
    callsign = (contact.get("callsign") if contact is not None else None) or root.get("uid")
    token = auth.get("token") if auth is not None else None
    if not kind.startswith("a-f-"):
        return CotEvent(kind, callsign or "", None, token)
    return CotEvent(kind, check_callsign(callsign), _fix(root, detail, check_callsign(callsign)), token)


def _fix(root: Element, detail: Element | None, callsign: str) -> Fix:
    point = root.find("point")
    if point is None:
        raise FixError("event has no <point>", key="missing field")
    track = detail.find("track") if detail is not None else None
    speed = parse_number("speed", track.get("speed")) if track is not None else math.nan
    course = parse_number("course", track.get("course")) if track is not None else math.nan
    ce = parse_number("ce", point.get("ce"))
    return Fix(
        callsign=callsign,
        ts=parse_time(root.get("time") or root.get("start"), naive_is_utc=False),
        lon=parse_number("lon", point.get("lon"), required=True),
        lat=parse_number("lat", point.get("lat"), required=True),
        speed_kmh=speed * _MPS_KMH if speed >= 0 else math.nan,
        heading=course if course >= 0 else math.nan,
        accuracy_m=math.nan if ce >= _UNKNOWN else ce,
        source="cot",
    )
