"""The Dash app factory and the server that runs it.

``create_app`` wires one database engine into a Dash app with pages (the wall
at ``/wall``, ``/`` redirecting to it) and the Flask routes of
:mod:`dashboard.routes`. Scripts are served locally: no request ever leaves
for another origin.
"""
from __future__ import annotations

import threading
from pathlib import Path

import dash

from dashboard._context import WallContext
from dashboard.routes import routes
from etl.database import database_url, engine_for
from gridwatch.settings import get_settings
from layers.glyphs import glyph_range, glyphs_available

__all__ = ["create_app", "run"]

HERE = Path(__file__).resolve().parent


def create_app(url: str | None = None) -> dash.Dash:
    """A dashboard app on the database at ``url`` (default: the configured one)."""
    settings = get_settings()
    engine = engine_for(
        url or database_url(settings), pool_size=8, max_overflow=8, pool_timeout=5,
        connect_args={"connect_timeout": 3, "options": "-c statement_timeout=15000"},
    )
    app = dash.Dash(
        __name__, use_pages=True, pages_folder=str(HERE / "pages"), assets_folder=str(HERE / "assets"),
        serve_locally=True, title="gridwatch", update_title=None, suppress_callback_exceptions=True,
    )
    app.server.extensions["gridwatch"] = WallContext(engine=engine, settings=settings)
    app.server.register_blueprint(routes)
    if glyphs_available():  # render the Latin label glyphs before the first browser asks
        threading.Thread(target=glyph_range, args=(0,), daemon=True).start()
    app.layout = dash.html.Div(dash.page_container, className="shell")
    return app


def run(host: str, port: int) -> None:
    """Serve the dashboard with waitress (threaded) until interrupted."""
    from waitress import serve

    serve(create_app().server, host=host, port=port, threads=8, ident="gridwatch")
