"""The live feed simulator: units reporting to ``gridwatch ingest`` as real clients would.

It replays the positions of a sample folder (written by
:func:`gridwatch.data.generate_sample`) or tracks it invents (units on random headings
inside a bbox), at a speed factor, over OsmAnd (one HTTP GET per fix, as
Traccar Client does), Cursor-on-Target (one TCP connection per unit, as a TAK
client) or JSON batches (one POST per tick, as a gateway), each unit with its
own device token.

Times: the replay keeps the data's spacing, so implied speeds stay real, and
is shifted so that no fix is stamped later than the moment it is sent: at 1x
it starts now; at 10x its last fix is stamped "now" when it is sent. It stops
after ``duration_s`` or at the end of the data.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

import aiohttp
import numpy as np
import pandas as pd

__all__ = [
    "PROTOCOLS", "SimulationReport", "load_tracks", "invent_tracks", "schedule", "simulate",
    "parse_speed",
]

PROTOCOLS = ("osmand", "cot", "json")
TRACK_COLUMNS = ("callsign", "t", "lon", "lat", "speed_kmh", "heading", "accuracy_m")
_KNOT_KMH = 1.852
_JSON_CHUNK = 1000
_TICK_S = 0.05
_STALE_S = 300.0


@dataclass
class SimulationReport:
    """What was sent and what the service answered (HTTP status, or ``sent`` for CoT)."""

    sent: int = 0
    acknowledged: int = 0
    refused: Counter = field(default_factory=Counter)
    errors: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(self.refused.items())) or "none"
        return (f"sent {self.sent:,} fixes in {self.seconds:.1f} s, acknowledged {self.acknowledged:,}, "
                f"refused {refused}, connection errors {self.errors}")


def parse_speed(text: str) -> float:
    """A speed factor from ``10x``, ``10`` or ``0.5x``."""
    try:
        value = float(str(text).lower().removesuffix("x"))
    except ValueError:
        raise ValueError(f"speed {text!r} is not a factor such as 10x") from None
    if value <= 0:
        raise ValueError(f"speed {text!r} must be above 0")
    return value


def load_tracks(folder: Path) -> pd.DataFrame:
    """The position CSV files of a sample folder as tracks (``t`` in Unix seconds), sorted by time."""
    from gridwatch.etl._feeds import parse_numbers, parse_times
    from gridwatch.etl.manifest import read_manifest
    from gridwatch.etl.positions import read_position_file

    manifest = read_manifest(folder)
    frames = []
    for entry in manifest.for_target("position"):
        if entry.format != "csv":
            continue
        fields, _ = read_position_file(entry)
        ts = parse_times(fields["ts"], entry.timezone or manifest.timezone)
        frame = pd.DataFrame({"callsign": fields["callsign"], "t": ts.astype("int64") / 1e6})
        for name, column in (("lon", "lon"), ("lat", "lat"), ("speed_kmh", "speed_kmh"),
                             ("heading", "heading"), ("accuracy_m", "accuracy_m")):
            frame[name] = parse_numbers(fields[column])[0]
        frames.append(frame[ts.notna().to_numpy()])
    if not frames:
        raise ValueError(f"{folder}: the manifest lists no position CSV file")
    return pd.concat(frames, ignore_index=True).sort_values("t", kind="stable").reset_index(drop=True)


def invent_tracks(
    *, units: int = 20, bbox: tuple[float, float, float, float] = (100.0, 22.0, 100.2, 22.2),
    span_s: float = 3600.0, interval_s: float = 10.0, speed_kmh: float = 30.0, seed: int = 1, prefix: str = "SIM",
) -> pd.DataFrame:
    """Units moving on random headings inside ``bbox`` (bouncing off its edges), one fix each ``interval_s``."""
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = bbox
    steps = int(span_s // interval_s) + 1
    x = rng.uniform(minx, maxx, units)
    y = rng.uniform(miny, maxy, units)
    heading = (rng.uniform(0, 360, units) + rng.normal(0, 15, (steps, units)).cumsum(axis=0)) % 360
    metres = speed_kmh / 3.6 * interval_s
    xs, ys = np.empty((steps, units)), np.empty((steps, units))
    for step in range(steps):  # a loop over time steps, each vectorized over the units
        rad = np.radians(heading[step])
        x = x + metres * np.sin(rad) / (111_320.0 * np.cos(np.radians(y)))
        y = y + metres * np.cos(rad) / 110_540.0
        x = np.where(x < minx, 2 * minx - x, np.where(x > maxx, 2 * maxx - x, x))
        y = np.where(y < miny, 2 * miny - y, np.where(y > maxy, 2 * maxy - y, y))
        xs[step], ys[step] = x, y
    t = np.repeat(np.arange(steps) * interval_s, units) + rng.uniform(0, min(interval_s, 2.0), steps * units)
    return pd.DataFrame({
        "callsign": np.tile([f"{prefix}-{i + 1:03d}" for i in range(units)], steps),
        "t": t, "lon": xs.ravel(), "lat": ys.ravel(), "speed_kmh": speed_kmh,
        "heading": heading.ravel(), "accuracy_m": rng.uniform(3, 20, steps * units),
    }).sort_values("t", kind="stable").reset_index(drop=True)


def schedule(tracks: pd.DataFrame, *, speed: float, duration_s: float | None, wall_start: float) -> pd.DataFrame:
    """The fixes to send: ``send_at`` (seconds after the start) and the stamped ``t``, see the module note."""
    t0 = float(tracks["t"].iloc[0])
    send_at = (tracks["t"].to_numpy() - t0) / speed
    span = float(send_at[-1])
    length = span if duration_s is None else min(span, duration_s)
    keep = send_at <= length
    shift = (wall_start + length) - (t0 + speed * length)
    out = tracks[keep].copy()
    out["send_at"] = send_at[keep]
    out["t"] = out["t"] + shift
    return out.reset_index(drop=True)


async def simulate(
    tracks: pd.DataFrame, *, protocol: str, url: str, tokens: dict[str, str], speed: float = 1.0,
    duration_s: float | None = None, concurrency: int = 16,
) -> SimulationReport:
    """Send the tracks to the ingest service at ``url`` (http://host:port or tcp://host:port for CoT)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol was {protocol!r} but is expected to be in {list(PROTOCOLS)}")
    missing = sorted(set(tracks["callsign"]) - set(tokens))
    if missing:
        raise ValueError(f"no device token for {missing[:5]}: run with --provision or give --tokens")
    plan = schedule(tracks, speed=speed, duration_s=duration_s, wall_start=time.time())
    report = SimulationReport()
    sender = _CotSender(url, tokens) if protocol == "cot" else _HttpSender(url, tokens, protocol, concurrency)
    started = time.monotonic()
    send_at = plan["send_at"].to_numpy()
    done = 0
    try:
        while done < len(plan):
            due = int(np.searchsorted(send_at, time.monotonic() - started, side="right"))
            if due > done:
                await sender.send(plan.iloc[done:due], report)
                done = due
            else:
                await asyncio.sleep(min(_TICK_S, max(0.0, send_at[done] - (time.monotonic() - started))))
    finally:
        await sender.close()
    report.seconds = time.monotonic() - started
    return report


def _iso(t: np.ndarray) -> list[str]:
    return pd.to_datetime(t, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%S.%fZ").tolist()


def _maybe(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 3)


class _HttpSender:
    """OsmAnd GETs (one per fix, keep-alive, bounded concurrency) or JSON batches (one POST per tick)."""

    def __init__(self, url: str, tokens: dict[str, str], protocol: str, concurrency: int) -> None:
        self.url = url.rstrip("/")
        self.tokens = tokens
        self.protocol = protocol
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                             timeout=aiohttp.ClientTimeout(total=30))
        self.gate = asyncio.Semaphore(concurrency)

    async def send(self, rows: pd.DataFrame, report: SimulationReport) -> None:
        if self.protocol == "json":
            await asyncio.gather(*(self._batch(rows.iloc[i:i + _JSON_CHUNK], report)
                                   for i in range(0, len(rows), _JSON_CHUNK)))
        else:
            await asyncio.gather(*(self._osmand(row, report) for row in rows.itertuples(index=False)))

    async def _osmand(self, row, report: SimulationReport) -> None:
        params = {"id": row.callsign, "lat": f"{row.lat:.7f}", "lon": f"{row.lon:.7f}",
                  "timestamp": f"{row.t:.3f}", "token": self.tokens[row.callsign]}
        for name, value in (("speed", row.speed_kmh / _KNOT_KMH), ("bearing", row.heading),
                            ("accuracy", row.accuracy_m)):
            if not np.isnan(value):
                params[name] = f"{value:.2f}"
        async with self.gate:
            await self._request("GET", f"{self.url}/", report, 1, params=params)

    async def _batch(self, rows: pd.DataFrame, report: SimulationReport) -> None:
        positions = [
            {"callsign": c, "token": self.tokens[c], "ts": ts, "lon": x, "lat": y,
             "speed_kmh": _maybe(s), "heading": _maybe(h), "accuracy_m": _maybe(a)}
            for c, ts, x, y, s, h, a in zip(rows["callsign"], _iso(rows["t"].to_numpy()), rows["lon"], rows["lat"],
                                            rows["speed_kmh"], rows["heading"], rows["accuracy_m"])
        ]
        async with self.gate:
            await self._request("POST", f"{self.url}/api/positions", report, len(positions),
                                json={"positions": positions})

    async def _request(self, method: str, url: str, report: SimulationReport, n: int, **kwargs) -> None:
        report.sent += n
        try:
            async with self.session.request(method, url, **kwargs) as response:
                if self.protocol == "json" and response.status in (200, 400, 401, 403, 429):
                    body = await response.json()
                    report.acknowledged += body.get("accepted", 0)
                    report.refused.update(str(r["status"]) for r in body.get("rejected", []))
                elif response.status == 200:
                    report.acknowledged += n
                else:
                    report.refused[str(response.status)] += n
        except (aiohttp.ClientError, asyncio.TimeoutError):
            report.errors += 1

    async def close(self) -> None:
        await self.session.close()


class _CotSender:
    """One TCP connection per unit, as each TAK client holds its own; the first event carries the token."""

    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "tcp" or not parts.hostname or not parts.port:
            raise ValueError(f"CoT url {url!r} must look like tcp://127.0.0.1:8087")
        self.host, self.port = parts.hostname, parts.port
        self.tokens = tokens
        self.streams: dict[str, asyncio.StreamWriter] = {}

    async def send(self, rows: pd.DataFrame, report: SimulationReport) -> None:
        stamps, stales = _iso(rows["t"].to_numpy()), _iso(rows["t"].to_numpy() + _STALE_S)
        for row, stamp, stale in zip(rows.itertuples(index=False), stamps, stales):
            report.sent += 1
            try:
                stream = self.streams.get(row.callsign)
                first = stream is None
                if first:
                    _, stream = await asyncio.open_connection(self.host, self.port)
                    self.streams[row.callsign] = stream
                stream.write(cot_event(row, stamp, stale, token=self.tokens[row.callsign] if first else None))
                await stream.drain()
                report.acknowledged += 1
            except OSError:
                report.errors += 1
                self.streams.pop(row.callsign, None)

    async def close(self) -> None:
        for stream in self.streams.values():
            stream.close()


def cot_event(row, stamp: str, stale: str, *, token: str | None) -> bytes:
    """One friendly ground unit's position as CoT XML (speed in m/s)."""
    auth = f"<__auth token={quoteattr(token)}/>" if token else ""
    ce = "9999999.0" if np.isnan(row.accuracy_m) else f"{row.accuracy_m:.1f}"
    track = ""
    if not np.isnan(row.speed_kmh) and not np.isnan(row.heading):
        track = f'<track course="{row.heading:.1f}" speed="{row.speed_kmh / 3.6:.2f}"/>'
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<event version="2.0" uid={quoteattr(row.callsign)} '
        f'type="a-f-G-U-C" time="{stamp}" start="{stamp}" stale="{stale}" how="m-g">'
        f'<point lat="{row.lat:.7f}" lon="{row.lon:.7f}" hae="9999999.0" ce="{ce}" le="9999999.0"/>'
        f"<detail>{auth}<contact callsign={quoteattr(row.callsign)}/>{track}</detail></event>\n"
    ).encode("utf-8")
