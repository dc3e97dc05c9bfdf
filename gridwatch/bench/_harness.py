"""What the benchmarks share: a scratch database, the generated sample, the app served on a
free port, and an offline headless Chromium (Debian's, driven by Playwright; no browser download)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

from gridwatch.errors import GridwatchError
from gridwatch.etl.database import engine_for, scratch_database
from gridwatch.settings import Settings
from gridwatch.system import CHROMIUM, SetupError, chromium, ensure

__all__ = ["bench_engine", "bench_sample", "serving", "offline_browser", "offline_page", "INTERACTIVE",
           "CHROMIUM", "CHROMIUM_ARGS"]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# In the page: navigation-start milliseconds once the map is fitted to the region (zoomed in from the
# initial view, centre inside the bounds), every tile is loaded and the live units are drawn; else false.
INTERACTIVE = """(b) => {
    const m = window.gridwatch && window.gridwatch.map();
    if (!m || !m.loaded() || !m.areTilesLoaded() || m.getZoom() <= 4) { return false; }
    const c = m.getCenter();
    if (c.lng < b[0] || c.lng > b[2] || c.lat < b[1] || c.lat > b[3]) { return false; }
    const gd = document.querySelector('#wall-map .js-plotly-plot');
    const drawn = (gd.data || []).some(t => t.mode === 'markers' && (t.lon || []).length > 0);
    return drawn ? performance.now() : false;
}"""


def bench_sample(settings: Settings, scale: str) -> Path:
    """The sample folder of ``scale``, generated on first use."""
    from gridwatch.data import generate_sample

    folder = settings.home_dir / "bench" / f"sample-{scale}"
    if not (folder / "manifest.json").exists():
        generate_sample(folder, seed=1, scale=scale)
    return folder


@contextmanager
def bench_engine(settings: Settings) -> Iterator[sa.Engine]:
    """An engine on a scratch database, dropped afterwards."""
    with scratch_database(settings, prefix="gridwatch_bench") as url:
        engine = engine_for(url)
        try:
            yield engine
        finally:
            engine.dispose()


@contextmanager
def serving(flask_app) -> Iterator[str]:
    """Serve a Flask app on a free localhost port in a thread; yields its base URL."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextmanager
def offline_browser() -> Iterator[object]:
    """Headless Chromium (Playwright); Chromium is installed as root, else the fix is named."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise GridwatchError("the page figures need the Python package playwright: pip install -e '.[test]' "
                             "(it drives the system Chromium; no browser download)") from error
    try:
        ensure([chromium()])
    except SetupError as exc:
        raise GridwatchError(f"the page figures need Chromium: {exc}") from None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def offline_page(browser, base_url: str, *, viewport: tuple[int, int] = (1920, 1080)):
    """A page in a new (cold) context that may only talk to ``base_url``: (context, page, refused URLs)."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
    offsite: list[str] = []

    def route(r) -> None:
        url = r.request.url
        if url == origin or url.startswith(origin + "/"):
            r.continue_()
        else:
            offsite.append(url)
            r.abort()

    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.route("**/*", route)
    return context, context.new_page(), offsite
