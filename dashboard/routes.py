"""The non-Dash endpoints: the map style, vector tiles, glyphs and live units as JSON.

Unknown layers, tiles outside the pyramid and bad glyph ranges are 404. While the
database cannot be reached, each answers what it last answered, marked with the
``X-Gridwatch-As-Of`` header, so a wall keeps its picture; what it never answered
is 503. Neither is ever a 500.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import flask

from gridwatch.dashboard._context import DB_ERRORS, Known, context
from gridwatch.dashboard.access import principal, scope_code
from gridwatch.dashboard.i18n import lang_of
from gridwatch.dashboard.plan_data import draft_for, faces_geojson
from gridwatch.dashboard.wall_data import scope_id
from gridwatch.layers.catalog import available_layers, get_layer
from gridwatch.layers.glyphs import FONTSTACK, glyph_range, glyphs_available
from gridwatch.layers.plan import townships
from gridwatch.layers.queries import jurisdiction_bounds, live_units
from gridwatch.layers.style import build_style
from gridwatch.layers.tiles import LIVE_GROUPS, group_tile, tile

__all__ = ["routes"]

routes = flask.Blueprint("gridwatch", __name__)

STATIC_MAX_AGE = 300
# Tiles are asked for within this many degrees of the jurisdiction: past its edge reach only the
# ranges of border sensors (radars up to ~15 km) and the ends of roads and rivers.
SOURCE_MARGIN_DEG = 0.15


def _cached(data: bytes, mimetype: str, *, max_age: int) -> flask.Response:
    """A response with an ETag (answering 304 when it matches) and Cache-Control."""
    response = flask.Response(data, mimetype=mimetype)
    response.set_etag(hashlib.blake2b(data, digest_size=12).hexdigest())
    response.cache_control.public = True
    if max_age:
        response.cache_control.max_age = max_age
    else:
        response.cache_control.no_cache = True
    return response.make_conditional(flask.request)


@routes.errorhandler(LookupError)
def _not_found(error: LookupError) -> tuple[dict[str, str], int]:
    return {"error": str(error)}, 404


def _database_down(error: Exception) -> tuple[dict[str, str], int]:
    return {"error": "database unreachable"}, 503


for _error in DB_ERRORS:
    routes.register_error_handler(_error, _database_down)


@routes.get("/style.json")
def style() -> flask.Response:
    """The MapLibre style; ``?lang=zh`` labels in Chinese, ``?hide=a,b`` starts layers hidden."""
    ctx = context()
    hide = flask.request.args.get("hide")
    known = ctx.known.read("style", lambda: (available_layers(ctx.engine), jurisdiction_bounds(ctx.engine)))
    layers, extent = known.value
    body = build_style(
        layers, base_url=flask.request.host_url.rstrip("/"),
        lang=lang_of(flask.request.args.get("lang")),
        hidden=frozenset(hide.split(",")) if hide is not None else None,
        labels=glyphs_available(), basemap_tiles_url=ctx.settings.basemap_tiles_url,
        bounds=None if extent is None else _widened(extent, SOURCE_MARGIN_DEG),
    )
    return _as_of(_cached(flask.json.dumps(body).encode(), "application/json", max_age=0), known)


def _as_of(response: flask.Response, known: Known) -> flask.Response:
    """Mark an answer the database could not give now: the last known one, and when it was read."""
    if not known.fresh:
        response.headers["X-Gridwatch-As-Of"] = known.at.isoformat()
    return response


def _widened(bounds: tuple[float, float, float, float], margin: float) -> tuple[float, float, float, float]:
    """``bounds`` grown by ``margin`` degrees on every side (clamped to Web Mercator's world)."""
    west, south, east, north = bounds
    return (max(west - margin, -180.0), max(south - margin, -85.0511),
            min(east + margin, 180.0), min(north + margin, 85.0511))


def _tile_address(z: str, x: str, y: str) -> tuple[int, int, int]:
    """z/x/y as integers (strings are taken so that a malformed address is our 404, not Dash's page)."""
    try:
        return int(z), int(x), int(y)
    except ValueError:
        raise LookupError(f"tile address {z}/{x}/{y} is not three integers") from None


@routes.get("/tiles/<layer_id>/<z>/<x>/<y>.pbf")
def vector_tile(layer_id: str, z: str, x: str, y: str) -> flask.Response:
    """One vector tile of a catalogued layer."""
    address = _tile_address(z, x, y)
    ctx = context()
    known = ctx.known.read(("tile", layer_id, *address), lambda: tile(ctx.engine, layer_id, *address, cache=ctx.tiles))
    return _as_of(_cached(known.value, "application/vnd.mapbox-vector-tile",
                          max_age=0 if get_layer(layer_id).live else STATIC_MAX_AGE), known)


@routes.get("/tiles/group/<group>/<z>/<x>/<y>.pbf")
def vector_tile_group(group: str, z: str, x: str, y: str) -> flask.Response:
    """One tile of every static (or every live) layer: what the map fetches, made anew only when its data changed."""
    address = _tile_address(z, x, y)
    ctx = context()
    known = ctx.known.read(("group", group, *address), lambda: group_tile(ctx.engine, group, *address, cache=ctx.tiles))
    return _as_of(_cached(known.value, "application/vnd.mapbox-vector-tile",
                          max_age=0 if group in LIVE_GROUPS else STATIC_MAX_AGE), known)


@routes.get("/glyphs/<fontstack>/<int:start>-<int:end>.pbf")
def glyphs(fontstack: str, start: int, end: int) -> flask.Response:
    """Label glyphs of one 256-codepoint range, from our own font."""
    if fontstack.split(",")[0] != FONTSTACK or end != start + 255 or not glyphs_available():
        raise LookupError(f"no glyphs {fontstack!r} {start}-{end}")
    return _cached(glyph_range(start), "application/x-protobuf", max_age=86400)


@routes.get("/api/live")
def live() -> flask.Response:
    """The latest fix of every unit the account may see (``?unit=CODE`` narrows it) as JSON records."""
    ctx = context()
    scope = scope_id(ctx, scope_code(flask.request.args.get("unit")))
    known = ctx.known.read(("api-live", scope), lambda: live_units(ctx.engine, ctx.settings, scope=scope))
    return _as_of(flask.Response(known.value.to_json(orient="records", date_format="iso"),
                                 mimetype="application/json"), known)


PLAN_BUNDLE = Path(__file__).resolve().parent / "plan_bundle"
PLAN_FILES = {"plan-map.min.js": "text/javascript", "plan-map-worker.js": "text/javascript",
              "plan-map.css": "text/css"}


@routes.get("/plan/static/<name>")
def plan_static(name: str) -> flask.Response:
    """The planner map's bundle (MapLibre GL JS and terra-draw), served from our origin."""
    if name not in PLAN_FILES:
        raise LookupError(f"no planner file {name!r}")
    return flask.send_file(PLAN_BUNDLE / name, mimetype=PLAN_FILES[name], max_age=STATIC_MAX_AGE)


@routes.get("/plan/faces.geojson")
def plan_faces() -> flask.Response:
    """The faces of the signed-in planner's draft of ``?township=CODE``."""
    township = flask.request.args.get("township", "")
    if township not in set(townships(context().engine)["code"]):
        raise LookupError(f"no township {township!r} with grids")
    draft = draft_for(context(), principal().id, township)
    return flask.Response(faces_geojson(draft), mimetype="application/geo+json",
                          headers={"Cache-Control": "no-store"})
