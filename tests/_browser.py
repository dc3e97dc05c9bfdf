"""Browser-test helpers: the app on a free localhost port (``serving``, shared with the
wall benchmark), and an offline Chromium page.

Every request to another origin is aborted and recorded, so a test can fail
on any attempt; console errors, page errors and Content-Security-Policy
violations are recorded too.
"""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gridwatch.bench._harness import CHROMIUM, CHROMIUM_ARGS, serving, sign_in

__all__ = ["CHROMIUM", "LIVE_LONS", "LOADED", "MAP", "READY", "RENDERED", "TcpProxy", "Watch", "offline_page", "ready", "serving"]

# Page probes: the wall's MapLibre map, and how many features each catalog layer drew.
MAP = "window.gridwatch.map()"
# Loaded: no style change pending (a shown layer reloads its source) and every tile in.
LOADED = f"() => {{ const m = {MAP}; return !!m && m.loaded() && m.areTilesLoaded(); }}"


def ready(map_expr: str = MAP) -> str:
    """Probe: the map is loaded and fitted to the region (past the world view plotly opens at)."""
    return f"() => {{ const m = {map_expr}; return !!m && m.getZoom() > 8 && m.loaded() && m.areTilesLoaded(); }}"


READY = ready()
# The longitudes of the wall's live units as drawn.
LIVE_LONS = """() => document.querySelector('#wall-map .js-plotly-plot').data
    .flatMap(t => (t.lon || []).filter(v => v !== null))"""
RENDERED = f"""(ids) => {{
    const m = {MAP};
    const out = {{}};
    ids.forEach(id => {{
        const own = m.getStyle().layers.filter(l => l.metadata && l.metadata['gridwatch:layer'] === id);
        out[id] = own.reduce((n, l) => n + m.queryRenderedFeatures({{layers: [l.id]}}).length, 0);
    }});
    return out;
}}"""


@dataclass
class Watch:
    """What the page did that a test may want to fail on."""

    offsite: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # of our own origin, the page's and its workers'
    console_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)


# Every Content-Security-Policy violation in the page (a refused script, style, worker, eval, ...),
# reported to the test through an exposed function before any of the page's own scripts run.
CSP_LISTENER = """document.addEventListener('securitypolicyviolation', e => window.gridwatchCspViolation(
    `${e.effectiveDirective} refused ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber} ${e.sample}`),
    true);"""


@contextmanager
def offline_page(base_url: str, *, account: tuple[str, str] | dict, viewport: tuple[int, int] = (1920, 1080)):
    """A headless Chromium page that may only talk to ``base_url``; yields (page, watch).

    It is signed in as ``account`` (name, password), or has the cookies of a Playwright storage
    state (a browser that signed in before, e.g. while the database is down).
    """
    from playwright.sync_api import sync_playwright

    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
    watch = Watch()

    def route(r):
        url = r.request.url
        if url.startswith(origin + "/") or url == origin:
            watch.requests.append(url)
            r.continue_()
        else:
            watch.offsite.append(url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                          storage_state=account if isinstance(account, dict) else None)
            context.route("**/*", route)
            context.expose_function("gridwatchCspViolation", lambda text: watch.csp_violations.append(text))
            context.add_init_script(CSP_LISTENER)
            if not isinstance(account, dict):
                sign_in(context, base_url, account)
            page = context.new_page()
            page.on("console", lambda m: watch.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: watch.console_errors.append(str(e)))
            yield page, watch
        finally:
            browser.close()


class TcpProxy:
    """A localhost TCP proxy to the database that a test can cut and restore (a database outage)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.resume()

    def resume(self) -> None:
        """Listen (again, on the same port) and forward new connections."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and drop every open connection."""
        with self._lock:
            sockets, self._open = [self._listener, *self._open], set()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
