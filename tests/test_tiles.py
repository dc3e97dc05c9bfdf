"""Vector tiles: decoded with mapbox_vector_tile, and the tile route's 404s, ETag and cache headers."""
from __future__ import annotations

import time

import mapbox_vector_tile
import pytest
import sqlalchemy as sa
from _accounts import ORIGIN, client_of

from gridwatch.bench._harness import callback_body, new_account
from gridwatch.dashboard.app import PLOTLY_PATH, create_app
from gridwatch.data.synthetic import REGIONS, make_region
from gridwatch.layers.catalog import CATALOG, UnknownLayerError
from gridwatch.layers.tiles import TileCache, TileNotFound, group_of, group_tile, tile, tiles_covering

from _refdata import empty_tables

BOUNDS = (98.0, 23.5, 98.3, 23.8)  # the small synthetic region
CENTRE = (98.15, 23.65, 98.15, 23.65)


@pytest.fixture(scope="module")
def region(engine):
    empty_tables(engine)
    make_region(engine, REGIONS["small"])
    return engine


@pytest.fixture(scope="module")
def app(db_url):
    return create_app(db_url)


@pytest.fixture(scope="module")
def client(app, region):
    return client_of(app, new_account(region))


def decode(data: bytes) -> dict:
    return mapbox_vector_tile.decode(data)


def features(engine, layer_id: str, z: int) -> list[dict]:
    """All features of a layer over the region at zoom z."""
    return [f for zxy in tiles_covering(BOUNDS, z)
            for f in decode(tile(engine, layer_id, *zxy)).get(layer_id, {}).get("features", [])]


def test_grid_tiles_carry_coverage_status(region):
    found = features(region, "grids", 10)
    statuses = {f["properties"]["status"] for f in found}
    assert statuses == {"fresh", "due", "overdue", "unknown"}
    assert {"code", "name", "households"} <= set(found[0]["properties"])
    assert found[0]["geometry"]["type"] in ("Polygon", "MultiPolygon")


@pytest.mark.parametrize(("layer_id", "prop", "values"), [
    ("segments", "status", {"patrolled", "watched", "overdue", "unknown"}),
    ("lines", "line_no", {1, 2, 3}),
    ("checkpoints", "staffed", {True, False}),
    ("sensors", "kind", {"camera", "radar"}),
    ("incidents", "severity", {1, 2, 3, 4}),
    ("cu_county", "level", {"county"}),
])
def test_layer_properties(region, layer_id, prop, values):
    assert {f["properties"][prop] for f in features(region, layer_id, 9)} == values


def test_every_available_layer_has_features_over_the_region(region):
    for layer in CATALOG:
        if layer.requires:
            continue
        assert features(region, layer.id, max(layer.minzoom, 9)), layer.id


def test_tile_outside_the_data_is_empty(region):
    assert tile(region, "grids", 10, 0, 0) == b""


def test_simplification_keeps_tiles_small_at_low_zoom(region):
    z7 = sum(len(tile(region, "grids", *zxy)) for zxy in tiles_covering(BOUNDS, 7))
    z10 = sum(len(tile(region, "grids", *zxy)) for zxy in tiles_covering(BOUNDS, 10))
    assert 0 < z7 < z10


@pytest.mark.parametrize(("layer_id", "z", "x", "y", "match"), [
    ("nope", 10, 0, 0, "not in the catalog"),
    ("grids; DROP TABLE grid", 10, 0, 0, "not in the catalog"),
    ("grids", 6, 0, 0, "serves zooms"),
    ("grids", 23, 0, 0, "serves zooms"),
    ("grids", 10, 1024, 0, "does not exist"),
    ("grids", 10, 0, -1, "does not exist"),
])
def test_bad_tiles_raise_lookup_errors(region, layer_id, z, x, y, match):
    with pytest.raises(UnknownLayerError, match=match):
        tile(region, layer_id, z, x, y)


def test_leak_routes_tolerate_a_missing_table(region):
    with region.connect() as conn:
        exists = conn.exec_driver_sql("SELECT to_regclass('leak_route') IS NOT NULL").scalar()
    if exists:
        assert isinstance(tile(region, "leak_routes", 10, 0, 0), bytes)
    else:
        with pytest.raises(TileNotFound, match="do not exist yet"):
            tile(region, "leak_routes", 10, 0, 0)


def test_route_serves_tiles_with_etag_and_cache_control(client):
    z, x, y = tiles_covering(CENTRE, 10)[0]
    response = client.get(f"/tiles/grids/{z}/{x}/{y}.pbf")
    assert response.status_code == 200
    assert response.mimetype == "application/vnd.mapbox-vector-tile"
    assert "grids" in decode(response.data)
    assert "no-cache" in response.headers["Cache-Control"]  # grids are live
    again = client.get(f"/tiles/grids/{z}/{x}/{y}.pbf", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    static = client.get(f"/tiles/roads/{z}/{x}/{y}.pbf")
    assert "max-age=300" in static.headers["Cache-Control"]


@pytest.mark.parametrize("path", [
    "/tiles/nope/10/0/0.pbf", "/tiles/grids/99/0/0.pbf", "/tiles/grids/10/5000/0.pbf",
    "/tiles/grids/10/0/-1.pbf", "/tiles/grids/x/0/0.pbf", "/tiles/grids/3/0/0.pbf",
])
def test_route_answers_404_never_500(client, path):
    assert client.get(path).status_code == 404


def test_glyph_route(client):
    response = client.get("/glyphs/gridwatch-sans/0-255.pbf")
    assert response.status_code == 200 and len(response.data) > 10_000
    assert client.get("/glyphs/other-font/0-255.pbf").status_code == 404
    assert client.get("/glyphs/gridwatch-sans/1-256.pbf").status_code == 404


def test_group_tile_holds_every_layer_of_its_group(region):
    """What the map fetches: one tile per group, with each member layer that serves the zoom."""
    from gridwatch.layers.catalog import CATALOG
    from gridwatch.layers.tiles import group_of, group_tile

    z, x, y = tiles_covering(BOUNDS, 10)[0]
    for group in ("static", "live"):
        decoded = mapbox_vector_tile.decode(group_tile(region, group, z, x, y))
        expected = {layer.id for layer in CATALOG if group_of(layer) == group and layer.minzoom <= z <= layer.maxzoom}
        assert set(decoded) <= expected and decoded, (group, set(decoded))
        assert all(decoded[name]["features"] for name in decoded)
    with pytest.raises(LookupError, match="tile group 'nope'"):
        group_tile(region, "nope", z, x, y)


def test_style_route_bounds_its_sources_to_the_jurisdiction(client):
    style = client.get("/style.json").get_json()
    west, south, east, north = BOUNDS
    for source in style["sources"].values():
        assert source["bounds"] == pytest.approx([west - 0.15, south - 0.15, east + 0.15, north + 0.15])


def test_pages_get_the_map_only_plotly_bundle(client):
    """dcc.Graph's plotly.js URL answers with our build, and every page preloads it."""
    import re

    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    bundle = client.get(PLOTLY_PATH)
    version = re.match(rb"/\*! plotly.js v(\d+\.\d+)\.\d+ \(core \+ scattermap\)", bundle.data)
    assert bundle.status_code == 200 and version, bundle.data[:80]
    assert version.group(1).decode() == get_plotlyjs_version().rsplit(".", 1)[0]  # rebuild it on a plotly upgrade
    assert len(bundle.data) < 0.7 * len(get_plotlyjs().encode())
    # plotly's built-in basemaps, icons and topojson would be fetched from these hosts: cut at build time
    assert not re.search(rb"https?://[\w.-]*(cartocdn|openmaptiles|jsdelivr|plot\.ly|arcgisonline|icgc)", bundle.data)
    page = client.get("/wall").get_data(as_text=True)
    assert f'<link rel="preload" href="{PLOTLY_PATH}" as="script">' in page


def test_pages_forbid_other_origins(client):
    from gridwatch.dashboard.app import content_security_policy

    policy = client.get("/wall").headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self';" in policy
    on_site = content_security_policy("https://tiles.site.local:8443/{z}/{x}/{y}.png")
    assert "connect-src 'self' https://tiles.site.local:8443;" in on_site  # a configured tile server


SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def _kpi_callback(app, client) -> dict:
    """The wall's slow-tick callback (KPIs, unit tree, bounds, toggles, callsigns) as the browser posts it."""
    client.get("/wall")  # Dash registers its page callbacks on the first request
    return callback_body(app, "pages.wall.refresh_slow",
                         {"wall-slow-tick.n_intervals": 1, "wall-lang.data": "en"})


@pytest.mark.parametrize("kind", [
    "page", "root", "tile", "tile-304", "tile-404", "style", "glyphs", "live", "callback", "dash-layout",
    "asset", "plotly-bundle",
])
def test_every_response_carries_the_security_headers(app, client, kind):
    """Pages, tiles (200, 304 and 404), style, glyphs, live JSON, a Dash callback, assets: the four headers."""
    z, x, y = tiles_covering(CENTRE, 10)[0]
    tile_url = f"/tiles/grids/{z}/{x}/{y}.pbf"
    if kind == "tile-304":
        etag = client.get(tile_url).headers["ETag"]
        response = client.get(tile_url, headers={"If-None-Match": etag})
    elif kind == "callback":
        response = client.post("/_dash-update-component", json=_kpi_callback(app, client), headers={"Origin": ORIGIN})
        assert response.is_json and "wall-kpis" in response.get_json()["response"]
    else:
        response = client.get({
            "page": "/wall", "root": "/", "tile": tile_url, "tile-404": "/tiles/nope/10/0/0.pbf",
            "style": "/style.json", "glyphs": "/glyphs/gridwatch-sans/0-255.pbf", "live": "/api/live",
            "dash-layout": "/_dash-layout", "asset": "/assets/wall.js", "plotly-bundle": PLOTLY_PATH,
        }[kind])
    assert response.status_code == {"tile-304": 304, "tile-404": 404}.get(kind, 200), response.data[:200]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    policy = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert "'unsafe-eval'" not in policy
    assert "'unsafe-inline'" not in directives["script-src"]
    assert directives["object-src"] == "'none'"


def test_the_policy_hashes_every_inline_script_of_a_page(client):
    """Each inline script a page runs (Dash's renderer start-up, its title callback) is hashed in script-src.

    Dash's warning for Internet Explorer sits in a conditional comment no other browser runs.
    """
    import base64
    import hashlib
    import re

    response = client.get("/dispatch")
    script_src = dict(part.strip().split(" ", 1)
                      for part in response.headers["Content-Security-Policy"].split(";"))["script-src"]
    inline = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>(.*?)</script>",
                        re.sub(r"<!--.*?-->", "", response.get_data(as_text=True), flags=re.S), flags=re.S)
    assert len(inline) >= 2
    for script in inline:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_src, script[:120]


# -- one statement per composite tile, and the cache of made tiles -----------------------------

@pytest.fixture
def statements(region):
    """The SQL statements the region's engine runs while the test does (a list filled as they run)."""
    seen: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    sa.event.listen(region, "before_cursor_execute", note)
    yield seen
    sa.event.remove(region, "before_cursor_execute", note)


SET_STATUS = sa.text("UPDATE grid_coverage SET status = :s WHERE grid_id = :g")


def grid_address(engine, z: int = 10) -> tuple[int, int, int]:
    """The z-tile holding the first grid's point on surface."""
    with engine.connect() as conn:
        lon, lat = conn.execute(sa.text(
            "SELECT ST_X(label_point), ST_Y(label_point) FROM grid ORDER BY id LIMIT 1")).one()
    return tiles_covering((lon, lat, lon, lat), z)[0]


@pytest.mark.parametrize("group", ["static", "live"])
def test_a_group_tile_is_one_statement_for_all_its_layers(region, statements, group):
    address = grid_address(region)
    group_tile(region, group, *address)  # learns the layers' property columns once per process
    statements.clear()
    decoded = decode(group_tile(region, group, *address))
    made = [sql for sql in statements if "ST_AsMVT(" in sql]
    assert len(made) == 1 and len(statements) == 2, statements  # the version of its data, then the tile
    members = [layer.id for layer in CATALOG
               if group_of(layer) == group and layer.minzoom <= address[0] <= layer.maxzoom]
    assert made[0].count("ST_AsMVT(") == len(members) > 1
    assert decoded and set(decoded) <= set(members)


def test_a_static_tile_is_made_once_while_its_data_stays(region, statements):
    cache = TileCache(2**20)
    address = grid_address(region)
    first = group_tile(region, "static", *address, cache=cache)
    statements.clear()
    assert group_tile(region, "static", *address, cache=cache) == first
    assert len(statements) == 1 and "ST_AsMVT(" not in statements[0]  # only the version was read


def test_a_live_tile_is_made_anew_after_a_coverage_write(region, statements):
    cache = TileCache(2**20)
    address = grid_address(region)
    with region.connect() as conn:
        grid_id, status = conn.execute(sa.text(
            "SELECT g.id, c.status FROM grid g JOIN grid_coverage c ON c.grid_id = g.id ORDER BY g.id LIMIT 1")).one()

    def status_shown() -> str:
        grids = decode(group_tile(region, "live", *address, cache=cache))["grids"]["features"]
        return next(f["properties"]["status"] for f in grids if f["id"] == grid_id)

    assert status_shown() == status
    changed = "fresh" if status != "fresh" else "overdue"
    try:
        with region.begin() as conn:
            conn.execute(SET_STATUS, {"s": changed, "g": grid_id})
        statements.clear()
        assert status_shown() == changed
        assert sum("ST_AsMVT(" in sql for sql in statements) == 1
    finally:
        with region.begin() as conn:
            conn.execute(SET_STATUS, {"s": status, "g": grid_id})
    assert status_shown() == status


def test_a_write_shows_from_the_first_request_after_its_commit_never_before(region):
    """A checkpoint added in a transaction: not in the tiles while it is open, in the next tile once committed."""
    cache = TileCache(2**20)
    z, x, y = address = grid_address(region, 12)
    with region.connect() as conn:
        lon, lat = conn.execute(sa.text(
            "SELECT ST_X(c), ST_Y(c) FROM ST_Centroid(ST_Transform(ST_TileEnvelope(:z, :x, :y), 4326)) AS c"),
            {"z": z, "x": x, "y": y}).one()

    def codes() -> set[str]:
        found = decode(group_tile(region, "static", *address, cache=cache)).get("checkpoints", {"features": []})
        return {f["properties"]["code"] for f in found["features"]}

    before = codes()
    writer = region.connect()
    try:
        writer.execute(sa.text("INSERT INTO checkpoint (code, line_no, name, kind, staffed, geom) VALUES ('CP-NEW', 2, "
                               "'new', 'road_checkpoint', true, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326))"),
                       {"lon": lon, "lat": lat})
        assert codes() == before  # not committed yet: the tile made now is kept under the old version
        writer.commit()
        assert codes() == before | {"CP-NEW"}
    finally:
        writer.rollback()
        writer.execute(sa.text("DELETE FROM checkpoint WHERE code = 'CP-NEW'"))
        writer.commit()
        writer.close()
    assert codes() == before


def test_a_closed_incident_leaves_its_cached_tile_when_its_day_is_up(region):
    cache = TileCache(2**20)
    z, x, y = address = grid_address(region, 12)
    with region.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO incident (source_id, kind, severity, status, reported_at, closed_at, geom) "
            "SELECT 'INC-AGEING', 'dispute', 2, 'closed', now() - interval '25 hours', "
            "now() - interval '24 hours' + interval '2 seconds', "
            "ST_Centroid(ST_Transform(ST_TileEnvelope(:z, :x, :y), 4326))"), {"z": z, "x": x, "y": y})

    def shown() -> bool:
        found = decode(group_tile(region, "live", *address, cache=cache)).get("incidents", {"features": []})
        return any(f["properties"]["source_id"] == "INC-AGEING" for f in found["features"])

    try:
        assert shown()
        time.sleep(2.5)  # no write: only time passes
        assert not shown()
    finally:
        with region.begin() as conn:
            conn.execute(sa.text("DELETE FROM incident WHERE source_id = 'INC-AGEING'"))


def test_every_table_a_layer_reads_counts_its_changes(region):
    """Each catalogued source's tables (and the road graph's) carry the trigger the tile cache relies on."""
    read = sorted({table for layer in CATALOG for table in layer.tables} | {"road"})
    with region.connect() as conn:
        counted = set(conn.execute(sa.text(
            "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = c.relname || '_changed' AND NOT t.tgisinternal")).scalars())
    assert set(read) <= counted, set(read) - counted


def test_the_group_route_answers_a_write_on_the_next_request(client, region):
    """The route keeps its tiles, yet a committed coverage change is in the very next answer (new ETag)."""
    z, x, y = grid_address(region)
    url = f"/tiles/group/live/{z}/{x}/{y}.pbf"
    first = client.get(url)
    assert client.get(url).headers["ETag"] == first.headers["ETag"]
    with region.begin() as conn:
        grid_id, status = conn.execute(sa.text(
            "SELECT g.id, c.status FROM grid g JOIN grid_coverage c ON c.grid_id = g.id ORDER BY g.id LIMIT 1")).one()
        changed = "fresh" if status != "fresh" else "overdue"
        conn.execute(SET_STATUS, {"s": changed, "g": grid_id})
    try:
        after = client.get(url)
        assert after.headers["ETag"] != first.headers["ETag"]
        shown = {f["id"]: f["properties"]["status"] for f in decode(after.data)["grids"]["features"]}
        assert shown[grid_id] == changed
    finally:
        with region.begin() as conn:
            conn.execute(SET_STATUS, {"s": status, "g": grid_id})
