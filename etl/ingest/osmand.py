"""The OsmAnd protocol (what Traccar Client and OsmAnd phone apps speak), parsed to a :class:`Fix`.

Two forms reach the same port:

* a GET, or a form POST, with ``id``, ``lat``, ``lon``, ``timestamp`` (Unix
  seconds or ms, or ISO 8601 in UTC), ``speed`` (knots), ``bearing``,
  ``altitude``, ``accuracy``, ``batt``; ``location=lat,lon`` may stand for
  ``lat`` and ``lon``; ``deviceid`` for ``id``, ``heading`` for ``bearing``;
* Traccar Client's JSON POST:
  ``{"device_id": .., "location": {"timestamp": .., "coords": {"latitude": ..,
  "longitude": .., "speed": (m/s), "heading": .., "accuracy": ..}}}``.

The device's token comes in ``token`` (or an ``Authorization: Bearer`` header,
read by the server).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gridwatch.etl.ingest._fix import (
    KNOT_KMH,
    Fix,
    FixError,
    check_callsign,
    check_token,
    load_json,
    parse_number,
    parse_time,
)

__all__ = ["OsmandReport", "parse_osmand_query", "parse_traccar_json"]

_MPS_KMH = 3.6


@dataclass(frozen=True, slots=True)
class OsmandReport:
    """A parsed report: the fix and the token that came with it (if any)."""

    fix: Fix
    token: str | None


def parse_osmand_query(params: Mapping[str, str]) -> OsmandReport:
    """Parse OsmAnd query or form parameters; raise :class:`FixError` with the reason."""
    callsign = check_callsign(params.get("id") or params.get("deviceid"))
    if params.get("location") and not (params.get("lat") or params.get("lon")):
        parts = params["location"].split(",")
        if len(parts) != 2:
            raise FixError(f"location {params['location'][:40]!r} is not 'lat,lon'", key="not a number")
        lat_text, lon_text = parts
    else:
        lat_text, lon_text = params.get("lat"), params.get("lon")
    fix = Fix(
        callsign=callsign,
        ts=parse_time(params.get("timestamp"), naive_is_utc=True),
        lon=parse_number("lon", lon_text, required=True),
        lat=parse_number("lat", lat_text, required=True),
        speed_kmh=parse_number("speed", params.get("speed")) * KNOT_KMH,
        heading=parse_number("bearing", params.get("bearing") or params.get("heading")),
        accuracy_m=parse_number("accuracy", params.get("accuracy")),
        source="osmand",
    )
    for name in ("altitude", "batt", "hdop"):
        parse_number(name, params.get(name))
    return OsmandReport(fix, check_token(params.get("token")))


def parse_traccar_json(body: bytes) -> OsmandReport:
    """Parse Traccar Client's JSON POST body (speed in m/s)."""
    data = load_json(body)
    location = data.get("location") if isinstance(data, dict) else None
    coords = location.get("coords") if isinstance(location, dict) else None
    if not isinstance(coords, dict):
        raise FixError("JSON body has no location.coords object", key="bad json")
    fix = Fix(
        callsign=check_callsign(data.get("device_id")),
        ts=parse_time(location.get("timestamp"), naive_is_utc=True),
        lon=parse_number("longitude", coords.get("longitude"), required=True),
        lat=parse_number("latitude", coords.get("latitude"), required=True),
        speed_kmh=_non_negative_or_nan(parse_number("speed", coords.get("speed"))) * _MPS_KMH,
        heading=_non_negative_or_nan(parse_number("heading", coords.get("heading"))),
        accuracy_m=parse_number("accuracy", coords.get("accuracy")),
        source="osmand",
    )
    return OsmandReport(fix, check_token(data.get("token")))


def _non_negative_or_nan(value: float) -> float:
    """Phone location APIs send -1 for 'unknown' speed and heading."""
    return value if value >= 0 else float("nan")
