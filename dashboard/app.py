"""The Dash app factory and the server that runs it.

``create_app`` wires one database engine into a Dash app with pages (the wall
at ``/wall``, ``/`` redirecting to it) and the Flask routes of
:mod:`gridwatch.dashboard.routes`. Scripts are served locally: no request ever leaves
for another origin, and a Content-Security-Policy makes the browser refuse
them. plotly.js is our map-only build (``plotly_bundle/``, 60 %
of the full bundle's size), preloaded from the page's head.
"""
from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit

import dash
import flask

from gridwatch.dashboard._context import WallContext
from gridwatch.dashboard.routes import routes
from gridwatch.etl.database import database_engine, engine_for
from gridwatch.layers.glyphs import FONTSTACK, glyph_range, glyphs_available
from gridwatch.settings import Settings, get_settings

__all__ = ["create_app", "run"]

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


def content_security_policy(basemap_tiles_url: str | None) -> str:
    """The page's CSP: the browser refuses every origin but ours (and a configured basemap's)."""
    origins = "'self'"
    if basemap_tiles_url:
        parts = urlsplit(basemap_tiles_url)
        origins += f" {parts.scheme}://{parts.netloc}"
    return (f"default-src 'self'; connect-src {origins}; img-src {origins} data: blob:; "
            "script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
            "font-src 'self' data:; worker-src 'self' blob:; child-src 'self' blob:")


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
    )
    app.server.extensions["gridwatch"] = WallContext(engine=engine, settings=settings)
    app.server.register_blueprint(routes)
    _serve_plotly_bundle(app)
    policy = content_security_policy(settings.basemap_tiles_url)
    app.server.after_request(lambda response: _with_header(response, "Content-Security-Policy", policy))
    if glyphs_available():  # render the Latin label glyphs before the first browser asks
        threading.Thread(target=glyph_range, args=(0,), daemon=True).start()
    app.layout = dash.html.Div(dash.page_container, className="shell")
    return app


def _with_header(response: flask.Response, name: str, value: str) -> flask.Response:
    response.headers[name] = value
    return response


def run(host: str, port: int) -> None:
    """Serve the dashboard with waitress (threaded) until interrupted."""
    from waitress import serve

    serve(create_app().server, host=host, port=port, threads=8, ident="gridwatch")
