"""JSON batches from gateways and buffering phones: ``POST /api/positions``.

The body is ``{"positions": [{"callsign": .., "ts": .., "lon": .., "lat": ..,
"speed_kmh": .., "heading": .., "accuracy_m": ..}, ...]}``; ``ts`` is Unix
seconds (or ms) or ISO 8601 with an offset. A fix without a callsign is the
authenticated device's own. A gateway relaying several units gives each fix
its unit's ``token``; a fix without one uses the ``Authorization: Bearer``
token of the request. Each fix is parsed on its own, so one bad fix
refuses only itself. The body is at most
:data:`gridwatch.etl.ingest._fix.MAX_BODY_BYTES` and nested at most
:data:`gridwatch.etl.ingest._fix.MAX_JSON_DEPTH` deep.
"""
from __future__ import annotations

from dataclasses import dataclass

from gridwatch.etl.ingest._fix import Fix, FixError, check_callsign, check_token, load_json, parse_number, parse_time

__all__ = ["MAX_BATCH_FIXES", "BatchItem", "parse_batch"]

MAX_BATCH_FIXES = 10_000


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One parsed fix of a batch and the token it carries (None: the request's)."""

    fix: Fix
    token: str | None


def parse_batch(body: bytes, *, default_callsign: str | None = None) -> list[BatchItem | FixError]:
    """The batch's fixes in order, each parsed or the reason it was refused.

    Raises :class:`FixError` when the body as a whole is unusable.
    """
    data = load_json(body)
    positions = data.get("positions") if isinstance(data, dict) else None
    if not isinstance(positions, list):
        raise FixError('body must be {"positions": [ ... ]}', key="bad json")
    if len(positions) > MAX_BATCH_FIXES:
        raise FixError(f"{len(positions)} positions in one batch; at most {MAX_BATCH_FIXES}", key="too large")
    return [_one(item, default_callsign) for item in positions]


def _one(item: object, default_callsign: str | None) -> BatchItem | FixError:
    if not isinstance(item, dict):
        return FixError("a position must be a JSON object", key="bad json")
    try:
        token = check_token(item.get("token"))
        fix = Fix(
            callsign=check_callsign(item.get("callsign", default_callsign)),
            ts=parse_time(item.get("ts"), naive_is_utc=False),
            lon=parse_number("lon", item.get("lon"), required=True),
            lat=parse_number("lat", item.get("lat"), required=True),
            speed_kmh=parse_number("speed_kmh", item.get("speed_kmh")),
            heading=parse_number("heading", item.get("heading")),
            accuracy_m=parse_number("accuracy_m", item.get("accuracy_m")),
            source="json",
        )
    except FixError as exc:
        return exc
    return BatchItem(fix, token)
