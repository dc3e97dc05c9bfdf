"""Limits on the live ingest's connections: how many one address and all together may hold open,
and how long an HTTP client may take to send a request.

:class:`ConnectionCaps` counts open connections of one protocol. For HTTP,
:class:`HttpGuard` wraps each connection of aiohttp's protocol: past a cap the
connection is answered 503 and closed before aiohttp sees it; a request's
whole head must come within ``timeout_s`` of the connection's opening or of
the request's first byte (else 408 and closed: a slow-loris client sending a
byte now and then), and a connection idle ``idle_s`` after a response is
closed. :func:`request_tracking` is the aiohttp middleware that tells the
guard when a request's head is in and when its response goes out. The CoT
server applies the same caps itself.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["ConnectionCaps", "HttpGuard", "request_tracking", "peer_of"]


def peer_of(transport: asyncio.BaseTransport) -> str:
    """The remote address of a connection (its host, without the port)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class ConnectionCaps:
    """Open connections of one protocol, in all and per address."""

    def __init__(self, *, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self.open = 0
        self._by_peer: Counter = Counter()

    def admit(self, peer: str) -> str | None:
        """Take a place for a new connection from ``peer``; return why not (what is counted) when full."""
        if self.open >= self.total:
            return "too many connections"
        if self._by_peer[peer] >= self.per_peer:
            return "too many from one address"
        self.open += 1
        self._by_peer[peer] += 1
        return None

    def release(self, peer: str) -> None:
        """Give back the place of a closed connection."""
        self.open -= 1
        self._by_peer[peer] -= 1
        if not self._by_peer[peer]:
            del self._by_peer[peer]


class HttpGuard(asyncio.Protocol):
    """One HTTP connection: aiohttp's protocol ``inner``, let in under ``caps``, closed when a request
    head takes longer than ``timeout_s`` or the connection idles ``idle_s`` between requests. Refusals
    and closes are counted in ``refused`` and ``closed``; ``guards`` maps each open connection's
    transport to its guard (for :func:`request_tracking`)."""

    def __init__(self, inner: asyncio.Protocol, *, caps: ConnectionCaps, timeout_s: float, idle_s: float,
                 refused: Counter, closed: Counter, guards: dict[asyncio.BaseTransport, HttpGuard]) -> None:
        self.inner = inner
        self.caps = caps
        self.timeout_s = timeout_s
        self.idle_s = idle_s
        self.refused = refused
        self.closed = closed
        self.guards = guards
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting = "head"  # what the deadline waits for: "head", "idle" (after a response), "" (handling)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = peer_of(transport)
        refusal = self.caps.admit(self._peer)
        if refusal is not None:
            self.refused[refusal] += 1
            text = f"{refusal} (at most {self.caps.per_peer} per address, {self.caps.total} in all); retry later\n"
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(text), text.encode()))
            transport.close()
            return
        self._transport = transport
        self.guards[transport] = self
        self.inner.connection_made(transport)
        self._wait("head", self.timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        if self._waiting == "idle":  # the next request's first byte: its head must follow in time
            self._wait("head", self.timeout_s)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._transport is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._wait("", None)
        self.guards.pop(self._transport, None)
        self._transport = None
        self.caps.release(self._peer)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def request_started(self) -> None:
        """A request's head is in: no deadline while it is handled (its body has its own)."""
        self._wait("", None)

    def request_finished(self) -> None:
        """The response is going out: the connection may idle until the next request."""
        if self._transport is not None:
            self._wait("idle", self.idle_s)

    def _wait(self, what: str, seconds: float | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._waiting = what
        self._deadline = None if seconds is None else asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self._transport is None or not self._waiting:
            return
        slow = self._waiting == "head"
        self.closed["slow request" if slow else "idle"] += 1
        if slow:
            self._transport.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self._transport.close()


def request_tracking(guards: dict[asyncio.BaseTransport, HttpGuard]) -> Callable:
    """aiohttp middleware telling each connection's guard when a request starts and ends."""

    @web.middleware
    async def track(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        guard = guards.get(request.transport)
        if guard is not None:
            guard.request_started()
        try:
            return await handler(request)
        finally:
            if guard is not None:
                guard.request_finished()

    return track
