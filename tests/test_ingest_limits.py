"""The live ingest's limits, against the real service: connection caps per address and in all,
slow and idle connections closed, JSON bodies too large or too deep, hostile requests of every kind
answered 4xx (never 500), and no token in any line of the service's log.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from gridwatch.etl.database import scratch_database
from gridwatch.etl.ingest._fix import MAX_JSON_DEPTH, FixError, json_depth, load_json
from gridwatch.settings import Settings

from _ingest import CENTRE, IngestProcess, seed

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"L1": "vehicle", "L2": "vehicle", "H1": "vehicle", "H2": "vehicle"}
LIMITED = {"GRIDWATCH_INGEST_MAX_CONNECTIONS": "6", "GRIDWATCH_INGEST_MAX_CONNECTIONS_PER_PEER": "4",
           "GRIDWATCH_INGEST_COT_IDLE_S": "2", "GRIDWATCH_INGEST_KEEPALIVE_S": "14"}


@pytest.fixture(scope="module")
def tokens(server_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A database of this module's own with the tiny region, and a device per unit of ``UNITS``."""
    with scratch_database(Settings(home=ROOT / ".gridwatch", database_url=server_url), prefix="gridwatch_limits") as url:
        yield url, seed(url, UNITS)


@pytest.fixture(scope="module")
def limited(tokens: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestProcess]:
    """The service with small connection caps (4 per address, 6 in all), a 2 s CoT idle limit and a
    14 s keep-alive; the request timeout is the default (10 s)."""
    service = IngestProcess(tokens[0], tmp_path_factory.mktemp("limited"), env=LIMITED).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def plain(tokens: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestProcess]:
    service = IngestProcess(tokens[0], tmp_path_factory.mktemp("hostile")).start()
    yield service
    service.stop()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 10 s pass)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError, socket.timeout):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def wait_open(service: IngestProcess, *, http: int, cot: int) -> dict:
    """Wait until the service counts these open connections (the stats request itself is one HTTP)."""
    deadline = time.monotonic() + 10
    while True:
        stats = service.stats()
        if (stats["http"]["open"], stats["cot"]["open"]) == (http + 1, cot):
            return stats
        assert time.monotonic() < deadline, (stats["http"], stats["cot"])
        time.sleep(0.05)


# -- JSON limits, on their own --------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "depth"),
    [(b"", 0), (b"{}", 1), (b'{"positions": [{"lon": 1}]}', 3), (b'{"a": "[[[{{{"}', 1), (b'{"a": "\\\\"}', 1),
     (b'{"a": "\\"[[", "b": [[1]]}', 3), (b"[" * 100_000, 100_000), (b'"\\\\\\"[[["', 0)],
)
def test_json_depth_counts_brackets_outside_strings(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


@pytest.mark.parametrize(
    ("body", "key"),
    [(b"[" * 100_000 + b"]" * 100_000, "too deep"), (b'{"a": ' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * 17, "too deep"),
     (b"x" * (3 * 1024 * 1024), "too large"), (b'{"ts": ' + b"9" * 5000 + b"}", "bad json"), (b"\xff\xfe{", "bad json")],
    ids=["100000-deep", "17-deep", "3MB", "5000-digit-int", "not-utf8"],
)
def test_load_json_refuses_before_parsing(body: bytes, key: str) -> None:
    with pytest.raises(FixError, match="nested|larger|not JSON") as refused:
        load_json(body)
    assert refused.value.key == key


# -- connection caps --------------------------------------------------------------------
def test_connections_past_the_caps_are_refused_and_counted(limited: IngestProcess) -> None:
    before = limited.stats()
    for port, protocol in ((limited.http_port, "http"), (limited.cot_port, "cot")):
        held = [connect(port) for _ in range(4)]
        try:
            one_more = answer(connect(port))  # a fifth from 127.0.0.1
            held += [connect(port, "127.0.0.2") for _ in range(2)]
            other = answer(connect(port, "127.0.0.3"))  # a seventh in all
            if protocol == "http":
                assert one_more.startswith(b"HTTP/1.1 503") and b"too many from one address" in one_more
                assert other.startswith(b"HTTP/1.1 503") and b"too many connections" in other
            else:
                assert one_more == other == b""  # dropped at once
        finally:
            for sock in held:
                sock.close()
        wait_open(limited, http=0, cot=0)
    stats = limited.stats()
    for key in ("too many from one address", "too many connections"):
        assert stats["http"]["refused"][key] == before["http"]["refused"].get(key, 0) + 1
        assert stats["cot"]["dropped"][key] == before["cot"]["dropped"].get(key, 0) + 1
    assert requests.get(f"{limited.base}/api/ingest/stats", timeout=5).ok  # all places are free again


def _cot_auth(callsign: str, token: str) -> bytes:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (f'<event version="2.0" uid="{callsign}" type="a-f-G-U-C" time="{stamp}" start="{stamp}" stale="{stamp}">'
            f'<point lat="{CENTRE[1]}" lon="{CENTRE[0]}" ce="5" hae="0" le="5"/><detail><__auth token="{token}"/>'
            f'<contact callsign="{callsign}"/></detail></event>').encode()


class Client(threading.Thread):
    """A client that sends ``steps`` (bytes, then seconds to wait for an answer) and notes how long
    until the server answered (or closed), and what it sent."""

    def __init__(self, port: int, steps: list[tuple[bytes, float]], source: str = "127.0.0.1") -> None:
        super().__init__(daemon=True)
        self.sock = connect(port, source)
        self.steps, self.received, self.answered_after = steps, b"", None

    def run(self) -> None:
        started = time.monotonic()
        try:
            for data, wait in self.steps:
                if data:
                    self.sock.sendall(data)
                self.sock.settimeout(wait)
                with contextlib.suppress(socket.timeout):
                    chunk = self.sock.recv(65536)
                    self.answered_after = time.monotonic() - started
                    while chunk:
                        self.received += chunk
                        chunk = self.sock.recv(65536)
                    break
        except (BrokenPipeError, ConnectionResetError):
            self.answered_after = time.monotonic() - started
        self.sock.close()


def keep_alive(port: int, source: str, pause: float) -> float | None:
    """Make a request on a keep-alive connection, idle ``pause`` s, then make another on it: return
    None when it was answered, else how long after the first answer the server had closed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    conn.request("GET", "/api/ingest/stats")
    assert conn.getresponse().read()
    answered = time.monotonic()
    if pause == 0:
        assert conn.sock.recv(1) == b""  # wait for the server to close
        return time.monotonic() - answered
    time.sleep(pause)
    conn.request("GET", "/api/ingest/stats")
    response = conn.getresponse()
    assert response.status == 200 and response.read()
    conn.close()
    return None


def test_slow_and_idle_connections_are_closed(limited: IngestProcess, tokens: tuple[str, dict[str, str]]) -> None:
    """A slow-loris client sending a header byte every 2 s, a body that stops coming, a CoT client
    that never authenticates, one that authenticates and falls silent, and an idle keep-alive
    connection: each is closed at its limit (10 s, the default request timeout; 2 s CoT idle and
    14 s keep-alive here), well within 30 s. A keep-alive connection idle for 12 s still serves."""
    _, device_tokens = tokens
    before = limited.stats()
    header = b"GET /?id=L1 HTTP/1.1\r\nHost: ingest\r\nX-Slow: " + b"a" * 40
    clients = {
        "slow loris": Client(limited.http_port, [(bytes([b]), 2.0) for b in header]),
        "slow body": Client(limited.http_port, [(b"POST /api/positions HTTP/1.1\r\nHost: ingest\r\nContent-Type: "
                                                 b"application/json\r\nContent-Length: 1000\r\n\r\n{", 30.0)],
                            source="127.0.0.2"),
        "cot silent": Client(limited.cot_port, [(b"", 30.0)]),
        "cot idle": Client(limited.cot_port, [(_cot_auth("L1", device_tokens["L1"]), 30.0)], source="127.0.0.2"),
    }
    with ThreadPoolExecutor(2) as pool:
        reused = pool.submit(keep_alive, limited.http_port, "127.0.0.3", 12.0)
        idle = pool.submit(keep_alive, limited.http_port, "127.0.0.4", 0)
        for client in clients.values():
            client.start()
        for client in clients.values():
            client.join(40)
        closed = {name: c.answered_after and round(c.answered_after, 1) for name, c in clients.items()}
        closed["keep-alive idle"] = round(idle.result(), 1)
        assert reused.result() is None, "a keep-alive connection idle for 12 s was closed"
    print(f"answered or closed after (s): {closed}")
    assert all(c is not None and c < 30 for c in closed.values()), closed
    assert 9 < closed["slow loris"] and clients["slow loris"].received.startswith(b"HTTP/1.1 408")
    assert 9 < closed["slow body"] and clients["slow body"].received.startswith(b"HTTP/1.1 408")
    assert 9 < closed["cot silent"] and 1.5 < closed["cot idle"] < 9 and 13 < closed["keep-alive idle"]
    stats = limited.stats()
    assert stats["http"]["closed"]["slow request"] == before["http"]["closed"].get("slow request", 0) + 2
    assert stats["http"]["closed"]["idle"] >= before["http"]["closed"].get("idle", 0) + 1
    assert stats["cot"]["dropped"]["idle"] == before["cot"]["dropped"].get("idle", 0) + 1
    assert stats["cot"]["dropped"]["no authentication in time"] == \
        before["cot"]["dropped"].get("no authentication in time", 0) + 1


# -- hostile requests and the log --------------------------------------------------------
def http_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes (it closes after refusing a malformed request)."""
    with connect(port) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return answer(sock)


def test_hostile_requests_get_4xx_and_no_token_reaches_the_log(
    plain: IngestProcess, tokens: tuple[str, dict[str, str]]
) -> None:
    url, device = tokens
    token, bearer = device["H1"], secrets.token_urlsafe(32)  # a real device token; a bearer nobody has
    secrets_sent = [*device.values(), bearer]
    deep = b"[" * 100_000 + b"]" * 100_000
    hostile = {
        "long request line": b"GET /?id=H1&token=" + token.encode() + b"&pad=" + b"A" * 9000 + b" HTTP/1.1\r\n"
                             b"Host: ingest\r\n\r\n",
        "long header": b"GET / HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer " + bearer.encode() + b"A" * 9000 +
                       b"\r\n\r\n",
        "bad header": b"GET /?token=" + token.encode() + b" HTTP/1.1\r\nHost: ingest\r\nX-Bad\x01: " +
                      bearer.encode() + b"\r\n\r\n",
        "bad method": b"G\x00T /?token=" + token.encode() + b" HTTP/1.1\r\n\r\n",
        "second bad request line": b"GET /api/ingest/stats HTTP/1.1\r\nHost: i\r\n\r\nGET /?token=" + token.encode() +
                                   b"\x01 HTTP/1.1\r\n\r\n",
        "bad content length": b"POST /api/positions HTTP/1.1\r\nHost: i\r\nAuthorization: Bearer " + bearer.encode() +
                              b"\r\nContent-Length: abc\r\n\r\n{}",
        "bad chunk": b"POST /api/positions HTTP/1.1\r\nHost: i\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" +
                     token.encode() + b"\r\n0\r\n\r\n",
    }
    statuses = {}
    for name, request in hostile.items():
        reply = http_exchange(plain.http_port, request)
        statuses[name] = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else None
    assert all(code is not None and 400 <= code < 500 for code in statuses.values()), statuses

    auth = {"Authorization": f"Bearer {bearer}"}
    json_header = {"Content-Type": "application/json"}
    bodies = {
        "bad json": (f'{{"positions": [{{"token": "{token}", '.encode(), {}),
        "deep json": (deep, {}),
        "deep value": (b'{"positions": [{"lon": ' + b"[" * 50 + b"]" * 50 + b"}]}", {}),
        "huge number": (b'{"positions": [{"ts": ' + b"9" * 5000 + b', "lon": 1, "lat": 1}]}', {}),
        "huge float": (b'{"positions": [{"callsign": "H1", "ts": 1e400, "lon": 1e999, "lat": -1e999}]}', {}),
        "too large": (b" " * (3 * 1024 * 1024), {}),
    }
    for name, (body, headers) in bodies.items():
        for route, extra in (("/api/positions", auth), ("/", json_header)):
            response = requests.post(f"{plain.base}{route}", data=body, headers={**headers, **extra}, timeout=30)
            statuses[f"{name} {route}"] = response.status_code
    statuses["bad charset"] = requests.post(
        f"{plain.base}/", data=f"id=H1&token={token}".encode(), timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=no-such-charset"}).status_code
    statuses["bad percent"] = requests.get(f"{plain.base}/?id=%ZZ%C3%28&lat=%00&token={token}%C3", timeout=10).status_code
    statuses["token in path"] = requests.get(f"{plain.base}/{token}?token={bearer}", timeout=10).status_code
    assert all(400 <= code < 500 for code in statuses.values()), statuses
    assert statuses["deep json /api/positions"] == statuses["deep json /"] == 400
    assert statuses["too large /api/positions"] == statuses["too large /"] == 413

    for payload in (b'<event uid="H1"><detail><__auth token="' + token.encode() + b'"/></detail>\x00\x01garbage',
                    b"\x00\x01 token=" + token.encode(), b"<" + bearer.encode() * 2000):
        with connect(plain.cot_port) as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            assert answer(sock) == b""
    assert plain.stats()["accepted"] == 0 and requests.get(f"{plain.base}/api/ingest/stats", timeout=5).ok

    time.sleep(0.5)
    log = plain.log.read_text(errors="replace")
    assert "Error handling request" in log and "LineTooLong" in log, log[-3000:]
    for secret in secrets_sent:
        for start in range(0, len(secret) - 12, 6):
            assert secret[start:start + 12] not in log, f"a piece of a token is in the log: {secret[start:start + 12]}"
    assert "Traceback" not in log and not re.search(r"\b500\b", log), log[-3000:]
    json.loads(json.dumps(plain.stats()))  # the stats still answer
