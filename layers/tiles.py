"""Mapbox vector tiles of catalogued layers, made by PostGIS (ST_AsMVT).

Rows are found with ``geom && envelope`` (GiST), simplified to about one screen
pixel of the zoom, clipped with a small buffer and encoded in the database;
Python only passes the bytes on. A tile of several layers (a group, as the map
fetches it) is one statement. Made tiles are kept in a :data:`TileCache` under the
version of the data beneath them (the tables' change counts, see ``table_change``),
so a tile is built again exactly when a write to a table it reads has committed.
"""
from __future__ import annotations

import math
from functools import lru_cache

import sqlalchemy as sa

from gridwatch.layers.catalog import CATALOG, PRESENT_TABLES, Layer, UnknownLayerError, get_layer, with_tables
from gridwatch.layers.lru import BytesLru

__all__ = ["tile", "group_tile", "group_of", "TILE_GROUPS", "LIVE_GROUPS", "tiles_covering", "TileNotFound",
           "check_tile_address", "TileCache", "MAX_ZOOM", "EXTENT"]

MAX_ZOOM = 22
EXTENT = 4096
BUFFER = 64
TILE_PX = 512  # MapLibre draws a vector tile over 512 CSS pixels
CACHE_ENTRY_BYTES = 300  # what a kept tile costs beside its bytes: its key and version

# Tiles kept in the process: (layer ids, z, x, y) -> (the version of the data under it, its bytes).
TileCache = BytesLru[tuple[tuple, bytes]]


class TileNotFound(UnknownLayerError):
    """No such tile: an unknown layer, or z/x/y outside the layer's pyramid."""


def check_tile_address(layer: Layer, z: int, x: int, y: int) -> None:
    """Raise :class:`TileNotFound` unless z/x/y names a tile the layer serves."""
    if not (layer.minzoom <= z <= min(layer.maxzoom, MAX_ZOOM)):
        raise TileNotFound(f"layer {layer.id!r} serves zooms {layer.minzoom}..{layer.maxzoom}, not {z}")
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise TileNotFound(f"tile {z}/{x}/{y} does not exist: x and y must be in 0..{2**z - 1}")


_PROPERTIES: dict[str, tuple[str, ...]] = {}


def _properties(conn: sa.Connection, layer: Layer) -> tuple[str, ...]:
    """The property columns of a layer's source (all but id and geom), learned once from the schema.

    Naming them (rather than ``to_jsonb(row)``) makes a z6 tile of 1,500 grids ~5x faster.
    """
    if layer.id not in _PROPERTIES:
        keys = conn.execute(sa.text(f"SELECT * FROM ({layer.source}) AS s LIMIT 0")).keys()
        _PROPERTIES[layer.id] = tuple(key for key in keys if key not in ("id", "geom"))
    return _PROPERTIES[layer.id]


@lru_cache(maxsize=None)
def _version_columns(candidates: tuple[str, ...]) -> str:
    """What the tiles of these layers depend on: the change count of every table they read
    (parameter ``tables``), which of the tables they require exist (``required``), and their
    time keys (see :class:`~gridwatch.layers.catalog.Layer`)."""
    layers = [get_layer(layer_id) for layer_id in candidates]
    columns = [
        "ARRAY(SELECT format('%s %s %s', name, generation, changed_at) FROM table_change "
        "WHERE name = ANY(CAST(:tables AS text[])) ORDER BY name) AS generations",
        f"{PRESENT_TABLES} AS present",
    ]
    columns += [f"CAST({layer.time_key} AS text) AS time_{i}" for i, layer in enumerate(layers) if layer.time_key]
    return ", ".join(columns)


def _layer_mvt(layer: Layer, properties: tuple[str, ...], name: str) -> str:
    """One layer's part of a tile, named by the parameter ``name``: a scalar subquery giving its
    ST_AsMVT bytes (NULL or none when empty)."""
    geom = "s.geom" if layer.kind == "point" else "ST_Simplify(s.geom, :tolerance, false)"
    columns = "".join(f', s."{name}"' for name in properties)
    # ST_AsMVT leaves out rows whose geometry clips to NULL: a filter on it would make each twice
    return f"""(SELECT ST_AsMVT(f, :{name}, {EXTENT}, 'geom', 'id') FROM (
        SELECT s.id{columns},
               ST_AsMVTGeom(ST_Transform({geom}, 3857), ST_TileEnvelope(:z, :x, :y), {EXTENT}, {BUFFER}, true) AS geom
        FROM ({layer.source}) AS s
        WHERE s.geom && ST_Transform(ST_TileEnvelope(:z, :x, :y, margin => :margin), 4326)
    ) AS f)"""


@lru_cache(maxsize=None)
def _tile_sql(members: tuple[tuple[str, tuple[str, ...]], ...]) -> sa.TextClause:
    """One statement making the tile of ``members`` (layer id, property columns): their parts concatenated,
    the i-th named by the parameter ``layer_i``."""
    parts = " || ".join(f"coalesce({_layer_mvt(get_layer(layer_id), properties, f'layer_{i}')}, ''::bytea)"
                        for i, (layer_id, properties) in enumerate(members)) or "''::bytea"
    return sa.text(f"SELECT {parts}")


def pixel_degrees(z: int) -> float:
    """About one screen pixel at zoom ``z``, in degrees of longitude."""
    return 360.0 / (TILE_PX * 2**z)


def _tile_of(engine: sa.Engine, candidates: tuple[Layer, ...], z: int, x: int, y: int,
             cache: TileCache | None) -> tuple[bytes, tuple[Layer, ...]]:
    """The tile of the ``candidates`` whose required tables exist, and those layers.

    One small statement reads the version of the data under the tile; a tile the ``cache``
    keeps under that version is answered as is, else one statement builds every layer's part.
    The version is read before the rows, so a tile is never kept under a version newer than
    its rows: a change committed before a request always makes it build the tile anew.
    """
    ids = tuple(layer.id for layer in candidates)
    with engine.connect() as conn:
        tables = {"tables": sorted({table for layer in candidates for table in layer.tables}),
                  "required": sorted({table for layer in candidates for table in layer.requires})}
        version = tuple(conn.execute(sa.text(f"SELECT {_version_columns(ids)}"), tables).one())
        members = with_tables(candidates, version[1])
        kept = cache.get((ids, z, x, y)) if cache is not None else None
        if kept is not None and kept[0] == version:
            return kept[1], members
        sql = _tile_sql(tuple((layer.id, _properties(conn, layer)) for layer in members))
        names = {f"layer_{i}": layer.id for i, layer in enumerate(members)}
        data = bytes(conn.execute(sql, {"z": z, "x": x, "y": y, "tolerance": pixel_degrees(z),
                                        "margin": BUFFER / EXTENT, **names}).scalar())
    if cache is not None:
        cache.put((ids, z, x, y), (version, data), len(data) + CACHE_ENTRY_BYTES)
    return data, members


def tile(engine: sa.Engine, layer_id: str, z: int, x: int, y: int, *, cache: TileCache | None = None) -> bytes:
    """The MVT bytes of one tile of a catalogued layer (empty bytes when nothing is there).

    Raises :class:`TileNotFound` (a ``LookupError``) for an unknown layer, a
    layer whose table does not exist yet, or an address outside the pyramid.
    """
    layer = get_layer(layer_id)
    check_tile_address(layer, z, x, y)
    data, members = _tile_of(engine, (layer,), z, x, y, cache)
    if not members:
        raise TileNotFound(f"layer {layer_id!r} needs tables {list(layer.requires)} that do not exist yet")
    return data


def group_of(layer: Layer) -> str:
    """The tile group a layer is served in: its static or live tiles, and apart from the others when
    the map opens with it hidden. MapLibre fetches no tile of a source whose layers are all hidden, so
    such a layer's tiles are built and fetched only once it is turned on."""
    kind = "live" if layer.live else "static"
    return kind if layer.visible else f"{kind}_hidden"


# The map fetches one tile per group and address, not one per layer (MVT layers concatenate): the
# static layers, the live ones (refetched as coverage changes), each apart when hidden as the map opens.
TILE_GROUPS = tuple(dict.fromkeys(group_of(layer) for layer in CATALOG))
LIVE_GROUPS = frozenset(group_of(layer) for layer in CATALOG if layer.live)


def group_tile(engine: sa.Engine, group: str, z: int, x: int, y: int, *, cache: TileCache | None = None) -> bytes:
    """One tile holding every available layer of ``group`` that serves zoom ``z``, made by one statement."""
    if group not in TILE_GROUPS:
        raise TileNotFound(f"tile group {group!r} is not one of {list(TILE_GROUPS)}")
    if not (0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z):
        raise TileNotFound(f"tile {z}/{x}/{y} does not exist")
    candidates = tuple(layer for layer in CATALOG if group_of(layer) == group and layer.minzoom <= z <= layer.maxzoom)
    return _tile_of(engine, candidates, z, x, y, cache)[0]


def tiles_covering(bounds: tuple[float, float, float, float], z: int) -> list[tuple[int, int, int]]:
    """Every z/x/y tile that overlaps ``(west, south, east, north)`` in degrees."""
    def column(lon: float) -> int:
        return min(2**z - 1, max(0, int((lon + 180.0) / 360.0 * 2**z)))

    def row(lat: float) -> int:
        lat = max(-85.0511, min(85.0511, lat))
        merc = math.log(math.tan(math.radians(lat)) + 1 / math.cos(math.radians(lat)))
        return min(2**z - 1, max(0, int((1 - merc / math.pi) / 2 * 2**z)))

    west, south, east, north = bounds
    return [(z, x, y) for x in range(column(west), column(east) + 1) for y in range(row(north), row(south) + 1)]
