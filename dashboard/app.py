"""The Dash app factory and the server that runs it.

``create_app`` wires one database engine into a Dash app with pages (the wall
at ``/wall``, ``/`` redirecting to it) and the Flask routes of
:mod:`gridwatch.dashboard.routes`. Scripts are served locally: no request ever leaves
for another origin, and a Content-Security-Policy makes the browser refuse
them; it allows no eval and no inline script but Dash's own, by hash, and no
other site may frame a page. Every response carries it, with ``nosniff`` and
``Referrer-Policy: same-origin``. plotly.js is our map-only build (``plotly_bundle/``, 60 %
of the full bundle's size), preloaded from the page's head.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import dash
import flask

from gridwatch.dashboard._context import WallContext
from gridwatch.dashboard.access import install_access, refuse_unusable_values
from gridwatch.dashboard.routes import routes
from gridwatch.etl.database import database_engine, engine_for
from gridwatch.layers.glyphs import FONTSTACK, glyph_range, glyphs_available
from gridwatch.settings import Settings, get_settings

__all__ = ["content_security_policy", "create_app", "run", "security_headers"]

HERE = Path(__file__).resolve().parent
PLOTLY_BUNDLE = HERE / "plotly_bundle" / "plotly-map.min.js"
# Where dcc.Graph fetches plotly.js when scripts are served locally.
PLOTLY_PATH = "/_dash-component-suites/plotly/package_data/plotly.min.js"


# What every page's map needs before it can draw: fetched from the head, in parallel with Dash's start.
PRELOADS = (
    (PLOTLY_PATH, "script"),
    ("/_dash-component-suites/dash/dcc/async-graph.js", "script"),
    (f"/glyphs/{FONTSTACK}/0-255.pbf", "fetch"),
)


def content_security_policy(basemap_tiles_url: str | None, *, script_hashes: Sequence[str] = ()) -> str:
    """The page's CSP: the browser refuses every origin but ours (and a configured basemap's).

    Scripts run only from our origin, or inline when their hash is listed (``script_hashes``:
    Dash's renderer start-up and any inline clientside callback, from ``app.csp_hashes()``);
    nothing is ever eval'd. No other site may frame a page (``frame-ancestors 'none'``), so the
    Acknowledge button cannot be clickjacked.
    """
    origins = "'self'"
    if basemap_tiles_url:
        parts = urlsplit(basemap_tiles_url)
        origins += f" {parts.scheme}://{parts.netloc}"
    directives = {
        "default-src": "'self'",
        "connect-src": origins,
        # MapLibre turns fetched images (a raster basemap's tiles) into blob: URLs in browsers
        # without createImageBitmap; Chromium never needs it.
        "img-src": f"{origins} blob:",
        "script-src": " ".join(["'self'", *script_hashes]),
        # No inline style="" attribute: React, plotly.js and MapLibre style elements through the CSSOM.
        "style-src": "'self'",
        # Relaxation: Dash's renderer and dcc bundle their CSS in their JavaScript and insert it as
        # <style> elements at run time; Dash offers hashes for its inline scripts only, not for these.
        "style-src-elem": "'self' 'unsafe-inline'",
        "font-src": "'self'",
        # MapLibre starts its tile-parsing workers from a blob: URL of its own bundled code (refused,
        # the map silently never draws: no violation event, no console error).
        "worker-src": "'self' blob:",
        "frame-src": "'none'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def security_headers(policy: str) -> dict[str, str]:
    """The headers every response carries: the CSP, no MIME sniffing, no referrer to other sites."""
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        # For browsers that predate frame-ancestors.
        "X-Frame-Options": "DENY",
    }


def _serve_plotly_bundle(app: dash.Dash) -> None:
    """Answer dcc.Graph's plotly.js request with the map-only bundle; preload what the map needs first."""
    app.server.add_url_rule(PLOTLY_PATH, "plotly_bundle",
                            lambda: flask.send_file(PLOTLY_BUNDLE, mimetype="text/javascript", max_age=0))
    links = "".join(f'\n        <link rel="preload" href="{href}" as="{kind}"'
                    + (' crossorigin="anonymous">' if kind == "fetch" else ">")
                    for href, kind in PRELOADS if kind != "fetch" or glyphs_available())
    app.index_string = app.index_string.replace("{%css%}", "{%css%}" + links)


def create_app(url: str | None = None, settings: Settings | None = None) -> dash.Dash:
    """A dashboard app on the database at ``url`` (default: the configured one)."""
    settings = settings or get_settings()
    options = {"pool_size": 8, "max_overflow": 8, "pool_timeout": 5,
               "connect_args": {"connect_timeout": 3, "options": "-c statement_timeout=15000"}}
    engine = engine_for(url, **options) if url else database_engine(settings, **options)
    app = dash.Dash(
        __name__, use_pages=True, pages_folder=str(HERE / "pages"), assets_folder=str(HERE / "assets"),
        serve_locally=True, title="gridwatch", update_title=None, suppress_callback_exceptions=True,
        on_error=refuse_unusable_values,
    )
    app.server.extensions["gridwatch"] = WallContext(engine=engine, settings=settings)
    install_access(app, settings)
    app.server.register_blueprint(routes)
    _serve_plotly_bundle(app)
    if glyphs_available():  # render the Latin label glyphs before the first browser asks
        threading.Thread(target=glyph_range, args=(0,), daemon=True).start()
    app.layout = dash.html.Div(dash.page_container, className="shell")
    _add_security_headers(app, settings.basemap_tiles_url)
    return app


def _add_security_headers(app: dash.Dash, basemap_tiles_url: str | None) -> None:
    """Set :func:`security_headers` on every response: pages, tiles, style, glyphs, JSON, assets, errors.

    Dash adds inline scripts as late as its first request (the pages' title callback), so the
    hashes are read per response; the policy is built once per distinct set of them.
    """
    @functools.lru_cache(maxsize=4)
    def headers(script_hashes: tuple[str, ...]) -> dict[str, str]:
        return security_headers(content_security_policy(basemap_tiles_url, script_hashes=script_hashes))

    def add(response: flask.Response) -> flask.Response:
        response.headers.update(headers(tuple(app.csp_hashes())))
        if flask.request.is_secure:  # served over HTTPS: browsers keep to it for a year
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    app.server.after_request(add)


def _https_app() -> flask.Flask:
    """The app served over HTTPS: its session cookie never travels over plain HTTP."""
    server = create_app().server
    server.config["SESSION_COOKIE_SECURE"] = True
    return server


def run(host: str, port: int, *, tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
    """Serve the dashboard in 8 threads until interrupted: over HTTP with waitress, or over HTTPS with
    ``tls_cert`` and ``tls_key`` (a file of mode 600) with Hypercorn (:mod:`gridwatch.dashboard._https`)."""
    threads = 8
    if tls_cert is not None:
        from gridwatch.dashboard._https import serve_https

        serve_https(_https_app, host=host, port=port, cert=tls_cert, key=tls_key, threads=threads)
    else:
        from waitress import serve

        serve(create_app().server, host=host, port=port, threads=threads, ident="gridwatch")
