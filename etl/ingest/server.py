"""The live ingest service: OsmAnd and JSON over HTTP, Cursor-on-Target over TCP, in one asyncio process.

Every fix is authenticated (device token), checked (coordinates, time,
accuracy), rate-limited per device, and acknowledged only once it is in the
durable spool; a :class:`gridwatch.etl.ingest.writer.SpoolWriter` thread drains the
spool into the database. The service keeps accepting while the database is
down. ``GET /api/ingest/stats`` shows the counters. SIGTERM or SIGINT stops
it gracefully: no new requests, the spool committed, the writer given a few
seconds to catch up.

HTTP routes: ``GET|POST /`` (OsmAnd, Traccar Client), ``POST /api/positions``
(JSON batch), ``GET /api/ingest/stats``.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psycopg
from aiohttp import web

from gridwatch.errors import GridwatchError
from gridwatch.etl.database import database_url
from gridwatch.etl.ingest._fix import Fix, FixError, check_fix
from gridwatch.etl.ingest.batch import MAX_BATCH_BYTES, parse_batch
from gridwatch.etl.ingest.cot import CotFramer, CotStreamError, parse_event
from gridwatch.etl.ingest.devices import DeviceRegistry, RateLimiter, load_devices
from gridwatch.etl.ingest.osmand import parse_osmand_query, parse_traccar_json
from gridwatch.etl.ingest.spool import Spool, now_us, pack_rows
from gridwatch.etl.ingest.upkeep import Upkeep
from gridwatch.etl.ingest.writer import SpoolWriter
from gridwatch.settings import Settings

__all__ = ["IngestOptions", "IngestService", "serve", "run_ingest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOptions:
    """Where the service listens and how it limits devices."""

    host: str = "127.0.0.1"
    http_port: int = 5055
    cot_port: int = 8087
    rate: float = 20.0
    burst: float = 100.0
    device_refresh_s: float = 5.0
    device_miss_refresh_s: float = 0.25
    writer_interval_s: float = 0.2
    cot_idle_s: float = 600.0
    drain_s: float = 5.0


@dataclass
class Counters:
    """What the doors saw since the service started."""

    accepted: int = 0
    spooled: int = 0
    rejected: Counter = field(default_factory=Counter)
    unauthorized: int = 0
    rate_limited: int = 0
    cot_connections: int = 0
    cot_dropped: Counter = field(default_factory=Counter)
    cot_ignored: int = 0


class _Refused(Exception):
    """A whole request refused: HTTP status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class IngestService:
    """The service's parts: spool, writer, devices, limits, counters, and the handlers."""

    def __init__(self, settings: Settings, url_of: Callable[[], str], options: IngestOptions = IngestOptions()) -> None:
        self.settings = settings
        self.url_of = url_of
        self.options = options
        spool_dir = settings.home_dir / "spool"
        self.spool = Spool(spool_dir)
        self.devices = DeviceRegistry(spool_dir / "devices.json")
        self.limiter = RateLimiter(rate=options.rate, burst=options.burst)
        self.counters = Counters()
        self.writer: SpoolWriter | None = None
        self.upkeep: Upkeep | None = None
        self._runner: web.AppRunner | None = None
        self._cot: asyncio.Server | None = None
        self._refresh: asyncio.Task | None = None
        self._refreshed_at = 0.0
        self._refreshing: asyncio.Future | None = None

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        """Open the spool, start the writer, load devices, and listen."""
        self.spool.open()
        if self.spool.torn_bytes:
            log.warning("spool: cut off a torn last record (%d bytes, never acknowledged)", self.spool.torn_bytes)
        await self.spool.start()
        self.writer = SpoolWriter(self.spool, self.url_of, settings=self.settings,
                                  interval_s=self.options.writer_interval_s)
        self.writer.start()
        self.upkeep = Upkeep(self.url_of, settings=self.settings)
        self.upkeep.start()
        self.devices.load_snapshot()
        await self._refresh_devices()
        self._refresh = asyncio.create_task(self._refresh_loop(), name="device-refresh")
        app = web.Application(client_max_size=MAX_BATCH_BYTES)
        app.router.add_route("GET", "/", self.handle_osmand)
        app.router.add_route("POST", "/", self.handle_osmand)
        app.router.add_post("/api/positions", self.handle_batch)
        app.router.add_get("/api/ingest/stats", self.handle_stats)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.options.host, self.options.http_port).start()
        self._cot = await asyncio.start_server(self.handle_cot, self.options.host, self.options.cot_port)

    async def stop(self) -> None:
        """Stop listening, commit the spool, give the writer ``drain_s`` to catch up."""
        if self._refresh is not None:
            self._refresh.cancel()
        if self._cot is not None:
            self._cot.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.spool.close()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.stop, drain_s=self.options.drain_s)
        if self.upkeep is not None:
            await asyncio.to_thread(self.upkeep.stop)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.device_refresh_s)
            await self._refresh_devices()

    async def _refresh_devices(self) -> None:
        """Take the device table when the database answers; keep the last copy when it does not."""
        self._refreshed_at = asyncio.get_running_loop().time()
        def fetch() -> dict[str, str]:
            with psycopg.connect(self.url_of(), connect_timeout=2) as conn:
                return load_devices(conn)
        try:
            self.devices.replace(await asyncio.to_thread(fetch))
        except (psycopg.Error, GridwatchError) as exc:
            log.debug("device refresh skipped: %s", exc)

    # -- the common path --------------------------------------------------------
    async def _authenticate(self, callsign: str, token: str | None) -> bool:
        """Check a device's token. On a miss, wait for a read of the device table that began after
        the request came (reads on misses at most every ``device_miss_refresh_s``), so a device
        added a moment ago is let in, and a flood of bad tokens is slowed down, not served at once."""
        if self.devices.check(callsign, token):
            return True
        if not token:
            return False
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        while self._refreshed_at < arrived:
            if self._refreshing is None or self._refreshing.done():
                wait = self._refreshed_at + self.options.device_miss_refresh_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                self._refreshing = asyncio.ensure_future(self._refresh_devices())
            await asyncio.shield(self._refreshing)
        return self.devices.check(callsign, token)

    async def _check(self, fix: Fix, token: str | None, now: datetime, *, authenticated: bool = False) -> None:
        """Authenticate (unless the connection is), validate and rate-limit one fix; raise :class:`_Refused`."""
        if not authenticated and not await self._authenticate(fix.callsign, token):
            self.counters.unauthorized += 1
            raise _Refused(401 if not token else 403, "unknown device or wrong token" if token else "missing token")
        try:
            check_fix(fix, now=now, settings=self.settings)
        except FixError as exc:
            self.counters.rejected[exc.key] += 1
            raise _Refused(400, str(exc)) from None
        if self.limiter.take(fix.callsign) < 1:
            self.counters.rate_limited += 1
            raise _Refused(429, f"rate limit of {self.options.rate:g} fixes/s (burst {self.options.burst:g}) exceeded")

    async def _spool(self, fixes: Sequence[Fix], received_us: int) -> None:
        """Make the fixes durable; only then may they be acknowledged."""
        self.counters.accepted += len(fixes)
        await self.spool.append(pack_rows(fixes, received_us=received_us))
        self.counters.spooled += len(fixes)

    # -- HTTP -------------------------------------------------------------------
    async def handle_osmand(self, request: web.Request) -> web.Response:
        """OsmAnd / Traccar Client: 200 once spooled, else 4xx with the reason."""
        received = now_us()
        try:
            if request.method == "POST" and request.content_type == "application/json":
                report = parse_traccar_json(await request.read())
            else:
                params = dict(request.query)
                if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
                    params.update(await request.post())
                report = parse_osmand_query(params)
        except FixError as exc:
            self.counters.rejected[exc.key] += 1
            return web.Response(status=400, text=str(exc) + "\n")
        try:
            await self._check(report.fix, report.token or _bearer(request), datetime.now(timezone.utc))
        except _Refused as exc:
            return web.Response(status=exc.status, text=str(exc) + "\n")
        try:
            await self._spool([report.fix], received)
        except OSError as exc:
            return web.Response(status=503, text=f"spool unavailable ({exc}); retry\n")
        return web.Response(status=200)

    async def handle_batch(self, request: web.Request) -> web.Response:
        """JSON batch: per-fix results; 200 when any fix was taken, else the refusal's status."""
        received = now_us()
        header_token = _bearer(request)
        try:
            body = await request.read()
            items = parse_batch(body, default_callsign=self.devices.callsign_for(header_token))
        except web.HTTPRequestEntityTooLarge:
            self.counters.rejected["too large"] += 1
            return web.json_response({"error": f"body is larger than {MAX_BATCH_BYTES} bytes"}, status=413)
        except FixError as exc:
            self.counters.rejected[exc.key] += 1
            return web.json_response({"error": str(exc)}, status=413 if exc.key == "too large" else 400)
        now = datetime.now(timezone.utc)
        taken: list[Fix] = []
        refused: list[dict] = []
        statuses: set[int] = set()
        for index, item in enumerate(items):
            try:
                if isinstance(item, FixError):
                    self.counters.rejected[item.key] += 1
                    raise _Refused(400, str(item))
                await self._check(item.fix, item.token or header_token, now)
                taken.append(item.fix)
            except _Refused as exc:
                statuses.add(exc.status)
                refused.append({"index": index, "status": exc.status, "reason": str(exc)})
        if taken:
            try:
                await self._spool(taken, received)
            except OSError as exc:
                return web.json_response({"error": f"spool unavailable ({exc}); retry"}, status=503)
        status = 200 if taken or not refused else min(statuses, key=(429, 401, 403, 400).index)
        return web.json_response({"accepted": len(taken), "rejected": refused}, status=status)

    async def handle_stats(self, request: web.Request) -> web.Response:
        """The counters as JSON."""
        return web.json_response(self.stats())

    def stats(self) -> dict:
        """Counters of the doors, the spool and the writer."""
        c, w = self.counters, self.writer.stats
        return {
            "accepted": c.accepted, "spooled": c.spooled, "rejected": dict(c.rejected),
            "unauthorized": c.unauthorized, "rate_limited": c.rate_limited,
            "cot": {"connections": c.cot_connections, "dropped": dict(c.cot_dropped), "ignored": c.cot_ignored},
            "written": w.written, "duplicates": w.duplicates, "writer_rejected": dict(w.rejected),
            "batches": w.batches, "db_up": w.db_up, "last_error": w.last_error,
            "spool": {"durable_seq": self.spool.durable.seq, "committed_seq": w.committed_seq,
                      "backlog": self.writer.backlog(), "segment": self.spool.durable.segment,
                      **self.spool.sync_stats()},
            "latency_ms": w.latency_percentiles(),
        }

    # -- Cursor on Target -------------------------------------------------------
    async def handle_cot(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One TAK connection: authenticated by its first event, dropped on garbage or oversize."""
        self.counters.cot_connections += 1
        framer = CotFramer()
        device: str | None = None
        try:
            while data := await asyncio.wait_for(reader.read(65536), self.options.cot_idle_s):
                for document in framer.feed(data):
                    device = await self._cot_event(document, device, now_us())
        except CotStreamError as exc:
            self.counters.cot_dropped[exc.key] += 1
        except _Refused:
            self.counters.cot_dropped["unauthorized"] += 1
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    async def _cot_event(self, document: bytes, device: str | None, received: int) -> str:
        """Handle one event; return the connection's device. Raises :class:`_Refused` to drop an unauthenticated one."""
        try:
            event = parse_event(document)
        except FixError as exc:
            self.counters.rejected[exc.key] += 1
            if device is None:
                raise _Refused(400, str(exc)) from None
            return device
        if device is None:
            if not await self._authenticate(event.callsign, event.token):
                self.counters.unauthorized += 1
                raise _Refused(401, "first event carries no valid <__auth token>")
            device = event.callsign
        if event.fix is None:
            self.counters.cot_ignored += 1
            return device
        if event.fix.callsign != device:
            self.counters.unauthorized += 1
            return device
        try:
            await self._check(event.fix, None, datetime.now(timezone.utc), authenticated=True)
            await self._spool([event.fix], received)
        except (_Refused, OSError):
            pass
        return device


def _bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def serve(settings: Settings, options: IngestOptions = IngestOptions(),
                *, ready: asyncio.Event | None = None) -> None:
    """Run the service on the configured database until SIGTERM or SIGINT."""
    service = IngestService(settings, lambda: database_url(settings), options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    log.info("ingest: OsmAnd/JSON on http://%s:%d, CoT on tcp://%s:%d, spool %s",
             options.host, options.http_port, options.host, options.cot_port, service.spool.directory)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await service.stop()


def run_ingest(settings: Settings, options: IngestOptions = IngestOptions()) -> None:
    """Blocking entry point of ``gridwatch ingest``."""
    asyncio.run(serve(settings, options))
