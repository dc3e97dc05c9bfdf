"""The live ingest service: OsmAnd and JSON over HTTP(S), Cursor-on-Target over TCP and TLS, in one asyncio process.

Every fix is authenticated (a device token; on the CoT TLS port, the device's client
certificate), checked (coordinates, time within ``ingest_max_age_s`` before now and
``future_tolerance_s`` after, accuracy),
rate-limited per device, and acknowledged only once it is in the durable
spool; a full spool disk answers 503 and the service goes on by itself when
space returns. A :class:`gridwatch.etl.ingest.writer.SpoolWriter` thread
drains the spool into the database; the service keeps accepting while the
database is down.

Limits (:mod:`gridwatch.etl.ingest.limits`, the ``ingest_*`` settings): open
connections per address and in all, for HTTP and CoT each; a request head (and
then its body) within ``ingest_request_timeout_s``, an idle keep-alive
connection closed after ``ingest_keepalive_s``, a CoT connection
authenticated within ``ingest_request_timeout_s`` and closed when silent for
``ingest_cot_idle_s``; JSON bodies of every route within
:data:`~gridwatch.etl.ingest._fix.MAX_BODY_BYTES` and
:data:`~gridwatch.etl.ingest._fix.MAX_JSON_DEPTH` (400 or 413, never 500).
No log line holds a token (:mod:`gridwatch.etl.ingest.redact`).

TLS: the HTTP port speaks HTTPS with the operator's certificate and key (``tls_cert``,
``tls_key``). The CoT TLS port (8089, as TAK clients expect) requires a client certificate issued by
the installation's CA (:mod:`gridwatch.etl.ingest.pki`, made at the first start if there is none),
whose CN is the device and which must be the device's current certificate; plain CoT (8087, token in
the first event) can be switched off. The device table is read again every ``device_refresh_s``;
then every open CoT connection whose token or certificate no longer authenticates it (revoked or
superseded) is closed, so a revoked device is refused within that time plus one read.

``GET /api/ingest/stats`` shows the counters (kept across restarts, from
``since``; :mod:`gridwatch.etl.ingest.counters`), the writer's state and the
spool's. SIGTERM or SIGINT stops it gracefully: no new requests, the spool
committed, the writer given a few seconds to catch up.

HTTP routes: ``GET|POST /`` (OsmAnd, Traccar Client), ``POST /api/positions``
(JSON batch), ``GET /api/ingest/stats``.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import resource
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from aiohttp import web

from gridwatch.errors import GridwatchError
from gridwatch.etl.database import database_url
from gridwatch.etl.ingest._fix import MAX_BODY_BYTES, Fix, FixError, check_fix
from gridwatch.etl.ingest.batch import parse_batch
from gridwatch.etl.ingest.cot import CotFramer, CotStreamError, parse_event
from gridwatch.etl.ingest.counters import Counters, CountsFile
from gridwatch.etl.ingest.devices import Credentials, DeviceRegistry, RateLimiter, load_devices
from gridwatch.etl.ingest.limits import ConnectionCaps, HttpGuard, peer_of, request_tracking
from gridwatch.etl.ingest.osmand import OsmandReport, parse_osmand_query, parse_traccar_json
from gridwatch.etl.ingest.pki import Authority, service_names
from gridwatch.etl.ingest.redact import install_secret_filter
from gridwatch.etl.ingest.spool import Spool, now_us, pack_rows
from gridwatch.etl.ingest.upkeep import Upkeep
from gridwatch.etl.ingest.writer import SpoolWriter
from gridwatch.settings import Settings
from gridwatch.tls import server_context

__all__ = ["IngestOptions", "IngestService", "serve", "run_ingest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOptions:
    """Where the service listens and how it limits devices. A CoT port of 0 is switched off; with
    ``tls_cert`` and ``tls_key`` the HTTP port speaks HTTPS only."""

    host: str = "127.0.0.1"
    http_port: int = 5055
    cot_port: int = 8087
    cot_tls_port: int = 8089
    tls_cert: Path | None = None
    tls_key: Path | None = None
    rate: float = 20.0
    burst: float = 100.0
    device_refresh_s: float = 5.0
    device_miss_refresh_s: float = 0.25
    writer_interval_s: float = 0.2
    drain_s: float = 5.0
    counts_every_s: float = 2.0


class _Refused(Exception):
    """A whole request refused: HTTP status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status

    def response(self, *, as_json: bool = False) -> web.Response:
        """The answer: the reason as text or as ``{"error": ..}``; a 408 also closes the connection."""
        response = (web.json_response({"error": str(self)}, status=self.status) if as_json
                    else web.Response(status=self.status, text=str(self) + "\n"))
        if self.status == 408:
            response.force_close()
        return response


class IngestService:
    """The service's parts: spool, writer, devices, limits, counters, and the handlers."""

    def __init__(self, settings: Settings, url_of: Callable[[], str], options: IngestOptions = IngestOptions()) -> None:
        self.settings = settings
        self.url_of = url_of
        self.options = options
        spool_dir = settings.home_dir / "spool"
        self.spool = Spool(spool_dir, segment_bytes=settings.ingest_segment_bytes)
        self.devices = DeviceRegistry(spool_dir / "devices.json")
        self.limiter = RateLimiter(rate=options.rate, burst=options.burst)
        self.counters = Counters()
        caps = {"total": settings.ingest_max_connections, "per_peer": settings.ingest_max_connections_per_peer}
        self.http_caps, self.cot_caps = ConnectionCaps(**caps), ConnectionCaps(**caps)
        self.started_at = datetime.now(timezone.utc)
        self.writer: SpoolWriter | None = None
        self.upkeep: Upkeep | None = None
        self.counts: CountsFile | None = None
        self._guards: dict[asyncio.BaseTransport, HttpGuard] = {}
        self._runner: web.AppRunner | None = None
        self._http: asyncio.Server | None = None
        self._cot: asyncio.Server | None = None
        self._cot_tls: asyncio.Server | None = None
        # Open, authenticated CoT connections → whether their credential still authenticates them.
        self._sessions: dict[asyncio.StreamWriter, Callable[[], bool]] = {}
        self._tasks: list[asyncio.Task] = []
        self._refreshed_at = 0.0
        self._refreshing: asyncio.Future | None = None
        self._disk_refuses = False

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        """Check the TLS material, open the spool, start the writer, load devices and counters, and listen."""
        options = self.options
        http_tls = server_context(options.tls_cert, options.tls_key) if options.tls_cert else None
        cot_tls = (Authority.open(self.settings.pki_dir).service_tls(
            service_names(options.host, self.settings.tls_server_names)) if options.cot_tls_port else None)
        self.spool.open()
        if self.spool.torn_bytes:
            log.warning("spool: cut off a torn last record (%d bytes, never acknowledged)", self.spool.torn_bytes)
        for damage in self.spool.damaged:
            log.warning("%s", damage.describe())
        await self.spool.start()
        self.writer = SpoolWriter(self.spool, self.url_of, settings=self.settings,
                                  interval_s=self.options.writer_interval_s)
        self.counts = CountsFile(self.spool.directory / "counters.json", doors=self.counters, writer=self.writer.stats)
        self.counts.load()
        self.writer.start()
        self.upkeep = Upkeep(self.url_of, settings=self.settings)
        self.upkeep.start()
        self.devices.load_snapshot()
        await self._refresh_devices()
        self._tasks = [asyncio.create_task(self._refresh_loop(), name="device-refresh"),
                       asyncio.create_task(self._save_loop(), name="counts-save")]
        _allow_open_files(2 * self.settings.ingest_max_connections + 256)
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[request_tracking(self._guards)])
        app.router.add_route("GET", "/", self.handle_osmand)
        app.router.add_route("POST", "/", self.handle_osmand)
        app.router.add_post("/api/positions", self.handle_batch)
        app.router.add_get("/api/ingest/stats", self.handle_stats)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        handshake_s = self.settings.ingest_request_timeout_s
        self._http = await asyncio.get_running_loop().create_server(
            self._http_connection, options.host, options.http_port, reuse_address=True, ssl=http_tls,
            ssl_handshake_timeout=handshake_s if http_tls else None)
        if options.cot_port:
            self._cot = await asyncio.start_server(self.handle_cot, options.host, options.cot_port)
        if cot_tls is not None:
            self._cot_tls = await asyncio.start_server(self.handle_cot_tls, options.host, options.cot_tls_port,
                                                       ssl=cot_tls, ssl_handshake_timeout=handshake_s)

    async def stop(self) -> None:
        """Stop listening, commit the spool, give the writer ``drain_s`` to catch up, save the counters."""
        for task in self._tasks:
            task.cancel()
        for server in (self._cot_tls, self._cot, self._http):
            if server is not None:
                server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.spool.close()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.stop, drain_s=self.options.drain_s)
        if self.upkeep is not None:
            await asyncio.to_thread(self.upkeep.stop)
        if self.counts is not None:
            self.counts.save()

    def _http_connection(self) -> HttpGuard:
        """A new HTTP connection: aiohttp's protocol inside the caps and the request deadline."""
        return HttpGuard(self._runner.server(), caps=self.http_caps, timeout_s=self.settings.ingest_request_timeout_s,
                         idle_s=self.settings.ingest_keepalive_s, refused=self.counters.http_refused,
                         closed=self.counters.http_closed, guards=self._guards)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.device_refresh_s)
            await self._refresh_devices()

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.counts_every_s)
            self.counts.save()

    async def _refresh_devices(self) -> None:
        """Take the device table when the database answers, and close the CoT connections it no longer
        lets in; keep the last copy when it does not answer."""
        self._refreshed_at = asyncio.get_running_loop().time()
        def fetch() -> dict[str, Credentials]:
            with psycopg.connect(self.url_of(), connect_timeout=2) as conn:
                return load_devices(conn)
        try:
            self.devices.replace(await asyncio.to_thread(fetch))
        except (psycopg.Error, GridwatchError) as exc:
            log.debug("device refresh skipped: %s", exc)
            return
        for writer, authenticated in list(self._sessions.items()):
            if not authenticated():
                del self._sessions[writer]
                self.counters.cot_dropped["revoked"] += 1
                writer.transport.abort()

    # -- the common path --------------------------------------------------------
    async def _authenticate(self, callsign: str, token: str | None) -> bool:
        """Check a device's token (:meth:`_check_fresh`)."""
        return bool(token) and await self._check_fresh(functools.partial(self.devices.check, callsign, token))

    async def _check_fresh(self, check: Callable[[], bool]) -> bool:
        """Check a device's credential. On a miss, wait for a read of the device table that began after
        the request came (reads on misses at most every ``device_miss_refresh_s``), so a device
        added a moment ago is let in, and a flood of bad credentials is slowed down, not served at once."""
        if check():
            return True
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
        return check()

    def _refused(self, exc: FixError) -> _Refused:
        """Count a refusal at the door; 413 for a body too large, else 400."""
        self.counters.rejected[exc.key] += 1
        return _Refused(413 if exc.key == "too large" else 400, str(exc))

    async def _check(self, fix: Fix, token: str | None, now: datetime, *, authenticated: bool = False) -> None:
        """Authenticate (unless the connection is), validate and rate-limit one fix; raise :class:`_Refused`."""
        if not authenticated and not await self._authenticate(fix.callsign, token):
            self.counters.unauthorized += 1
            raise _Refused(401 if not token else 403, "unknown device or wrong token" if token else "missing token")
        try:
            check_fix(fix, now=now, settings=self.settings)
        except FixError as exc:
            raise self._refused(exc) from None
        if self.limiter.take(fix.callsign) < 1:
            self.counters.rate_limited += 1
            raise _Refused(429, f"rate limit of {self.options.rate:g} fixes/s (burst {self.options.burst:g}) exceeded")

    async def _spool(self, fixes: Sequence[Fix], received_us: int) -> None:
        """Make the fixes durable; only then may they be acknowledged. Raises :class:`_Refused` (503)
        when the disk refuses them: nothing of them is acknowledged, the client sends them again."""
        self.counters.accepted += len(fixes)
        try:
            await self.spool.append(pack_rows(fixes, received_us=received_us))
        except OSError as exc:
            self.counters.spool_refused += len(fixes)
            if not self._disk_refuses:
                log.warning("spool: the disk refuses fixes (%s): answering 503 until it takes them again", exc)
            self._disk_refuses = True
            raise _Refused(503, f"spool unavailable ({exc.strerror or exc}); retry") from None
        if self._disk_refuses:
            log.warning("spool: the disk takes fixes again")
        self._disk_refuses = False
        self.counters.spooled += len(fixes)

    async def _body(self, request: web.Request) -> bytes:
        """The request's body, read within ``ingest_request_timeout_s``; raises :class:`_Refused`."""
        try:
            async with asyncio.timeout(self.settings.ingest_request_timeout_s):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._refused(FixError(f"body is larger than {MAX_BODY_BYTES} bytes", key="too large")) from None
        except TimeoutError:
            self.counters.http_closed["slow request"] += 1
            raise _Refused(408, f"the body did not arrive within {self.settings.ingest_request_timeout_s:g} s") from None

    # -- HTTP -------------------------------------------------------------------
    async def handle_osmand(self, request: web.Request) -> web.Response:
        """OsmAnd / Traccar Client: 200 once spooled, else 4xx (or 503) with the reason."""
        received = now_us()
        try:
            report = await self._osmand_report(request)
            await self._check(report.fix, report.token or _bearer(request), datetime.now(timezone.utc))
            await self._spool([report.fix], received)
        except _Refused as exc:
            return exc.response()
        return web.Response(status=200)

    async def _osmand_report(self, request: web.Request) -> OsmandReport:
        """Parse an OsmAnd GET, form POST or Traccar JSON POST; raises :class:`_Refused`."""
        try:
            if request.method == "POST" and request.content_type == "application/json":
                return parse_traccar_json(await self._body(request))
            params = dict(request.query)
            if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
                await self._body(request)
                try:
                    params.update(await request.post())
                except (LookupError, ValueError) as exc:  # an unknown charset, bytes that are not in it
                    raise FixError(f"form body cannot be read ({type(exc).__name__})", key="malformed") from None
            return parse_osmand_query(params)
        except FixError as exc:
            raise self._refused(exc) from None

    async def handle_batch(self, request: web.Request) -> web.Response:
        """JSON batch: per-fix results; 200 when any fix was taken, else the refusal's status."""
        received = now_us()
        header_token = _bearer(request)
        try:
            body = await self._body(request)
            try:
                items = parse_batch(body, default_callsign=self.devices.callsign_for(header_token))
            except FixError as exc:
                raise self._refused(exc) from None
        except _Refused as exc:
            return exc.response(as_json=True)
        now = datetime.now(timezone.utc)
        taken: list[Fix] = []
        refused: list[dict] = []
        statuses: set[int] = set()
        for index, item in enumerate(items):
            try:
                if isinstance(item, FixError):
                    raise self._refused(item)
                await self._check(item.fix, item.token or header_token, now)
                taken.append(item.fix)
            except _Refused as exc:
                statuses.add(exc.status)
                refused.append({"index": index, "status": exc.status, "reason": str(exc)})
        if taken:
            try:
                await self._spool(taken, received)
            except _Refused as exc:
                return exc.response(as_json=True)
        status = 200 if taken or not refused else min(statuses, key=(429, 401, 403, 400).index)
        return web.json_response({"accepted": len(taken), "rejected": refused}, status=status)

    async def handle_stats(self, request: web.Request) -> web.Response:
        """The counters as JSON."""
        return web.json_response(self.stats())

    def stats(self) -> dict:
        """Counters of the doors (since ``since``), the connections, the writer and the spool."""
        c, w = self.counters, self.writer
        writer = {k: _iso(v) for k, v in w.status().items()}
        backlog = writer.pop("backlog")
        return {
            "since": _iso(self.counts.since), "started_at": _iso(self.started_at),
            "accepted": c.accepted, "spooled": c.spooled, "rejected": dict(c.rejected),
            "unauthorized": c.unauthorized, "rate_limited": c.rate_limited,
            "cot": {"connections": c.cot_connections, "open": self.cot_caps.open, "dropped": dict(c.cot_dropped),
                    "ignored": c.cot_ignored},
            "http": {"open": self.http_caps.open, "refused": dict(c.http_refused), "closed": dict(c.http_closed)},
            "written": w.stats.written, "duplicates": w.stats.duplicates, "writer_rejected": dict(w.stats.rejected),
            "batches": w.stats.batches, "db_up": w.stats.db_up, "writer": {**writer, "lost": w.stats.lost},
            "spool": {"durable_seq": self.spool.durable.seq,
                      "committed_seq": None if w.committed is None else w.committed.seq,
                      "backlog": backlog, "segment": self.spool.durable.segment, "refused_fixes": c.spool_refused,
                      "damaged": [d.describe() for d in self.spool.damaged], **self.spool.sync_stats()},
            "latency_ms": w.stats.latency_percentiles(),
        }

    # -- Cursor on Target -------------------------------------------------------
    async def handle_cot(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One plain TAK connection: authenticated by the token of its first event (:meth:`_cot_connection`)."""
        await self._cot_connection(reader, writer, tls=False)

    async def handle_cot_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One TAK connection over TLS: authenticated by its client certificate (:meth:`_cot_connection`)."""
        await self._cot_connection(reader, writer, tls=True)

    async def _cot_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        """One TAK connection, inside the caps: authenticated by its certificate (``tls``) or else by its
        first event within ``ingest_request_timeout_s``, closed when silent for ``ingest_cot_idle_s`` or
        when its credential is revoked, dropped on garbage or oversize."""
        peer = peer_of(writer.transport)
        refusal = self.cot_caps.admit(peer)
        if refusal is not None:
            self.counters.cot_dropped[refusal] += 1
            writer.close()
            return
        self.counters.cot_connections += 1
        loop = asyncio.get_running_loop()
        authenticate_by = loop.time() + self.settings.ingest_request_timeout_s
        framer = CotFramer()
        device: str | None = None
        try:
            if tls:
                device = await self._certified_device(writer)
            while True:
                wait = self.settings.ingest_cot_idle_s if device else authenticate_by - loop.time()
                try:
                    data = await asyncio.wait_for(reader.read(65536), max(0.0, wait))
                except TimeoutError:
                    self.counters.cot_dropped["idle" if device else "no authentication in time"] += 1
                    break
                if not data:
                    break
                for document in framer.feed(data):
                    device = await self._cot_event(document, device, now_us(), writer)
        except CotStreamError as exc:
            self.counters.cot_dropped[exc.key] += 1
        except _Refused:
            self.counters.cot_dropped["unauthorized"] += 1
        except ConnectionError:
            pass
        finally:
            self._sessions.pop(writer, None)
            self.cot_caps.release(peer)
            writer.close()

    async def _certified_device(self, writer: asyncio.StreamWriter) -> str:
        """The device of a TLS connection: its certificate's CN, when that certificate (verified against
        the CA in the handshake) is the device's current one; raises :class:`_Refused` otherwise."""
        ssl_object = writer.get_extra_info("ssl_object")
        fingerprint = hashlib.sha256(ssl_object.getpeercert(binary_form=True)).hexdigest()
        names = [value for rdn in ssl_object.getpeercert().get("subject", ()) for key, value in rdn
                 if key == "commonName"]
        check = functools.partial(self.devices.check_cert, names[0] if len(names) == 1 else "", fingerprint)
        if not await self._check_fresh(check):
            self.counters.unauthorized += 1
            raise _Refused(403, "the certificate is not the device's current one")
        self._sessions[writer] = check
        return names[0]

    async def _cot_event(self, document: bytes, device: str | None, received: int,
                         writer: asyncio.StreamWriter) -> str:
        """Handle one event; return the connection's device (the first event of a plain connection
        authenticates it). Raises :class:`_Refused` to drop an unauthenticated one."""
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
            self._sessions[writer] = functools.partial(self.devices.check, event.callsign, event.token)
        if event.fix is None:
            self.counters.cot_ignored += 1
            return device
        if event.fix.callsign != device:
            self.counters.unauthorized += 1
            return device
        try:
            await self._check(event.fix, None, datetime.now(timezone.utc), authenticated=True)
            await self._spool([event.fix], received)
        except _Refused:  # CoT has no answer to give: the fix is counted and dropped
            pass
        return device


def _iso(value: object) -> object:
    """Times as ISO 8601 text for JSON; anything else as it is."""
    return value.isoformat() if isinstance(value, datetime) else value


def _allow_open_files(wanted: int) -> None:
    """Raise the soft limit on open files towards ``wanted`` (as far as the hard limit allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
        if target < wanted:
            log.warning("open files are limited to %d, fewer than the connection caps may need (%d): connections "
                        "past it wait in the listen queue; raise `ulimit -n`", target, wanted)


def _bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def serve(settings: Settings, options: IngestOptions = IngestOptions(),
                *, ready: asyncio.Event | None = None) -> None:
    """Run the service on the configured database until SIGTERM or SIGINT."""
    install_secret_filter()
    service = IngestService(settings, lambda: database_url(settings), options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    http = f"{'https' if options.tls_cert else 'http'}://{options.host}:{options.http_port}"
    cot = [f"tcp://{options.host}:{options.cot_port}" if options.cot_port else "plain CoT off",
           f"tls://{options.host}:{options.cot_tls_port} (client certificates of {settings.pki_dir / 'ca.crt'})"
           if options.cot_tls_port else "CoT over TLS off"]
    log.info("ingest: OsmAnd/JSON on %s, CoT on %s, spool %s", http, ", ".join(cot), service.spool.directory)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await service.stop()


def run_ingest(settings: Settings, options: IngestOptions = IngestOptions()) -> None:
    """Blocking entry point of ``gridwatch ingest``."""
    asyncio.run(serve(settings, options))
